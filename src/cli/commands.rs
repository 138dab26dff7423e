//! The work behind each command, done through the library. Output goes to `out` (stdout);
//! progress and logs go to stderr.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use syncjournal::error::lsn_span;
use syncjournal::event::{KIND_CHANGESET, decode_event};
use syncjournal::inspect::inspect;
use syncjournal::journal::Until;
use syncjournal::journal::offline::{OfflineReader, journal_id_of, owner_of, read_head};
use syncjournal::replay::offline_status;
use syncjournal::{
    ChangeSet, Error, Journal, JournalOptions, Lsn, Mutation, RecoveryMode, RejectPolicy,
    ReplayOptions, Replayer, TargetOptions, Value,
};

use crate::cli::args::{QuarantineCommand, RecoverMode};
use crate::cli::fmt::{bytes, duration, escape, say, timestamp, utc};
use crate::cli::kinds::KindCheck;

/// Exit codes (see `args::EXIT_CODES`).
pub const OK: u8 = 0;
/// Damage found (`verify`, `dump`, `status`; `check-target`: in the target).
pub const DAMAGE: u8 = 1;
/// Usage error, or the operation failed.
pub const ERROR: u8 = 2;
/// Status: the last sync failed.
pub const FAILING: u8 = 3;
/// Status: pending entries are not moving.
pub const STALLED: u8 = 4;
/// Status: the target's watermark is behind the acknowledgement (it lost entries).
pub const TARGET_BEHIND: u8 = 5;
/// Status: the target is damaged, or ahead of this journal (not the target it fed).
pub const TARGET_BAD: u8 = 6;

/// A command's failure.
#[derive(Debug)]
pub enum Failure {
    /// From the library.
    Lib(Error),
    /// Damage found in the journal (after printing what could be read): exit 1.
    Damage(Error),
    /// Writing the output failed (a broken pipe is not an error: see `main`).
    Io(std::io::Error),
    /// Something else, already phrased for the user.
    Msg(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Lib(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Lib(e) | Failure::Damage(e) => write!(f, "{e}"),
            Failure::Io(e) => write!(f, "writing output: {e}"),
            Failure::Msg(m) => f.write_str(m),
        }
    }
}

impl Failure {
    /// The exit code `main` gives for it: [`DAMAGE`] for damage, 2 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Damage(_) => DAMAGE,
            _ => ERROR,
        }
    }
}

/// A command's outcome: an exit code.
pub type Outcome = Result<u8, Failure>;

/// `dump`: every record from `from` to `to`, decoded; damage is reported (exit 1) after the
/// records before it, never passed over silently.
pub fn dump(
    out: &mut dyn Write,
    dir: &Path,
    from: Option<Lsn>,
    to: Option<Lsn>,
    json_out: bool,
) -> Outcome {
    let damage = |e: Error| {
        if is_journal_damage(&e) {
            Failure::Damage(e)
        } else {
            Failure::Lib(e)
        }
    };
    let id = journal_id_of(dir).map_err(damage)?;
    // While an owner has the journal open, only what it has made durable is complete: bytes
    // after that may be a write in progress.
    let until = match owner_of(dir)? {
        Some(holder) => {
            let durable = match read_head(dir, id) {
                Some(h) => h.durable_lsn,
                None => {
                    let acked = offline_status(dir, None, Duration::ZERO)
                        .map_err(damage)?
                        .status
                        .acked_lsn;
                    eprintln!(
                        "syncjournal: note: {} has the journal open but publishes no valid HEAD (how far its records are durable): only entries up to the acknowledged LSN {acked} are shown, later bytes may be a write in progress",
                        holder.map_or("a process".into(), |p| format!("pid {p}"))
                    );
                    acked
                }
            };
            Until::Durable(durable.min(to.unwrap_or(Lsn::MAX)))
        }
        // Closed: read to the end, checking every byte, and stop after `to`.
        None => Until::End,
    };
    let first = syncjournal::journal::offline::first_retained(dir, id).map_err(damage)?;
    let start = from.unwrap_or(first).max(first);
    let mut reader = OfflineReader::open(dir, start, until).map_err(damage)?;
    loop {
        if to.is_some_and(|to| reader.next_lsn() > to) {
            break;
        }
        let Some(rec) = reader.next_ref().map_err(damage)? else {
            break;
        };
        if let Some(gap) = rec.gap() {
            if json_out {
                writeln!(
                    out,
                    "{}",
                    json!({"lsn": gap.start, "gap_to": gap.end, "lost": true})
                )?;
            } else {
                say!(out, "{}  LOST (a gap left by salvage)", lsn_span(&gap))?;
            }
            continue;
        }
        if rec.kind == KIND_CHANGESET {
            match decode_event::<ChangeSet>(rec.payload) {
                Ok((at, cs)) => {
                    if json_out {
                        writeln!(out, "{}", changeset_json(rec.lsn, at, &cs))?;
                    } else {
                        say!(
                            out,
                            "LSN {}  {}  {} mutation{}",
                            rec.lsn,
                            utc(at),
                            cs.mutations.len(),
                            if cs.mutations.len() == 1 { "" } else { "s" }
                        )?;
                        for m in &cs.mutations {
                            say!(out, "  {m}")?;
                        }
                    }
                    continue;
                }
                Err(e) => {
                    if json_out {
                        writeln!(
                            out,
                            "{}",
                            json!({"lsn": rec.lsn, "kind": rec.kind, "error": e})
                        )?;
                    } else {
                        say!(out, "LSN {}  UNDECODABLE change set: {e}", rec.lsn)?;
                    }
                    continue;
                }
            }
        }
        let head: String = rec
            .payload
            .iter()
            .take(32)
            .map(|b| format!("{b:02x}"))
            .collect();
        if json_out {
            writeln!(
                out,
                "{}",
                json!({"lsn": rec.lsn, "kind": rec.kind, "bytes": rec.payload.len(), "head_hex": head})
            )?;
        } else {
            say!(
                out,
                "LSN {}  kind {:#04x}, {} bytes: {head}{}",
                rec.lsn,
                rec.kind,
                rec.payload.len(),
                if rec.payload.len() > 32 { "…" } else { "" }
            )?;
        }
    }
    Ok(OK)
}

/// True for the errors that mean the journal's files are damaged (`verify` exits 1 for them
/// too): damaged bytes, a missing segment, records missing that must be there.
fn is_journal_damage(e: &Error) -> bool {
    matches!(
        e,
        Error::Corrupt(_) | Error::MissingSegment { .. } | Error::Discontinuity { .. }
    )
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => json!(i),
        Value::Real(r) => json!(r),
        Value::Text(t) => json!(t),
        Value::Blob(b) => {
            json!({"blob_hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>()})
        }
    }
}

fn columns_json(c: &[(String, Value)]) -> serde_json::Value {
    serde_json::Value::Object(c.iter().map(|(k, v)| (k.clone(), value_json(v))).collect())
}

fn changeset_json(lsn: Lsn, at: u64, cs: &ChangeSet) -> serde_json::Value {
    let muts: Vec<serde_json::Value> = cs
        .mutations
        .iter()
        .map(|m: &Mutation| {
            let mut o = json!({"op": m.op(), "table": m.table(), "key": columns_json(m.key())});
            if !m.values().is_empty() {
                o["values"] = columns_json(m.values());
            }
            o
        })
        .collect();
    json!({"lsn": lsn, "created_at_ms": at, "kind": KIND_CHANGESET, "mutations": muts})
}

/// `verify`
pub fn verify(out: &mut dyn Write, dir: &Path) -> Outcome {
    let ins = match inspect(dir) {
        Ok(ins) => ins,
        // Damage that stops the examination itself (a damaged header, a truncated or missing
        // segment, a segment of another journal) is still damage found.
        // (Files that are not this journal's are refused instead: exit 2.)
        Err(e @ (Error::Corrupt(_) | Error::MissingSegment { .. })) => {
            say!(out, "journal {}", dir.display())?;
            say!(out, "DAMAGE: {e}")?;
            say!(
                out,
                "next: stop the application, then run `syncjournal recover {} --mode salvage`, or move the file aside and restore it from a backup",
                dir.display()
            )?;
            return Ok(DAMAGE);
        }
        Err(e) => return Err(e.into()),
    };
    say!(
        out,
        "journal {} (id {})",
        dir.display(),
        ins.journal_id.map_or("none".into(), |i| i.to_string())
    )?;
    if let Some(holder) = ins.held_by {
        say!(
            out,
            "note: {} has the journal open; its last records may still be in flight",
            holder.map_or("a process".into(), |p| format!("pid {p}"))
        )?;
    }
    say!(
        out,
        "{} segment{}, {} records{}, {}, acknowledged up to LSN {}",
        ins.segments.len(),
        if ins.segments.len() == 1 { "" } else { "s" },
        ins.records,
        if ins.next_lsn > ins.first_lsn {
            format!(" (LSNs {} to {})", ins.first_lsn, ins.next_lsn - 1)
        } else {
            String::new()
        },
        bytes(ins.bytes),
        ins.ack.map_or(0, |a| a.acked_lsn)
    )?;
    for g in &ins.gaps {
        let plural = g.end > g.start + 1;
        say!(
            out,
            "gap: {} {} lost to damage earlier (salvaged)",
            lsn_span(g),
            if plural { "were" } else { "was" }
        )?;
    }
    if ins.is_clean() {
        say!(out, "OK: every record and the checksum chain verified")?;
        return Ok(OK);
    }
    say!(out, "DAMAGE: {} region(s)", ins.damage.len())?;
    for d in &ins.damage {
        say!(
            out,
            "  {} offset {} ({} bytes): {} — {}",
            d.segment.display(),
            d.offset,
            d.len,
            d.kind,
            if d.torn_tail {
                "torn tail (an incomplete last write)".to_string()
            } else if d.lost.is_empty() {
                "damage in durable data".to_string()
            } else {
                format!("damage in durable data; {} affected", lsn_span(&d.lost))
            }
        )?;
    }
    let only_tail = ins.damage.iter().all(|d| d.torn_tail);
    say!(
        out,
        "next: stop the application, then run `syncjournal recover {}{}` (damaged bytes are kept in {}/forensics)",
        dir.display(),
        if only_tail { "" } else { " --mode salvage" },
        dir.display()
    )?;
    Ok(DAMAGE)
}

/// `recover`
pub fn recover(out: &mut dyn Write, dir: &Path, mode: RecoverMode) -> Outcome {
    if !dir.is_dir() {
        return Err(Error::NotFound {
            dir: dir.to_path_buf(),
        }
        .into());
    }
    let opts = JournalOptions::new()
        .create_if_missing(false)
        .recovery_mode(match mode {
            RecoverMode::TornTail => RecoveryMode::TolerateTornTail,
            RecoverMode::Salvage => RecoveryMode::Salvage,
        });
    let journal = Journal::open(dir, opts)?;
    let r = journal.recovery_report().clone();
    journal.close()?;
    say!(out, "{r}")?;
    if r.cuts.is_empty() && r.removed_tmp_files == 0 && r.extended.is_empty() {
        say!(out, "nothing to repair")?;
    }
    for p in &r.extended {
        say!(
            out,
            "re-extended {} to the length its header states (someone had truncated it)",
            p.display()
        )?;
    }
    for c in &r.cuts {
        say!(
            out,
            "{} {} offset {}: {} bytes ({}){}{}",
            if c.torn_tail {
                "cut torn tail in"
            } else {
                "replaced damaged region in"
            },
            c.segment.display(),
            c.offset,
            c.len,
            c.kind,
            if c.records_dropped > 0 {
                format!(", {} unconfirmed records dropped", c.records_dropped)
            } else {
                String::new()
            },
            c.saved_to
                .as_ref()
                .map(|p| format!("; original bytes kept in {}", p.display()))
                .unwrap_or_default()
        )?;
    }
    for s in &r.skipped {
        say!(out, "{} lost (now a gap record)", lsn_span(s))?;
    }
    if r.removed_tmp_files > 0 {
        say!(
            out,
            "removed {} leftover temporary file(s)",
            r.removed_tmp_files
        )?;
    }
    Ok(OK)
}

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
pub fn sync(out: &mut dyn Write, dir: &Path, target: &Path, flags: SyncFlags) -> Outcome {
    let SyncFlags {
        follow,
        batch,
        quarantine,
        adopt_target,
    } = flags;
    if !dir.is_dir() {
        return Err(Error::NotFound {
            dir: dir.to_path_buf(),
        }
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
                            target.display(),
                            target.display()
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

/// `quarantine …`
pub fn quarantine(out: &mut dyn Write, cmd: QuarantineCommand) -> Outcome {
    let open = |dir: &Path, target: &Path| -> Result<Replayer, Failure> {
        Ok(Replayer::follower(
            dir,
            target,
            TargetOptions::new(),
            ReplayOptions::new(),
        )?)
    };
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
