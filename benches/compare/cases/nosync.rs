//! The `nosync` group: CPU-bound cases (raw mmap + CRC copy loop never synced, cold and warm;
//! syncjournal `Buffered` and `Batched`), one unit at a time in rotating order after one
//! untimed warm-up round.

use std::path::Path;

use crate::cases::raw::raw_nosync;
use crate::cases::syncjournal::{sj_batched, sj_buffered};
use crate::harness::{Config, P1K, P128, THREADS, Tally};
use crate::report::Results;

pub const NOSYNC_UNITS: &[(&str, &[&str])] = &[
    (
        "raw128",
        &["raw_mmap_crc_128B_cold", "raw_mmap_crc_128B_warm"],
    ),
    (
        "raw1k",
        &["raw_mmap_crc_1KiB_cold", "raw_mmap_crc_1KiB_warm"],
    ),
    ("buf1", &["sj_append_buffered_1t_128B"]),
    ("buf8", &["sj_append_buffered_8t_128B"]),
    ("bat1", &["sj_append_batched_1t_128B"]),
    ("bat8", &["sj_append_batched_8t_128B"]),
];

pub fn group_nosync(cfg: &Config, dir: &Path, res: &mut Results) {
    let units: Vec<(&str, &[&str])> = NOSYNC_UNITS
        .iter()
        .copied()
        .filter(|(_, names)| names.iter().any(|n| cfg.wants("nosync", n)))
        .collect();
    if units.is_empty() {
        return;
    }
    let d = cfg.duration();
    println!(
        "[nosync] {} units x {} reps x ~{:.2} s, rotating order (one untimed warm-up round first)",
        units.len(),
        cfg.reps,
        cfg.secs
    );
    let run_unit = |unit: &str, res: Option<&mut Results>| {
        let got: Vec<(&str, Tally)> = match unit {
            "raw128" => {
                let (c, w) = raw_nosync::<P128>(&dir.join("raw128"), d);
                vec![("raw_mmap_crc_128B_cold", c), ("raw_mmap_crc_128B_warm", w)]
            }
            "raw1k" => {
                let (c, w) = raw_nosync::<P1K>(&dir.join("raw1k"), d);
                vec![("raw_mmap_crc_1KiB_cold", c), ("raw_mmap_crc_1KiB_warm", w)]
            }
            "buf1" => vec![("sj_append_buffered_1t_128B", sj_buffered(dir, 1, d))],
            "buf8" => vec![("sj_append_buffered_8t_128B", sj_buffered(dir, THREADS, d))],
            "bat1" => vec![("sj_append_batched_1t_128B", sj_batched(dir, 1, d))],
            "bat8" => vec![("sj_append_batched_8t_128B", sj_batched(dir, THREADS, d))],
            _ => unreachable!(),
        };
        if let Some(res) = res {
            for (n, t) in got {
                res.push_tally(n, &t);
            }
        }
    };
    // Warm-up: the first touch of fresh guest memory is slow on this VM.
    for (unit, _) in &units {
        if matches!(*unit, "raw128" | "buf1") {
            run_unit(unit, None);
        }
    }
    for rep in 0..cfg.reps {
        let k = units.len();
        for o in 0..k {
            let (unit, _) = units[(rep + o) % k];
            run_unit(unit, Some(res));
        }
        let mut line = format!("  rep {rep}:");
        for (_, names) in &units {
            for n in names.iter() {
                line.push_str(&format!(" {n}={}", res.last(n)));
            }
        }
        println!("{line}");
    }
}
