//! What the PostgreSQL target knows of the schema's tables: their columns (names, types, key,
//! required), whether their rows' order within a batch can be observed, and the cache of
//! tables looked up on the current connection.

use std::collections::HashMap;
use std::sync::Arc;

/// One column, as the catalog describes it.
#[derive(Debug, Clone)]
pub(crate) struct PgColumn {
    pub name: String,
    /// The name, double-quoted for SQL.
    pub quoted: String,
    /// `pg_type.typname` (`int8`, `text`, `bytea`, …).
    pub typ: String,
    /// The type as SQL names it (`format_type`: `bigint`, `character varying`, …), what
    /// values are cast to.
    pub sql_type: String,
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
    /// No user triggers, rules or foreign keys (from it or to it): the order of its rows
    /// relative to other such tables' rows within a batch cannot be observed.
    pub reorderable: bool,
}

/// The tables looked up so far on this connection, by the name entries give.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    tables: HashMap<String, Arc<PgTable>>,
}

impl Catalog {
    /// Forgets every table (a new connection, a schema that may have changed).
    pub(crate) fn clear(&mut self) {
        self.tables.clear();
    }

    /// The table entries call `name`, if looked up already.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<PgTable>> {
        self.tables.get(name).cloned()
    }

    /// Remembers the table entries call `name`.
    pub(crate) fn insert(&mut self, name: &str, t: Arc<PgTable>) {
        self.tables.insert(name.to_string(), t);
    }

    /// Forgets the table entries call `name` (to look it up again).
    pub(crate) fn remove(&mut self, name: &str) {
        self.tables.remove(name);
    }
}

/// Quotes an identifier for PostgreSQL.
pub(crate) fn quote_ident(name: &str) -> String {
    crate::apply::quote_ident(name)
}
