//! `syncjournal conflicts list|show`: the conflicts recorded on the target, as a human reviews
//! them.

use std::io::Write;

use syncjournal::{ConflictRecord, Value};

use crate::cli::args::ConflictsCommand;
use crate::cli::fmt::{say, timestamp};
use crate::cli::outcome::{Failure, OK, Outcome};
use crate::cli::sync_cmds::follower;

/// `conflicts …`
pub fn conflicts(out: &mut dyn Write, cmd: ConflictsCommand) -> Outcome {
    let open = follower;
    match cmd {
        ConflictsCommand::List {
            dir,
            target,
            all,
            limit,
            json,
        } => {
            let mut r = open(&dir, &target.target)?;
            let list = r.conflicts(limit, all)?;
            let counts = r.state().conflicts;
            if json {
                let v = serde_json::json!({"resolved": counts.resolved, "pending": counts.pending, "conflicts": list});
                writeln!(out, "{}", serde_json::to_string_pretty(&v).expect("json"))?;
                return Ok(OK);
            }
            for c in &list {
                say!(
                    out,
                    "#{}  {}  {} {} {}  LSN {}  {}{}",
                    c.id,
                    timestamp(c.detected_at_ms),
                    c.kind,
                    c.table,
                    columns(&c.key),
                    c.lsn,
                    c.resolution,
                    if c.pending { " (pending)" } else { "" }
                )?;
            }
            say!(
                out,
                "this journal: {} conflicts resolved, {} pending a decision{}",
                counts.resolved,
                counts.pending,
                if counts.pending > 0 {
                    " (`syncjournal quarantine list` shows their entries)"
                } else {
                    ""
                }
            )?;
            Ok(OK)
        }
        ConflictsCommand::Show {
            dir,
            target,
            id,
            json,
        } => {
            let mut r = open(&dir, &target.target)?;
            let Some(c) = r.conflict(id)? else {
                return Err(Failure::Msg(format!("no conflict numbered {id}")));
            };
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&c).expect("json"))?;
            } else {
                show(out, &c)?;
            }
            Ok(OK)
        }
    }
}

fn show(out: &mut dyn Write, c: &ConflictRecord) -> std::io::Result<()> {
    let row = |r: &Option<Vec<(String, Value)>>| match r {
        Some(cols) => columns(cols),
        None => "(no row)".into(),
    };
    say!(out, "conflict #{} ({})", c.id, c.kind)?;
    say!(out, "  row:        {} {}", c.table, columns(&c.key))?;
    say!(
        out,
        "  local:      journal {} LSN {} (HLC {}): {}",
        c.journal_id,
        c.lsn,
        c.local_hlc,
        c.summary
    )?;
    say!(out, "    writes:   {}", row(&c.local_row))?;
    say!(
        out,
        "  base:       change {}: {}",
        c.base_seq,
        match &c.base_row {
            Some(b) => row(b),
            None => "(not in the change log)".into(),
        }
    )?;
    say!(
        out,
        "  remote:     journal {} change {} (HLC {})",
        c.remote_journal_id,
        c.remote_seq,
        c.remote_hlc
    )?;
    say!(out, "  target had: {}", row(&c.target_row))?;
    say!(
        out,
        "  resolution: {}{}",
        c.resolution,
        if c.pending {
            " — pending: the entry is quarantined (`syncjournal quarantine retry|discard`)"
        } else {
            ""
        }
    )?;
    if let Some(r) = &c.result_row {
        say!(out, "  wrote:      {}", columns(r))?;
    }
    say!(out, "  detected:   {}", timestamp(c.detected_at_ms))
}

fn columns(cols: &[(String, Value)]) -> String {
    let parts: Vec<String> = cols.iter().map(|(n, v)| format!("{n}={v}")).collect();
    format!("[{}]", parts.join(", "))
}
