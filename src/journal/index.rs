//! A sparse in-memory index per segment: the offset of every 64th record.

use crate::format::Lsn;

/// Records between two index entries. Lookup scans at most this many frames.
pub const INDEX_STRIDE: u64 = 64;

/// Maps LSNs to frame offsets within one segment, one entry per [`INDEX_STRIDE`] records
/// (plus the first record and the frame after every gap). 12 bytes per 64 records.
#[derive(Debug, Default, Clone)]
pub struct SparseIndex {
    lsns: Vec<Lsn>,
    offsets: Vec<u32>,
    since_last: u64,
}

impl SparseIndex {
    /// Notes that the record `lsn` starts at `offset`; `force` records it whatever the stride.
    pub fn note(&mut self, lsn: Lsn, offset: usize, force: bool) {
        if force || self.lsns.is_empty() || self.since_last + 1 >= INDEX_STRIDE {
            self.lsns.push(lsn);
            self.offsets.push(offset as u32);
            self.since_last = 0;
        } else {
            self.since_last += 1;
        }
    }

    /// The offset of the last indexed record at or before `lsn`, if any.
    pub fn floor(&self, lsn: Lsn) -> Option<(Lsn, usize)> {
        let i = self.lsns.partition_point(|&l| l <= lsn);
        (i > 0).then(|| (self.lsns[i - 1], self.offsets[i - 1] as usize))
    }

    /// Keeps only the first `len` entries.
    pub fn truncate(&mut self, len: usize) {
        self.lsns.truncate(len);
        self.offsets.truncate(len);
        self.since_last = INDEX_STRIDE;
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lsns.len()
    }

    /// True when no record is indexed.
    pub fn is_empty(&self) -> bool {
        self.lsns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_finds_the_nearest_entry_before() {
        let mut ix = SparseIndex::default();
        for lsn in 1..=200u64 {
            ix.note(lsn, lsn as usize * 40, false);
        }
        assert_eq!(ix.len(), 4); // 1, 65, 129, 193
        assert_eq!(ix.floor(0), None);
        assert_eq!(ix.floor(1), Some((1, 40)));
        assert_eq!(ix.floor(64), Some((1, 40)));
        assert_eq!(ix.floor(65), Some((65, 65 * 40)));
        assert_eq!(ix.floor(10_000), Some((193, 193 * 40)));
    }
}
