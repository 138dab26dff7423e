//! The event model: what a store record's payload means. Row mutations grouped in atomic
//! change sets, typed values, and the [`JournalEvent`] trait for applications that journal their
//! own domain events. Also the payload encoding (bincode 2, see `journal-format.md` §5.1).
//!
//! # Size: one limit, on encoded bytes
//!
//! A payload is limited by its encoded length only: the journal's record limit
//! ([`JournalOptions::payload_bytes_limit`](crate::JournalOptions::payload_bytes_limit):
//! `record_bytes_max`, at most what one segment holds), which
//! [`Store::apply`](crate::Store::apply) checks right after encoding
//! ([`encode_event_within`]), before anything is written. Decoding has no size limit of its
//! own, so whatever was accepted decodes. It is bounded by the payload instead: every length a
//! payload announces is checked against the bytes left in it before anything is allocated, so
//! decoding `N` bytes takes `O(N)` time and memory and never allocates by a claim read from
//! disk (the decoder is in `mutation/payload.rs`). bincode's own guard, `with_limit`, counts
//! in-memory sizes — 8 bytes for a one-byte integer — and refused change sets of about
//! 200 000 mutations (6.5 MB) that the journal had accepted.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::apply::{ApplyContext, ApplyError};
use crate::error::Error;

mod payload;

pub use payload::DEPTH_MAX;

/// Record kind of a row [`ChangeSet`] (schema version 1; see `journal-format.md` §5.1).
pub const KIND_CHANGESET: u8 = 0x10;

/// A typed SQLite value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit IEEE float. SQLite stores NaN as NULL: a NaN key is refused, a NaN in another
    /// column is stored as NULL (at the cache and the target alike).
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Real(r) => write!(f, "{r}"),
            Value::Text(t) if t.chars().count() > 40 => {
                let short: String = t.chars().take(40).collect();
                write!(f, "{short:?}…")
            }
            Value::Text(t) => write!(f, "{t:?}"),
            Value::Blob(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $v:ident $(as $as:ty)?),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Self {
                Value::$v((x $(as $as)?).into())
            }
        }
    )*};
}
value_from!(i64 => Integer, i32 => Integer, u32 => Integer, i16 => Integer, u16 => Integer,
    u8 => Integer, i8 => Integer, bool => Integer as i64, f64 => Real, f32 => Real,
    String => Text, &str => Text, Vec<u8> => Blob, &[u8] => Blob);

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(x: Option<T>) -> Self {
        x.map_or(Value::Null, Into::into)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl rusqlite::types::FromSql for Value {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        use rusqlite::types::ValueRef;
        Ok(match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(r) => Value::Real(r),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        })
    }
}

/// Column names and values: a row's primary key, or the columns a mutation writes.
pub type Columns = Vec<(String, Value)>;

/// One row mutation, addressed by table and primary key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Mutation {
    /// Insert a new row with `key` and `values`. Rejected if a row with the key exists.
    Insert {
        /// Table name.
        table: String,
        /// Primary-key columns and values (all of the table's primary-key columns).
        key: Columns,
        /// Other columns.
        values: Columns,
    },
    /// Set only the given columns of the row with `key`. Rejected if there is no such row.
    Update {
        /// Table name.
        table: String,
        /// Primary-key columns and values.
        key: Columns,
        /// Columns to set (at least one).
        values: Columns,
    },
    /// Insert the row, or set the given columns if a row with `key` exists.
    Upsert {
        /// Table name.
        table: String,
        /// Primary-key columns and values.
        key: Columns,
        /// Columns to write.
        values: Columns,
    },
    /// Delete the row with `key`. Deleting a row that does not exist changes nothing.
    Delete {
        /// Table name.
        table: String,
        /// Primary-key columns and values.
        key: Columns,
    },
}

impl Mutation {
    /// The table the mutation addresses.
    pub fn table(&self) -> &str {
        match self {
            Mutation::Insert { table, .. }
            | Mutation::Update { table, .. }
            | Mutation::Upsert { table, .. }
            | Mutation::Delete { table, .. } => table,
        }
    }

    /// The primary key the mutation addresses.
    pub fn key(&self) -> &Columns {
        match self {
            Mutation::Insert { key, .. }
            | Mutation::Update { key, .. }
            | Mutation::Upsert { key, .. }
            | Mutation::Delete { key, .. } => key,
        }
    }

    /// The written columns (empty for a delete).
    pub fn values(&self) -> &[(String, Value)] {
        match self {
            Mutation::Insert { values, .. }
            | Mutation::Update { values, .. }
            | Mutation::Upsert { values, .. } => values,
            Mutation::Delete { .. } => &[],
        }
    }

    /// The operation's name: `insert`, `update`, `upsert` or `delete`.
    pub fn op(&self) -> &'static str {
        match self {
            Mutation::Insert { .. } => "insert",
            Mutation::Update { .. } => "update",
            Mutation::Upsert { .. } => "upsert",
            Mutation::Delete { .. } => "delete",
        }
    }
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op(), self.table())?;
        let cols = |f: &mut fmt::Formatter<'_>, c: &[(String, Value)]| -> fmt::Result {
            for (i, (n, v)) in c.iter().enumerate() {
                write!(f, "{}{n}={v}", if i == 0 { "" } else { ", " })?;
            }
            Ok(())
        };
        f.write_str(" [")?;
        cols(f, self.key())?;
        f.write_str("]")?;
        if !self.values().is_empty() {
            f.write_str(" {")?;
            cols(f, self.values())?;
            f.write_str("}")?;
        }
        Ok(())
    }
}

fn columns<K: Into<String>, V: Into<Value>>(c: impl IntoIterator<Item = (K, V)>) -> Columns {
    c.into_iter().map(|(k, v)| (k.into(), v.into())).collect()
}

/// An atomic change set: row mutations applied together or not at all, at the cache and at
/// the target. Build one with the chainable methods:
///
/// ```
/// use syncjournal::ChangeSet;
/// let cs = ChangeSet::new()
///     .upsert("hosts", [("id", 7)], [("name", "web-1")])
///     .delete("certificates", [("id", 12)]);
/// assert_eq!(cs.mutations.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChangeSet {
    /// The mutations, applied in order.
    pub mutations: Vec<Mutation>,
}

impl ChangeSet {
    /// An empty change set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a mutation.
    pub fn push(mut self, m: Mutation) -> Self {
        self.mutations.push(m);
        self
    }

    /// Adds an insert.
    pub fn insert<K1, V1, K2, V2>(
        self,
        table: &str,
        key: impl IntoIterator<Item = (K1, V1)>,
        values: impl IntoIterator<Item = (K2, V2)>,
    ) -> Self
    where
        K1: Into<String>,
        V1: Into<Value>,
        K2: Into<String>,
        V2: Into<Value>,
    {
        self.push(Mutation::Insert {
            table: table.into(),
            key: columns(key),
            values: columns(values),
        })
    }

    /// Adds an update of the given columns.
    pub fn update<K1, V1, K2, V2>(
        self,
        table: &str,
        key: impl IntoIterator<Item = (K1, V1)>,
        values: impl IntoIterator<Item = (K2, V2)>,
    ) -> Self
    where
        K1: Into<String>,
        V1: Into<Value>,
        K2: Into<String>,
        V2: Into<Value>,
    {
        self.push(Mutation::Update {
            table: table.into(),
            key: columns(key),
            values: columns(values),
        })
    }

    /// Adds an upsert.
    pub fn upsert<K1, V1, K2, V2>(
        self,
        table: &str,
        key: impl IntoIterator<Item = (K1, V1)>,
        values: impl IntoIterator<Item = (K2, V2)>,
    ) -> Self
    where
        K1: Into<String>,
        V1: Into<Value>,
        K2: Into<String>,
        V2: Into<Value>,
    {
        self.push(Mutation::Upsert {
            table: table.into(),
            key: columns(key),
            values: columns(values),
        })
    }

    /// Adds a delete.
    pub fn delete<K1, V1>(self, table: &str, key: impl IntoIterator<Item = (K1, V1)>) -> Self
    where
        K1: Into<String>,
        V1: Into<Value>,
    {
        self.push(Mutation::Delete {
            table: table.into(),
            key: columns(key),
        })
    }

    /// True if the change set holds no mutation.
    pub fn is_empty(&self) -> bool {
        self.mutations.is_empty()
    }
}

/// An event type the store can journal and apply to SQLite (the cache and the target).
///
/// [`ChangeSet`] implements it; an application that thinks in domain events implements it for
/// its own serde type and applies each event with its own SQL. `apply` runs inside a
/// transaction (a savepoint per event): return an error and the event's effects are rolled
/// back.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use syncjournal::{ApplyContext, ApplyError, JournalEvent};
///
/// #[derive(Serialize, Deserialize)]
/// struct CertificateRenewed { id: i64, not_after: String }
///
/// impl JournalEvent for CertificateRenewed {
///     const KIND: u8 = 0x40;
///     fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
///         let n = db.conn().execute(
///             "UPDATE certificates SET not_after = ?1 WHERE id = ?2",
///             (&self.not_after, self.id),
///         )?;
///         if n == 0 {
///             return Err(ApplyError::rejected(format!("no certificate {}", self.id)));
///         }
///         Ok(())
///     }
///     fn describe(&self) -> String {
///         format!("renew certificate {} until {}", self.id, self.not_after)
///     }
/// }
/// ```
pub trait JournalEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The record kind that identifies this event type in the journal: an application kind
    /// (`0x02..=0xEF`), unique per type and schema version. `0x10` is [`ChangeSet`]'s.
    const KIND: u8;

    /// Applies the event to a database (the cache, or the target during replay).
    fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError>;

    /// A one-line human description, for status, logs and quarantine listings.
    fn describe(&self) -> String;
}

impl JournalEvent for ChangeSet {
    const KIND: u8 = KIND_CHANGESET;

    fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
        for m in &self.mutations {
            db.apply_mutation(m)?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match self.mutations.as_slice() {
            [] => "empty change set".into(),
            [m] => m.to_string(),
            [m, rest @ ..] => format!("{m} and {} more", rest.len()),
        }
    }
}

/// Encodes a store record payload: `(created_at_ms: u64, event: E)` with bincode 2's standard
/// configuration (`journal-format.md` §5.1). No size limit: see [`encode_event_within`], which
/// the store uses.
pub fn encode_event<E: JournalEvent>(created_at_ms: u64, event: &E) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec((created_at_ms, event), bincode::config::standard())
        .map_err(|e| e.to_string())
}

/// Encodes a store record payload as [`encode_event`] does, refusing an encoding longer than
/// `payload_bytes_max` (the journal's record limit,
/// [`JournalOptions::payload_bytes_limit`](crate::JournalOptions::payload_bytes_limit)) and one
/// that [`decode_event`] would not read back (see [`DEPTH_MAX`]): what this accepts, the
/// store's decoders read.
///
/// # Errors
///
/// [`Error::EventTooLarge`]; [`Error::EventUnencodable`] if serde or the decoder refuses it.
pub fn encode_event_within<E: JournalEvent>(
    created_at_ms: u64,
    event: &E,
    payload_bytes_max: usize,
) -> Result<Vec<u8>, Error> {
    let unencodable = |reason| Error::EventUnencodable {
        kind: E::KIND,
        reason,
    };
    let payload = encode_event(created_at_ms, event).map_err(unencodable)?;
    if payload.len() > payload_bytes_max {
        return Err(Error::EventTooLarge {
            kind: E::KIND,
            len: payload.len(),
            max: payload_bytes_max,
        });
    }
    decode_event::<E>(&payload)
        .map_err(|e| unencodable(format!("it would not decode again: {e}")))?;
    Ok(payload)
}

/// Decodes a store record payload of any length. Never panics; trailing bytes are an error;
/// every announced length is checked against the bytes left before anything is allocated, so
/// decoding `N` bytes allocates `O(N)` (see the module documentation).
pub fn decode_event<E: JournalEvent>(payload: &[u8]) -> Result<(u64, E), String> {
    let ((at, e), used): ((u64, E), usize) =
        payload::decode_prefix(payload).map_err(|e| e.to_string())?;
    if used != payload.len() {
        return Err(format!(
            "{} trailing bytes after the event",
            payload.len() - used
        ));
    }
    Ok((at, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_mutation_and_value() {
        let cs = ChangeSet::new()
            .insert("t", [("id", 1)], [("a", Value::Null), ("b", 2.5.into())])
            .update("t", [("id", 1)], [("c", "x")])
            .upsert("t", [("id", 2)], [("d", vec![1u8, 2, 3])])
            .delete("t", [("id", 3)]);
        let bytes = encode_event(1234, &cs).unwrap();
        let (at, back): (u64, ChangeSet) = decode_event(&bytes).unwrap();
        assert_eq!(at, 1234);
        assert_eq!(back, cs);
    }

    #[test]
    fn decoding_garbage_is_an_error_not_a_panic() {
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let _ = decode_event::<ChangeSet>(&junk);
        }
        // a huge announced length is refused by the limit instead of allocating
        let mut huge = vec![0u8];
        huge.push(1);
        huge.extend_from_slice(&[253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode_event::<ChangeSet>(&huge).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode_event(1, &ChangeSet::new().delete("t", [("id", 1)])).unwrap();
        bytes.push(0);
        assert!(decode_event::<ChangeSet>(&bytes).is_err());
    }

    #[test]
    fn describe_is_one_line() {
        let cs = ChangeSet::new()
            .delete("hosts", [("id", 3)])
            .delete("hosts", [("id", 4)]);
        assert_eq!(cs.describe(), "delete hosts [id=3] and 1 more");
    }
}
