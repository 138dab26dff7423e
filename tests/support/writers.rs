//! Two machines replaying at once into one SQLite target, each through its own path to the
//! file (a file opened without locks, or two mounts of one share): journals of non-idempotent
//! [`Bump`]s, and what the two left on the target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use syncjournal::{Journal, JournalEvent, JournalOptions, ReplayOptions, Replayer, TargetOptions};

use super::events::{Bump, fold, target_counters, target_log_stats};
use super::targets::TestTarget;

/// A journal in `dir` of `entries` bumps numbered from `base`, durable.
pub fn journal_of(dir: &Path, base: i64, entries: i64) -> Arc<Journal> {
    let j = Arc::new(Journal::open(dir, JournalOptions::new()).unwrap());
    for seq in base..base + entries {
        let payload = syncjournal::event::encode_event(0, &Bump::new(seq)).unwrap();
        j.append_kind(Bump::KIND, &payload).unwrap();
    }
    j.sync().unwrap();
    j
}

/// What two machines replaying at once left on the target.
pub struct Outcome {
    pub integrity: String,
    pub counters_right: bool,
    pub logged: i64,
    pub duplicated: usize,
    pub errors: Vec<String>,
    entries: i64,
}

impl Outcome {
    /// Every bump of both journals applied exactly once, and the file intact.
    pub fn intact(&self) -> bool {
        self.integrity == "ok"
            && self.counters_right
            && self.logged == 2 * self.entries
            && self.duplicated == 0
    }

    /// One line for a test's output.
    pub fn describe(&self) -> String {
        format!(
            "integrity {:?}, counters right {}, {} applications logged of {}, {} applied twice, {} sync errors",
            self.integrity,
            self.counters_right,
            self.logged,
            2 * self.entries,
            self.duplicated,
            self.errors.len()
        )
    }
}

/// Machines 0 and 1 (journals of `entries` bumps each, in `dir`) replay at once, machine `m`
/// into the target at `paths[m]`, with `topts`, batches of `batch`, retrying for up to a
/// minute; `check` reads the target afterwards (through a fresh connection).
pub fn two_writers(
    dir: &Path,
    paths: [PathBuf; 2],
    check: &TestTarget,
    topts: TargetOptions,
    entries: i64,
    batch: usize,
) -> Outcome {
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = paths
        .into_iter()
        .enumerate()
        .map(|(m, path)| {
            let j = journal_of(&dir.join(format!("j{m}")), m as i64 * 1_000_000, entries);
            let topts = topts.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut r: Replayer<Bump> = Replayer::new(
                    j,
                    path,
                    topts,
                    ReplayOptions::new()
                        .batch_entries_max(batch)
                        .retry_attempts_max(50)
                        .retry_delay_ms(1)
                        .retry_delay_max_ms(20),
                );
                barrier.wait();
                let mut errors = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let rep = r.sync_now();
                    match rep.error {
                        None => break,
                        Some(e) => {
                            errors.push(e.to_string());
                            if Instant::now() > deadline || errors.len() > 50 {
                                break;
                            }
                        }
                    }
                }
                errors
            })
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let integrity = check.integrity();
    let mut want: BTreeMap<i64, i64> = fold(&(0..entries).map(Bump::new).collect::<Vec<_>>());
    for (k, v) in fold(
        &(1_000_000..1_000_000 + entries)
            .map(Bump::new)
            .collect::<Vec<_>>(),
    ) {
        *want.entry(k).or_insert(0) += v;
    }
    let (counters_right, logged, duplicated) = if integrity == "ok" {
        let (rows, dups) = target_log_stats(check);
        (target_counters(check) == want, rows, dups.len())
    } else {
        (false, 0, 0)
    };
    Outcome {
        integrity,
        counters_right,
        logged,
        duplicated,
        errors,
        entries,
    }
}
