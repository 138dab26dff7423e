//! The checksum seed that binds every record to its journal and segment.

use uuid::Uuid;

/// The CRC-32 state after hashing `journal_id (16 bytes) || segment_seq (u64 LE)`.
///
/// Every record checksum continues from this state, so a record validates only inside the
/// segment (and journal) it was written for: a record copied from another segment or journal,
/// or left over in a reused file, never validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    state: u32,
}

impl Seed {
    /// The seed of segment `segment_seq` of journal `journal_id`.
    pub fn new(journal_id: Uuid, segment_seq: u64) -> Self {
        let mut h = crc32fast::Hasher::new();
        h.update(journal_id.as_bytes());
        h.update(&segment_seq.to_le_bytes());
        Seed {
            state: h.finalize(),
        }
    }

    /// A hasher positioned after the seed bytes.
    pub fn hasher(self) -> crc32fast::Hasher {
        crc32fast::Hasher::new_with_initial(self.state)
    }

    /// The raw CRC state (what `crc32(journal_id || segment_seq)` returns).
    pub fn state(self) -> u32 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_hash_equals_hash_of_the_concatenation() {
        let id = Uuid::from_bytes([7; 16]);
        let seed = Seed::new(id, 42);
        let mut h = seed.hasher();
        h.update(b"payload");
        let mut all = Vec::new();
        all.extend_from_slice(id.as_bytes());
        all.extend_from_slice(&42u64.to_le_bytes());
        all.extend_from_slice(b"payload");
        assert_eq!(h.finalize(), crc32fast::hash(&all));
    }

    #[test]
    fn seeds_differ_by_journal_and_segment() {
        let a = Uuid::from_bytes([1; 16]);
        let b = Uuid::from_bytes([2; 16]);
        assert_ne!(Seed::new(a, 1), Seed::new(b, 1));
        assert_ne!(Seed::new(a, 1), Seed::new(a, 2));
    }
}
