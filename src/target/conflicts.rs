//! The conflict table on the target: what a batch asks of the change log to find the rows that
//! another journal changed after an entry's base, what it records of each conflict (both sides
//! and the resolution), and the records as `syncjournal conflicts` reads them back
//! (`sync-protocol.md` §4). What a conflict resolves to is `replay/conflict.rs`'s.

use std::path::Path;

use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result, TargetError};
use crate::format::Lsn;
use crate::mutation::Columns;
use crate::target::changes::{decode_columns, encode_columns, nonnegative};

/// The conflict table: one row per conflict detected at replay.
pub const CONFLICTS_TABLE: &str = "syncjournal_conflicts";

/// The columns syncjournal requires of [`CONFLICTS_TABLE`].
pub(crate) const CONFLICTS_COLUMNS: [&str; 20] = [
    "id",
    "journal_id",
    "lsn",
    "table_name",
    "key",
    "kind",
    "summary",
    "local_row",
    "local_hlc",
    "base_seq",
    "base_row",
    "base_known",
    "target_row",
    "remote_journal_id",
    "remote_seq",
    "remote_hlc",
    "resolution",
    "result_row",
    "pending",
    "detected_at",
];

/// One row of an entry whose change-log history a batch asks for.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// The row's identity ([`row_identity`](crate::target::changes::row_identity)).
    pub identity: Vec<u8>,
    /// Its `row_id` ([`row_hash`](crate::target::changes::row_hash)).
    pub row_id: i64,
    /// The entry's base: records up to it were in the cache when the entry was made.
    pub base_seq: u64,
}

/// A change-log record found by `row_id`: its row's identity is checked before it counts (two
/// rows may share a hash).
pub(crate) fn same_row(identity: &[u8], table: &str, key: &[u8]) -> bool {
    decode_columns(key).is_ok_and(|k| crate::target::changes::row_identity(table, &k) == identity)
}

/// The latest change-log record of a row made by another journal after a probe's base.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Remote {
    pub seq: u64,
    pub hlc: u64,
    pub journal_id: Uuid,
}

/// The two rows a resolution needs besides the local change, read in the batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ConflictRows {
    /// The target's row now (`None`: no row has the key).
    pub current: Option<Columns>,
    /// The row as the cache knew it: the latest change-log record at or below the base.
    /// `None`: the log holds no such record (pruned, or older than the log).
    pub base: Option<Option<Columns>>,
}

/// A conflict to record, in the batch.
#[derive(Debug, Clone)]
pub(crate) struct NewConflict<'a> {
    pub journal_id: Uuid,
    pub lsn: Lsn,
    pub table: &'a str,
    pub key: &'a Columns,
    pub kind: &'a str,
    pub summary: &'a str,
    pub local_row: Option<&'a Columns>,
    pub local_hlc: u64,
    pub base_seq: u64,
    pub rows: &'a ConflictRows,
    pub remote: &'a Remote,
    pub resolution: &'a str,
    pub result_row: Option<&'a Columns>,
    pub pending: bool,
    pub detected_at_ms: u64,
}

impl NewConflict<'_> {
    /// The encoded columns, as both kinds of target store them: (key, local_row, base_row,
    /// target_row, result_row).
    #[allow(clippy::type_complexity)]
    pub(crate) fn encoded(
        &self,
    ) -> (
        Vec<u8>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
    ) {
        (
            encode_columns(self.key),
            self.local_row.map(encode_columns),
            self.rows
                .base
                .as_ref()
                .and_then(|b| b.as_ref().map(encode_columns)),
            self.rows.current.as_ref().map(encode_columns),
            self.result_row.map(encode_columns),
        )
    }
}

/// A conflict as recorded on the target (`syncjournal conflicts list|show`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConflictRecord {
    /// The record's number on the target.
    pub id: u64,
    /// The journal whose entry met the conflict.
    pub journal_id: Uuid,
    /// That entry's LSN.
    pub lsn: Lsn,
    /// The table, as the entry named it.
    pub table: String,
    /// The row's primary key.
    pub key: Columns,
    /// What met what, local first: `update/update`, `update/delete`, `delete/update`,
    /// `insert/insert`, `event/update` or `event/delete` (see [`ConflictKind`](crate::ConflictKind)).
    pub kind: String,
    /// The entry's one-line description.
    pub summary: String,
    /// The columns the local change writes (`None`: a delete, or an application event).
    pub local_row: Option<Columns>,
    /// The local change's HLC value.
    pub local_hlc: u64,
    /// The entry's base: the change-log sequence number its cache had pulled.
    pub base_seq: u64,
    /// The row as the cache knew it; `None` inside: absent. `None`: not known (the change log
    /// holds no record of the row at or below the base).
    pub base_row: Option<Option<Columns>>,
    /// The target's row when the conflict was detected (`None`: absent).
    pub target_row: Option<Columns>,
    /// The journal whose change the entry did not know of.
    pub remote_journal_id: Uuid,
    /// That change's sequence number in the change log.
    pub remote_seq: u64,
    /// That change's HLC value.
    pub remote_hlc: u64,
    /// How it was settled: `local` (the local change applied), `target` (the local change
    /// overridden), `written` or `deleted` (by the resolver), `rejected` (quarantined for a
    /// human), `retried` or `discarded` (the quarantined entry, by hand).
    pub resolution: String,
    /// The row the resolver wrote, if it wrote one.
    pub result_row: Option<Columns>,
    /// True while a human decision is pending (the entry is quarantined).
    pub pending: bool,
    /// When it was detected (the replayer's clock, Unix milliseconds).
    pub detected_at_ms: u64,
}

/// Conflict counts of a journal on the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ConflictCounts {
    /// Conflicts settled (by policy, resolver, or by hand).
    pub resolved: u64,
    /// Conflicts whose entry waits in quarantine for a human decision.
    pub pending: u64,
}

/// A conflict row as either kind of target returns it, before it is checked.
pub(crate) struct RawConflict {
    pub id: i64,
    pub journal_id: String,
    pub lsn: i64,
    pub table: String,
    pub key: Vec<u8>,
    pub kind: String,
    pub summary: String,
    pub local_row: Option<Vec<u8>>,
    pub local_hlc: i64,
    pub base_seq: i64,
    pub base_row: Option<Vec<u8>>,
    pub base_known: bool,
    pub target_row: Option<Vec<u8>>,
    pub remote_journal_id: String,
    pub remote_seq: i64,
    pub remote_hlc: i64,
    pub resolution: String,
    pub result_row: Option<Vec<u8>>,
    pub pending: bool,
    pub detected_at: i64,
}

/// The columns a conflict listing selects, in [`RawConflict`]'s order.
pub(crate) const SELECT_CONFLICT: &str = "id, journal_id, lsn, table_name, key, kind, summary, local_row, local_hlc, base_seq, base_row, base_known, target_row, remote_journal_id, remote_seq, remote_hlc, resolution, result_row, pending, detected_at";

impl RawConflict {
    /// The record, or a specific error naming what in it was not written by syncjournal.
    pub(crate) fn check(self, path: &Path) -> Result<ConflictRecord> {
        let bad = |detail: String| {
            Error::Target(TargetError::SchemaMismatch {
                path: path.to_path_buf(),
                table: CONFLICTS_TABLE.into(),
                detail: format!("conflict {}: {detail}", self.id),
            })
        };
        let uuid = |s: &str| {
            Uuid::parse_str(s).map_err(|_| bad(format!("journal id {s:?} is not a UUID")))
        };
        let cols = |what: &str, b: &Option<Vec<u8>>| match b {
            Some(b) => decode_columns(b)
                .map(Some)
                .map_err(|e| bad(format!("{what}: {e}"))),
            None => Ok(None),
        };
        let n = |what: &str, v: i64| nonnegative(path, what, v);
        let base_row = cols("base_row", &self.base_row)?;
        Ok(ConflictRecord {
            id: n("id", self.id)?,
            journal_id: uuid(&self.journal_id)?,
            lsn: n("lsn", self.lsn)?,
            key: decode_columns(&self.key).map_err(|e| bad(format!("key: {e}")))?,
            kind: self.kind,
            summary: self.summary,
            local_row: cols("local_row", &self.local_row)?,
            local_hlc: n("local_hlc", self.local_hlc)?,
            base_seq: n("base_seq", self.base_seq)?,
            base_row: self.base_known.then_some(base_row),
            target_row: cols("target_row", &self.target_row)?,
            remote_journal_id: uuid(&self.remote_journal_id)?,
            remote_seq: n("remote_seq", self.remote_seq)?,
            remote_hlc: n("remote_hlc", self.remote_hlc)?,
            resolution: self.resolution,
            result_row: cols("result_row", &self.result_row)?,
            pending: self.pending,
            detected_at_ms: self.detected_at.max(0) as u64,
            table: self.table,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_one_sync_protocol_md_states() {
        assert_eq!(CONFLICTS_TABLE, "syncjournal_conflicts");
        let doc = include_str!("../../sync-protocol.md");
        for c in CONFLICTS_COLUMNS {
            assert!(
                doc.contains(&format!("| `{c}` |")),
                "sync-protocol.md names column {c}"
            );
            assert!(SELECT_CONFLICT.contains(c), "the listing selects {c}");
        }
    }
}
