//! `syncjournal status`: the sync status as a table, JSON, or the Prometheus text exposition
//! format, and its exit code for monitoring.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use syncjournal::replay::{OfflineStatus, PendingBasis, SyncState, offline_status_of};

use crate::cli::args::StatusFormat;
use crate::cli::fmt::{bytes, duration, escape, timestamp};
use crate::cli::outcome::{DAMAGE, FAILING, OK, Outcome, STALLED, TARGET_BAD, TARGET_BEHIND};

/// The verdict, with journal damage (which only an offline read can find) first.
fn verdict(st: &OfflineStatus) -> (&'static str, u8) {
    if st.journal_error.is_some() {
        return ("DAMAGED", DAMAGE);
    }
    let state = st.status.state;
    let code = match state {
        SyncState::InSync | SyncState::Syncing => OK,
        SyncState::Stalled => STALLED,
        SyncState::TargetBehind => TARGET_BEHIND,
        SyncState::TargetDamaged | SyncState::TargetAhead => TARGET_BAD,
        _ => FAILING,
    };
    (state.label(), code)
}

/// `status`
pub fn status(
    out: &mut dyn Write,
    dir: &Path,
    target: Option<&syncjournal::TargetSpec>,
    format: StatusFormat,
    stalled_after: Duration,
) -> Outcome {
    let st = offline_status_of(dir, target, stalled_after)?;
    let (label, code) = verdict(&st);
    let lease = target.and_then(|t| t.sqlite_path()).map(lease_line);
    match format {
        StatusFormat::Json => {
            let mut v = serde_json::to_value(&st)
                .map_err(|e| crate::cli::outcome::Failure::Msg(format!("status as JSON: {e}")))?;
            v["verdict"] = json!(label);
            v["exit_code"] = json!(code);
            if let Some(l) = &lease {
                v["writer_lease"] = json!(l);
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&v).expect("json"))?;
        }
        StatusFormat::Prometheus => prometheus(out, &st, code)?,
        StatusFormat::Text => {
            text(out, &st, label)?;
            if let Some(l) = &lease {
                writeln!(out, "{:<14}{}", "writer lease", escape(l))?;
            }
        }
    }
    Ok(code)
}

/// Who holds the SQLite target's writer lease, as a line of the status.
fn lease_line(target: &Path) -> String {
    match syncjournal::target::lease_holder(target) {
        Ok(None) => "free".into(),
        Ok(Some(h)) => format!(
            "held by host {} pid {}{} since {} (renewal {} of a {} ms lease)",
            h.host,
            h.pid,
            h.journal
                .as_deref()
                .map(|j| format!(" journal {j}"))
                .unwrap_or_default(),
            timestamp(h.since_unix_ms),
            h.counter,
            h.lease_ms
        ),
        Err(e) => format!("unreadable: {e}"),
    }
}

fn text(out: &mut dyn Write, st: &OfflineStatus, verdict: &str) -> std::io::Result<()> {
    let s = &st.status;
    let row = |out: &mut dyn Write, k: &str, v: String| writeln!(out, "{k:<14}{}", escape(&v));
    row(
        out,
        "journal",
        format!("{} (id {})", st.dir.display(), s.journal_id),
    )?;
    row(
        out,
        "owner",
        match st.owner {
            Some(Some(pid)) => format!("pid {pid} has the journal open"),
            Some(None) => "a process has the journal open".into(),
            None => "none (the journal is closed)".into(),
        },
    )?;
    row(out, "head LSN", s.head_lsn.to_string())?;
    if let Some(e) = &st.journal_error {
        row(
            out,
            "damage",
            format!("{e} (records after it cannot be read; run `syncjournal verify`)"),
        )?;
    }
    row(
        out,
        "acked LSN",
        format!(
            "{}{}",
            s.acked_lsn,
            s.last_success_ms
                .map(|t| format!("  (last successful sync {})", timestamp(t)))
                .unwrap_or_default()
        ),
    )?;
    let seen = match (st.last_seen.target_lsn, st.last_seen.at_ms) {
        (Some(l), Some(at)) => format!("; last seen by the replayer: {l} at {}", timestamp(at)),
        _ => String::new(),
    };
    row(
        out,
        "target LSN",
        match (s.target_lsn, &st.target_error) {
            (_, Some(e)) => format!("unreadable: {e}{seen}"),
            (Some(l), None) => l.to_string(),
            (None, None) => format!("unknown (pass --target to read it){seen}"),
        },
    )?;
    row(
        out,
        "pending",
        if s.pending_entries == 0 {
            "0 entries".into()
        } else {
            format!(
                "{} entries, {}{}",
                s.pending_entries,
                bytes(s.pending_bytes),
                s.oldest_pending_age()
                    .map(|a| format!(", oldest {} old", duration(a)))
                    .unwrap_or_default()
            )
        } + match s.pending_basis {
            PendingBasis::Target => "",
            PendingBasis::Acknowledgement => " (counted from the acknowledgement)",
        },
    )?;
    if let Some(b) = &s.target_behind {
        row(
            out,
            "target behind",
            format!(
                "{} acknowledged entries are not on the target; {}",
                b.entries,
                if b.retained {
                    format!(
                        "the journal still holds them: run `syncjournal sync {} --target <DB>`",
                        st.dir.display()
                    )
                } else {
                    "some were already retired from the journal: restore a newer backup of the target, or re-seed it".into()
                }
            ),
        )?;
    }
    if s.lost_writes > 0 {
        row(
            out,
            "lost writes",
            format!(
                "{} time(s){}",
                s.lost_writes,
                s.last_lost_writes
                    .as_ref()
                    .map(|l| format!(", last {}: {}", timestamp(l.at_ms), l.describe()))
                    .unwrap_or_default()
            ),
        )?;
    }
    if let Some(d) = &s.target_damaged {
        row(
            out,
            "target damage",
            format!("{d} (the replayer does not write into it; run `syncjournal check-target`)"),
        )?;
    }
    row(out, "quarantined", s.quarantined.to_string())?;
    if let Some(t) = s.lease_waiting_since_ms {
        row(
            out,
            "lease wait",
            format!(
                "waiting for the writer lease since {} (another machine holds it)",
                timestamp(t)
            ),
        )?;
    }
    row(
        out,
        "conflicts",
        format!(
            "{} resolved, {} pending a decision{}",
            s.conflicts.resolved,
            s.conflicts.pending,
            if s.conflicts.resolved + s.conflicts.pending > 0 {
                " (`syncjournal conflicts list`)"
            } else {
                ""
            }
        ),
    )?;
    match &s.last_error {
        Some(e) => {
            row(
                out,
                "last error",
                format!("{} ({})", e.message, timestamp(e.at_ms)),
            )?;
            if let (Some(lsn), Some(entry)) = (e.lsn, &e.entry) {
                row(out, "  at entry", format!("LSN {lsn}: {entry}"))?;
            }
        }
        None => row(out, "last error", "none".into())?,
    }
    if let Some(since) = s.stalled_since_ms {
        row(out, "head waiting", format!("since {}", timestamp(since)))?;
    }
    for n in &st.notes {
        row(out, "note", n.clone())?;
    }
    row(out, "state", verdict.into())
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The status in the Prometheus text exposition format (for the node_exporter textfile
/// collector): one gauge or counter per figure, every one labelled with the journal.
fn prometheus(out: &mut dyn Write, st: &OfflineStatus, code: u8) -> std::io::Result<()> {
    let s = &st.status;
    let labels = format!(
        "journal_id=\"{}\",dir=\"{}\"",
        s.journal_id,
        label(&st.dir.display().to_string())
    );
    let secs = |ms: u64| ms as f64 / 1000.0;
    let mut metric = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        let Some(v) = value else { return Ok(()) };
        writeln!(out, "# HELP syncjournal_{name} {help}")?;
        writeln!(out, "# TYPE syncjournal_{name} {kind}")?;
        writeln!(out, "syncjournal_{name}{{{labels}}} {v}")
    };
    metric(
        "head_lsn",
        "gauge",
        "The journal's last durable LSN.",
        Some(s.head_lsn as f64),
    )?;
    metric(
        "acked_lsn",
        "gauge",
        "The LSN the journal has acknowledged (applied on the target, then recorded locally).",
        Some(s.acked_lsn as f64),
    )?;
    metric(
        "target_lsn",
        "gauge",
        "The target's watermark for this journal, as read by this status.",
        s.target_lsn.map(|l| l as f64),
    )?;
    metric(
        "target_read_timestamp_seconds",
        "gauge",
        "When the target's watermark was read.",
        s.target_read_at_ms.map(secs),
    )?;
    metric(
        "pending_entries",
        "gauge",
        "Durable entries not on the target (counted from the acknowledgement if the target was not read).",
        Some(s.pending_entries as f64),
    )?;
    metric(
        "pending_bytes",
        "gauge",
        "Bytes of the pending entries in the journal.",
        Some(s.pending_bytes as f64),
    )?;
    metric(
        "oldest_pending_timestamp_seconds",
        "gauge",
        "When the oldest pending entry was created.",
        s.oldest_pending_ms.map(secs),
    )?;
    metric(
        "stalled_since_timestamp_seconds",
        "gauge",
        "Since when the head of the queue has not moved while entries are pending.",
        s.stalled_since_ms.map(secs),
    )?;
    metric(
        "last_success_timestamp_seconds",
        "gauge",
        "When a sync last succeeded.",
        s.last_success_ms.map(secs),
    )?;
    metric(
        "failing_since_timestamp_seconds",
        "gauge",
        "Since when sync attempts have been failing.",
        s.failing_since_ms.map(secs),
    )?;
    metric(
        "quarantined_entries",
        "gauge",
        "Entries the target refused and that are quarantined.",
        Some(s.quarantined as f64),
    )?;
    metric(
        "conflicts_resolved",
        "gauge",
        "Conflicts this journal's entries met on the target, settled.",
        Some(s.conflicts.resolved as f64),
    )?;
    metric(
        "conflicts_pending",
        "gauge",
        "Conflicts whose entry waits in quarantine for a human decision.",
        Some(s.conflicts.pending as f64),
    )?;
    metric(
        "target_behind_entries",
        "gauge",
        "Acknowledged entries the target no longer holds.",
        Some(s.target_behind.as_ref().map_or(0, |b| b.entries) as f64),
    )?;
    metric(
        "lost_writes_total",
        "counter",
        "Times the target's watermark was found to have gone back.",
        Some(s.lost_writes as f64),
    )?;
    metric(
        "journal_damaged",
        "gauge",
        "1 if the journal holds damage that stops reading it.",
        Some(f64::from(u8::from(st.journal_error.is_some()))),
    )?;
    metric(
        "status_exit_code",
        "gauge",
        "The exit code `syncjournal status` gives for this state (0 ok).",
        Some(f64::from(code)),
    )?;
    writeln!(
        out,
        "# HELP syncjournal_state The sync state (1 for the current one)."
    )?;
    writeln!(out, "# TYPE syncjournal_state gauge")?;
    for state in [
        SyncState::InSync,
        SyncState::Syncing,
        SyncState::Stalled,
        SyncState::Failing,
        SyncState::TargetUnreadable,
        SyncState::TargetBehind,
        SyncState::TargetAhead,
        SyncState::TargetDamaged,
        SyncState::Poisoned,
    ] {
        let name = state.label().to_ascii_lowercase().replace(' ', "_");
        writeln!(
            out,
            "syncjournal_state{{{labels},state=\"{name}\"}} {}",
            u8::from(state == s.state && st.journal_error.is_none())
        )?;
    }
    Ok(())
}
