//! okaywal, the write-ahead log crate: one 128-byte entry per commit, 1 and 8 threads.

use std::time::Duration;

use okaywal::WriteAheadLog;

use crate::cases::durable::Case;
use crate::harness::{P128, Tally, base_payload, repeat_for, run_threads, stamp};

/// okaywal: one 128-byte chunk per entry, committed (fsynced, shared among concurrent
/// committers) each time. Default configuration, a no-op checkpointer.
pub struct Okaywal {
    pub wal: WriteAheadLog,
    pub threads: usize,
}

impl Case for Okaywal {
    fn run(&mut self, d: Duration) -> Tally {
        let wal = &self.wal;
        run_threads(self.threads, |t, start| {
            let mut payload = base_payload::<P128>(300 + t as u64);
            repeat_for(start, d, |n| {
                stamp(&mut payload, n);
                let mut e = wal.begin_entry().expect("begin_entry");
                e.write_chunk(&payload).expect("write_chunk");
                e.commit().expect("commit");
            })
        })
    }
}
