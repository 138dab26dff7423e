//! The commands that read or repair a journal: `dump`, `verify`, `recover`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;
use syncjournal::error::JournalError;

use serde_json::json;

use syncjournal::error::lsn_span;
use syncjournal::event::{KIND_CHANGESET, decode_event};
use syncjournal::inspect::inspect;
use syncjournal::journal::Until;
use syncjournal::journal::offline::{OfflineReader, journal_id_of, owner_of, read_head};
use syncjournal::replay::offline_status;
use syncjournal::{ChangeSet, Error, Journal, JournalOptions, Lsn, Mutation, RecoveryMode, Value};

use crate::cli::args::RecoverMode;
use crate::cli::fmt::{bytes, say, utc};
use crate::cli::outcome::{DAMAGE, Failure, OK, Outcome};

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
        Error::Journal(JournalError::Corrupt(_))
            | Error::Journal(JournalError::MissingSegment { .. })
            | Error::Journal(JournalError::Discontinuity { .. })
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
        Err(
            e @ (Error::Journal(JournalError::Corrupt(_))
            | Error::Journal(JournalError::MissingSegment { .. })),
        ) => {
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
        return Err(Error::Journal(JournalError::NotFound {
            dir: dir.to_path_buf(),
        })
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
