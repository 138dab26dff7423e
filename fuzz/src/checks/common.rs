//! What every fuzz target shares: the fuzzing journal's id and checksum seeds, the reader of
//! the fuzzer's bytes ([`Bytes`]) and its writers, and fresh temporary directories.

use std::path::Path;

use syncjournal::format::Seed;
use uuid::Uuid;

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
