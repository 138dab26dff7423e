//! Conflicts in a batch: the lookup of every stamped entry's rows in the change log (once per
//! batch, before anything is applied), and for an entry that meets a conflict the plan its
//! policies make of it — applied as it is, rewritten row by row, skipped, or refused — with the
//! records it leaves on the target (`sync-protocol.md` §4).

use std::collections::HashMap;

use uuid::Uuid;

use crate::error::Result;
use crate::event::{JournalEvent, STAMP_BYTES, STAMP_TAG, Stamp, decode_stamped_event};
use crate::format::Lsn;
use crate::journal::ack::now_ms;
use crate::mutation::{Columns, Mutation};
use crate::replay::conflict::{Conflict, ConflictKind, ConflictPolicies, Settle, decide, rewrite};
use crate::replay::source::SourceReader;
use crate::target::changes::{row_hash, row_identity};
use crate::target::{ConflictRows, NewConflict, Probe, Remote, Target};

/// A row of an entry that another journal changed after the entry's base.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    /// The row's identity.
    row_id: Vec<u8>,
    /// The other journal's latest change to it.
    remote: Remote,
}

/// The conflicting rows of a batch's entries, by LSN.
#[derive(Debug, Default)]
pub(crate) struct Found {
    hits: HashMap<Lsn, Vec<Hit>>,
}

impl Found {
    /// The conflicting rows of entry `lsn`, if it has any.
    pub(crate) fn of(&self, lsn: Lsn) -> Option<&[Hit]> {
        self.hits.get(&lsn).map(Vec::as_slice)
    }

    /// True if no entry of the batch meets a conflict.
    pub(crate) fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }
}

/// Reads the batch's entries ahead (as the batch will: at most `entries_max` entries and about
/// `bytes_max` bytes) and looks up every row of each stamped entry in the change log, in the
/// open batch.
pub(crate) fn probe_batch<E: JournalEvent>(
    target: &mut dyn Target,
    mut reader: SourceReader,
    journal: Uuid,
    (entries_max, bytes_max): (usize, usize),
) -> Result<Found> {
    let mut owned: Vec<(Lsn, Vec<u8>, u64)> = Vec::new();
    let (mut entries, mut bytes) = (0usize, 0usize);
    while entries < entries_max && bytes < bytes_max {
        let Some(rec) = reader.next_ref()? else {
            break;
        };
        entries += 1;
        bytes += rec.payload.len();
        if rec.gap().is_some() {
            continue;
        }
        if rec.kind != E::KIND {
            break;
        }
        // Only a payload that can end in a stamp is decoded here (`journal-format.md` §5.2).
        let n = rec.payload.len();
        if n < STAMP_BYTES || rec.payload[n - STAMP_BYTES] != STAMP_TAG {
            continue;
        }
        let Ok((_, event, Some(stamp))) = decode_stamped_event::<E>(rec.payload) else {
            continue;
        };
        for (table, key) in event.touched_rows() {
            owned.push((rec.lsn, row_identity(table, key), stamp.base_seq));
        }
    }
    if owned.is_empty() {
        return Ok(Found::default());
    }
    let probes: Vec<Probe> = owned
        .iter()
        .map(|(_, identity, base_seq)| Probe {
            row_id: row_hash(identity),
            identity: identity.clone(),
            base_seq: *base_seq,
        })
        .collect();
    let remotes = target.find_conflicts(journal, &probes)?;
    let mut found = Found::default();
    for ((lsn, row_id, _), remote) in owned.into_iter().zip(remotes) {
        let Some(remote) = remote else { continue };
        let hits = found.hits.entry(lsn).or_default();
        if !hits.iter().any(|h| h.row_id == row_id) {
            hits.push(Hit { row_id, remote });
        }
    }
    Ok(found)
}

/// What becomes of an entry that meets a conflict.
pub(crate) enum Plan<E> {
    /// Applied as it is.
    AsIs,
    /// Applied as rewritten.
    Apply(E),
    /// Not applied: the target's rows win for every row it writes (an application event
    /// whose every row is in conflict, each settled for the target).
    Skip,
    /// Refused: quarantined with its conflicts pending a human decision.
    Refuse(String),
}

/// A conflict to record once the entry's outcome is known.
pub(crate) struct Planned {
    row_id: Vec<u8>,
    table: String,
    key: Columns,
    kind: ConflictKind,
    local_row: Option<Columns>,
    rows: ConflictRows,
    remote: Remote,
    resolution: &'static str,
    result_row: Option<Columns>,
}

/// Decides each conflicting row of `event` (made at `stamp`) by its table's policy.
pub(crate) fn plan<E: JournalEvent>(
    target: &mut dyn Target,
    policies: &ConflictPolicies,
    journal: Uuid,
    event: &E,
    stamp: Stamp,
    hits: &[Hit],
) -> Result<(Plan<E>, Vec<Planned>)> {
    let cs = event.as_change_set();
    let touched = event.touched_rows();
    let mut settled: Vec<(Vec<u8>, Settle)> = Vec::new();
    let mut planned = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for hit in hits {
        let Some(&(table, key)) = touched
            .iter()
            .find(|(t, k)| row_identity(t, k) == hit.row_id)
        else {
            continue;
        };
        let local: Option<&Mutation> = cs.and_then(|cs| {
            cs.mutations
                .iter()
                .find(|m| row_identity(m.table(), m.key()) == hit.row_id)
        });
        let rows = target.conflict_rows(table, key, stamp.base_seq)?;
        let Some(kind) = ConflictKind::of(local, rows.current.is_some()) else {
            continue;
        };
        let conflict = Conflict {
            table,
            key,
            kind,
            base: rows.base.as_ref().map(Option::as_ref),
            local,
            current: rows.current.as_ref(),
            local_hlc: stamp.hlc,
            local_journal: journal,
            remote_hlc: hit.remote.hlc,
            remote_journal: hit.remote.journal_id,
            remote_seq: hit.remote.seq,
        };
        let decided = decide(policies.policy_for(table), &conflict);
        let (resolution, result_row) = match &decided {
            Ok(s @ Settle::Write(cols)) => (s.resolution(), Some(cols.clone())),
            Ok(s) => (s.resolution(), None),
            Err(why) => {
                refused.push(why.clone());
                ("rejected", None)
            }
        };
        if let Ok(s) = decided {
            settled.push((hit.row_id.clone(), s));
        }
        planned.push(Planned {
            row_id: hit.row_id.clone(),
            table: table.to_owned(),
            key: key.clone(),
            kind,
            local_row: local.and_then(|m| match m {
                Mutation::Delete { .. } => None,
                other => Some(other.values().to_vec()),
            }),
            rows,
            remote: hit.remote.clone(),
            resolution,
            result_row,
        });
    }
    let plan = if !refused.is_empty() {
        Plan::Refuse(format!("conflict: {}", refused.join("; ")))
    } else if settled.iter().all(|(_, s)| *s == Settle::Keep) {
        Plan::AsIs
    } else if let Some(cs) = cs {
        match E::from_change_set(rewrite(cs, &settled)) {
            Some(e) => Plan::Apply(e),
            None => {
                Plan::Refuse("conflict: the event type cannot hold the rewritten change set".into())
            }
        }
    } else if settled.iter().all(|(_, s)| *s == Settle::Drop) && {
        // Skipped only if that drops nothing else: every row it writes is one of them.
        let mut ids: Vec<Vec<u8>> = touched.iter().map(|(t, k)| row_identity(t, k)).collect();
        ids.sort();
        ids.dedup();
        ids.len() == settled.len()
    } {
        Plan::Skip
    } else {
        Plan::Refuse(
            "conflict: an application event is applied whole or not at all, and its rows' resolutions differ".into(),
        )
    };
    if let Plan::Refuse(_) = &plan {
        reject(&mut planned);
    }
    Ok((plan, planned))
}

/// The rows whose local change the plan drops (the target's row stays).
pub(crate) fn dropped_rows(planned: &[Planned]) -> Vec<Vec<u8>> {
    planned
        .iter()
        .filter(|p| p.resolution == Settle::Drop.resolution())
        .map(|p| p.row_id.clone())
        .collect()
}

/// Marks every planned conflict rejected (the entry is quarantined: a human decides).
pub(crate) fn reject(planned: &mut [Planned]) {
    for p in planned {
        p.resolution = "rejected";
        p.result_row = None;
    }
}

/// Records the planned conflicts of entry `lsn`, in the batch; `pending` if it was refused.
pub(crate) fn record(
    target: &mut dyn Target,
    journal: Uuid,
    lsn: Lsn,
    (summary, stamp): (&str, Stamp),
    planned: &[Planned],
    pending: bool,
) -> Result<()> {
    let at = now_ms();
    for p in planned {
        target.record_conflict(&NewConflict {
            journal_id: journal,
            lsn,
            table: &p.table,
            key: &p.key,
            kind: p.kind.as_str(),
            summary,
            local_row: p.local_row.as_ref(),
            local_hlc: stamp.hlc,
            base_seq: stamp.base_seq,
            rows: &p.rows,
            remote: &p.remote,
            resolution: p.resolution,
            result_row: p.result_row.as_ref(),
            pending,
            detected_at_ms: at,
        })?;
    }
    Ok(())
}
