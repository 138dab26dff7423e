//! The `durable` group: every case that waits for the disk, built fresh each rep and run in
//! slices of ~0.1 s in rotating order, so that the disk's latency swings hit every side alike.
//! The cases themselves live with their family (raw, outbox, okaywal, syncjournal).

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use okaywal::{LogVoid, WriteAheadLog};
use syncjournal::{PersistMode, Store, StoreOptions};

use crate::cases::okaywal::Okaywal;
use crate::cases::outbox::{FieldApp, Outbox};
use crate::cases::raw::{Fdatasync, RawMsync, WakeupRounds};
use crate::cases::syncjournal::{SjAppend, SjBatch, SjStore};
use crate::harness::{
    Config, P1K, P128, SEGMENT_64M, SLICE, THREADS, Tally, base_payload, fmt_num, open_journal,
    settle,
};
use crate::report::Results;
use crate::workload::CERT_SCHEMA;

/// One measured side of the durable group: runs one slice at a time.
pub trait Case {
    fn run(&mut self, d: Duration) -> Tally;
}

/// Derived: `THREADS` x raw_mmap_msync_each_128B, the group-commit ceiling of 8 closed-loop
/// threads (each has one record in flight; one flush per group of at most 8).
pub const CEILING_8T: &str = "ceiling_8t_x_msync_each";
/// Derived: the same ceiling once waking the group is paid for: `THREADS` records per
/// (one msync + one barrier round of `THREADS` threads), per rep.
pub const CEILING_8T_WAKE: &str = "ceiling_8t_msync_plus_wakeup";

/// Durable group cases, in display order.
pub const DURABLE_CASES: &[&str] = &[
    "raw_fdatasync_4KiB_append",
    "raw_fdatasync_4KiB_overwrite",
    "raw_mmap_msync_each_128B",
    "raw_mmap_msync_each_1KiB",
    "raw_mmap_msync_1000_128B",
    "raw_mmap_msync_1000_1KiB",
    "raw_wakeup_rounds_8t",
    "outbox_full_1t",
    "outbox_normal_1t",
    "outbox_full_8t",
    "field_app_full_1t",
    "field_app_full_8t",
    "okaywal_1t_128B",
    "okaywal_8t_128B",
    "sj_append_sync_1t_128B",
    "sj_append_sync_8t_128B",
    "sj_append_batch_1000x128B",
    "sj_store_1t",
    "sj_store_8t",
];

pub fn build_durable(name: &str, dir: &Path) -> Box<dyn Case> {
    std::fs::create_dir_all(dir).expect("case dir");
    let journal = || open_journal(&dir.join("journal"), PersistMode::Sync, SEGMENT_64M);
    let store = || {
        Store::open(
            dir.join("journal"),
            dir.join("cache.db"),
            StoreOptions::new().cache_schema(CERT_SCHEMA),
        )
        .expect("open store")
    };
    match name {
        "raw_fdatasync_4KiB_append" => Box::new(Fdatasync::new(dir, false)),
        "raw_fdatasync_4KiB_overwrite" => Box::new(Fdatasync::new(dir, true)),
        "raw_mmap_msync_each_128B" => Box::new(RawMsync::<P128>::new(dir, "r", 1)),
        "raw_mmap_msync_each_1KiB" => Box::new(RawMsync::<P1K>::new(dir, "r", 1)),
        "raw_mmap_msync_1000_128B" => Box::new(RawMsync::<P128>::new(dir, "r", 1000)),
        "raw_mmap_msync_1000_1KiB" => Box::new(RawMsync::<P1K>::new(dir, "r", 1000)),
        "raw_wakeup_rounds_8t" => Box::new(WakeupRounds { threads: THREADS }),
        "outbox_full_1t" => Box::new(Outbox::new(dir, true, 1)),
        "outbox_normal_1t" => Box::new(Outbox::new(dir, false, 1)),
        "outbox_full_8t" => Box::new(Outbox::new(dir, true, THREADS)),
        "field_app_full_1t" => Box::new(FieldApp::new(dir, 1)),
        "field_app_full_8t" => Box::new(FieldApp::new(dir, THREADS)),
        "okaywal_1t_128B" | "okaywal_8t_128B" => Box::new(Okaywal {
            wal: WriteAheadLog::recover(dir.join("wal"), LogVoid).expect("okaywal"),
            threads: if name.contains("_8t") { THREADS } else { 1 },
        }),
        "sj_append_sync_1t_128B" => Box::new(SjAppend {
            j: journal(),
            threads: 1,
        }),
        "sj_append_sync_8t_128B" => Box::new(SjAppend {
            j: journal(),
            threads: THREADS,
        }),
        "sj_append_batch_1000x128B" => Box::new(SjBatch {
            j: journal(),
            batch: vec![base_payload::<P128>(7); 1000],
            n: 0,
        }),
        "sj_store_1t" | "sj_store_8t" => Box::new(SjStore {
            store: store(),
            threads: if name.ends_with("_8t") { THREADS } else { 1 },
            n: AtomicU64::new(0),
        }),
        other => unreachable!("unknown durable case {other}"),
    }
}

pub fn group_durable(cfg: &Config, dir: &Path, res: &mut Results) {
    let names: Vec<&str> = DURABLE_CASES
        .iter()
        .copied()
        .filter(|n| cfg.wants("durable", n))
        .collect();
    if names.is_empty() {
        return;
    }
    let d = cfg.duration();
    let slices = (d.as_secs_f64() / SLICE.as_secs_f64()).ceil().max(1.0) as usize;
    let slice = d / slices as u32;
    println!(
        "[durable] {} cases x {} reps x {:.2} s, in {slices} slices of {:.0} ms, rotating order",
        names.len(),
        cfg.reps,
        cfg.secs,
        slice.as_secs_f64() * 1e3
    );
    for rep in 0..cfg.reps {
        // Fresh files every rep, removed (and the machine synced) only at its end: no unlink
        // (an ext4 `discard`) lands in the middle of another case's slice.
        let rep_dir = dir.join(format!("durable-{rep}"));
        let mut cases: Vec<Box<dyn Case>> = names
            .iter()
            .enumerate()
            .map(|(k, n)| build_durable(n, &rep_dir.join(format!("{k:02}-{n}"))))
            .collect();
        rustix::fs::sync();
        let mut t = vec![Tally::default(); cases.len()];
        let k = cases.len();
        for s in 0..slices {
            for o in 0..k {
                // Rotate the order every slice, and start each rep elsewhere.
                let m = (s + o + rep * 5) % k;
                t[m].add(cases[m].run(slice));
            }
        }
        drop(cases);
        settle(&rep_dir);
        if let Some(k) = names.iter().position(|n| *n == "raw_mmap_msync_each_128B") {
            // With 8 closed-loop threads a group holds at most 8 records: 8 records per flush
            // is the most group commit can reach at this flush latency.
            res.push(CEILING_8T, THREADS as f64 * t[k].rate());
            if let Some(w) = names.iter().position(|n| *n == "raw_wakeup_rounds_8t") {
                // Seconds per group: one flush plus one round (all THREADS threads woken).
                let group_s = 1.0 / t[k].rate() + THREADS as f64 / t[w].rate();
                res.push(CEILING_8T_WAKE, THREADS as f64 / group_s);
            }
        }
        let mut line = format!("  rep {rep}:");
        for (n, t) in names.iter().zip(&t) {
            res.push_tally(n, t);
            line.push_str(&format!(" {n}={}", fmt_num(t.rate())));
        }
        println!("{line}");
    }
}
