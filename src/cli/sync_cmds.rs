//! The commands that replay a journal to a target: `sync` (once, or following the owner) and
//! `quarantine`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use syncjournal::error::JournalError;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use syncjournal::journal::offline::owner_of;
use syncjournal::{
    Error, Journal, JournalOptions, RejectPolicy, ReplayOptions, Replayer, TargetOptions,
    TargetSpec,
};

use crate::cli::args::QuarantineCommand;
use crate::cli::fmt::{duration, escape, say, timestamp};
use crate::cli::kinds::KindCheck;
use crate::cli::outcome::{Failure, OK, Outcome};

/// The options of `sync`.
#[derive(Debug, Clone, Copy)]
pub struct SyncFlags {
    /// `--follow`
    pub follow: bool,
    /// `--batch`
    pub batch: usize,
    /// `--quarantine`
    pub quarantine: bool,
    /// `--adopt-target`
    pub adopt_target: bool,
}

/// `sync`
pub fn sync(out: &mut dyn Write, dir: &Path, target: &TargetSpec, flags: SyncFlags) -> Outcome {
    let SyncFlags {
        follow,
        batch,
        quarantine,
        adopt_target,
    } = flags;
    if !dir.is_dir() {
        return Err(Error::Journal(JournalError::NotFound {
            dir: dir.to_path_buf(),
        })
        .into());
    }
    let replay = ReplayOptions::new()
        .adopt_target(adopt_target)
        .batch_entries_max(batch)
        .reject_policy(if quarantine {
            RejectPolicy::Quarantine
        } else {
            RejectPolicy::Stop
        });
    let stop = Arc::new(AtomicBool::new(false));
    if follow {
        let s = Arc::clone(&stop);
        ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))
            .map_err(|e| Failure::Msg(format!("cannot handle Ctrl-C: {e}")))?;
    }
    let progress = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} entries  {per_sec}  ETA {eta}  {msg}")
            .expect("template"),
    );
    let started = Instant::now();
    let mut total = 0u64;
    let mut quarantined = 0u64;
    let mut transactions = 0u64;
    let mut last_error: Option<Error> = None;
    let mut warned_target = false;
    let mut kinds = KindCheck::new(dir, target);
    loop {
        // Only change sets: a journal of an application's own event kind is refused before
        // the pass touches the target.
        if let Err(refused) = kinds.check() {
            progress.finish_and_clear();
            if follow {
                say!(
                    out,
                    "stopped: applied {total} entries{} in {transactions} transactions in {}",
                    quarantined_note(quarantined),
                    duration(started.elapsed())
                )?;
            }
            return Err(refused);
        }
        let owner = owner_of(dir)?;
        let report = if owner.is_none() {
            // Nobody owns the journal: own it for this pass (recovery, durable head, acks).
            let journal = Arc::new(Journal::open(
                dir,
                JournalOptions::new().create_if_missing(false),
            )?);
            let r = journal.recovery_report();
            if !r.cuts.is_empty() {
                say!(out, "recovered: {r}")?;
            }
            let mut replayer: Replayer = Replayer::new(
                Arc::clone(&journal),
                target,
                TargetOptions::new(),
                replay.clone(),
            );
            if let Some(other) = replayer.acknowledged_elsewhere()
                && !warned_target
            {
                warned_target = true;
                progress.suspend(|| {
                    eprintln!(
                        "syncjournal: note: {}",
                        escape(&format!(
                            "this journal is acknowledged against {other}: entries are applied to {} but not acknowledged, so retention keeps them for it (--adopt-target makes {} the journal's target)",
                            target, target
                        ))
                    )
                });
            }
            run_with_progress(&mut replayer, &progress)
        } else {
            let mut replayer: Replayer =
                Replayer::follower(dir, target, TargetOptions::new(), replay.clone())?;
            run_with_progress(&mut replayer, &progress)
        };
        total += report.applied;
        quarantined += report.quarantined;
        transactions += report.transactions;
        match report.error {
            Some(e) if !follow => {
                progress.finish_and_clear();
                say!(
                    out,
                    "applied {total} entries{} in {transactions} transactions; {} pending",
                    quarantined_note(quarantined),
                    report.pending
                )?;
                return Err(e.into());
            }
            Some(e) => {
                if last_error.as_ref().map(|l| l.to_string()) != Some(e.to_string()) {
                    progress.suspend(|| {
                        eprintln!("syncjournal: {}", escape(&format!("{e} (will retry)")));
                    });
                }
                last_error = Some(e);
            }
            None => last_error = None,
        }
        if !follow {
            progress.finish_and_clear();
            say!(
                out,
                "applied {total} entries{} in {transactions} transactions in {}; {} pending",
                quarantined_note(quarantined),
                duration(started.elapsed()),
                report.pending
            )?;
            return Ok(OK);
        }
        // Follow: wait for more, checking for Ctrl-C.
        let pause = if last_error.is_some() {
            Duration::from_millis(1000)
        } else {
            Duration::from_millis(200)
        };
        let until = Instant::now() + pause;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if stop.load(Ordering::SeqCst) {
            progress.finish_and_clear();
            say!(
                out,
                "stopped: applied {total} entries{} in {transactions} transactions in {}",
                quarantined_note(quarantined),
                duration(started.elapsed())
            )?;
            return Ok(OK);
        }
    }
}

fn quarantined_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" (and quarantined {n} the target refused: `syncjournal quarantine list`)")
    }
}

fn run_with_progress(replayer: &mut Replayer, progress: &ProgressBar) -> syncjournal::SyncReport {
    replayer.sync_now_with(&mut |p| {
        progress.set_length(p.applied + p.pending);
        progress.set_position(p.applied);
    })
}

/// A follower replayer of the journal in `dir` to `target`, with default options: what the
/// commands that look at or decide on the target's records of a journal work through.
pub fn follower(dir: &Path, target: &TargetSpec) -> Result<Replayer, Failure> {
    Ok(Replayer::follower(
        dir,
        target,
        TargetOptions::new(),
        ReplayOptions::new(),
    )?)
}

/// `quarantine …`
pub fn quarantine(out: &mut dyn Write, cmd: QuarantineCommand) -> Outcome {
    let open = follower;
    match cmd {
        QuarantineCommand::List { dir, target, json } => {
            let mut r = open(&dir, &target.target)?;
            let entries = r.quarantined()?;
            if json {
                let v: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|e| json!({"lsn": e.lsn, "kind": e.kind, "summary": e.summary, "error": e.error, "rejected_at_ms": e.rejected_at_ms}))
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&v).expect("json"))?;
            } else if entries.is_empty() {
                say!(out, "no quarantined entries")?;
            } else {
                for e in &entries {
                    say!(
                        out,
                        "LSN {}  {}  {}",
                        e.lsn,
                        timestamp(e.rejected_at_ms),
                        e.summary
                    )?;
                    say!(out, "    refused: {}", e.error)?;
                }
                say!(out, "{} quarantined entries", entries.len())?;
            }
            Ok(OK)
        }
        QuarantineCommand::Retry { dir, target, lsn } => {
            let mut r = open(&dir, &target.target)?;
            r.retry_quarantined(lsn)?;
            say!(out, "LSN {lsn} applied and removed from quarantine")?;
            Ok(OK)
        }
        QuarantineCommand::Discard { dir, target, lsn } => {
            let mut r = open(&dir, &target.target)?;
            if r.discard_quarantined(lsn)? {
                say!(
                    out,
                    "LSN {lsn} discarded from quarantine (it will not be applied)"
                )?;
                Ok(OK)
            } else {
                Err(Failure::Msg(format!("no quarantined entry has LSN {lsn}")))
            }
        }
    }
}

/// `syncjournal reseed`: rebuilds the cache of the journal in `dir` from the target.
pub fn reseed(
    out: &mut dyn Write,
    dir: &Path,
    cache: &Path,
    target: &TargetSpec,
    json: bool,
) -> Outcome {
    if !dir.is_dir() {
        return Err(Error::Journal(JournalError::NotFound {
            dir: dir.to_path_buf(),
        })
        .into());
    }
    if !cache.is_file() {
        return Err(Failure::Msg(format!(
            "cache {} does not exist (the application creates it with its tables)",
            cache.display()
        )));
    }
    let store: syncjournal::Store = syncjournal::Store::open(
        dir,
        cache,
        syncjournal::StoreOptions::new()
            .target(target.clone(), syncjournal::TargetOptions::new())
            .background_sync(false)
            .pull(false),
    )?;
    let r = store.reseed()?;
    store.close()?;
    if json {
        let text = serde_json::to_string_pretty(&r).map_err(|e| Failure::Msg(e.to_string()))?;
        writeln!(out, "{text}")?;
    } else {
        say!(
            out,
            "reseeded {}: {} rows from the target (change log at {}, journal applied there up to LSN {}); {} local entries not on the target applied again on top, {} refused by the target's rows",
            cache.display(),
            r.rows,
            r.cursor_seq,
            r.target_lsn,
            r.local_reapplied,
            r.local_refused
        )?;
    }
    Ok(OK)
}
