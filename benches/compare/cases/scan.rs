//! The `scan` group: `inspect` (verify) and `Journal::open` (recovery) of a prepared journal
//! of 128 B records, page cache warm, in GB/s of valid frame bytes.

use std::path::Path;
use std::time::Instant;

use syncjournal::{Journal, JournalOptions, PersistMode};

use crate::harness::{
    Config, FRAME_128, P128, SEGMENT_64M, SEGMENT_DATA_OFFSET, base_payload, open_journal, settle,
    stamp,
};
use crate::report::Results;

/// Writes a journal of `segments` full 64 MiB segments of 128-byte records, closed.
pub fn prepare_scan_journal(jdir: &Path, segments: usize) {
    let per_segment = ((SEGMENT_64M - SEGMENT_DATA_OFFSET) / FRAME_128) as u64;
    let records = segments as u64 * per_segment;
    let j = open_journal(jdir, PersistMode::Buffered, SEGMENT_64M);
    let base = base_payload::<P128>(5);
    let mut n = 0u64;
    while n < records {
        // Batches never straddle a segment boundary, so every segment is filled.
        let end = (n + 4096).min((n / per_segment + 1) * per_segment);
        j.append_batch((n..end).map(|i| {
            let mut p = base;
            stamp(&mut p, i);
            p
        }))
        .expect("append_batch");
        n = end;
    }
    j.close().expect("close");
}

pub fn group_scan(cfg: &Config, dir: &Path, res: &mut Results) {
    let want_inspect = cfg.wants("scan", "sj_verify_inspect");
    let want_open = cfg.wants("scan", "sj_recovery_open");
    if !want_inspect && !want_open {
        return;
    }
    let jdir = dir.join("scan-journal");
    let segments = cfg.scan_mib / 64;
    let t = Instant::now();
    prepare_scan_journal(&jdir, segments);
    println!(
        "[scan] journal of {segments} x 64 MiB segments of 128 B records prepared in {:.1?}; {} reps, warm cache",
        t.elapsed(),
        cfg.reps
    );
    let inspect = || {
        let start = Instant::now();
        let i = syncjournal::inspect::inspect(&jdir).expect("inspect");
        let wall = start.elapsed();
        assert!(i.is_clean(), "the scan journal must be intact");
        (i.bytes as f64 / wall.as_secs_f64() / 1e9, i.records)
    };
    let open = || {
        let start = Instant::now();
        let j = Journal::open(&jdir, JournalOptions::new()).expect("open for scan");
        let wall = start.elapsed();
        let r = j.recovery_report();
        assert!(r.cuts.is_empty(), "the scan journal must be intact");
        let out = (
            r.bytes as f64 / wall.as_secs_f64() / 1e9,
            r.bytes as f64 / r.duration.as_secs_f64() / 1e9,
            r.bytes,
        );
        drop(j);
        out
    };
    // Warm-up: pages into the cache, first-open effects.
    let _ = inspect();
    let _ = open();
    for rep in 0..cfg.reps {
        let mut line = format!("  rep {rep}:");
        let ops: [bool; 2] = if rep % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for first_inspect in ops {
            if first_inspect && want_inspect {
                let (gb, _) = inspect();
                res.push("sj_verify_inspect", gb);
                line.push_str(&format!(" inspect={gb:.3} GB/s"));
            }
            if !first_inspect && want_open {
                let (gb, gb_rep, bytes) = open();
                res.push("sj_recovery_open", gb);
                res.push("sj_recovery_open_report", gb_rep);
                line.push_str(&format!(
                    " open={gb:.3} GB/s (report.duration {gb_rep:.3}; {bytes} B)"
                ));
            }
        }
        println!("{line}");
    }
    settle(&jdir);
}
