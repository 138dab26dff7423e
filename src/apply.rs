//! Applying events to an SQLite database (the cache, or the target during replay): schema
//! checks, identifier quoting, and the split of failures into transient and permanent.
//!
//! Table and column names come from journal records, so they are never trusted: every name is
//! looked up in the database's own schema (through `pragma_table_info`, with the name bound as
//! a parameter) and the canonical name found there is what goes into SQL, double-quoted. A
//! tampered journal can name a table that does not exist (the entry is then rejected), never
//! inject SQL.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rusqlite::{Connection, ErrorCode, OptionalExtension};

use crate::error::SqliteError;
use crate::format::Lsn;
use crate::mutation::{Columns, Mutation, Value};

/// Why an event could not be applied.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApplyError {
    /// The database could not be used right now (busy, locked, I/O error, read-only, share
    /// offline…): retry later; the entry is not at fault.
    Transient(SqliteError),
    /// The entry can never apply to this database as it is (constraint violation, missing
    /// table or column, type mismatch, no such row): a permanent error.
    Permanent {
        /// What is wrong, naming the table, column or constraint.
        reason: String,
    },
    /// The event has no apply for this kind of database (an application event that gave only
    /// its SQLite apply, replayed to a PostgreSQL server): replay stops before it, whatever
    /// the reject policy, since the entry is not at fault.
    Unsupported {
        /// The kind of database: `"SQLite"` or `"PostgreSQL"`.
        backend: &'static str,
    },
    /// A PostgreSQL server could not be used right now (connection lost, serialization
    /// failure, server shutting down…): retry later.
    #[cfg(feature = "postgres")]
    Server(crate::error::PostgresError),
}

impl ApplyError {
    /// A permanent failure with a reason: the entry can never apply as it is.
    pub fn permanent(reason: impl Into<String>) -> Self {
        ApplyError::Permanent {
            reason: reason.into(),
        }
    }

    /// True for [`ApplyError::Permanent`].
    pub fn is_permanent(&self) -> bool {
        matches!(self, ApplyError::Permanent { .. })
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Transient(e) => write!(f, "database unavailable: {e}"),
            ApplyError::Permanent { reason } => write!(f, "cannot apply: {reason}"),
            ApplyError::Unsupported { backend } => {
                write!(f, "this event type has no apply for {backend}")
            }
            #[cfg(feature = "postgres")]
            ApplyError::Server(e) => write!(f, "server unavailable: {e}"),
        }
    }
}

impl std::error::Error for ApplyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApplyError::Transient(e) => Some(e),
            #[cfg(feature = "postgres")]
            ApplyError::Server(e) => Some(e),
            ApplyError::Permanent { .. } | ApplyError::Unsupported { .. } => None,
        }
    }
}

impl From<rusqlite::Error> for ApplyError {
    fn from(e: rusqlite::Error) -> Self {
        if is_transient(&e) {
            ApplyError::Transient(e.into())
        } else {
            ApplyError::Permanent {
                reason: e.to_string(),
            }
        }
    }
}

/// True for SQLite errors that say nothing about the entry: the database is busy, locked,
/// unreachable, read-only, full, or (on a network share in trouble) reports I/O errors or
/// "malformed" pages through a connection that lived through an outage.
pub fn is_transient(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::CannotOpen
                | ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::PermissionDenied
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::NotADatabase
                | ErrorCode::SchemaChanged
                | ErrorCode::OperationInterrupted
                | ErrorCode::OutOfMemory
                | ErrorCode::NotFound
        ),
        _ => false,
    }
}

/// SQLite type affinity of a declared column type (SQLite documentation, "Datatypes", 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

impl Affinity {
    fn of(decl: &str) -> Affinity {
        let d = decl.to_ascii_uppercase();
        if d.contains("INT") {
            Affinity::Integer
        } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
            Affinity::Text
        } else if d.contains("BLOB") || d.is_empty() {
            Affinity::Blob
        } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }

    /// The documented type rule: numeric columns take numbers, text columns take text,
    /// untyped/BLOB columns take anything; NULL goes anywhere.
    fn accepts(self, v: &Value) -> bool {
        matches!(
            (self, v),
            (_, Value::Null)
                | (Affinity::Blob, _)
                | (
                    Affinity::Integer | Affinity::Real | Affinity::Numeric,
                    Value::Integer(_) | Value::Real(_)
                )
                | (Affinity::Text, Value::Text(_))
        )
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Text(_) => "text",
        Value::Blob(_) => "a blob",
    }
}

#[derive(Debug)]
struct ColumnInfo {
    name: String,
    decl: String,
    affinity: Affinity,
    /// NOT NULL without a default: an insert must give it.
    required: bool,
}

/// What the applier knows of one table.
#[derive(Debug)]
pub(crate) struct TableInfo {
    name: String,
    columns: Vec<ColumnInfo>,
    /// Indexes into `columns`, in primary-key order.
    pk: Vec<usize>,
}

impl TableInfo {
    fn column(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// Table schemas read from one connection, cached until the connection is replaced.
#[derive(Debug, Default)]
pub struct SchemaCache {
    tables: HashMap<String, Arc<TableInfo>>,
    /// Statement templates by mutation shape (operation, table, column names): a mutation of
    /// a shape seen before skips building SQL and resolving names.
    templates: HashMap<u64, Vec<Arc<Template>>>,
}

impl SchemaCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything (after a reconnect or a schema change).
    pub fn clear(&mut self) {
        self.tables.clear();
        self.templates.clear();
    }

    fn load(conn: &Connection, table: &str) -> Result<Option<TableInfo>, ApplyError> {
        let mut stmt =
            conn.prepare_cached(
                "SELECT name, type, pk, \"notnull\", dflt_value IS NOT NULL FROM pragma_table_info(?1) ORDER BY cid",
            )?;
        let rows = stmt.query_map([table], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, bool>(3)?,
                r.get::<_, bool>(4)?,
            ))
        })?;
        let mut columns = Vec::new();
        let mut pk: Vec<(i64, usize)> = Vec::new();
        for row in rows {
            let (name, decl, pk_pos, notnull, has_default) = row?;
            if pk_pos > 0 {
                pk.push((pk_pos, columns.len()));
            }
            columns.push(ColumnInfo {
                affinity: Affinity::of(&decl),
                required: notnull && !has_default,
                name,
                decl,
            });
        }
        if columns.is_empty() {
            return Ok(None);
        }
        pk.sort();
        // Only the schema's own spelling of the name ever goes into SQL: a name the schema
        // does not list as a table (a view, say) is no table to write.
        let name: Option<String> = conn
            .query_row(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
                [table],
                |r| r.get(0),
            )
            .optional()?;
        let Some(name) = name else {
            return Ok(None);
        };
        Ok(Some(TableInfo {
            name,
            columns,
            pk: pk.into_iter().map(|(_, i)| i).collect(),
        }))
    }

    fn table(
        &mut self,
        conn: &Connection,
        name: &str,
        refresh: bool,
    ) -> Result<Option<Arc<TableInfo>>, ApplyError> {
        let key = name.to_ascii_lowercase();
        if !refresh && let Some(t) = self.tables.get(&key) {
            return Ok(Some(Arc::clone(t)));
        }
        match Self::load(conn, name)? {
            Some(t) => {
                let t = Arc::new(t);
                self.tables.insert(key, Arc::clone(&t));
                Ok(Some(t))
            }
            None => {
                self.tables.remove(&key);
                Ok(None)
            }
        }
    }
}

/// A row as it is now, for the change log (see [`row_image`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RowImage {
    /// The database has no such table, or the key does not name its primary key: nothing to
    /// record.
    Unknown,
    /// No row has the key (its table's own name and key columns).
    Absent { table: String, key: Columns },
    /// The row: its table's own name, its key in key order, its other columns.
    Present {
        table: String,
        key: Columns,
        row: Columns,
    },
}

/// Reads the row of `table` whose primary key is `key` as it is now (in the open transaction),
/// names as the schema spells them.
pub(crate) fn row_image(
    conn: &Connection,
    schema: &mut SchemaCache,
    table: &str,
    key: &Columns,
) -> Result<RowImage, ApplyError> {
    let Some(info) = schema.table(conn, table, false)? else {
        return Ok(RowImage::Unknown);
    };
    // The key's columns, in primary-key order; a key that is not exactly the primary key
    // (a table without one, a missing or extra column) names no row to record.
    if info.pk.is_empty() || key.len() != info.pk.len() {
        return Ok(RowImage::Unknown);
    }
    let mut ordered: Vec<(usize, &Value)> = Vec::with_capacity(key.len());
    for &ix in &info.pk {
        let name = &info.columns[ix].name;
        match key.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, v)) => ordered.push((ix, v)),
            None => return Ok(RowImage::Unknown),
        }
    }
    let cols: Vec<String> = info.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let cond: Vec<String> = ordered
        .iter()
        .enumerate()
        .map(|(i, (ix, _))| format!("{} = ?{}", quote_ident(&info.columns[*ix].name), i + 1))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        cols.join(", "),
        quote_ident(&info.name),
        cond.join(" AND ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let values: Option<Vec<Value>> = stmt
        .query_row(
            rusqlite::params_from_iter(ordered.iter().map(|(_, v)| *v)),
            |r| (0..info.columns.len()).map(|i| r.get(i)).collect(),
        )
        .optional()?;
    let Some(values) = values else {
        return Ok(RowImage::Absent {
            table: info.name.clone(),
            key: ordered
                .iter()
                .map(|(ix, v)| (info.columns[*ix].name.clone(), (*v).clone()))
                .collect(),
        });
    };
    let mut keyed: Vec<Option<(String, Value)>> = vec![None; info.pk.len()];
    let mut row = Vec::with_capacity(values.len() - info.pk.len());
    for (i, v) in values.into_iter().enumerate() {
        let name = info.columns[i].name.clone();
        match info.pk.iter().position(|&p| p == i) {
            Some(k) => keyed[k] = Some((name, v)),
            None => row.push((name, v)),
        }
    }
    Ok(RowImage::Present {
        table: info.name.clone(),
        key: keyed.into_iter().flatten().collect(),
        row,
    })
}

/// Calls `f` with every row of `table` (its key in key order, its other columns), names as
/// the schema spells them; returns false if the database has no such table or it has no
/// primary key. `db_err` names the database in errors.
pub(crate) fn for_each_row(
    conn: &Connection,
    schema: &mut SchemaCache,
    table: &str,
    db_err: &dyn Fn(rusqlite::Error) -> crate::error::Error,
    f: &mut dyn FnMut(&str, Columns, Columns) -> crate::error::Result<()>,
) -> crate::error::Result<bool> {
    let info = match schema.table(conn, table, true) {
        Ok(Some(t)) if !t.pk.is_empty() => t,
        Ok(_) => return Ok(false),
        Err(ApplyError::Transient(e)) => return Err(db_err(e.into_inner())),
        Err(_) => return Ok(false),
    };
    let cols: Vec<String> = info.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let sql = format!(
        "SELECT {} FROM {}",
        cols.join(", "),
        quote_ident(&info.name)
    );
    let mut stmt = conn.prepare(&sql).map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    while let Some(r) = rows.next().map_err(db_err)? {
        let mut key: Vec<Option<(String, Value)>> = vec![None; info.pk.len()];
        let mut rest = Vec::with_capacity(info.columns.len() - info.pk.len());
        for (i, c) in info.columns.iter().enumerate() {
            let v: Value = r.get(i).map_err(db_err)?;
            match info.pk.iter().position(|&p| p == i) {
                Some(k) => key[k] = Some((c.name.clone(), v)),
                None => rest.push((c.name.clone(), v)),
            }
        }
        f(&info.name, key.into_iter().flatten().collect(), rest)?;
    }
    Ok(true)
}

/// Double-quotes an SQL identifier (`"` inside is doubled).
pub fn quote_ident(name: &str) -> String {
    quote_with(name, '"')
}

/// `s` between two `quote`s, each `quote` inside doubled: SQL's quoting of identifiers (`"`)
/// and of string literals (`'`, with standard-conforming strings).
pub(crate) fn quote_with(s: &str, quote: char) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push(quote);
    for c in s.chars() {
        if c == quote {
            q.push(quote);
        }
        q.push(c);
    }
    q.push(quote);
    q
}

/// What an event's `apply` works with: the connection (inside a transaction), the LSN of the
/// entry being applied, and the schema cache used to check row mutations.
pub struct ApplyContext<'c> {
    conn: &'c Connection,
    schema: &'c mut SchemaCache,
    lsn: Lsn,
}

impl<'c> ApplyContext<'c> {
    pub(crate) fn new(conn: &'c Connection, schema: &'c mut SchemaCache, lsn: Lsn) -> Self {
        ApplyContext { conn, schema, lsn }
    }

    /// The LSN of the entry being applied: the one it is journaled as, in the cache (at
    /// `Store::apply` and when the cache catches up on open) and at the target (replay,
    /// quarantine retry) alike. Unique per journal and applied once per database, so it can
    /// serve as an idempotency key or in an audit row.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// The connection, inside the transaction (and savepoint) of the event being applied.
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// Applies one row mutation after checking its table, key and columns against the
    /// database's schema.
    pub fn apply_mutation(&mut self, m: &Mutation) -> Result<(), ApplyError> {
        let t = match self
            .template(m, false)
            .and_then(|t| check_values(&t, m).map(|()| t))
        {
            Ok(t) => t,
            // The schema may have changed under us (a migration by another process): look
            // again before calling the entry permanently wrong.
            Err(ApplyError::Permanent { .. }) => {
                let t = self.template(m, true)?;
                check_values(&t, m)?;
                t
            }
            Err(e) => return Err(e),
        };
        let params = |ix: &[usize]| -> Vec<&Value> {
            let key = m.key();
            let values = m.values();
            ix.iter()
                .map(|&i| {
                    if i < key.len() {
                        &key[i].1
                    } else {
                        &values[i - key.len()].1
                    }
                })
                .collect()
        };
        let run = |(sql, ix): &Stmt| -> Result<usize, ApplyError> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            stmt.execute(rusqlite::params_from_iter(params(ix)))
                .map_err(|e| match ApplyError::from(e) {
                    ApplyError::Permanent { reason } => ApplyError::Permanent {
                        reason: format!("{m}: {reason}"),
                    },
                    t => t,
                })
        };
        match &t.steps {
            Steps::One { stmt, must_change } => {
                if run(stmt)? == 0 && *must_change {
                    return Err(ApplyError::permanent(format!(
                        "{m}: no row in {} has this key",
                        t.info.name
                    )));
                }
            }
            Steps::UpdateElseInsert { update, insert } => {
                if run(update)? == 0 {
                    run(insert)?;
                }
            }
            Steps::InsertIfAbsent { exists, insert } => {
                let mut stmt = self.conn.prepare_cached(&exists.0)?;
                let found: bool =
                    stmt.query_row(rusqlite::params_from_iter(params(&exists.1)), |r| r.get(0))?;
                if !found {
                    run(insert)?;
                }
            }
        }
        Ok(())
    }

    /// The statement template for `m`'s shape: from the cache, or built (names checked
    /// against the schema) and cached.
    fn template(&mut self, m: &Mutation, refresh: bool) -> Result<Arc<Template>, ApplyError> {
        let h = shape_hash(m);
        if !refresh
            && let Some(t) = self
                .schema
                .templates
                .get(&h)
                .and_then(|v| v.iter().find(|t| t.matches(m)))
        {
            return Ok(Arc::clone(t));
        }
        let t = Arc::new(self.build_template(m, refresh)?);
        let list = self.schema.templates.entry(h).or_default();
        list.retain(|old| !old.matches(m));
        list.push(Arc::clone(&t));
        Ok(t)
    }

    fn build_template(&mut self, m: &Mutation, refresh: bool) -> Result<Template, ApplyError> {
        let tname = m.table();
        let lower = tname.to_ascii_lowercase();
        if lower.starts_with("sqlite_") || lower.starts_with("syncjournal_") {
            return Err(ApplyError::permanent(format!(
                "{m}: table {tname:?} is internal and cannot be written through the journal"
            )));
        }
        let Some(t) = self.schema.table(self.conn, tname, refresh)? else {
            return Err(ApplyError::permanent(format!("{m}: no table {tname:?}")));
        };
        if t.pk.is_empty() {
            return Err(ApplyError::permanent(format!(
                "{m}: table {} has no primary key",
                t.name
            )));
        }
        let key = resolve(&t, m, m.key(), "key")?;
        let mut key_sorted = key.clone();
        key_sorted.sort_unstable();
        let mut pk_sorted = t.pk.clone();
        pk_sorted.sort_unstable();
        if key_sorted != pk_sorted {
            let want: Vec<&str> = t.pk.iter().map(|&i| t.columns[i].name.as_str()).collect();
            return Err(ApplyError::permanent(format!(
                "{m}: the key must name exactly the primary-key columns of {} ({})",
                t.name,
                want.join(", ")
            )));
        }
        let values = resolve(&t, m, m.values(), "column")?;
        if let Some(i) = values.iter().find(|i| t.pk.contains(i)) {
            return Err(ApplyError::permanent(format!(
                "{m}: column {} is part of the primary key and is given in the key",
                t.columns[*i].name
            )));
        }
        // Parameters are indexes into `key ++ values`, in the mutation's own order.
        let nk = key.len();
        let q = |i: usize| quote_ident(&t.columns[i].name);
        let table = quote_ident(&t.name);
        let key_where = |first: usize| -> String {
            key.iter()
                .enumerate()
                .map(|(n, &i)| format!("{} = ?{}", q(i), first + n))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let key_ix = || (0..nk).collect::<Vec<usize>>();
        let insert = || {
            let cols: Vec<String> = key.iter().chain(&values).map(|&i| q(i)).collect();
            let marks: Vec<String> = (1..=cols.len()).map(|n| format!("?{n}")).collect();
            (
                format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    cols.join(", "),
                    marks.join(", ")
                ),
                (0..nk + values.len()).collect::<Vec<usize>>(),
            )
        };
        let update = || {
            let set: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(n, &i)| format!("{} = ?{}", q(i), n + 1))
                .collect();
            (
                format!(
                    "UPDATE {table} SET {} WHERE {}",
                    set.join(", "),
                    key_where(values.len() + 1)
                ),
                (nk..nk + values.len()).chain(0..nk).collect::<Vec<usize>>(),
            )
        };
        let steps = match m {
            Mutation::Insert { .. } => Steps::One {
                stmt: insert(),
                must_change: false,
            },
            Mutation::Update { .. } => {
                if values.is_empty() {
                    return Err(ApplyError::permanent(format!("{m}: update sets no column")));
                }
                Steps::One {
                    stmt: update(),
                    must_change: true,
                }
            }
            Mutation::Upsert { .. } => {
                // SQLite checks NOT NULL on the insert half of `INSERT … ON CONFLICT DO
                // UPDATE` before it sees the conflict, so the one-statement form is only right
                // when the values give every required column.
                let covered = t
                    .columns
                    .iter()
                    .enumerate()
                    .all(|(i, c)| !c.required || key.iter().chain(&values).any(|&j| j == i));
                if covered {
                    let (mut sql, ix) = insert();
                    let conflict: Vec<String> = t.pk.iter().map(|&i| q(i)).collect();
                    if values.is_empty() {
                        sql.push_str(&format!(
                            " ON CONFLICT ({}) DO NOTHING",
                            conflict.join(", ")
                        ));
                    } else {
                        let set: Vec<String> = values
                            .iter()
                            .map(|&i| format!("{c} = excluded.{c}", c = q(i)))
                            .collect();
                        sql.push_str(&format!(
                            " ON CONFLICT ({}) DO UPDATE SET {}",
                            conflict.join(", "),
                            set.join(", ")
                        ));
                    }
                    Steps::One {
                        stmt: (sql, ix),
                        must_change: false,
                    }
                } else if values.is_empty() {
                    Steps::InsertIfAbsent {
                        exists: (
                            format!(
                                "SELECT EXISTS (SELECT 1 FROM {table} WHERE {})",
                                key_where(1)
                            ),
                            key_ix(),
                        ),
                        insert: insert(),
                    }
                } else {
                    Steps::UpdateElseInsert {
                        update: update(),
                        insert: insert(),
                    }
                }
            }
            Mutation::Delete { .. } => Steps::One {
                stmt: (
                    format!("DELETE FROM {table} WHERE {}", key_where(1)),
                    key_ix(),
                ),
                must_change: false,
            },
        };
        Ok(Template {
            op: op_code(m),
            given_table: tname.to_owned(),
            given_cols: m
                .key()
                .iter()
                .chain(m.values())
                .map(|(n, _)| n.clone())
                .collect(),
            key_len: nk,
            cols: key.iter().chain(&values).copied().collect(),
            info: t,
            steps,
        })
    }
}

fn op_code(m: &Mutation) -> u8 {
    match m {
        Mutation::Insert { .. } => 0,
        Mutation::Update { .. } => 1,
        Mutation::Upsert { .. } => 2,
        Mutation::Delete { .. } => 3,
    }
}

/// A hash of a mutation's shape: operation, table and column names as given.
fn shape_hash(m: &Mutation) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    op_code(m).hash(&mut h);
    m.table().hash(&mut h);
    m.key().len().hash(&mut h);
    for (n, _) in m.key().iter().chain(m.values()) {
        n.hash(&mut h);
    }
    h.finish()
}

/// A statement and its parameters, as indexes into the mutation's `key ++ values`.
type Stmt = (String, Vec<usize>);

/// How a mutation is carried out.
enum Steps {
    /// One statement; with `must_change`, no changed row means "no such row".
    One { stmt: Stmt, must_change: bool },
    /// Update the row if it exists, insert it otherwise.
    UpdateElseInsert { update: Stmt, insert: Stmt },
    /// Insert the row unless it exists.
    InsertIfAbsent { exists: Stmt, insert: Stmt },
}

/// The statements for one mutation shape, with its names already checked against the schema.
pub(crate) struct Template {
    op: u8,
    given_table: String,
    given_cols: Vec<String>,
    key_len: usize,
    /// Schema positions of `key ++ values`.
    cols: Vec<usize>,
    info: Arc<TableInfo>,
    steps: Steps,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("table", &self.info.name)
            .finish_non_exhaustive()
    }
}

impl Template {
    fn matches(&self, m: &Mutation) -> bool {
        self.op == op_code(m)
            && self.given_table == m.table()
            && self.key_len == m.key().len()
            && self.given_cols.len() == m.key().len() + m.values().len()
            && self
                .given_cols
                .iter()
                .zip(m.key().iter().chain(m.values()))
                .all(|(a, (b, _))| a == b)
    }
}

/// The checks that depend on values: no NULL or NaN in the key, and each value of its
/// column's type family.
///
/// SQLite binds a NaN as NULL. In a key that would address no row (`WHERE id = NULL`) or
/// insert one whose key is chosen by SQLite (a rowid alias takes the next rowid, which differs
/// between the cache and the target), so a NaN key is refused like a NULL one. In another
/// column NaN is stored as NULL — at the cache and at the target alike, so they agree — and a
/// `NOT NULL` column refuses it as it refuses NULL. ±infinity are ordinary reals.
fn check_values(t: &Template, m: &Mutation) -> Result<(), ApplyError> {
    for (p, (_, v)) in m.key().iter().chain(m.values()).enumerate() {
        let c = &t.info.columns[t.cols[p]];
        if p < t.key_len {
            match v {
                Value::Null => {
                    return Err(ApplyError::permanent(format!(
                        "{m}: key column {}.{} is NULL",
                        t.info.name, c.name
                    )));
                }
                Value::Real(r) if r.is_nan() => {
                    return Err(ApplyError::permanent(format!(
                        "{m}: key column {}.{} is NaN, which SQLite stores and compares as NULL: a key must name one row",
                        t.info.name, c.name
                    )));
                }
                _ => {}
            }
        }
        if !c.affinity.accepts(v) {
            return Err(ApplyError::permanent(format!(
                "{m}: type mismatch: column {}.{} is declared {:?} but the value is {}",
                t.info.name,
                c.name,
                c.decl,
                kind_name(v)
            )));
        }
    }
    Ok(())
}

/// Maps named columns to schema positions, refusing unknown and duplicate names.
fn resolve(
    t: &TableInfo,
    m: &Mutation,
    cols: &[(String, Value)],
    what: &str,
) -> Result<Vec<usize>, ApplyError> {
    let mut out: Vec<usize> = Vec::with_capacity(cols.len());
    for (name, _) in cols {
        let Some(i) = t.column(name) else {
            return Err(ApplyError::permanent(format!(
                "{m}: table {} has no column {name:?}{}",
                t.name,
                if what == "key" {
                    " (named in the key)"
                } else {
                    ""
                }
            )));
        };
        if out.contains(&i) {
            return Err(ApplyError::permanent(format!(
                "{m}: column {name:?} is given twice"
            )));
        }
        out.push(i);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutation::ChangeSet;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE hosts (id INTEGER PRIMARY KEY, name TEXT NOT NULL, port INTEGER, note BLOB);
             CREATE TABLE pairs (a TEXT, b INTEGER, v REAL, PRIMARY KEY (a, b));
             CREATE TABLE \"we\"\"ird\" (\"k\"\"k\" INTEGER PRIMARY KEY, x);",
        )
        .unwrap();
        c
    }

    fn apply(c: &Connection, s: &mut SchemaCache, cs: &ChangeSet) -> Result<(), ApplyError> {
        let mut ctx = ApplyContext::new(c, s, 1);
        for m in &cs.mutations {
            ctx.apply_mutation(m)?;
        }
        Ok(())
    }

    #[test]
    fn the_four_mutations() {
        let c = db();
        let mut s = SchemaCache::new();
        apply(
            &c,
            &mut s,
            &ChangeSet::new()
                .insert("hosts", [("id", 1)], [("name", "a"), ("port", "22")])
                .upsert("hosts", [("id", 2)], [("name", "b")]),
        )
        .unwrap_err(); // "22" is text for an INTEGER column
        apply(
            &c,
            &mut s,
            &ChangeSet::new()
                .insert(
                    "hosts",
                    [("id", 1)],
                    [("name", Value::from("a")), ("port", 22.into())],
                )
                .upsert("hosts", [("id", 2)], [("name", "b")])
                .upsert("HOSTS", [("ID", 2)], [("Port", 443)])
                .update("hosts", [("id", 1)], [("name", "a2")])
                .delete("hosts", [("id", 2)])
                .delete("hosts", [("id", 99)])
                .upsert(
                    "pairs",
                    [("b", 1.into()), ("a", Value::from("x"))],
                    [("v", 0.5)],
                ),
        )
        .unwrap();
        let rows: Vec<(i64, String, Option<i64>)> = c
            .prepare("SELECT id, name, port FROM hosts ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, vec![(1, "a2".into(), Some(22))]);
    }

    #[test]
    fn rejections_name_the_problem() {
        let c = db();
        let mut s = SchemaCache::new();
        let cases: Vec<(ChangeSet, &str)> = vec![
            (ChangeSet::new().delete("nope", [("id", 1)]), "no table"),
            (
                ChangeSet::new().delete("hosts", [("name", "x")]),
                "primary-key",
            ),
            (
                ChangeSet::new().delete("hosts", [("id", Value::Null)]),
                "NULL",
            ),
            (
                ChangeSet::new().upsert("hosts", [("id", 1)], [("bogus", 1)]),
                "no column",
            ),
            (
                ChangeSet::new().upsert("hosts", [("id", 1)], [("name", 5)]),
                "type mismatch",
            ),
            (
                ChangeSet::new().update("hosts", [("id", 1)], [("name", "x")]),
                "no row",
            ),
            (
                ChangeSet::new().update("hosts", [("id", 1)], Vec::<(&str, i64)>::new()),
                "sets no column",
            ),
            (
                ChangeSet::new().insert("hosts", [("id", 1)], [("port", 1)]),
                "NOT NULL",
            ),
            (
                ChangeSet::new().delete("sqlite_schema", [("name", "x")]),
                "internal",
            ),
            (
                ChangeSet::new().delete("syncjournal_progress", [("journal_id", "x")]),
                "internal",
            ),
            (
                ChangeSet::new().upsert("hosts", [("id", 1)], [("name", "a"), ("NAME", "b")]),
                "twice",
            ),
        ];
        for (cs, want) in cases {
            match apply(&c, &mut s, &cs) {
                Err(ApplyError::Permanent { reason }) => {
                    assert!(reason.contains(want), "{reason:?} should mention {want:?}")
                }
                other => panic!("{cs:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn hostile_names_are_looked_up_and_quoted_never_spliced() {
        let c = db();
        let mut s = SchemaCache::new();
        let evil = "hosts; DROP TABLE hosts; --";
        assert!(apply(&c, &mut s, &ChangeSet::new().delete(evil, [("id", 1)])).is_err());
        assert!(
            apply(
                &c,
                &mut s,
                &ChangeSet::new().upsert("hosts", [("id", 1)], [("name\" = 'x'; --", "y")])
            )
            .is_err()
        );
        // a table whose real name contains a quote works, through quoting
        apply(
            &c,
            &mut s,
            &ChangeSet::new().upsert("we\"ird", [("k\"k", 1)], [("x", "ok")]),
        )
        .unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM hosts", [], |r| r.get(0))
            .unwrap_or(-1);
        assert_eq!(n, 0, "hosts still exists");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn a_new_column_is_found_after_a_migration() {
        let c = db();
        let mut s = SchemaCache::new();
        apply(
            &c,
            &mut s,
            &ChangeSet::new().upsert("hosts", [("id", 1)], [("name", "a")]),
        )
        .unwrap();
        c.execute_batch("ALTER TABLE hosts ADD COLUMN os TEXT")
            .unwrap();
        apply(
            &c,
            &mut s,
            &ChangeSet::new().upsert("hosts", [("id", 1)], [("os", "linux")]),
        )
        .unwrap();
    }
}
