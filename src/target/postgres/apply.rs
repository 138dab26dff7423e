//! Applying row mutations to PostgreSQL: names checked against the server's catalog for the
//! configured schema (the canonical name found there, double-quoted, is what goes into SQL;
//! syncjournal's own tables are out of reach), values checked against the column's type, and
//! rendered as statements for the batch's message ([`Pending`]): in a combined batch the rows
//! of many entries share multi-row statements and one message, entry by entry each entry's
//! statements are one message with its savepoint. Literals are rendered here, with
//! `standard_conforming_strings` on for the session, so a value can never end its literal
//! early.

use std::sync::Arc;

use postgres::Client;

use crate::apply::ApplyError;
use crate::format::Lsn;
use crate::mutation::{Mutation, Value};

use super::batch::{Cell, Conflict, Expect, Pending, Rendered, Row, SendError};
use super::catalog::{Catalog, PgColumn, PgTable, quote_ident};

/// What an application event's `apply_postgres` works with: the LSN of the entry, the row
/// mutations of [`ChangeSet`](crate::ChangeSet) ([`PgApplyContext::apply_changes`]) and its
/// own statements ([`PgApplyContext::execute`]), all inside the entry's savepoint.
pub struct PgApplyContext<'c> {
    pub(crate) client: &'c mut Client,
    pub(crate) catalog: &'c mut Catalog,
    pub(crate) schema: &'c str,
    /// Statements not sent yet (the savepoint, the last entry's release; in a combined batch
    /// the entries before this one).
    pub(crate) pending: &'c mut Pending,
    pub(crate) lsn: Lsn,
    /// The batch is combined: statements wait in `pending` until the batch is settled, and
    /// entries have no savepoints.
    pub(crate) combined: bool,
    /// Set when something of this entry went into a combined batch (sent or waiting), which
    /// has no savepoint to undo it with.
    pub(crate) written: &'c mut bool,
}

impl PgApplyContext<'_> {
    /// The LSN of the entry being applied (unique per journal; an idempotency key).
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Runs one statement of the application's own with parameters (the `postgres` crate's
    /// types), inside the entry's savepoint; returns the rows changed. Server errors are
    /// classified: constraint, data and undefined-object errors refuse the entry, connection
    /// and serialization failures are transient.
    pub fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, ApplyError> {
        self.flush_pending()?;
        self.client.execute(sql, params).map_err(apply_error)
    }

    /// Runs one query of the application's own, inside the entry's savepoint.
    pub fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, ApplyError> {
        self.flush_pending()?;
        self.client.query(sql, params).map_err(apply_error)
    }

    /// Sends what waits, before a statement whose answer the event needs now.
    fn flush_pending(&mut self) -> Result<(), ApplyError> {
        if self.combined {
            *self.written = true;
        }
        self.send_pending()
    }

    fn send_pending(&mut self) -> Result<(), ApplyError> {
        self.pending.send(self.client).map_err(|e| match e {
            SendError::Server(e) => apply_error(e),
            SendError::Refused(what) => ApplyError::permanent(what),
        })
    }

    /// Applies row mutations (a [`ChangeSet`](crate::ChangeSet)'s) after checking their
    /// tables, keys, columns and values against the catalog. Entry by entry they go to the
    /// server at once (one message with the entry's savepoint); in a combined batch they wait
    /// for the rest of the batch, rows of one table sharing statements.
    pub fn apply_changes(&mut self, mutations: &[Mutation]) -> Result<(), ApplyError> {
        // Rendered first: a refusal found here leaves nothing of the entry pending.
        let mut rendered = Vec::with_capacity(mutations.len());
        for m in mutations {
            let (t, cached) = self.table(m.table())?;
            let stmt = match render(&t, m) {
                Ok(s) => s,
                // The schema may have changed under us (a migration): look again before
                // calling the entry permanently wrong.
                Err(ApplyError::Permanent { .. }) if cached => {
                    self.catalog.remove(m.table());
                    let (t, _) = self.table(m.table())?;
                    render(&t, m)?
                }
                Err(e) => return Err(e),
            };
            rendered.push(stmt);
        }
        if self.combined && !rendered.is_empty() {
            *self.written = true;
        }
        for r in rendered {
            self.pending.push(r);
        }
        if self.combined {
            return Ok(());
        }
        self.send_pending()
    }

    /// The table `name` of the configured schema, from the catalog (cached per connection;
    /// true if it came from the cache).
    fn table(&mut self, name: &str) -> Result<(Arc<PgTable>, bool), ApplyError> {
        if let Some(t) = self.catalog.get(name) {
            return Ok((t, true));
        }
        let t = Arc::new(lookup(self.client, self.schema, name)?);
        self.catalog.insert(name, Arc::clone(&t));
        Ok((t, false))
    }
}

/// Maps a client error inside an entry to an [`ApplyError`].
pub(crate) fn apply_error(e: postgres::Error) -> ApplyError {
    match e.as_db_error() {
        Some(db) if super::connect::refuses_entry(db.code().code()) => {
            let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
            ApplyError::permanent(format!(
                "{}{detail} (SQLSTATE {})",
                db.message(),
                db.code().code()
            ))
        }
        _ => ApplyError::Server(e.into()),
    }
}

/// Looks `name` up in the catalog of `schema`: exact name first, else the one table whose
/// name matches ignoring case (SQLite's rule, so that one journal fits both targets).
pub(crate) fn lookup(client: &mut Client, schema: &str, name: &str) -> Result<PgTable, ApplyError> {
    if name.to_ascii_lowercase().starts_with("syncjournal_") {
        return Err(ApplyError::permanent(format!(
            "table {name:?} is syncjournal's own bookkeeping: entries cannot change it"
        )));
    }
    let rows = client
        .query(
            "SELECT c.relname, a.attname, t.typname, a.attnotnull,
                    (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '') AS has_default,
                    COALESCE(a.attnum = ANY (i.indkey), false) AS in_pk,
                    pg_catalog.format_type(a.atttypid, NULL) AS sql_type,
                    NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal)
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f WHERE f.contype = 'f' AND (f.conrelid = c.oid OR f.confrelid = c.oid))
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite w WHERE w.ev_class = c.oid AND w.rulename <> '_RETURN') AS reorderable
             FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary
             WHERE n.nspname = $1 AND lower(c.relname) = lower($2) AND c.relkind IN ('r', 'p')
             ORDER BY (c.relname = $2) DESC, c.relname, a.attnum",
            &[&schema, &name],
        )
        .map_err(apply_error)?;
    let Some(first) = rows.first() else {
        return Err(ApplyError::permanent(format!(
            "no table {name:?} in schema {schema:?}"
        )));
    };
    let relname: String = first.get(0);
    let reorderable: bool = first.get(7);
    let columns = rows
        .iter()
        .filter(|r| r.get::<_, String>(0) == relname)
        .map(|r| PgColumn {
            quoted: quote_ident(&r.get::<_, String>(1)),
            name: r.get(1),
            typ: r.get(2),
            required: r.get::<_, bool>(3) && !r.get::<_, bool>(4),
            in_pk: r.get(5),
            sql_type: r.get(6),
        })
        .collect();
    Ok(PgTable {
        qualified: format!("{}.{}", quote_ident(schema), quote_ident(&relname)),
        name: relname,
        columns,
        reorderable,
    })
}

/// The column `name` of `t` (exact, else ignoring case), by index.
fn column(t: &PgTable, m: &Mutation, name: &str) -> Result<usize, ApplyError> {
    t.columns
        .iter()
        .position(|c| c.name == name)
        .or_else(|| {
            t.columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(name))
        })
        .ok_or_else(|| {
            ApplyError::permanent(format!("{m}: table {} has no column {name:?}", t.name))
        })
}

/// One mutation as a statement, or as a row that may share an `INSERT` with its neighbours.
fn render(t: &Arc<PgTable>, m: &Mutation) -> Result<Rendered, ApplyError> {
    let key = m.key();
    let values = m.values();
    if key.is_empty() {
        return Err(ApplyError::permanent(format!("{m}: no key")));
    }
    let mut idx: Vec<usize> = Vec::with_capacity(key.len() + values.len());
    let mut cells: Vec<Cell> = Vec::with_capacity(key.len() + values.len());
    for (i, (name, v)) in key.iter().chain(values).enumerate() {
        let ci = column(t, m, name)?;
        let c = &t.columns[ci];
        if idx.contains(&ci) {
            return Err(ApplyError::permanent(format!(
                "{m}: column {}.{} is given twice",
                t.name, c.name
            )));
        }
        idx.push(ci);
        if i < key.len() {
            match v {
                Value::Null => {
                    return Err(ApplyError::permanent(format!(
                        "{m}: key column {}.{} is NULL",
                        t.name, c.name
                    )));
                }
                Value::Real(r) if r.is_nan() => {
                    return Err(ApplyError::permanent(format!(
                        "{m}: key column {}.{} is NaN: a key must name one row",
                        t.name, c.name
                    )));
                }
                _ => {}
            }
        }
        cells.push(cell(t, c, m, v)?);
    }
    let nkey = key.len();
    let assign = |range: std::ops::Range<usize>, sep: &str| {
        range
            .map(|i| format!("{} = {}", t.columns[idx[i]].quoted, cells[i].literal()))
            .collect::<Vec<_>>()
            .join(sep)
    };
    let key_where = || assign(0..nkey, " AND ");
    let row = |conflict: Option<Conflict>, idx: Vec<usize>, cells: Vec<Cell>| {
        let key = conflict.map(|_| {
            cells[..nkey]
                .iter()
                .map(Cell::literal)
                .collect::<Vec<_>>()
                .join(", ")
        });
        Rendered::Row(Row {
            table: Arc::clone(t),
            cols: idx,
            conflict,
            key,
            cells,
        })
    };
    Ok(match m {
        Mutation::Insert { .. } => row(None, idx, cells),
        Mutation::Update { .. } => {
            if idx.len() == nkey {
                return Err(ApplyError::permanent(format!("{m}: update sets no column")));
            }
            Rendered::Statement(
                format!(
                    "UPDATE {} SET {} WHERE {}",
                    t.qualified,
                    assign(nkey..idx.len(), ", "),
                    key_where()
                ),
                Expect::Changes(format!("{m}: no row in {} has this key", t.name)),
            )
        }
        Mutation::Delete { .. } => Rendered::Statement(
            format!("DELETE FROM {} WHERE {}", t.qualified, key_where()),
            Expect::Anything,
        ),
        Mutation::Upsert { .. } => {
            let pk: Vec<&PgColumn> = t.columns.iter().filter(|c| c.in_pk).collect();
            let same = pk.len() == nkey && idx[..nkey].iter().all(|&i| t.columns[i].in_pk);
            if !same {
                return Err(ApplyError::permanent(format!(
                    "{m}: an upsert's key must be the primary key of {} ({})",
                    t.name,
                    pk.iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let covered = t
                .columns
                .iter()
                .enumerate()
                .all(|(i, c)| !c.required || idx.contains(&i));
            if covered {
                row(Some(Conflict { key_cols: nkey }), idx, cells)
            } else {
                // Not every required column is given: update the row if it exists, else
                // insert (which then fails on the missing column, naming it) — one statement.
                let key_where = key_where();
                let upd = if idx.len() == nkey {
                    format!("SELECT 1 FROM {} WHERE {key_where}", t.qualified)
                } else {
                    format!(
                        "UPDATE {} SET {} WHERE {key_where} RETURNING 1",
                        t.qualified,
                        assign(nkey..idx.len(), ", ")
                    )
                };
                let names: Vec<&str> = idx.iter().map(|&i| t.columns[i].quoted.as_str()).collect();
                let lits: Vec<String> = cells.iter().map(Cell::literal).collect();
                Rendered::Statement(
                    format!(
                        "WITH sj_u AS ({upd}) INSERT INTO {} ({}) SELECT {} WHERE NOT EXISTS (SELECT 1 FROM sj_u)",
                        t.qualified,
                        names.join(", "),
                        lits.join(", ")
                    ),
                    Expect::Anything,
                )
            }
        }
    })
}

/// `v` as a value of column `c`, or the reason the column cannot take it.
pub(crate) fn cell(t: &PgTable, c: &PgColumn, m: &Mutation, v: &Value) -> Result<Cell, ApplyError> {
    let mismatch = |what: &str| {
        ApplyError::permanent(format!(
            "{m}: type mismatch: column {}.{} is {} but the value is {what}",
            t.name, c.name, c.typ
        ))
    };
    let typ = c.typ.as_str();
    let integer_range = |i: i64| -> Result<(), ApplyError> {
        let (lo, hi) = match typ {
            "int2" => (i64::from(i16::MIN), i64::from(i16::MAX)),
            "int4" => (i64::from(i32::MIN), i64::from(i32::MAX)),
            _ => (i64::MIN, i64::MAX),
        };
        if (lo..=hi).contains(&i) {
            Ok(())
        } else {
            Err(ApplyError::permanent(format!(
                "{m}: value {i} is out of range for column {}.{} ({typ})",
                t.name, c.name
            )))
        }
    };
    Ok(match v {
        Value::Null => Cell::Null,
        Value::Integer(i) => match typ {
            "int2" | "int4" | "int8" => {
                integer_range(*i)?;
                Cell::Int(*i)
            }
            "float4" | "float8" | "numeric" => Cell::Int(*i),
            "bool" if *i == 0 || *i == 1 => Cell::Bool(*i == 1),
            _ => return Err(mismatch("an integer")),
        },
        Value::Real(r) => match typ {
            "float4" | "float8" | "numeric" => {
                if r.is_nan() {
                    // As at the SQLite cache, where NaN is stored as NULL.
                    Cell::Null
                } else {
                    Cell::Float(*r)
                }
            }
            _ => return Err(mismatch("a real")),
        },
        Value::Text(s) => {
            // Text goes to the text-like types and to those the server reads from text (dates,
            // UUIDs, JSON…, whose own checks name the column's type); never to a number, a
            // boolean or bytes, as at the SQLite cache.
            if matches!(
                typ,
                "bytea" | "int2" | "int4" | "int8" | "float4" | "float8" | "numeric" | "bool"
            ) {
                return Err(mismatch("text"));
            }
            if s.contains('\0') {
                return Err(ApplyError::permanent(format!(
                    "{m}: column {}.{}: the text holds a NUL character, which PostgreSQL text cannot store",
                    t.name, c.name
                )));
            }
            Cell::Text(s.clone())
        }
        Value::Blob(b) => {
            if typ != "bytea" {
                return Err(mismatch("a blob"));
            }
            Cell::Bytes(b.clone())
        }
    })
}
