//! The change log on the target: what a batch records of the rows its entries touched (the row
//! after the batch, or a tombstone), the sequence and hybrid-logical-clock numbers each record
//! gets, the codec of its key and row columns, and the records as a pulling store reads them
//! back (`sync-protocol.md` §2).

use std::collections::HashMap;
use std::path::Path;

use uuid::Uuid;

use crate::error::{Error, Result, TargetError};
use crate::format::Lsn;
use crate::mutation::{Columns, Value};

/// The change log: one row per row change a batch made, numbered in commit order.
pub const CHANGES_TABLE: &str = "syncjournal_changes";
/// The change log's head: one row holding the last sequence and HLC numbers given out and the
/// floor below which records were pruned.
pub const CHANGE_HEAD_TABLE: &str = "syncjournal_change_head";

/// The columns syncjournal requires of [`CHANGES_TABLE`].
pub(crate) const CHANGES_COLUMNS: [&str; 9] = [
    "seq",
    "hlc",
    "journal_id",
    "lsn",
    "table_name",
    "key",
    "row",
    "committed_at",
    "row_id",
];
/// The columns syncjournal requires of [`CHANGE_HEAD_TABLE`].
pub(crate) const CHANGE_HEAD_COLUMNS: [&str; 4] = ["id", "seq", "hlc", "floor_seq"];

/// Bits of an HLC value below its milliseconds: `hlc = ms << HLC_LOGICAL_BITS | counter`.
pub const HLC_LOGICAL_BITS: u32 = 16;

/// Records read per page when a store pulls.
pub(crate) const PULL_PAGE_ROWS: usize = 1000;

/// Bytes a record's key or row may take: a larger value read from a target is refused, not
/// decoded.
pub(crate) const COLUMNS_BYTES_MAX: usize = 64 << 20;

/// One row change, as a pulling store reads it from the change log.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Target-wide sequence number: the order of the commits that made the changes.
    pub seq: u64,
    /// Hybrid-logical-clock timestamp (milliseconds `<< 16` plus a counter): the origin
    /// store's clock when it made the entry (its [`Stamp`](crate::event::Stamp)), or for an
    /// entry without one, at least its creation time and above the record before it.
    pub hlc: u64,
    /// The journal whose entry made the change.
    pub journal_id: Uuid,
    /// That entry's LSN (the last of the batch's entries that touched the row).
    pub lsn: Lsn,
    /// The table, as the target's schema names it.
    pub table: String,
    /// The row's primary-key columns, in key order.
    pub key: Columns,
    /// The row's other columns after the change; `None`: the row was deleted.
    pub row: Option<Columns>,
    /// When the batch committed (the replayer's clock, Unix milliseconds).
    pub committed_at_ms: u64,
    /// The record is the pulling journal's own, and a later record of the same row is in the
    /// log (read in the same snapshot): the pull skips it, since the later one carries the
    /// row's newer image and applying this one would show an older state of a row the cache
    /// already has newer (`sync-protocol.md` §3.2).
    pub superseded: bool,
}

/// A page of the change log read in one snapshot of the target.
#[derive(Debug, Default)]
pub(crate) struct ChangePage {
    /// The pulling journal's watermark in the same snapshot.
    pub watermark: Lsn,
    /// The last sequence number given out (every record up to it is committed).
    pub head_seq: u64,
    /// Records at or below this were pruned.
    pub floor_seq: u64,
    /// Records after the cursor, by sequence number.
    pub changes: Vec<Change>,
    /// The page stopped before a record that was not written by syncjournal: why.
    pub damaged: Option<Error>,
}

/// When an entry was made, as its record's HLC is derived from it (`sync-protocol.md` §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryClock {
    /// The payload's creation time (Unix milliseconds, the origin's clock).
    pub created_at_ms: u64,
    /// The origin store's HLC value for the entry (its stamp), if it has one.
    pub hlc: Option<u64>,
    /// The entry did not write the row: its change to it was dropped by a conflict's
    /// resolution, or the entry was quarantined. The record then takes the HLC of the row's
    /// latest record (0 if it has none): the timestamp of the value it holds, not this
    /// entry's (`sync-protocol.md` §2.4).
    pub inherit: bool,
}

/// A row an entry touched, to record at the end of the batch.
#[derive(Debug, Clone)]
pub(crate) struct Touched {
    pub table: String,
    pub key: Columns,
    pub lsn: Lsn,
    pub clock: EntryClock,
}

/// A record to write, with the row as it is after the batch.
#[derive(Debug, Clone)]
pub(crate) struct NewChange {
    pub journal_id: Uuid,
    pub lsn: Lsn,
    pub clock: EntryClock,
    pub table: String,
    pub key: Columns,
    pub row: Option<Columns>,
}

impl NewChange {
    /// The record's `row_id` ([`row_hash`] of its identity).
    pub(crate) fn row_id(&self) -> i64 {
        row_hash(&row_identity(&self.table, &self.key))
    }
}

/// A row's `row_id` in the change log: the 64-bit FNV-1a hash of its [`row_identity`], as a
/// signed integer (`sync-protocol.md` §2.2). Lookups by it compare the identity too: two
/// rows with one hash are told apart.
pub(crate) fn row_hash(identity: &[u8]) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in identity {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h as i64
}

/// The rows a batch touched, in the order last touched, once each (a row touched twice is
/// recorded once, as it is after the batch, under the later entry's LSN).
#[derive(Debug, Default)]
pub(crate) struct ChangeBuffer {
    rows: Vec<Touched>,
    index: HashMap<Vec<u8>, usize>,
}

impl ChangeBuffer {
    /// Forgets everything (a batch begins or is rolled back).
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
        self.index.clear();
    }

    /// Notes that entry `lsn` touched `key` of `table`.
    pub(crate) fn touch(&mut self, table: &str, key: &Columns, lsn: Lsn, clock: EntryClock) {
        let id = row_identity(table, key);
        let t = Touched {
            table: table.to_owned(),
            key: key.clone(),
            lsn,
            clock,
        };
        match self.index.get(&id) {
            // A row an earlier entry of the batch wrote keeps that entry's clock when a later
            // one only touches it without writing.
            Some(&i) if clock.inherit && !self.rows[i].clock.inherit => self.rows[i].lsn = lsn,
            Some(&i) => self.rows[i] = t,
            None => {
                self.index.insert(id, self.rows.len());
                self.rows.push(t);
            }
        }
    }

    /// The rows touched, in first-touch order.
    pub(crate) fn rows(&self) -> &[Touched] {
        &self.rows
    }

    /// True if nothing was touched.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// A comparable identity of a row: the table's name and the key columns' names (both without
/// case) and values, in name order. Integers and reals that are equal compare equal.
pub(crate) fn row_identity(table: &str, key: &Columns) -> Vec<u8> {
    let mut cols: Vec<(String, &Value)> = key
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .collect();
    cols.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = table.to_ascii_lowercase().into_bytes();
    out.push(0);
    for (n, v) in cols {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        match v {
            Value::Null => out.push(b'n'),
            Value::Integer(i) => {
                out.push(b'r');
                out.extend_from_slice(&(*i as f64).to_bits().to_le_bytes());
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Real(r) if r.fract() == 0.0 && r.abs() < 9.0e18 => {
                out.push(b'r');
                out.extend_from_slice(&r.to_bits().to_le_bytes());
                out.extend_from_slice(&(*r as i64).to_le_bytes());
            }
            Value::Real(r) => {
                out.push(b'f');
                out.extend_from_slice(&r.to_bits().to_le_bytes());
            }
            Value::Text(t) => {
                out.push(b't');
                out.extend_from_slice(&(t.len() as u64).to_le_bytes());
                out.extend_from_slice(t.as_bytes());
            }
            Value::Blob(b) => {
                out.push(b'b');
                out.extend_from_slice(&(b.len() as u64).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    out
}

/// Encodes a record's key or row: bincode 2's standard format of `Vec<(String, Value)>`, as in
/// a change set's payload (`journal-format.md` §5.1).
pub(crate) fn encode_columns(cols: &Columns) -> Vec<u8> {
    bincode::serde::encode_to_vec(cols, bincode::config::standard())
        .expect("columns of strings and values always encode")
}

/// Decodes a record's key or row; never allocates by a length it reads (`event::payload`).
pub(crate) fn decode_columns(bytes: &[u8]) -> Result<Columns, String> {
    if bytes.len() > COLUMNS_BYTES_MAX {
        return Err(format!(
            "{} bytes, more than the {COLUMNS_BYTES_MAX} a record's columns may take",
            bytes.len()
        ));
    }
    let (cols, used): (Columns, usize) =
        crate::event::decode_prefix(bytes).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - used));
    }
    Ok(cols)
}

/// The HLC values of new records after `last` (the head's), and the head's new value: a
/// record of a stamped entry takes the stamp's value (an inheriting record, the row's last
/// value, which the writer resolved into `hlc`); any other the larger of its creation time
/// (`ms << 16`) and the value before it plus one. The head keeps the largest.
pub(crate) fn next_hlcs(last: u64, clocks: impl Iterator<Item = EntryClock>) -> (Vec<u64>, u64) {
    let mut prev = last;
    let mut head = last;
    let hlcs = clocks
        .map(|c| {
            let h = match c.hlc {
                Some(h) => h,
                None => {
                    let physical =
                        c.created_at_ms.min(u64::MAX >> HLC_LOGICAL_BITS) << HLC_LOGICAL_BITS;
                    physical.max(prev.saturating_add(1))
                }
            };
            prev = h;
            head = head.max(h);
            h
        })
        .collect();
    (hlcs, head)
}

/// A change-log row as either kind of target returns it, before it is checked.
pub(crate) struct RawChange {
    pub seq: i64,
    pub hlc: i64,
    pub journal_id: String,
    pub lsn: i64,
    pub table: String,
    pub key: Vec<u8>,
    pub row: Option<Vec<u8>>,
    pub committed_at: i64,
    pub superseded: bool,
}

impl RawChange {
    /// The record, or a specific error naming what in it was not written by syncjournal.
    pub(crate) fn check(self, path: &Path) -> Result<Change> {
        let bad = |detail: String| {
            Error::Target(TargetError::SchemaMismatch {
                path: path.to_path_buf(),
                table: CHANGES_TABLE.into(),
                detail: format!("record seq {}: {detail}", self.seq),
            })
        };
        let journal_id = Uuid::parse_str(&self.journal_id)
            .map_err(|_| bad(format!("journal_id {:?} is not a UUID", self.journal_id)))?;
        if self.lsn <= 0 || self.lsn as u64 > crate::format::LSN_MAX {
            return Err(bad(format!("lsn {} is not an LSN", self.lsn)));
        }
        let key = decode_columns(&self.key).map_err(|e| bad(format!("key: {e}")))?;
        let row = match &self.row {
            Some(r) => Some(decode_columns(r).map_err(|e| bad(format!("row: {e}")))?),
            None => None,
        };
        if key.is_empty() {
            return Err(bad("an empty key".into()));
        }
        Ok(Change {
            seq: nonnegative(path, "seq", self.seq)?,
            hlc: nonnegative(path, "hlc", self.hlc)?,
            journal_id,
            lsn: self.lsn as Lsn,
            table: self.table,
            key,
            row,
            committed_at_ms: self.committed_at.max(0) as u64,
            superseded: self.superseded,
        })
    }
}

/// A page of records as a target read them: each checked, up to the first that was not
/// written by syncjournal (the page ends before it, and says why).
pub(crate) fn page_of(
    path: &Path,
    watermark: Lsn,
    (head_seq, floor_seq): (i64, i64),
    raws: Vec<RawChange>,
) -> Result<ChangePage> {
    let mut changes = Vec::with_capacity(raws.len());
    let mut damaged = None;
    for raw in raws {
        match raw.check(path) {
            Ok(c) => changes.push(c),
            Err(e) => {
                damaged = Some(e);
                break;
            }
        }
    }
    Ok(ChangePage {
        watermark,
        head_seq: nonnegative(path, "head seq", head_seq)?,
        floor_seq: nonnegative(path, "floor_seq", floor_seq)?,
        changes,
        damaged,
    })
}

/// A sequence number, LSN or clock value as an SQL integer (signed 64 bits; values above
/// `i64::MAX`, which syncjournal never gives out, are capped).
pub(crate) fn sql_int(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// A sequence number read from the log, refused if negative.
pub(crate) fn nonnegative(path: &Path, what: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| {
        Error::Target(TargetError::SchemaMismatch {
            path: path.to_path_buf(),
            table: CHANGES_TABLE.into(),
            detail: format!("{what} {v} is negative"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_touched_twice_is_recorded_once_under_the_later_lsn() {
        let mut b = ChangeBuffer::default();
        let k = |i: i64| vec![("id".to_string(), Value::Integer(i))];
        let c = |ms| EntryClock {
            created_at_ms: ms,
            hlc: None,
            inherit: false,
        };
        b.touch("hosts", &k(1), 5, c(10));
        b.touch("certs", &k(1), 6, c(11));
        b.touch("HOSTS", &vec![("ID".into(), Value::Real(1.0))], 7, c(12));
        let rows: Vec<(&str, Lsn)> = b.rows().iter().map(|t| (t.table.as_str(), t.lsn)).collect();
        assert_eq!(rows, [("HOSTS", 7), ("certs", 6)]);
        // An entry that only touches a row an earlier one wrote keeps the writer's clock.
        let inherits = EntryClock {
            created_at_ms: 99,
            hlc: None,
            inherit: true,
        };
        b.touch("certs", &k(1), 8, inherits);
        let certs = &b.rows()[1];
        assert_eq!((certs.lsn, certs.clock), (8, c(11)));
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn identities_differ_by_table_value_and_kind() {
        let k = |v: Value| vec![("id".to_string(), v)];
        let id = |t: &str, v: Value| row_identity(t, &k(v));
        assert_ne!(id("a", Value::Integer(1)), id("b", Value::Integer(1)));
        assert_ne!(id("a", Value::Integer(1)), id("a", Value::Integer(2)));
        assert_ne!(id("a", Value::Integer(1)), id("a", Value::Text("1".into())));
        assert_ne!(
            id("a", Value::Text("x".into())),
            id("a", Value::Blob(b"x".to_vec()))
        );
        assert_eq!(id("a", Value::Integer(3)), id("A", Value::Real(3.0)));
        // Name order does not matter.
        let two = |a: (&str, i64), b: (&str, i64)| {
            row_identity(
                "t",
                &vec![
                    (a.0.into(), Value::Integer(a.1)),
                    (b.0.into(), Value::Integer(b.1)),
                ],
            )
        };
        assert_eq!(two(("x", 1), ("y", 2)), two(("y", 2), ("x", 1)));
        assert_ne!(two(("x", 1), ("y", 2)), two(("x", 2), ("y", 1)));
    }

    #[test]
    fn row_ids_are_the_hash_sync_protocol_md_states() {
        assert_eq!(row_hash(b""), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_eq!(row_hash(b"a"), 0xaf63_dc4c_8601_ec8c_u64 as i64);
        let id = row_hash(&row_identity(
            "Hosts",
            &vec![("ID".into(), Value::Integer(1))],
        ));
        let doc = include_str!("../../sync-protocol.md");
        assert!(
            doc.contains(&format!("`row_id` {id}")),
            "sync-protocol.md states the row_id of hosts id=1: {id}"
        );
    }

    #[test]
    fn columns_round_trip_and_garbage_is_an_error() {
        let cols: Columns = vec![
            ("id".into(), Value::Integer(-4)),
            ("name".into(), Value::Text("w\"eb".into())),
            ("blob".into(), Value::Blob(vec![0, 1, 2])),
            ("r".into(), Value::Real(1.5)),
            ("n".into(), Value::Null),
        ];
        assert_eq!(decode_columns(&encode_columns(&cols)).unwrap(), cols);
        assert!(decode_columns(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
        let mut long = encode_columns(&cols);
        long.push(0);
        assert!(decode_columns(&long).unwrap_err().contains("trailing"));
    }

    #[test]
    fn unstamped_hlcs_increase_and_are_at_least_the_creation_time() {
        let at = |ms: u64| EntryClock {
            created_at_ms: ms,
            hlc: None,
            inherit: false,
        };
        let (h, head) = next_hlcs(0, [at(5), at(5), at(3), at(9)].into_iter());
        assert_eq!(h, [5 << 16, (5 << 16) + 1, (5 << 16) + 2, 9 << 16]);
        assert_eq!(head, 9 << 16);
        let (after, _) = next_hlcs(u64::MAX - 1, [at(1)].into_iter());
        assert_eq!(after, [u64::MAX]);
    }

    #[test]
    fn a_stamped_entry_keeps_its_origins_hlc_and_the_head_keeps_the_largest() {
        let stamped = |h: u64| EntryClock {
            created_at_ms: 1,
            hlc: Some(h),
            inherit: false,
        };
        let plain = EntryClock {
            created_at_ms: 1,
            hlc: None,
            inherit: false,
        };
        let (h, head) = next_hlcs(
            100,
            [stamped(50), plain, stamped(300), stamped(7)].into_iter(),
        );
        assert_eq!(h, [50, 65536, 300, 7]);
        assert_eq!(head, 65536);
    }

    #[test]
    fn the_constants_are_the_ones_sync_protocol_md_states() {
        assert_eq!(CHANGES_TABLE, "syncjournal_changes");
        assert_eq!(CHANGE_HEAD_TABLE, "syncjournal_change_head");
        assert_eq!(HLC_LOGICAL_BITS, 16);
        assert_eq!(PULL_PAGE_ROWS, 1000);
        let doc = include_str!("../../sync-protocol.md");
        for c in CHANGES_COLUMNS.iter().chain(CHANGE_HEAD_COLUMNS.iter()) {
            assert!(
                doc.contains(&format!("`{c}`")),
                "sync-protocol.md names column {c}"
            );
        }
        assert!(doc.contains("`hlc = ms << 16 | counter`"));
        assert!(doc.contains(&format!("at most {PULL_PAGE_ROWS} records")));
        assert!(doc.contains("over 64 MiB") && COLUMNS_BYTES_MAX == 64 << 20);
    }
}
