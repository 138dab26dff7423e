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

use rusqlite::{Connection, ErrorCode};

use crate::mutation::{Mutation, Value};

/// Why an event could not be applied.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApplyError {
    /// The database could not be used right now (busy, locked, I/O error, read-only, share
    /// offline…): retry later; the entry is not at fault.
    Transient(rusqlite::Error),
    /// The entry can never apply to this database as it is (constraint violation, missing
    /// table or column, type mismatch, no such row): a permanent error.
    Rejected {
        /// What is wrong, naming the table, column or constraint.
        reason: String,
    },
}

impl ApplyError {
    /// A permanent rejection with a reason.
    pub fn rejected(reason: impl Into<String>) -> Self {
        ApplyError::Rejected {
            reason: reason.into(),
        }
    }

    /// True for [`ApplyError::Rejected`].
    pub fn is_permanent(&self) -> bool {
        matches!(self, ApplyError::Rejected { .. })
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Transient(e) => write!(f, "database unavailable: {e}"),
            ApplyError::Rejected { reason } => write!(f, "rejected: {reason}"),
        }
    }
}

impl std::error::Error for ApplyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApplyError::Transient(e) => Some(e),
            ApplyError::Rejected { .. } => None,
        }
    }
}

impl From<rusqlite::Error> for ApplyError {
    fn from(e: rusqlite::Error) -> Self {
        if is_transient(&e) {
            ApplyError::Transient(e)
        } else {
            ApplyError::Rejected {
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
}

impl SchemaCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything (after a reconnect or a schema change).
    pub fn clear(&mut self) {
        self.tables.clear();
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
        let name: String = conn
            .query_row(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
                [table],
                |r| r.get(0),
            )
            .unwrap_or_else(|_| table.to_string());
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

/// Double-quotes an SQL identifier (`"` inside is doubled).
pub fn quote_ident(name: &str) -> String {
    let mut q = String::with_capacity(name.len() + 2);
    q.push('"');
    for c in name.chars() {
        if c == '"' {
            q.push('"');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// What an event's `apply` works with: the connection (inside a transaction) and the schema
/// cache used to check row mutations.
pub struct ApplyContext<'c> {
    conn: &'c Connection,
    schema: &'c mut SchemaCache,
}

impl<'c> ApplyContext<'c> {
    pub(crate) fn new(conn: &'c Connection, schema: &'c mut SchemaCache) -> Self {
        ApplyContext { conn, schema }
    }

    /// The connection, inside the transaction (and savepoint) of the event being applied.
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// Applies one row mutation after checking its table, key and columns against the
    /// database's schema.
    pub fn apply_mutation(&mut self, m: &Mutation) -> Result<(), ApplyError> {
        let plan = match self.plan(m, false) {
            Ok(p) => p,
            // The schema may have changed under us (a migration by another process): look
            // again before calling the entry permanently wrong.
            Err(ApplyError::Rejected { .. }) => self.plan(m, true)?,
            Err(e) => return Err(e),
        };
        let run = |(sql, params): &(String, Vec<&Value>)| -> Result<usize, ApplyError> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            stmt.execute(rusqlite::params_from_iter(params.iter()))
                .map_err(|e| match ApplyError::from(e) {
                    ApplyError::Rejected { reason } => ApplyError::Rejected {
                        reason: format!("{m}: {reason}"),
                    },
                    t => t,
                })
        };
        match &plan.steps {
            Steps::One { stmt, must_change } => {
                if run(stmt)? == 0 && *must_change {
                    return Err(ApplyError::rejected(format!(
                        "{m}: no row in {} has this key",
                        plan.table
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
                    stmt.query_row(rusqlite::params_from_iter(exists.1.iter()), |r| r.get(0))?;
                if !found {
                    run(insert)?;
                }
            }
        }
        Ok(())
    }

    fn plan<'m>(&mut self, m: &'m Mutation, refresh: bool) -> Result<Plan<'m>, ApplyError> {
        let tname = m.table();
        let lower = tname.to_ascii_lowercase();
        if lower.starts_with("sqlite_") || lower.starts_with("syncjournal_") {
            return Err(ApplyError::rejected(format!(
                "{m}: table {tname:?} is internal and cannot be written through the journal"
            )));
        }
        let Some(t) = self.schema.table(self.conn, tname, refresh)? else {
            return Err(ApplyError::rejected(format!("{m}: no table {tname:?}")));
        };
        if t.pk.is_empty() {
            return Err(ApplyError::rejected(format!(
                "{m}: table {} has no primary key",
                t.name
            )));
        }
        let key = resolve(&t, m, m.key(), "key")?;
        let mut key_idx: Vec<usize> = key.iter().map(|(i, _)| *i).collect();
        key_idx.sort_unstable();
        let mut pk_sorted = t.pk.clone();
        pk_sorted.sort_unstable();
        if key_idx != pk_sorted {
            let want: Vec<&str> = t.pk.iter().map(|&i| t.columns[i].name.as_str()).collect();
            return Err(ApplyError::rejected(format!(
                "{m}: the key must name exactly the primary-key columns of {} ({})",
                t.name,
                want.join(", ")
            )));
        }
        if let Some((i, _)) = key.iter().find(|(_, v)| matches!(v, Value::Null)) {
            return Err(ApplyError::rejected(format!(
                "{m}: key column {} is NULL",
                t.columns[*i].name
            )));
        }
        let values = resolve(&t, m, m.values(), "column")?;
        if let Some((i, _)) = values.iter().find(|(i, _)| t.pk.contains(i)) {
            return Err(ApplyError::rejected(format!(
                "{m}: column {} is part of the primary key and is given in the key",
                t.columns[*i].name
            )));
        }
        let q = |i: usize| quote_ident(&t.columns[i].name);
        let table = quote_ident(&t.name);
        let key_where = |first: usize| -> String {
            key.iter()
                .enumerate()
                .map(|(n, (i, _))| format!("{} = ?{}", q(*i), first + n))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let key_params = || key.iter().map(|(_, v)| *v);
        let insert = || {
            let cols: Vec<String> = key.iter().chain(&values).map(|(i, _)| q(*i)).collect();
            let marks: Vec<String> = (1..=cols.len()).map(|n| format!("?{n}")).collect();
            (
                format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    cols.join(", "),
                    marks.join(", ")
                ),
                key.iter()
                    .chain(&values)
                    .map(|(_, v)| *v)
                    .collect::<Vec<&Value>>(),
            )
        };
        let update = || {
            let set: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(n, (i, _))| format!("{} = ?{}", q(*i), n + 1))
                .collect();
            (
                format!(
                    "UPDATE {table} SET {} WHERE {}",
                    set.join(", "),
                    key_where(values.len() + 1)
                ),
                values
                    .iter()
                    .map(|(_, v)| *v)
                    .chain(key_params())
                    .collect::<Vec<&Value>>(),
            )
        };
        let steps = match m {
            Mutation::Insert { .. } => Steps::One {
                stmt: insert(),
                must_change: false,
            },
            Mutation::Update { .. } => {
                if values.is_empty() {
                    return Err(ApplyError::rejected(format!("{m}: update sets no column")));
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
                let covered =
                    t.columns.iter().enumerate().all(|(i, c)| {
                        !c.required || key.iter().chain(&values).any(|(j, _)| *j == i)
                    });
                if covered {
                    let (mut sql, params) = insert();
                    let conflict: Vec<String> = t.pk.iter().map(|&i| q(i)).collect();
                    if values.is_empty() {
                        sql.push_str(&format!(
                            " ON CONFLICT ({}) DO NOTHING",
                            conflict.join(", ")
                        ));
                    } else {
                        let set: Vec<String> = values
                            .iter()
                            .map(|(i, _)| format!("{c} = excluded.{c}", c = q(*i)))
                            .collect();
                        sql.push_str(&format!(
                            " ON CONFLICT ({}) DO UPDATE SET {}",
                            conflict.join(", "),
                            set.join(", ")
                        ));
                    }
                    Steps::One {
                        stmt: (sql, params),
                        must_change: false,
                    }
                } else if values.is_empty() {
                    Steps::InsertIfAbsent {
                        exists: (
                            format!(
                                "SELECT EXISTS (SELECT 1 FROM {table} WHERE {})",
                                key_where(1)
                            ),
                            key_params().collect(),
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
                    key_params().collect(),
                ),
                must_change: false,
            },
        };
        Ok(Plan {
            steps,
            table: t.name.clone(),
        })
    }
}

/// A statement and its parameters.
type Stmt<'m> = (String, Vec<&'m Value>);

/// How a mutation is carried out.
enum Steps<'m> {
    /// One statement; with `must_change`, no changed row means "no such row".
    One { stmt: Stmt<'m>, must_change: bool },
    /// Update the row if it exists, insert it otherwise.
    UpdateElseInsert { update: Stmt<'m>, insert: Stmt<'m> },
    /// Insert the row unless it exists.
    InsertIfAbsent { exists: Stmt<'m>, insert: Stmt<'m> },
}

struct Plan<'m> {
    steps: Steps<'m>,
    table: String,
}

/// Maps named columns to schema positions, refusing unknown and duplicate names and values
/// of the wrong type family.
fn resolve<'m>(
    t: &TableInfo,
    m: &Mutation,
    cols: &'m [(String, Value)],
    what: &str,
) -> Result<Vec<(usize, &'m Value)>, ApplyError> {
    let mut out: Vec<(usize, &Value)> = Vec::with_capacity(cols.len());
    for (name, v) in cols {
        let Some(i) = t.column(name) else {
            return Err(ApplyError::rejected(format!(
                "{m}: table {} has no {what} column {name:?}",
                t.name
            )));
        };
        if out.iter().any(|(j, _)| *j == i) {
            return Err(ApplyError::rejected(format!(
                "{m}: column {name:?} is given twice"
            )));
        }
        let c = &t.columns[i];
        if !c.affinity.accepts(v) {
            return Err(ApplyError::rejected(format!(
                "{m}: type mismatch: column {}.{} is declared {:?} but the value is {}",
                t.name,
                c.name,
                c.decl,
                kind_name(v)
            )));
        }
        out.push((i, v));
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
        let mut ctx = ApplyContext::new(c, s);
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
                Err(ApplyError::Rejected { reason }) => {
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
