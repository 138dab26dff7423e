//! Row mutations: the data of the store's change sets — typed values, mutations addressed by
//! table and primary key, atomic change sets and their builder. What they mean when applied is
//! `apply`'s; how they are journaled is `event`'s.

use std::fmt;

use serde::{Deserialize, Serialize};

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
