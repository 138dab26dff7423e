//! `syncjournal check-target`: a target database's health as a table or JSON, and its exit
//! code (0 healthy, 1 damaged, 2 unreadable or unusable by syncjournal).

use std::io::Write;
use syncjournal::error::TargetError;

use serde_json::json;

use syncjournal::Error;
use syncjournal::TargetSpec;
use syncjournal::replay::{TargetCheck, check_target_spec};

use crate::cli::fmt::{bytes, escape, timestamp};
use crate::cli::outcome::{DAMAGE, Failure, OK, Outcome};

/// Exit code of a target that syncjournal cannot use (WAL, foreign tables).
const UNUSABLE: u8 = 2;

/// `check-target`
pub fn check_target_cmd(out: &mut dyn Write, db: &TargetSpec, json_out: bool) -> Outcome {
    let check = match check_target_spec(db) {
        Ok(c) => c,
        Err(Error::Target(TargetError::Missing { path })) => {
            return Err(Failure::Msg(format!(
                "target {} does not exist: an unmounted share looks like this (the mount point is there, the file is not) — is the share mounted, is the path right? check-target never creates it",
                path.display()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let (verdict, code) = if check.is_damaged() {
        ("DAMAGED", DAMAGE)
    } else if !check.problems.is_empty() {
        ("UNUSABLE", UNUSABLE)
    } else {
        ("OK", OK)
    };
    if json_out {
        let mut v = serde_json::to_value(&check)
            .map_err(|e| Failure::Msg(format!("check as JSON: {e}")))?;
        v["verdict"] = json!(verdict);
        v["exit_code"] = json!(code);
        writeln!(out, "{}", serde_json::to_string_pretty(&v).expect("json"))?;
    } else {
        text(out, &check, verdict)?;
    }
    if code == UNUSABLE {
        // One line on stderr, as for every failure (the table above has the details).
        out.flush()?;
        eprintln!(
            "syncjournal: {}",
            escape(&format!(
                "target {}: {}",
                check.path.display(),
                check.problems.join("; ")
            ))
        );
    }
    Ok(code)
}

fn text(out: &mut dyn Write, c: &TargetCheck, verdict: &str) -> std::io::Result<()> {
    let row = |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "{k:<14}{}", escape(v));
    row(
        out,
        "target",
        &format!("{} ({})", c.path.display(), bytes(c.file_bytes)),
    )?;
    match &c.integrity {
        None => row(out, "integrity", "not checked (see below)")?,
        Some(i) if i.ok => row(out, "integrity", "ok (PRAGMA integrity_check)")?,
        Some(i) => {
            row(
                out,
                "integrity",
                &format!(
                    "FAILED: PRAGMA integrity_check reports{}:",
                    if i.stopped_early {
                        " (it stopped early: there may be more)"
                    } else {
                        ""
                    }
                ),
            )?;
            for l in &i.lines {
                row(out, "", &format!("  {l}"))?;
            }
        }
    }
    row(
        out,
        "journal mode",
        &if c.wal {
            "WAL: refused for a target on a share (syncjournal writes it with a rollback journal)"
                .to_string()
        } else if c.journal_mode == "rollback" {
            "rollback journal (syncjournal uses TRUNCATE; WAL would be refused)".to_string()
        } else {
            c.journal_mode.clone()
        },
    )?;
    for t in [&c.progress_table, &c.rejected_table] {
        let what = if let Some(e) = &t.error {
            format!("unreadable: {e}")
        } else if !t.exists {
            "not created yet (the first sync creates it)".into()
        } else if !t.missing_columns.is_empty() {
            format!("lacks column(s) {}", t.missing_columns.join(", "))
        } else {
            "ok (expected columns)".into()
        };
        row(
            out,
            if t.name.ends_with("progress") {
                "progress"
            } else {
                "quarantine"
            },
            &format!("{}: {what}", t.name),
        )?;
    }
    row(
        out,
        "journals",
        &match c.journals_total {
            0 => "none seen (no journal has synced to this target)".to_string(),
            n if n as usize > c.journals.len() => {
                format!("{n} seen (the first {} listed)", c.journals.len())
            }
            n => format!("{n} seen"),
        },
    )?;
    for j in &c.journals {
        row(
            out,
            "",
            &format!(
                "  {}  watermark {}  updated {}  quarantined {}",
                j.journal_id,
                j.watermark
                    .map_or_else(|| "invalid".to_string(), |w| w.to_string()),
                j.updated_at_ms
                    .map_or_else(|| "at an invalid time".to_string(), timestamp),
                j.quarantined
            ),
        )?;
    }
    for p in &c.problems {
        row(out, "problem", p)?;
    }
    row(
        out,
        "state",
        &match verdict {
            "DAMAGED" => format!(
                "DAMAGED: syncjournal does not write into it; restore it from a backup (each journal re-applies what it still holds past the backup's watermark) or rebuild it (`sqlite3 {} .recover | sqlite3 NEW.db`)",
                c.path.display()
            ),
            "UNUSABLE" => "UNUSABLE: syncjournal cannot sync to it as it is (see problem)".into(),
            _ => "OK".into(),
        },
    )
}
