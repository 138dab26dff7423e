//! syncjournal's own sides: `append` with `PersistMode::Sync` (1 and 8 threads), `append_batch`,
//! `Store::apply` of one change set (durable group); `Buffered` and `Batched` appends (no-sync
//! group).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use syncjournal::{Journal, PersistMode, Store};

use crate::cases::durable::Case;
use crate::harness::{
    BATCHED_INTERVAL, Clock, FRAME_128, P128, REGION_NOSYNC, SEGMENT_64M, SEGMENT_DATA_OFFSET,
    Tally, base_payload, open_journal, repeat_for, run_threads, settle, stamp,
};
use crate::workload::cert_changeset;

/// syncjournal `append`, `PersistMode::Sync`.
pub struct SjAppend {
    pub j: Journal,
    pub threads: usize,
}

impl Case for SjAppend {
    fn run(&mut self, d: Duration) -> Tally {
        let j = &self.j;
        run_threads(self.threads, |t, start| {
            let mut payload = base_payload::<P128>(100 + t as u64);
            repeat_for(start, d, |n| {
                stamp(&mut payload, n);
                j.append(&payload).expect("append");
            })
        })
    }
}

/// syncjournal `append_batch` of 1000 × 128 B, `PersistMode::Sync`.
pub struct SjBatch {
    pub j: Journal,
    pub batch: Vec<[u8; P128]>,
    pub n: u64,
}

impl Case for SjBatch {
    fn run(&mut self, d: Duration) -> Tally {
        let start = Clock::start();
        let first = self.n;
        loop {
            for p in self.batch.iter_mut() {
                stamp(p, self.n);
                self.n += 1;
            }
            self.j
                .append_batch(self.batch.iter())
                .expect("append_batch");
            if start.elapsed() >= d {
                break;
            }
        }
        start.tally(self.n - first)
    }
}

/// syncjournal `Store::apply` of one certificate upsert per change set, durable default mode.
pub struct SjStore {
    pub store: Store,
    pub threads: usize,
    pub n: AtomicU64,
}

impl Case for SjStore {
    fn run(&mut self, d: Duration) -> Tally {
        let (store, counter) = (&self.store, &self.n);
        run_threads(self.threads, |_, start| {
            repeat_for(start, d, |_| {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                store.apply(&cert_changeset(i)).expect("store apply");
            })
        })
    }
}

/// Buffered appends into a fresh journal with one 256 MiB segment, until `d` is spent or the
/// segment is full (no rotation, like the raw loop). Only the appends are timed.
pub fn sj_buffered(dir: &Path, threads: usize, d: Duration) -> Tally {
    let jdir = dir.join(format!("j-buffered-{threads}t"));
    let j = open_journal(&jdir, PersistMode::Buffered, REGION_NOSYNC);
    let cap = ((REGION_NOSYNC - SEGMENT_DATA_OFFSET) / FRAME_128) as u64;
    let reserved = AtomicU64::new(0);
    let t = run_threads(threads, |t, start| {
        let mut payload = base_payload::<P128>(400 + t as u64);
        let mut n = 0u64;
        'outer: loop {
            // Reserve 256 records at a time; look at the clock once per reservation.
            let from = reserved.fetch_add(256, Ordering::Relaxed);
            if from >= cap {
                break;
            }
            for k in 0..256.min(cap - from) {
                stamp(&mut payload, from + k);
                j.append(&payload).expect("append");
                n += 1;
            }
            if start.elapsed() >= d {
                break 'outer;
            }
        }
        n
    });
    drop(j);
    settle(&jdir);
    t
}

/// Batched appends (background msync every 5 ms, default 64 MiB segments) for `d`.
pub fn sj_batched(dir: &Path, threads: usize, d: Duration) -> Tally {
    let jdir = dir.join(format!("j-batched-{threads}t"));
    let j = open_journal(
        &jdir,
        PersistMode::Batched {
            interval: BATCHED_INTERVAL,
        },
        SEGMENT_64M,
    );
    let t = run_threads(threads, |t, start| {
        let mut payload = base_payload::<P128>(500 + t as u64);
        let mut n = 0u64;
        loop {
            for _ in 0..64 {
                stamp(&mut payload, n);
                j.append(&payload).expect("append");
                n += 1;
            }
            if start.elapsed() >= d {
                break;
            }
        }
        n
    });
    drop(j);
    settle(&jdir);
    t
}
