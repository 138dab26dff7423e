//! What every fuzz target shares: the fuzzing journal's id and checksum seeds, the reader of
//! the fuzzer's bytes ([`Bytes`]) and its writers, fresh temporary directories, and reading a
//! recovered journal back with its LSNs checked.

use std::path::Path;

use syncjournal::format::Seed;
use syncjournal::{Journal, Lsn, Record, RecoveryMode};
use uuid::Uuid;

/// Safety net against a reader that never reaches the end.
pub const MAX_RECORDS_READ: usize = 100_000;
/// The journal id of every generated segment and acknowledgement file.
pub const FUZZ_JOURNAL_ID: [u8; 16] = *b"syncjournal-fuzz";

/// The fuzzing journal id.
pub fn fuzz_id() -> Uuid {
    Uuid::from_bytes(FUZZ_JOURNAL_ID)
}

/// The checksum seed of segment `seq` of the fuzzing journal.
pub fn fuzz_seed(seq: u64) -> Seed {
    Seed::new(fuzz_id(), seq)
}

/// Reads little-endian integers from the fuzzer's bytes; past the end everything reads as zero.
#[derive(Debug, Clone)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    /// The next byte, or 0.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Appends `x`, little-endian.
pub fn put_u16(out: &mut Vec<u8>, x: u16) {
    out.extend_from_slice(&x.to_le_bytes());
}

/// Appends `x`, little-endian.
pub fn put_u32(out: &mut Vec<u8>, x: u32) {
    out.extend_from_slice(&x.to_le_bytes());
}

/// Appends `x`, little-endian.
pub fn put_u64(out: &mut Vec<u8>, x: u64) {
    out.extend_from_slice(&x.to_le_bytes());
}

/// A fresh temporary directory, on `/dev/shm` when there is one (much faster syncs).
pub fn fresh_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("syncjournal-fuzz-")
            .tempdir_in(shm)
    {
        return d;
    }
    tempfile::Builder::new()
        .prefix("syncjournal-fuzz-")
        .tempdir()
        .expect("create a temporary directory")
}

/// All records from the first retained one.
pub fn read_all(journal: &Journal, mode: RecoveryMode) -> Vec<Record> {
    let first = journal.state().first_lsn;
    let reader = journal
        .reader(first)
        .unwrap_or_else(|e| panic!("{mode:?}: reader({first}) of a recovered journal: {e}"));
    let mut out = Vec::new();
    for r in reader {
        out.push(r.unwrap_or_else(|e| panic!("{mode:?}: reading a recovered journal: {e}")));
        assert!(
            out.len() <= MAX_RECORDS_READ,
            "{mode:?}: the reader does not stop"
        );
    }
    out
}

/// LSNs are contiguous from `first` to `next`: each record continues the previous one, and a
/// gap record stands for the LSNs it names.
pub fn check_lsn_sequence(records: &[Record], first: Lsn, next: Lsn, mode: RecoveryMode) {
    let mut expect = first;
    for r in records {
        assert_eq!(
            r.lsn, expect,
            "{mode:?}: LSNs of the recovered journal are not contiguous"
        );
        expect = match r.gap() {
            Some(g) => {
                assert!(g.end > g.start, "{mode:?}: empty gap record returned");
                g.end
            }
            None => r.lsn.saturating_add(1),
        };
    }
    assert_eq!(expect, next, "{mode:?}: records end before the next LSN");
}
