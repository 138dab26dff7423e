//! Shared helpers for the scenario tests (concurrency, kill -9, lock, disk full, poison,
//! retention, follow readers, API limits). Each test file uses a subset, hence the
//! `dead_code` allowance.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use syncjournal::format::{SEGMENT_FIRST_LSN_OFFSET, SEGMENT_SEQ_OFFSET};
use syncjournal::segment::parse_segment_file_name;
use syncjournal::{Journal, Lsn, Record};

/// Bytes at the start of every test payload: thread (u32), sequence (u32), tag (u64).
pub const PAYLOAD_HEADER: usize = 16;

/// Runs `f` on a thread and panics if it has not finished after `secs` seconds. A hang guard
/// only: nothing is asserted about how long `f` takes.
pub fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        let out = f();
        let _ = tx.send(());
        out
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("hang guard: the test body did not finish within {secs} s (deadlock?)")
        }
    }
}

/// FNV-1a, 64 bits: a digest of a payload for compact comparisons.
pub fn digest(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[path = "../rng/mod.rs"]
mod rng;
#[allow(unused_imports)]
pub use rng::Rng;

/// A payload that encodes `(thread, seq, tag)` in its first 16 bytes, followed by filler
/// derived from the same values, `len` bytes in all (at least 16).
pub fn payload(thread: u32, seq: u32, tag: u64, len: usize) -> Vec<u8> {
    let len = len.max(PAYLOAD_HEADER);
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&thread.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&tag.to_le_bytes());
    let mut x = u64::from(thread) << 40 ^ u64::from(seq) << 8 ^ tag ^ 0x9e37_79b9_7f4a_7c15;
    while p.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(x as u8);
    }
    p
}

/// A payload length that varies with `(thread, seq)`: between 16 and `16 + spread`.
pub fn varied_len(thread: u32, seq: u32, spread: usize) -> usize {
    PAYLOAD_HEADER
        + (digest(&[thread.to_le_bytes(), seq.to_le_bytes()].concat()) as usize) % (spread + 1)
}

/// Decodes `(thread, seq, tag)` from a payload made by [`payload`] and checks that the rest of
/// it is intact. Panics (naming the LSN) otherwise.
pub fn parse_payload(lsn: Lsn, p: &[u8]) -> (u32, u32, u64) {
    assert!(
        p.len() >= PAYLOAD_HEADER,
        "LSN {lsn}: payload of {} bytes is too short to be a test payload",
        p.len()
    );
    let thread = u32::from_le_bytes(p[0..4].try_into().unwrap());
    let seq = u32::from_le_bytes(p[4..8].try_into().unwrap());
    let tag = u64::from_le_bytes(p[8..16].try_into().unwrap());
    let expected = payload(thread, seq, tag, p.len());
    assert!(
        expected == p,
        "LSN {lsn}: payload of (thread {thread}, seq {seq}, tag {tag}) has damaged filler"
    );
    (thread, seq, tag)
}

/// Every record readable from LSN 1 (or the first retained one), in order.
pub fn read_all(journal: &Journal) -> Vec<Record> {
    read_from(journal, 1)
}

/// Every record readable from `lsn`, in order.
pub fn read_from(journal: &Journal, lsn: Lsn) -> Vec<Record> {
    let mut reader = journal.reader(lsn).expect("create reader");
    let mut out = Vec::new();
    while let Some(r) = reader.next_record().expect("read record") {
        out.push(r);
    }
    out
}

/// Asserts that `records` carry the contiguous LSNs `first..first + len`.
pub fn assert_contiguous(records: &[Record], first: Lsn) {
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            r.lsn,
            first + i as u64,
            "LSNs are not contiguous: record #{i} has LSN {} (expected {})",
            r.lsn,
            first + i as u64
        );
    }
}

/// Records by LSN.
pub fn by_lsn(records: &[Record]) -> HashMap<Lsn, &Record> {
    records.iter().map(|r| (r.lsn, r)).collect()
}

/// Segment files in `dir`: (sequence number, path), in order.
pub fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .expect("list journal directory")
        .filter_map(|e| {
            let e = e.ok()?;
            let seq = parse_segment_file_name(e.file_name().to_str()?)?;
            Some((seq, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Segment files in `dir` with the `first_lsn` of their headers: (seq, first_lsn), in order.
pub fn segments_with_first_lsn(dir: &Path) -> Vec<(u64, Lsn)> {
    segment_files(dir)
        .into_iter()
        .map(|(seq, path)| {
            let bytes = std::fs::read(&path).expect("read segment");
            let at = SEGMENT_FIRST_LSN_OFFSET;
            let first = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
            let at = SEGMENT_SEQ_OFFSET;
            let in_header = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
            assert_eq!(
                in_header,
                seq,
                "segment {} header names another seq",
                path.display()
            );
            (seq, first)
        })
        .collect()
}

/// Files in `dir` whose name ends with `.tmp`.
pub fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("list journal directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect()
}

/// True when this process runs as root (`id -u` is 0).
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|s| s.trim() == "0")
}

/// A command that re-runs this test binary with only the `#[ignore]`d test `name`, with
/// captured output shown, and the environment variable `var` set to `value`.
pub fn child_test_command(name: &str, var: &str, value: &Path) -> std::process::Command {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "--exact",
        name,
        "--nocapture",
        "--ignored",
        "--test-threads",
        "1",
    ])
    .env(var, value)
    .env("RUST_BACKTRACE", "1");
    cmd
}
