//! The statements of a PostgreSQL batch waiting to be sent: many statements in one
//! simple-query message (one round trip), consecutive row inserts into one table combined into
//! one multi-row `INSERT … VALUES (…), (…)`, and what each statement must do to count as
//! applied.

use std::collections::HashSet;

use postgres::{Client, SimpleQueryMessage};

/// What a statement must do to count as applied.
#[derive(Debug, Clone)]
pub(crate) enum Expect {
    /// Anything the server accepts.
    Anything,
    /// At least one row changed, else the mutation (described) is refused: "no such row".
    Changes(String),
}

/// One row for an `INSERT`, which may share its statement with the rows before it.
#[derive(Debug)]
pub(crate) struct Row {
    /// `INSERT INTO "s"."t" ("a", "b") VALUES ` — with `tail`, what rows must share to share a
    /// statement.
    pub head: String,
    /// `(1, 'x')`.
    pub values: String,
    /// ` ON CONFLICT ("a") DO UPDATE SET …`, or empty.
    pub tail: String,
    /// For an `ON CONFLICT` row, its key's literals: one statement cannot touch a row twice
    /// (SQLSTATE 21000), so a row whose key is already in the open statement starts a new one.
    pub key: Option<String>,
}

/// A mutation rendered for a batch.
#[derive(Debug)]
pub(crate) enum Rendered {
    /// A statement of its own.
    Statement(String, Expect),
    /// A row of an `INSERT`.
    Row(Row),
}

/// The multi-row statement being built.
#[derive(Debug)]
struct Open {
    head: String,
    tail: String,
    keys: HashSet<String>,
}

/// Why a send did not apply everything.
pub(crate) enum SendError {
    /// The server (or the connection) failed a statement.
    Server(postgres::Error),
    /// A statement the server accepted did not do what it must (an update that found no row).
    Refused(String),
}

/// Statements waiting to be sent, with their expectations.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    sql: String,
    expect: Vec<Expect>,
    open: Option<Open>,
    /// Rows may share statements (a combined batch); otherwise each row is a statement.
    combine: bool,
}

impl Pending {
    /// Empties it; `combine` says whether rows may share statements from now on.
    pub(crate) fn reset(&mut self, combine: bool) {
        self.sql.clear();
        self.expect.clear();
        self.open = None;
        self.combine = combine;
    }

    /// True if nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.sql.is_empty()
    }

    /// Adds a statement of its own (without its `;`).
    pub(crate) fn statement(&mut self, sql: &str, expect: Expect) {
        self.close();
        self.sql.push_str(sql);
        self.sql.push(';');
        self.expect.push(expect);
    }

    /// Adds a rendered mutation.
    pub(crate) fn push(&mut self, r: Rendered) {
        match r {
            Rendered::Statement(sql, expect) => self.statement(&sql, expect),
            Rendered::Row(row) => self.row(row),
        }
    }

    /// Adds a row: to the open statement if it has the same table, columns and conflict
    /// clause and not this key yet (and rows may share statements), else as a new statement.
    fn row(&mut self, row: Row) {
        if let Some(open) = &mut self.open
            && open.head == row.head
            && open.tail == row.tail
            && row.key.as_ref().is_none_or(|k| !open.keys.contains(k))
        {
            self.sql.push_str(", ");
            self.sql.push_str(&row.values);
            if let Some(k) = row.key {
                open.keys.insert(k);
            }
            return;
        }
        self.close();
        self.sql.push_str(&row.head);
        self.sql.push_str(&row.values);
        if !self.combine {
            self.sql.push_str(&row.tail);
            self.sql.push(';');
            self.expect.push(Expect::Anything);
            return;
        }
        self.open = Some(Open {
            head: row.head,
            tail: row.tail,
            keys: row.key.into_iter().collect(),
        });
    }

    /// Ends the open multi-row statement.
    fn close(&mut self) {
        if let Some(open) = self.open.take() {
            self.sql.push_str(&open.tail);
            self.sql.push(';');
            self.expect.push(Expect::Anything);
        }
    }

    /// Sends everything waiting as one message and checks each statement's expectation.
    /// Whatever happens, nothing waits afterwards.
    pub(crate) fn send(&mut self, client: &mut Client) -> Result<(), SendError> {
        self.close();
        if self.sql.is_empty() {
            return Ok(());
        }
        let sql = std::mem::take(&mut self.sql);
        let expect = std::mem::take(&mut self.expect);
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(table: &str, values: &str, key: Option<&str>) -> Rendered {
        Rendered::Row(Row {
            head: format!("INSERT INTO {table} (a) VALUES "),
            values: values.into(),
            tail: if key.is_some() {
                " ON CONFLICT (a) DO NOTHING".into()
            } else {
                String::new()
            },
            key: key.map(str::to_string),
        })
    }

    #[test]
    fn consecutive_rows_of_one_shape_share_a_statement_until_a_key_repeats() {
        let mut p = Pending::default();
        p.reset(true);
        p.push(row("t", "(1)", Some("1")));
        p.push(row("t", "(2)", Some("2")));
        p.push(row("t", "(1)", Some("1")));
        p.push(row("u", "(3)", None));
        p.push(row("u", "(3)", None));
        p.statement("SELECT 1", Expect::Anything);
        p.push(row("u", "(4)", None));
        p.close();
        assert_eq!(
            p.sql,
            "INSERT INTO t (a) VALUES (1), (2) ON CONFLICT (a) DO NOTHING;\
             INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO NOTHING;\
             INSERT INTO u (a) VALUES (3), (3);SELECT 1;INSERT INTO u (a) VALUES (4);"
        );
        assert_eq!(p.expect.len(), 5, "one expectation per statement");
    }

    #[test]
    fn without_combining_every_row_is_a_statement() {
        let mut p = Pending::default();
        p.reset(false);
        p.push(row("t", "(1)", Some("1")));
        p.push(row("t", "(2)", Some("2")));
        assert_eq!(
            p.sql,
            "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO NOTHING;\
             INSERT INTO t (a) VALUES (2) ON CONFLICT (a) DO NOTHING;"
        );
        assert_eq!(p.expect.len(), 2);
        assert!(p.open.is_none());
    }
}
