//! The statements of a PostgreSQL batch waiting to be sent, in order: statements rendered with
//! literals (many in one simple-query message, one round trip), and — in a combined batch —
//! runs of inserted rows of one shape (table, columns, conflict clause), sent as one prepared
//! `INSERT … SELECT … FROM unnest($1, $2, …)` with a binary array per column (one round trip
//! per run, one statement prepared per shape and connection). Each statement carries what it
//! must do to count as applied.
//!
//! Order: a run holds consecutive rows of its shape. Rows of tables without triggers or
//! foreign keys (either way) may also join the open run of their shape past rows of *other*
//! such tables — their relative order cannot be observed (each table's own order is kept; a
//! sequence shared by two tables' defaults would see another interleaving); a key repeated in
//! such a run ends only that run. Anything else (an update, a delete, an application
//! statement, a row of a table with triggers or foreign keys) first ends every open run, in
//! the order they opened.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use postgres::types::ToSql;
use postgres::{Client, SimpleQueryMessage, Statement};

use super::catalog::PgTable;

/// What a statement must do to count as applied.
#[derive(Debug, Clone)]
pub(crate) enum Expect {
    /// Anything the server accepts.
    Anything,
    /// At least one row changed, else the mutation (described) is refused: "no such row".
    Changes(String),
}

/// One value, checked against its column, as it goes to the server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

/// The kind of array a column's cells travel in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Int,
    Float,
    Bool,
    Text,
    Bytes,
}

impl Class {
    fn of(c: &Cell) -> Option<Class> {
        match c {
            Cell::Null => None,
            Cell::Int(_) => Some(Class::Int),
            Cell::Float(_) => Some(Class::Float),
            Cell::Bool(_) => Some(Class::Bool),
            Cell::Text(_) => Some(Class::Text),
            Cell::Bytes(_) => Some(Class::Bytes),
        }
    }

    /// The array type of the parameter.
    fn array(c: Option<Class>) -> &'static str {
        match c {
            Some(Class::Int) => "int8[]",
            Some(Class::Float) => "float8[]",
            Some(Class::Bool) => "bool[]",
            Some(Class::Bytes) => "bytea[]",
            Some(Class::Text) | None => "text[]",
        }
    }
}

impl Cell {
    /// The cell as an SQL literal (`standard_conforming_strings` on).
    pub(crate) fn literal(&self) -> String {
        match self {
            Cell::Null => "NULL".into(),
            Cell::Int(i) => i.to_string(),
            Cell::Bool(b) => (if *b { "true" } else { "false" }).into(),
            Cell::Float(r) if r.is_infinite() => (if *r > 0.0 {
                "'Infinity'::float8"
            } else {
                "'-Infinity'::float8"
            })
            .into(),
            Cell::Float(r) => format!("'{r:?}'::float8"),
            Cell::Text(s) => crate::apply::quote_with(s, '\''),
            Cell::Bytes(b) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut l = String::with_capacity(b.len() * 2 + 12);
                l.push_str("'\\x");
                for byte in b {
                    l.push(char::from(HEX[usize::from(byte >> 4)]));
                    l.push(char::from(HEX[usize::from(byte & 0xf)]));
                }
                l.push_str("'::bytea");
                l
            }
        }
    }
}

/// An upsert's conflict clause: `ON CONFLICT (the first `key_cols` columns)`, then `DO UPDATE
/// SET` the other columns, or `DO NOTHING` if there are none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub key_cols: usize,
}

/// One row for an `INSERT`, which may share its statement with the rows around it.
#[derive(Debug)]
pub(crate) struct Row {
    pub table: Arc<PgTable>,
    /// The columns given, as indexes into the table's columns.
    pub cols: Vec<usize>,
    /// For an upsert, its conflict clause.
    pub conflict: Option<Conflict>,
    /// For an upsert, its key's literals: one statement cannot touch a row twice (SQLSTATE
    /// 21000), so a row whose key is already in the open run starts a new one.
    pub key: Option<String>,
    /// The values, column by column.
    pub cells: Vec<Cell>,
}

/// `INSERT INTO "s"."t" ("a", "b") ` for these columns.
fn insert_into(t: &PgTable, cols: &[usize]) -> String {
    let names: Vec<&str> = cols.iter().map(|&i| t.columns[i].quoted.as_str()).collect();
    format!("INSERT INTO {} ({})", t.qualified, names.join(", "))
}

/// ` ON CONFLICT (…) DO …` for an upsert of these columns.
fn conflict_clause(t: &PgTable, cols: &[usize], conflict: Option<Conflict>) -> String {
    let Some(Conflict { key_cols }) = conflict else {
        return String::new();
    };
    let q = |i: &usize| t.columns[*i].quoted.as_str();
    let keys: Vec<&str> = cols[..key_cols].iter().map(q).collect();
    if cols.len() == key_cols {
        return format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", "));
    }
    let set: Vec<String> = cols[key_cols..]
        .iter()
        .map(|i| format!("{n} = EXCLUDED.{n}", n = q(i)))
        .collect();
    format!(
        " ON CONFLICT ({}) DO UPDATE SET {}",
        keys.join(", "),
        set.join(", ")
    )
}

/// One row's `INSERT` as a statement of its own, with literals.
fn literal_insert(
    t: &PgTable,
    cols: &[usize],
    conflict: Option<Conflict>,
    cells: &[Cell],
) -> String {
    let values: Vec<String> = cells.iter().map(Cell::literal).collect();
    format!(
        "{} VALUES ({}){}",
        insert_into(t, cols),
        values.join(", "),
        conflict_clause(t, cols, conflict)
    )
}

impl Row {
    /// The row as a statement of its own, with literals.
    fn statement(&self) -> String {
        literal_insert(&self.table, &self.cols, self.conflict, &self.cells)
    }

    /// True if the table's rows may move past other such tables' rows.
    fn reorderable(&self) -> bool {
        self.table.reorderable
    }
}

/// A mutation rendered for a batch.
#[derive(Debug)]
pub(crate) enum Rendered {
    /// A statement of its own.
    Statement(String, Expect),
    /// A row of an `INSERT`.
    Row(Row),
}

/// Rows of one shape, sent as one statement.
#[derive(Debug)]
struct Run {
    table: Arc<PgTable>,
    cols: Vec<usize>,
    conflict: Option<Conflict>,
    /// Each column's array kind (`None`: only NULLs so far).
    classes: Vec<Option<Class>>,
    keys: HashSet<String>,
    rows: Vec<Vec<Cell>>,
    /// The first row, until a second joins: a run too short to be worth its own round trip
    /// goes as a statement with literals.
    first: Option<Row>,
}

impl Run {
    fn new(row: Row) -> Run {
        Run {
            classes: row.cells.iter().map(Class::of).collect(),
            keys: row.key.iter().cloned().collect(),
            table: Arc::clone(&row.table),
            cols: row.cols.clone(),
            conflict: row.conflict,
            rows: Vec::new(),
            first: Some(row),
        }
    }

    fn len(&self) -> usize {
        self.rows.len() + usize::from(self.first.is_some())
    }

    fn reorderable(&self) -> bool {
        self.table.reorderable
    }

    /// True if `row` has this run's shape.
    fn same_shape(&self, row: &Row) -> bool {
        (Arc::ptr_eq(&self.table, &row.table) || self.table.qualified == row.table.qualified)
            && self.cols == row.cols
            && self.conflict == row.conflict
    }

    /// Adds `row` if it has this run's shape, a key not in it yet and values of the run's
    /// kinds; else hands it back.
    fn add(&mut self, row: Row) -> Option<Row> {
        if !self.same_shape(&row) || row.key.as_ref().is_some_and(|k| self.keys.contains(k)) {
            return Some(row);
        }
        let classes: Vec<Option<Class>> = row.cells.iter().map(Class::of).collect();
        let fits = classes
            .iter()
            .zip(&self.classes)
            .all(|(c, k)| c.is_none() || k.is_none() || c == k);
        if !fits {
            return Some(row);
        }
        for (c, k) in classes.into_iter().zip(self.classes.iter_mut()) {
            if k.is_none() {
                *k = c;
            }
        }
        if let Some(k) = row.key {
            self.keys.insert(k);
        }
        if let Some(first) = self.first.take() {
            self.rows.push(first.cells);
        }
        self.rows.push(row.cells);
        None
    }

    /// The statement: the arrays unnested in order, each column cast to its type.
    fn sql(&self) -> String {
        let n = self.classes.len();
        let params: Vec<String> = self
            .classes
            .iter()
            .enumerate()
            .map(|(i, k)| format!("${}::{}", i + 1, Class::array(*k)))
            .collect();
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let select: Vec<String> = self
            .cols
            .iter()
            .enumerate()
            .map(|(i, &c)| format!("u.c{i}::{}", self.table.columns[c].sql_type))
            .collect();
        format!(
            "{} SELECT {} FROM unnest({}) WITH ORDINALITY AS u({}, sj_ord) ORDER BY u.sj_ord{}",
            insert_into(&self.table, &self.cols),
            select.join(", "),
            params.join(", "),
            names.join(", "),
            conflict_clause(&self.table, &self.cols, self.conflict)
        )
    }

    /// One array per column, in row order.
    fn params(mut self) -> Vec<Box<dyn ToSql + Sync>> {
        if let Some(first) = self.first.take() {
            self.rows.push(first.cells);
        }
        let n = self.classes.len();
        let mut columns: Vec<Vec<Cell>> = (0..n)
            .map(|_| Vec::with_capacity(self.rows.len()))
            .collect();
        for row in self.rows {
            for (i, c) in row.into_iter().enumerate() {
                columns[i].push(c);
            }
        }
        fn array<T>(cells: Vec<Cell>, f: impl Fn(Cell) -> Option<T>) -> Vec<Option<T>> {
            cells.into_iter().map(f).collect()
        }
        columns
            .into_iter()
            .zip(self.classes)
            .map(|(cells, k)| -> Box<dyn ToSql + Sync> {
                match k {
                    Some(Class::Int) => Box::new(array(cells, |c| match c {
                        Cell::Int(i) => Some(i),
                        _ => None,
                    })),
                    Some(Class::Float) => Box::new(array(cells, |c| match c {
                        Cell::Float(f) => Some(f),
                        _ => None,
                    })),
                    Some(Class::Bool) => Box::new(array(cells, |c| match c {
                        Cell::Bool(b) => Some(b),
                        _ => None,
                    })),
                    Some(Class::Bytes) => Box::new(array(cells, |c| match c {
                        Cell::Bytes(b) => Some(b),
                        _ => None,
                    })),
                    Some(Class::Text) | None => Box::new(array(cells, |c| match c {
                        Cell::Text(s) => Some(s),
                        _ => None,
                    })),
                }
            })
            .collect()
    }
}

/// Something to send, in order.
#[derive(Debug)]
enum Item {
    /// Statements with literals, one message.
    Sql(String, Vec<Expect>),
    /// A run of rows, one prepared statement.
    Rows(Run),
}

/// Why a send did not apply everything.
pub(crate) enum SendError {
    /// The server (or the connection) failed a statement.
    Server(postgres::Error),
    /// A statement the server accepted did not do what it must (an update that found no row).
    Refused(String),
}

/// The most statements kept prepared on one connection (the cache empties when full).
const PREPARED_MAX: usize = 64;

/// The fewest rows a run needs to be sent as a statement of its own (a round trip); shorter
/// runs go as literals in the message of the statements around them.
const RUN_ROWS_MIN: usize = 8;

/// Statements waiting to be sent, with their expectations.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    items: Vec<Item>,
    /// Statements with literals after the last item.
    sql: String,
    expect: Vec<Expect>,
    /// The runs of rows after the last item and `sql`, in the order they opened.
    open: Vec<Run>,
    /// Rows may share statements (a combined batch); otherwise each row is a statement.
    combine: bool,
    /// The runs' statements prepared on this connection, by text.
    prepared: HashMap<String, Statement>,
}

impl Pending {
    /// Empties it; `combine` says whether rows may share statements from now on.
    pub(crate) fn reset(&mut self, combine: bool) {
        self.items.clear();
        self.sql.clear();
        self.expect.clear();
        self.open.clear();
        self.combine = combine;
    }

    /// Forgets the prepared statements (a new connection has none).
    pub(crate) fn new_connection(&mut self) {
        self.prepared.clear();
        self.reset(false);
    }

    /// True if nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.sql.is_empty() && self.open.is_empty()
    }

    /// Adds a statement of its own (without its `;`).
    pub(crate) fn statement(&mut self, sql: &str, expect: Expect) {
        self.close_runs();
        self.literal_statement(sql, expect);
    }

    fn literal_statement(&mut self, sql: &str, expect: Expect) {
        self.sql.push_str(sql);
        self.sql.push(';');
        self.expect.push(expect);
    }

    /// Adds a rendered mutation.
    pub(crate) fn push(&mut self, r: Rendered) {
        match r {
            Rendered::Statement(sql, expect) => self.statement(&sql, expect),
            Rendered::Row(row) if !self.combine => {
                self.statement(&row.statement(), Expect::Anything)
            }
            Rendered::Row(row) => {
                let free = row.reorderable() && self.open.iter().all(Run::reorderable);
                let at = if free {
                    self.open.iter().position(|r| r.same_shape(&row))
                } else {
                    // Only the last run may take it (the rows stay in order).
                    self.open
                        .len()
                        .checked_sub(1)
                        .filter(|&i| self.open[i].same_shape(&row))
                };
                let row = match at {
                    Some(i) => match self.open[i].add(row) {
                        None => return,
                        // Only that run ends when the others' order does not matter.
                        Some(row) if free => {
                            let run = self.open.remove(i);
                            self.close_run(run);
                            row
                        }
                        Some(row) => {
                            self.close_runs();
                            row
                        }
                    },
                    None if free => row,
                    None => {
                        self.close_runs();
                        row
                    }
                };
                self.open.push(Run::new(row));
            }
        }
    }

    /// Ends the open runs, in the order they opened: a short one becomes a statement with
    /// literals in the message, a longer one an item of its own.
    fn close_runs(&mut self) {
        for run in std::mem::take(&mut self.open) {
            self.close_run(run);
        }
    }

    fn close_run(&mut self, run: Run) {
        if run.len() >= RUN_ROWS_MIN {
            self.close_sql();
            self.items.push(Item::Rows(run));
            return;
        }
        if let Some(first) = &run.first {
            self.literal_statement(&first.statement(), Expect::Anything);
        }
        for cells in &run.rows {
            let sql = literal_insert(&run.table, &run.cols, run.conflict, cells);
            self.literal_statement(&sql, Expect::Anything);
        }
    }

    fn close_sql(&mut self) {
        if !self.sql.is_empty() {
            let sql = std::mem::take(&mut self.sql);
            let expect = std::mem::take(&mut self.expect);
            self.items.push(Item::Sql(sql, expect));
        }
    }

    /// Sends everything waiting, in order, and checks each statement's expectation; stops at
    /// the first failure. Whatever happens, nothing waits afterwards.
    pub(crate) fn send(&mut self, client: &mut Client) -> Result<(), SendError> {
        self.close_runs();
        self.close_sql();
        let items = std::mem::take(&mut self.items);
        for item in items {
            match item {
                Item::Sql(sql, expect) => {
                    let msgs = client.simple_query(&sql).map_err(SendError::Server)?;
                    let mut i = 0;
                    for msg in msgs {
                        if let SimpleQueryMessage::CommandComplete(n) = msg {
                            if let Some(Expect::Changes(what)) = expect.get(i)
                                && n == 0
                            {
                                return Err(SendError::Refused(what.clone()));
                            }
                            i += 1;
                        }
                    }
                }
                Item::Rows(run) => {
                    let sql = run.sql();
                    let stmt = match self.prepared.get(&sql) {
                        Some(s) => s.clone(),
                        None => {
                            let s = client.prepare(&sql).map_err(SendError::Server)?;
                            if self.prepared.len() >= PREPARED_MAX {
                                self.prepared.clear();
                            }
                            self.prepared.insert(sql, s.clone());
                            s
                        }
                    };
                    let params = run.params();
                    let refs: Vec<&(dyn ToSql + Sync)> =
                        params.iter().map(|p| p.as_ref()).collect();
                    client.execute(&stmt, &refs).map_err(SendError::Server)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::postgres::catalog::PgColumn;

    fn column(name: &str, sql_type: &str) -> PgColumn {
        PgColumn {
            name: name.into(),
            quoted: format!("\"{name}\""),
            typ: String::new(),
            sql_type: sql_type.into(),
            in_pk: name == "a",
            required: false,
        }
    }

    /// A table `qualified` with columns `a bigint` (the key) and `b character varying`.
    fn table(qualified: &str, reorderable: bool) -> Arc<PgTable> {
        Arc::new(PgTable {
            qualified: qualified.into(),
            name: qualified.into(),
            columns: vec![column("a", "bigint"), column("b", "character varying")],
            reorderable,
        })
    }

    /// A row giving column `a`, as an upsert on it if `key`.
    fn row(table_name: &str, a: Cell, key: bool, reorderable: bool) -> Rendered {
        Rendered::Row(Row {
            key: key.then(|| a.literal()),
            table: table(table_name, reorderable),
            cols: vec![0],
            conflict: key.then_some(Conflict { key_cols: 1 }),
            cells: vec![a],
        })
    }

    /// What would be sent, item by item: `rows N table` or `sql N` (statements).
    fn shape(p: &mut Pending) -> Vec<String> {
        p.close_runs();
        p.close_sql();
        p.items
            .iter()
            .map(|i| match i {
                Item::Sql(_, e) => format!("sql {}", e.len()),
                Item::Rows(r) => format!("rows {} {}", r.len(), r.table.name),
            })
            .collect()
    }

    fn combined() -> Pending {
        let mut p = Pending::default();
        p.reset(true);
        p
    }

    #[test]
    fn rows_of_tables_without_triggers_or_foreign_keys_gather_into_one_run_per_shape() {
        let mut p = combined();
        for i in 0..10 {
            p.push(row("t", Cell::Int(i), true, true));
            p.push(row("u", Cell::Int(i), false, true));
        }
        assert_eq!(shape(&mut p), ["rows 10 t", "rows 10 u"]);
    }

    #[test]
    fn rows_of_a_table_with_triggers_or_foreign_keys_keep_their_place() {
        let mut p = combined();
        for i in 0..10 {
            p.push(row("t", Cell::Int(i), true, true));
            p.push(row("u", Cell::Int(i), false, false));
        }
        assert_eq!(
            shape(&mut p),
            ["sql 20"],
            "each row where it was, in one message"
        );
        let mut p = combined();
        for i in 0..10 {
            p.push(row("u", Cell::Int(i), false, false));
        }
        assert_eq!(
            shape(&mut p),
            ["rows 10 u"],
            "consecutive rows still share a run"
        );
    }

    #[test]
    fn a_repeated_key_a_statement_or_another_kind_of_value_ends_the_open_runs() {
        let mut p = combined();
        for i in 0..8 {
            p.push(row("t", Cell::Int(i), true, true));
        }
        p.push(row("t", Cell::Int(3), true, true));
        for i in 10..18 {
            p.push(row("t", Cell::Int(i), true, true));
        }
        p.statement("DELETE FROM t", Expect::Anything);
        for i in 20..28 {
            p.push(row("t", Cell::Int(i), true, true));
        }
        p.push(row("t", Cell::Text("x".into()), true, true));
        p.push(row("t", Cell::Null, true, true));
        assert_eq!(
            shape(&mut p),
            ["rows 8 t", "rows 9 t", "sql 1", "rows 8 t", "sql 2"]
        );
    }

    #[test]
    fn short_runs_go_as_literals_and_entry_by_entry_every_row_is_a_statement() {
        let mut p = combined();
        p.push(row("t", Cell::Int(1), true, true));
        p.push(row("t", Cell::Int(2), true, true));
        assert_eq!(shape(&mut p), ["sql 2"]);
        let mut p = Pending::default();
        p.reset(false);
        p.push(row("t", Cell::Int(1), true, true));
        p.push(row("t", Cell::Bytes(vec![0, 0xab, 0xff]), false, true));
        assert_eq!(
            p.sql,
            "INSERT INTO t (\"a\") VALUES (1) ON CONFLICT (\"a\") DO NOTHING;INSERT INTO t (\"a\") VALUES ('\\x00abff'::bytea);"
        );
    }

    #[test]
    fn a_run_unnests_its_arrays_in_order_cast_to_the_columns_types() {
        let run = Run::new(Row {
            table: table("\"s\".\"t\"", true),
            cols: vec![0, 1],
            conflict: None,
            key: None,
            cells: vec![Cell::Int(1), Cell::Null],
        });
        assert_eq!(
            run.sql(),
            "INSERT INTO \"s\".\"t\" (\"a\", \"b\") SELECT u.c0::bigint, u.c1::character varying FROM unnest($1::int8[], $2::text[]) WITH ORDINALITY AS u(c0, c1, sj_ord) ORDER BY u.sj_ord"
        );
    }

    #[test]
    fn the_run_limits_are_the_ones_journal_format_md_states() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/journal-format.md"))
                .expect("journal-format.md");
        assert!(
            doc.contains(&format!("Runs shorter than {RUN_ROWS_MIN} rows")),
            "{RUN_ROWS_MIN}"
        );
        assert!(
            doc.contains(&format!("cached per\nconnection (at most {PREPARED_MAX})")),
            "{PREPARED_MAX}"
        );
        let mut p = combined();
        for i in 0..RUN_ROWS_MIN as i64 - 1 {
            p.push(row("t", Cell::Int(i), true, true));
        }
        assert_eq!(
            shape(&mut p),
            [format!("sql {}", RUN_ROWS_MIN - 1)],
            "one row short of a run"
        );
    }

    #[test]
    fn literals_quote_what_needs_quoting() {
        assert_eq!(Cell::Text("it's".into()).literal(), "'it''s'");
        assert_eq!(
            Cell::Float(f64::NEG_INFINITY).literal(),
            "'-Infinity'::float8"
        );
        assert_eq!(Cell::Float(0.5).literal(), "'0.5'::float8");
        assert_eq!(Cell::Bool(true).literal(), "true");
    }
}
