//! Applying row mutations to PostgreSQL: names checked against the server's catalog for the
//! configured schema (the canonical name found there, double-quoted, is what goes into SQL;
//! syncjournal's own tables are out of reach), values checked against the column's type, and
//! rendered as statements for the batch's message ([`Pending`]): in a combined batch the rows
//! of many entries share multi-row statements and one message, entry by entry each entry's
//! statements are one message with its savepoint. Literals are rendered here, with
//! `standard_conforming_strings` on for the session, so a value can never end its literal
//! early.

use std::collections::HashMap;
use std::fmt::Write as _;

use postgres::Client;

use crate::apply::ApplyError;
use crate::format::Lsn;
use crate::mutation::{Mutation, Value};
use crate::target::{PROGRESS_TABLE, REJECTED_TABLE};

use super::batch::{Expect, Pending, Rendered, Row, SendError};

/// One column, as the catalog describes it.
#[derive(Debug, Clone)]
pub(crate) struct PgColumn {
    pub name: String,
    /// `pg_type.typname` (`int8`, `text`, `bytea`, …).
    pub typ: String,
    /// Part of the primary key.
    pub in_pk: bool,
    /// NOT NULL without a default: an insert must give it.
    pub required: bool,
}

/// One table of the schema.
#[derive(Debug, Clone)]
pub(crate) struct PgTable {
    /// The table's name, quoted and schema-qualified.
    pub qualified: String,
    pub name: String,
    pub columns: Vec<PgColumn>,
}

/// The tables looked up so far on this connection.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    tables: HashMap<String, PgTable>,
}

impl Catalog {
    pub(crate) fn clear(&mut self) {
        self.tables.clear();
    }
}

/// Quotes an identifier for PostgreSQL.
pub(crate) fn quote_ident(name: &str) -> String {
    crate::apply::quote_ident(name)
}

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
                    self.catalog.tables.remove(m.table());
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
    fn table(&mut self, name: &str) -> Result<(PgTable, bool), ApplyError> {
        if let Some(t) = self.catalog.tables.get(name) {
            return Ok((t.clone(), true));
        }
        let t = lookup(self.client, self.schema, name)?;
        self.catalog.tables.insert(name.to_string(), t.clone());
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
fn lookup(client: &mut Client, schema: &str, name: &str) -> Result<PgTable, ApplyError> {
    if name.eq_ignore_ascii_case(PROGRESS_TABLE) || name.eq_ignore_ascii_case(REJECTED_TABLE) {
        return Err(ApplyError::permanent(format!(
            "table {name:?} is syncjournal's own bookkeeping: entries cannot change it"
        )));
    }
    let rows = client
        .query(
            "SELECT c.relname, a.attname, t.typname, a.attnotnull,
                    (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '') AS has_default,
                    COALESCE(a.attnum = ANY (i.indkey), false) AS in_pk
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
    let columns = rows
        .iter()
        .filter(|r| r.get::<_, String>(0) == relname)
        .map(|r| PgColumn {
            name: r.get(1),
            typ: r.get(2),
            required: r.get::<_, bool>(3) && !r.get::<_, bool>(4),
            in_pk: r.get(5),
        })
        .collect();
    Ok(PgTable {
        qualified: format!("{}.{}", quote_ident(schema), quote_ident(&relname)),
        name: relname,
        columns,
    })
}

/// The column `name` of `t` (exact, else ignoring case).
fn column<'t>(t: &'t PgTable, m: &Mutation, name: &str) -> Result<&'t PgColumn, ApplyError> {
    t.columns
        .iter()
        .find(|c| c.name == name)
        .or_else(|| t.columns.iter().find(|c| c.name.eq_ignore_ascii_case(name)))
        .ok_or_else(|| {
            ApplyError::permanent(format!("{m}: table {} has no column {name:?}", t.name))
        })
}

/// One mutation as a statement, or as a row that may share an `INSERT` with its neighbours.
fn render(t: &PgTable, m: &Mutation) -> Result<Rendered, ApplyError> {
    let key = m.key();
    let values = m.values();
    if key.is_empty() {
        return Err(ApplyError::permanent(format!("{m}: no key")));
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut cols = Vec::with_capacity(key.len() + values.len());
    for (i, (name, v)) in key.iter().chain(values).enumerate() {
        let c = column(t, m, name)?;
        if seen.contains(&c.name.as_str()) {
            return Err(ApplyError::permanent(format!(
                "{m}: column {}.{} is given twice",
                t.name, c.name
            )));
        }
        seen.push(&c.name);
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
        cols.push((c, literal(t, c, m, v)?));
    }
    let (kcols, vcols) = cols.split_at(key.len());
    let q = |c: &PgColumn| quote_ident(&c.name);
    let key_where = kcols
        .iter()
        .map(|(c, l)| format!("{} = {l}", q(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let names = || {
        cols.iter()
            .map(|(c, _)| q(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lits = || {
        cols.iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let row = |tail: String, key: Option<String>| {
        Rendered::Row(Row {
            head: format!("INSERT INTO {} ({}) VALUES ", t.qualified, names()),
            values: format!("({})", lits()),
            tail,
            key,
        })
    };
    let set = || {
        vcols
            .iter()
            .map(|(c, l)| format!("{} = {l}", q(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(match m {
        Mutation::Insert { .. } => row(String::new(), None),
        Mutation::Update { .. } => {
            if vcols.is_empty() {
                return Err(ApplyError::permanent(format!("{m}: update sets no column")));
            }
            Rendered::Statement(
                format!("UPDATE {} SET {} WHERE {key_where}", t.qualified, set()),
                Expect::Changes(format!("{m}: no row in {} has this key", t.name)),
            )
        }
        Mutation::Delete { .. } => Rendered::Statement(
            format!("DELETE FROM {} WHERE {key_where}", t.qualified),
            Expect::Anything,
        ),
        Mutation::Upsert { .. } => {
            let pk: Vec<&PgColumn> = t.columns.iter().filter(|c| c.in_pk).collect();
            let same = pk.len() == kcols.len()
                && kcols
                    .iter()
                    .all(|(c, _)| pk.iter().any(|p| p.name == c.name));
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
                .all(|c| !c.required || cols.iter().any(|(g, _)| g.name == c.name));
            let conflict = kcols
                .iter()
                .map(|(c, _)| q(c))
                .collect::<Vec<_>>()
                .join(", ");
            if covered {
                let key = kcols
                    .iter()
                    .map(|(_, l)| l.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                if vcols.is_empty() {
                    row(format!(" ON CONFLICT ({conflict}) DO NOTHING"), Some(key))
                } else {
                    let ex = vcols
                        .iter()
                        .map(|(c, _)| format!("{n} = EXCLUDED.{n}", n = q(c)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    row(
                        format!(" ON CONFLICT ({conflict}) DO UPDATE SET {ex}"),
                        Some(key),
                    )
                }
            } else {
                // Not every required column is given: update the row if it exists, else
                // insert (which then fails on the missing column, naming it) — one statement.
                let upd = if vcols.is_empty() {
                    format!("SELECT 1 FROM {} WHERE {key_where}", t.qualified)
                } else {
                    format!(
                        "UPDATE {} SET {} WHERE {key_where} RETURNING 1",
                        t.qualified,
                        set()
                    )
                };
                Rendered::Statement(
                    format!(
                        "WITH sj_u AS ({upd}) INSERT INTO {} ({}) SELECT {} WHERE NOT EXISTS (SELECT 1 FROM sj_u)",
                        t.qualified,
                        names(),
                        lits()
                    ),
                    Expect::Anything,
                )
            }
        }
    })
}

/// `v` as a literal for column `c`, or the reason the column cannot take it.
fn literal(t: &PgTable, c: &PgColumn, m: &Mutation, v: &Value) -> Result<String, ApplyError> {
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
        Value::Null => "NULL".into(),
        Value::Integer(i) => match typ {
            "int2" | "int4" | "int8" => {
                integer_range(*i)?;
                i.to_string()
            }
            "float4" | "float8" | "numeric" => format!("{i}"),
            "bool" if *i == 0 || *i == 1 => (if *i == 1 { "true" } else { "false" }).into(),
            _ => return Err(mismatch("an integer")),
        },
        Value::Real(r) => match typ {
            "float4" | "float8" | "numeric" => {
                if r.is_nan() {
                    // As at the SQLite cache, where NaN is stored as NULL.
                    "NULL".into()
                } else if r.is_infinite() {
                    if *r > 0.0 {
                        "'Infinity'::float8".into()
                    } else {
                        "'-Infinity'::float8".into()
                    }
                } else {
                    format!("'{r:?}'::float8")
                }
            }
            _ => return Err(mismatch("a real")),
        },
        Value::Text(s) => {
            if typ == "bytea" {
                return Err(mismatch("text"));
            }
            if s.contains('\0') {
                return Err(ApplyError::permanent(format!(
                    "{m}: column {}.{}: the text holds a NUL character, which PostgreSQL text cannot store",
                    t.name, c.name
                )));
            }
            let mut l = String::with_capacity(s.len() + 2);
            l.push('\'');
            for ch in s.chars() {
                if ch == '\'' {
                    l.push('\'');
                }
                l.push(ch);
            }
            l.push('\'');
            l
        }
        Value::Blob(b) => {
            if typ != "bytea" {
                return Err(mismatch("a blob"));
            }
            let mut l = String::with_capacity(b.len() * 2 + 12);
            l.push_str("'\\x");
            for byte in b {
                let _ = write!(l, "{byte:02x}");
            }
            l.push_str("'::bytea");
            l
        }
    })
}
