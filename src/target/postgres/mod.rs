//! The PostgreSQL target: the protocol's steps on a server.
//!
//! A batch is `BEGIN` (READ COMMITTED) plus `pg_advisory_xact_lock` on a key derived from the
//! journal id, sent as one message: every replayer of this journal serialises on that lock
//! until its transaction ends, so the watermark read next cannot move under it; replayers of
//! other journals proceed in parallel.
//!
//! A combined batch (the normal case) sends all its entries and the watermark update as one
//! message when it is settled, the rows of consecutive inserts and upserts into one table
//! sharing multi-row statements, without savepoints: a batch costs four round trips (begin,
//! read the watermark, the entries, commit) however many entries it holds. If the server
//! refuses anything in that message (a constraint, an update that finds no row, …) the
//! transaction is rolled back and the driver does the batch again entry by entry: each entry
//! in a savepoint, with the previous entry's `RELEASE` and the next `SAVEPOINT` sent with its
//! statements (one round trip per entry), so that the refused entry is known. A `COMMIT` that
//! fails without an answer from the server, or with a connection or shutdown error, is in
//! doubt and resolved by reading the watermark through a new connection.

mod apply;
mod batch;
mod catalog;
mod changes;
mod conflicts;
mod connect;
#[cfg(feature = "tls")]
mod tls;

use postgres::Client;
use uuid::Uuid;

use crate::apply::ApplyError;
use crate::error::{Error, Result, TargetError};
use crate::format::Lsn;
use crate::journal::ack::now_ms;
use crate::mutation::Columns;
use crate::target::changes::{
    CHANGE_HEAD_COLUMNS, CHANGE_HEAD_TABLE, CHANGES_COLUMNS, CHANGES_TABLE, ChangeBuffer,
    ChangePage,
};
use crate::target::conflicts::{CONFLICTS_COLUMNS, CONFLICTS_TABLE};
use crate::target::retention::{CURSORS_COLUMNS, CURSORS_TABLE, ChangeLogRetention, PruneReport};
use crate::target::{
    Applied, BatchMode, Commit, ConflictCounts, ConflictRecord, ConflictRows, ConnString,
    EntryClock, EventDb, NewConflict, PROGRESS_COLUMNS, PROGRESS_TABLE, Probe, QuarantineRow,
    REJECTED_COLUMNS, REJECTED_TABLE, Rejected, Remote, RowSink, Settled, Target, TargetOptions,
    watermark_value,
};

pub use apply::PgApplyContext;
use batch::{Expect, Pending, SendError};
use catalog::{Catalog, quote_ident};
pub(crate) use connect::identity;
use connect::pg_error;

/// A connection to a PostgreSQL server, opened lazily and discarded after any failure that
/// may have left it unusable.
pub(crate) struct PgTarget {
    conn: ConnString,
    opts: TargetOptions,
    client: Option<Client>,
    catalog: Catalog,
    /// Statements not sent yet: a savepoint and the last entry's release; in a combined batch
    /// every entry's statements and the watermark update, until the batch is settled.
    pending: Pending,
    /// The open batch is combined ([`BatchMode::Combined`]).
    combined: bool,
    /// In a combined batch: something of the current entry went into the batch (sent or
    /// waiting), which has no savepoint to undo it with.
    entry_written: bool,
    /// In a combined batch: what the server refused; the batch is to be done again entry by
    /// entry, and nothing more is sent in it.
    redo: Option<String>,
    /// A statement of the open transaction failed and was not rolled back to a savepoint:
    /// the transaction can only roll back.
    aborted: bool,
    /// The schema (resolved at connect) and the bookkeeping tables in it, qualified and
    /// quoted.
    schema: String,
    progress: String,
    rejected: String,
    changes_table: String,
    head_table: String,
    conflicts_table: String,
    cursors_table: String,
    /// The rows the open batch touched, recorded in the change log before it commits.
    changes: ChangeBuffer,
    /// The journal of the open batch.
    journal: Uuid,
}

/// The schema `opts` names, or the session's current one.
fn resolve_schema(client: &mut Client, opts: &TargetOptions, name: &str) -> Result<String> {
    if !opts.schema.is_empty() {
        return Ok(opts.schema.clone());
    }
    let row = client
        .query_one("SELECT current_schema()::text", &[])
        .map_err(|e| pg_error(name, "read the current schema", e))?;
    row.get::<_, Option<String>>(0).ok_or_else(|| {
        Error::Target(TargetError::Server {
            target: name.to_string(),
            message: "the session has no current schema (its search_path names no existing schema): set TargetOptions::schema or the connection string's options=-csearch_path=…".into(),
            sqlstate: Some("3F000".into()),
            transient: false,
            source: None,
        })
    })
}

/// The advisory-lock key that serialises creating the bookkeeping tables ("syncjou").
const TABLES_LOCK_KEY: i64 = 0x0073_796e_636a_6f75;

/// The advisory-lock key of a journal: its id's first 8 bytes.
fn lock_key(journal: Uuid) -> i64 {
    let b = journal.as_bytes();
    i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

impl PgTarget {
    pub(crate) fn new(conn: ConnString, opts: TargetOptions) -> Self {
        PgTarget {
            schema: String::new(),
            progress: String::new(),
            changes_table: String::new(),
            head_table: String::new(),
            conflicts_table: String::new(),
            cursors_table: String::new(),
            changes: ChangeBuffer::default(),
            journal: Uuid::nil(),
            rejected: String::new(),
            conn,
            opts,
            client: None,
            catalog: Catalog::default(),
            pending: Pending::default(),
            combined: false,
            entry_written: false,
            redo: None,
            aborted: false,
        }
    }

    /// Forgets the open batch's state (not the connection).
    fn reset_batch(&mut self) {
        self.changes.clear();
        self.pending.reset(false);
        self.combined = false;
        self.entry_written = false;
        self.redo = None;
        self.aborted = false;
    }

    fn name(&self) -> &str {
        self.conn.redacted()
    }

    fn err(&self, what: &str, e: postgres::Error) -> Error {
        pg_error(self.conn.redacted(), what, e)
    }

    fn client(&mut self) -> Result<&mut Client> {
        if self.client.is_none() {
            self.open_client()?;
        }
        self.client.as_mut().ok_or_else(|| {
            Error::Target(TargetError::Server {
                target: self.conn.redacted().to_string(),
                message: "no connection".into(),
                sqlstate: None,
                transient: true,
                source: None,
            })
        })
    }

    /// `BEGIN` and the lock of `journal`'s progress row on the current connection.
    fn begin_on_connection(&mut self, journal: Uuid, mode: BatchMode) -> Result<()> {
        self.reset_batch();
        self.journal = journal;
        self.pending.statement(
            &format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({})",
                lock_key(journal)
            ),
            Expect::Anything,
        );
        self.send_pending("BEGIN")?;
        self.combined = mode == BatchMode::Combined;
        self.pending.reset(self.combined);
        Ok(())
    }

    fn open_client(&mut self) -> Result<()> {
        let mut client = connect::connect(&self.conn, &self.opts)?;
        let name = self.conn.redacted().to_string();
        let err = |what: &str, e| pg_error(&name, what, e);
        client
            .batch_execute(&format!(
                "SET standard_conforming_strings = on; SET client_encoding = 'UTF8'; SET statement_timeout = {}; SET default_transaction_isolation = 'read committed'",
                self.opts.statement_timeout_ms
            ))
            .map_err(|e| err("configure the session", e))?;
        self.schema = resolve_schema(&mut client, &self.opts, &name)?;
        let q = quote_ident(&self.schema);
        self.progress = format!("{q}.{}", quote_ident(PROGRESS_TABLE));
        self.rejected = format!("{q}.{}", quote_ident(REJECTED_TABLE));
        self.changes_table = format!("{q}.{}", quote_ident(CHANGES_TABLE));
        self.head_table = format!("{q}.{}", quote_ident(CHANGE_HEAD_TABLE));
        self.conflicts_table = format!("{q}.{}", quote_ident(CONFLICTS_TABLE));
        self.cursors_table = format!("{q}.{}", quote_ident(CURSORS_TABLE));
        let schema_exists = client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
                &[&self.schema],
            )
            .map_err(|e| err("read the catalog", e))?
            .is_some();
        if !schema_exists {
            return Err(Error::Target(TargetError::Server {
                target: name,
                message: format!(
                    "schema {:?} does not exist (TargetOptions::schema, default the session's current schema)",
                    self.schema
                ),
                sqlstate: Some("3F000".into()),
                transient: false,
                source: None,
            }));
        }
        self.ensure_app_schema(&mut client)?;
        self.ensure_tables(&mut client)?;
        tracing::debug!(target = %self.conn.redacted(), "target connected");
        self.client = Some(client);
        self.catalog.clear();
        self.reset_batch();
        // Statements prepared on the last connection do not exist on this one.
        self.pending.new_connection();
        Ok(())
    }

    /// With [`TargetOptions::create_if_missing`] and a [`TargetOptions::create_schema`]: runs
    /// that SQL (in the configured schema) when the schema holds no table but syncjournal's
    /// own, as SQLite runs it on an empty file. One transaction under the bookkeeping lock, so
    /// two replayers starting at once run it once and a failure leaves no half schema.
    fn ensure_app_schema(&self, client: &mut Client) -> Result<()> {
        let Some(sql) = self
            .opts
            .create_schema
            .as_deref()
            .filter(|_| self.opts.create_if_missing)
        else {
            return Ok(());
        };
        let lit = |s: &str| crate::apply::quote_with(s, '\'');
        let check = format!(
            "BEGIN; SELECT pg_advisory_xact_lock({TABLES_LOCK_KEY});
             SET LOCAL search_path = {};
             SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = {}
               AND tablename NOT IN ({}, {})",
            quote_ident(&self.schema),
            lit(&self.schema),
            lit(PROGRESS_TABLE),
            lit(REJECTED_TABLE),
        );
        let run = |client: &mut Client| -> std::result::Result<(), (&str, postgres::Error)> {
            let tables = client
                .simple_query(&check)
                .map_err(|e| ("check for the application's tables", e))?
                .into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .last(); // the count (the lock's row comes first)
            if tables.as_deref() == Some("0") {
                client
                    .batch_execute(sql)
                    .map_err(|e| ("create schema (TargetOptions::create_schema)", e))?;
            }
            client
                .batch_execute("COMMIT")
                .map_err(|e| ("commit the schema", e))
        };
        run(client).map_err(|(what, e)| {
            let _ = client.batch_execute("ROLLBACK");
            self.err(what, e)
        })
    }

    /// Creates the bookkeeping tables if missing (as on SQLite), and checks their columns.
    fn ensure_tables(&self, client: &mut Client) -> Result<()> {
        let columns = |client: &mut Client, table: &str| -> Result<Vec<String>> {
            client
                .query(
                    "SELECT a.attname FROM pg_catalog.pg_attribute a
                     JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
                    &[&self.schema, &table],
                )
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                .map_err(|e| self.err("read the catalog", e))
        };
        let mut progress = columns(client, PROGRESS_TABLE)?;
        let mut rejected = columns(client, REJECTED_TABLE)?;
        if progress.is_empty() || rejected.is_empty() {
            // Serialised across replayers (concurrent CREATE TABLE IF NOT EXISTS can collide
            // in the catalog).
            let sql = format!(
                "BEGIN; SELECT pg_advisory_xact_lock({TABLES_LOCK_KEY});
                 CREATE TABLE IF NOT EXISTS {} (
                    journal_id TEXT PRIMARY KEY,
                    lsn BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS {} (
                    journal_id TEXT NOT NULL,
                    lsn BIGINT NOT NULL,
                    kind SMALLINT NOT NULL,
                    payload BYTEA NOT NULL,
                    summary TEXT NOT NULL,
                    error TEXT NOT NULL,
                    rejected_at BIGINT NOT NULL,
                    PRIMARY KEY (journal_id, lsn)
                 );
                 COMMIT",
                self.progress, self.rejected
            );
            if let Err(e) = client.batch_execute(&sql) {
                let _ = client.batch_execute("ROLLBACK");
                return Err(self.err("create syncjournal tables", e));
            }
            progress = columns(client, PROGRESS_TABLE)?;
            rejected = columns(client, REJECTED_TABLE)?;
        }
        let mut checks = vec![
            (PROGRESS_TABLE, &PROGRESS_COLUMNS[..], progress),
            (REJECTED_TABLE, &REJECTED_COLUMNS[..], rejected),
        ];
        if self.opts.change_log {
            let mut log = columns(client, CHANGES_TABLE)?;
            let mut head = columns(client, CHANGE_HEAD_TABLE)?;
            let mut found = columns(client, CONFLICTS_TABLE)?;
            let mut cursors = columns(client, CURSORS_TABLE)?;
            if log.is_empty() || head.is_empty() || found.is_empty() || cursors.is_empty() {
                let sql = format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({TABLES_LOCK_KEY}); {} {} {} COMMIT",
                    changes::create_sql(&self.changes_table, &self.head_table),
                    conflicts::create_sql(&self.conflicts_table),
                    changes::create_cursors_sql(&self.cursors_table)
                );
                if let Err(e) = client.batch_execute(&sql) {
                    let _ = client.batch_execute("ROLLBACK");
                    return Err(self.err("create the change log", e));
                }
                log = columns(client, CHANGES_TABLE)?;
                head = columns(client, CHANGE_HEAD_TABLE)?;
                found = columns(client, CONFLICTS_TABLE)?;
                cursors = columns(client, CURSORS_TABLE)?;
            }
            checks.push((CHANGES_TABLE, &CHANGES_COLUMNS[..], log));
            checks.push((CHANGE_HEAD_TABLE, &CHANGE_HEAD_COLUMNS[..], head));
            checks.push((CONFLICTS_TABLE, &CONFLICTS_COLUMNS[..], found));
            checks.push((CURSORS_TABLE, &CURSORS_COLUMNS[..], cursors));
        }
        for (table, want, found) in checks {
            let missing: Vec<&str> = want
                .iter()
                .copied()
                .filter(|w| !found.iter().any(|f| f == w))
                .collect();
            if !missing.is_empty() {
                return Err(Error::Target(TargetError::SchemaMismatch {
                    path: self.name().into(),
                    table: table.into(),
                    detail: format!("missing {}", missing.join(", ")),
                }));
            }
        }
        Ok(())
    }

    /// Sends what waits, if anything, as one message.
    fn send_pending(&mut self, what: &str) -> Result<()> {
        if self.pending.is_empty() || self.redo.is_some() {
            return Ok(());
        }
        let Some(client) = self.client.as_mut() else {
            return Err(self.err_no_connection());
        };
        match self.pending.send(client) {
            Ok(()) => Ok(()),
            Err(SendError::Server(e)) => {
                let err = self.err(what, e);
                self.failed(err)
            }
            Err(SendError::Refused(why)) => {
                let err = Error::Target(TargetError::Server {
                    target: self.name().to_string(),
                    message: format!("{what}: {why}"),
                    sqlstate: None,
                    transient: false,
                    source: None,
                });
                self.failed(err)
            }
        }
    }

    /// A statement of the open transaction failed with `err`. Entry by entry that ends the
    /// batch; in a combined batch, a failure that a retry cannot cure is some entry's (which
    /// one is not known): remembered, and the batch settles as [`Settled::Redo`].
    fn failed(&mut self, err: Error) -> Result<()> {
        self.aborted = true;
        if self.combined && !err.is_transient() {
            tracing::debug!(error = %err, "combined batch refused; it is done again entry by entry");
            self.redo = Some(err.to_string());
            return Ok(());
        }
        Err(err)
    }
}

impl Target for PgTarget {
    fn connect(&mut self) -> Result<bool> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(false);
        }
        self.client = None;
        self.open_client()?;
        Ok(true)
    }

    fn is_connected(&self) -> bool {
        self.client.is_some()
    }

    fn discard(&mut self) {
        if self.client.take().is_some() {
            tracing::debug!(target = %self.conn.redacted(), "target connection discarded");
        }
        self.catalog.clear();
        self.reset_batch();
    }

    fn begin(&mut self, journal: Uuid, mode: BatchMode) -> Result<()> {
        let reused = self.client.is_some();
        Target::connect(self)?;
        match self.begin_on_connection(journal, mode) {
            // The connection kept from the last batch died while idle (a server restart, a
            // dropped and restored database, an idle timeout, a failover): nothing of this
            // batch was sent, so a new connection is taken at once instead of failing a sync.
            Err(e) if reused && idle_connection_lost(&e) => {
                tracing::info!(target = %self.conn.redacted(), error = %e, "the kept connection was gone; reconnecting");
                self.discard();
                Target::connect(self)?;
                self.begin_on_connection(journal, mode)
            }
            r => r,
        }
    }

    fn read_watermark(&mut self, journal: Uuid) -> Result<Lsn> {
        let sql = format!(
            "SELECT lsn FROM {} WHERE journal_id = $1 FOR UPDATE",
            self.progress
        );
        let id = journal.to_string();
        let r = self.client()?.query_opt(&sql, &[&id]);
        let row = r.map_err(|e| {
            self.aborted = true;
            self.err("read watermark", e)
        })?;
        watermark_value(
            std::path::Path::new(self.name()),
            row.map(|r| r.get::<_, i64>(0)),
        )
    }

    fn savepoint(&mut self) -> Result<()> {
        if self.combined {
            // No savepoints in a combined batch: a refusal redoes the whole batch.
            self.entry_written = false;
        } else {
            self.pending
                .statement("SAVEPOINT sj_entry", Expect::Anything);
        }
        Ok(())
    }

    fn apply(
        &mut self,
        lsn: Lsn,
        f: &mut dyn FnMut(EventDb<'_, '_>) -> std::result::Result<(), ApplyError>,
    ) -> Result<Applied> {
        if self.redo.is_some() {
            // The batch is done again entry by entry: nothing more goes into this one.
            return Ok(Applied::Done);
        }
        Target::connect(self)?;
        let name = self.conn.redacted().to_string();
        let Some(client) = self.client.as_mut() else {
            return Err(self.err_no_connection());
        };
        let mut ctx = PgApplyContext {
            client,
            catalog: &mut self.catalog,
            schema: &self.schema,
            pending: &mut self.pending,
            lsn,
            combined: self.combined,
            written: &mut self.entry_written,
        };
        let r = f(EventDb::Postgres(&mut ctx));
        let unwritten = !self.entry_written;
        match r {
            Ok(()) => Ok(Applied::Done),
            // Entry by entry the entry's savepoint undoes what it did; in a combined batch
            // a refusal is clean only if nothing of the entry went into the batch.
            Err(ApplyError::Permanent { reason }) if !self.combined || unwritten => {
                self.aborted = !self.combined;
                Ok(Applied::Refused(reason))
            }
            Err(ApplyError::Unsupported { backend }) if !self.combined || unwritten => {
                Ok(Applied::Unsupported(backend))
            }
            Err(e @ (ApplyError::Permanent { .. } | ApplyError::Unsupported { .. })) => {
                self.failed(Error::Target(TargetError::Server {
                    target: name,
                    message: format!("apply LSN {lsn}: {e}"),
                    sqlstate: None,
                    transient: false,
                    source: None,
                }))?;
                Ok(Applied::Done)
            }
            Err(ApplyError::Server(e)) => {
                self.failed(pg_error(&name, &format!("apply LSN {lsn}"), e.into_inner()))?;
                Ok(Applied::Done)
            }
            Err(ApplyError::Transient(e)) => {
                self.aborted = true;
                Err(Error::Target(TargetError::Server {
                    target: name,
                    message: format!("apply LSN {lsn}: {e}"),
                    sqlstate: None,
                    transient: true,
                    source: None,
                }))
            }
        }
    }

    fn release(&mut self) -> Result<()> {
        if !self.combined {
            self.pending.statement("RELEASE sj_entry", Expect::Anything);
        }
        Ok(())
    }

    fn rollback_to(&mut self) -> Result<()> {
        if self.combined {
            // Nothing of the entry went into the batch (else its refusal redoes the batch).
            return Ok(());
        }
        self.pending
            .statement("ROLLBACK TO SAVEPOINT sj_entry", Expect::Anything);
        self.pending.statement("RELEASE sj_entry", Expect::Anything);
        self.aborted = false;
        Ok(())
    }

    fn quarantine(&mut self, journal: Uuid, entry: &Rejected<'_>) -> Result<()> {
        self.send_pending("quarantine")?;
        if self.redo.is_some() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO {} (journal_id, lsn, kind, payload, summary, error, rejected_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (journal_id, lsn) DO UPDATE SET kind = EXCLUDED.kind, payload = EXCLUDED.payload,
                summary = EXCLUDED.summary, error = EXCLUDED.error, rejected_at = EXCLUDED.rejected_at",
            self.rejected
        );
        let id = journal.to_string();
        let (lsn, kind, at) = (entry.lsn as i64, i16::from(entry.kind), now_ms() as i64);
        let r = self.client()?.execute(
            &sql,
            &[
                &id,
                &lsn,
                &kind,
                &entry.payload,
                &entry.summary,
                &entry.reason,
                &at,
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = self.err("quarantine", e);
                self.failed(err)
            }
        }
    }

    fn set_watermark(&mut self, journal: Uuid, lsn: Lsn) -> Result<()> {
        // The journal id is a UUID (hex and dashes), the numbers are numbers: literals are
        // safe, and the watermark goes in the same message as the last entry's release.
        let sql = format!(
            "INSERT INTO {} (journal_id, lsn, updated_at) VALUES ('{journal}', {lsn}, {})
             ON CONFLICT (journal_id) DO UPDATE SET lsn = EXCLUDED.lsn, updated_at = EXCLUDED.updated_at",
            self.progress,
            now_ms()
        );
        self.pending.statement(&sql, Expect::Anything);
        if self.combined {
            // Sent with the entries when the batch is settled.
            return Ok(());
        }
        self.send_pending("update watermark")
    }

    fn settle(&mut self) -> Result<Settled> {
        self.send_pending("apply the batch")?;
        Ok(match self.redo.take() {
            Some(why) => Settled::Redo(why),
            None => Settled::Applied,
        })
    }

    fn commit(&mut self) -> Commit {
        if self.aborted {
            return Commit::Failed(Error::Target(TargetError::Server {
                target: self.name().to_string(),
                message: "the transaction failed before COMMIT".into(),
                sqlstate: Some("25P02".into()),
                transient: true,
                source: None,
            }));
        }
        let Some(client) = self.client.as_mut() else {
            return Commit::Failed(self.err_no_connection());
        };
        if !self.changes.is_empty() {
            let r = changes::record(
                client,
                &mut self.catalog,
                &self.schema,
                (&self.changes_table, &self.head_table),
                &self.changes,
                self.journal,
            );
            self.changes.clear();
            if let Err(e) = r {
                self.aborted = true;
                return Commit::Failed(match e {
                    ApplyError::Server(e) => {
                        pg_error(self.conn.redacted(), "write the change log", e.into_inner())
                    }
                    other => Error::Target(TargetError::Unusable {
                        path: self.name().into(),
                        reason: format!("write the change log: {other}"),
                    }),
                });
            }
        }
        let Some(client) = self.client.as_mut() else {
            return Commit::Failed(self.err_no_connection());
        };
        match client.batch_execute("COMMIT") {
            Ok(()) => Commit::Landed,
            Err(e) => {
                // An answer from the server that refuses the commit (a serialization failure,
                // a deferred constraint) means it did not land; no answer, a connection error
                // or a shutdown while committing may hide one that did.
                let refused = e.as_db_error().is_some_and(|db| {
                    let c = db.code().code();
                    !(c.starts_with("08") || c.starts_with("57"))
                });
                let err = self.err("commit", e);
                if refused {
                    Commit::Failed(err)
                } else {
                    Commit::InDoubt(err)
                }
            }
        }
    }

    fn rollback(&mut self) {
        self.reset_batch();
        if let Some(c) = self.client.as_mut()
            && c.batch_execute("ROLLBACK").is_err()
        {
            self.client = None;
        }
    }

    fn touch(&mut self, table: &str, key: &Columns, lsn: Lsn, clock: EntryClock) {
        if self.opts.change_log {
            self.changes.touch(table, key, lsn, clock);
        }
    }

    fn changes_after(&mut self, journal: Uuid, after: u64, limit: usize) -> Result<ChangePage> {
        Target::connect(self)?;
        let name = self.name().to_string();
        let tables = (
            self.progress.clone(),
            self.changes_table.clone(),
            self.head_table.clone(),
        );
        let client = self.client()?;
        match changes::read_page(
            client,
            &name,
            (&tables.0, &tables.1, &tables.2),
            journal,
            after,
            limit,
        ) {
            Ok(p) => Ok(p),
            Err(changes::PageError::Invalid(e)) => Err(e),
            Err(changes::PageError::Server(e)) => {
                let err = self.err("read the change log", e);
                self.discard();
                Err(err)
            }
        }
    }

    fn snapshot(
        &mut self,
        journal: Uuid,
        tables: &[String],
        sink: &mut RowSink<'_>,
    ) -> Result<(u64, Lsn)> {
        Target::connect(self)?;
        let name = self.name().to_string();
        let schema = self.schema.clone();
        let bk = (
            self.progress.clone(),
            self.changes_table.clone(),
            self.head_table.clone(),
        );
        let client = self.client()?;
        match changes::read_snapshot(
            client,
            &name,
            &schema,
            (&bk.0, &bk.1, &bk.2),
            journal,
            tables,
            sink,
        ) {
            Ok(r) => Ok(r),
            Err(changes::PageError::Invalid(e)) => {
                let _ = self.client()?.batch_execute("ROLLBACK");
                Err(e)
            }
            Err(changes::PageError::Server(e)) => {
                let err = self.err("read a snapshot", e);
                self.discard();
                Err(err)
            }
        }
    }

    fn watermark(&mut self, journal: Uuid) -> Result<Lsn> {
        // The table names are the schema's, known once connected.
        Target::connect(self)?;
        let sql = format!("SELECT lsn FROM {} WHERE journal_id = $1", self.progress);
        let id = journal.to_string();
        let r = self.client()?.query_opt(&sql, &[&id]);
        match r {
            Ok(row) => watermark_value(
                std::path::Path::new(self.name()),
                row.map(|r| r.get::<_, i64>(0)),
            ),
            Err(e) => {
                let err = self.err("read watermark", e);
                self.discard();
                Err(err)
            }
        }
    }

    fn keeps_connection(&self, e: &Error) -> bool {
        // A statement the server refused leaves the connection usable; a lost one does not.
        matches!(e, Error::Target(TargetError::Server { sqlstate: Some(c), .. })
            if !(c.starts_with("08") || c.starts_with("57")))
            && self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    fn is_damage(&self, e: &Error) -> bool {
        // XX001 data corrupted, XX002 index corrupted.
        matches!(e, Error::Target(TargetError::Server { sqlstate: Some(c), .. }) if c == "XX001" || c == "XX002")
    }

    fn integrity(&mut self) -> Result<Option<String>> {
        // The server checks its own pages; a fresh connection that can read the bookkeeping
        // tables is what can be checked from here.
        self.discard();
        Target::connect(self)?;
        let sql = format!("SELECT count(*) FROM {}", self.progress);
        let r = self.client()?.query_one(&sql, &[]);
        match r {
            Ok(_) => Ok(None),
            Err(e) if e.code().is_some_and(|c| c.code().starts_with("XX")) => {
                Ok(Some(e.to_string()))
            }
            Err(e) => Err(self.err("integrity check", e)),
        }
    }

    fn quarantined(&mut self, journal: Uuid) -> Result<Vec<QuarantineRow>> {
        // The table names are the schema's, known once connected.
        Target::connect(self)?;
        let sql = format!(
            "SELECT lsn, kind, payload, summary, error, rejected_at FROM {} WHERE journal_id = $1 ORDER BY lsn",
            self.rejected
        );
        let id = journal.to_string();
        let r = self.client()?.query(&sql, &[&id]);
        r.map(|rows| rows.iter().map(quarantine_row).collect())
            .map_err(|e| self.err("list quarantine", e))
    }

    fn quarantined_entry(&mut self, journal: Uuid, lsn: Lsn) -> Result<Option<QuarantineRow>> {
        let sql = format!(
            "SELECT lsn, kind, payload, summary, error, rejected_at FROM {} WHERE journal_id = $1 AND lsn = $2 FOR UPDATE",
            self.rejected
        );
        let (id, lsn) = (journal.to_string(), lsn as i64);
        let r = self.client()?.query_opt(&sql, &[&id, &lsn]);
        r.map(|row| row.as_ref().map(quarantine_row))
            .map_err(|e| self.err("read quarantine", e))
    }

    fn remove_quarantined(&mut self, journal: Uuid, lsn: Lsn) -> Result<u64> {
        // The table names are the schema's, known once connected.
        Target::connect(self)?;
        self.send_pending("remove quarantined entry")?;
        let sql = format!(
            "DELETE FROM {} WHERE journal_id = $1 AND lsn = $2",
            self.rejected
        );
        let (id, lsn) = (journal.to_string(), lsn as i64);
        let r = self.client()?.execute(&sql, &[&id, &lsn]);
        r.map_err(|e| self.err("remove quarantined entry", e))
    }

    fn note_refused_again(&mut self, journal: Uuid, lsn: Lsn, reason: &str) -> Result<()> {
        // The table names are the schema's, known once connected.
        Target::connect(self)?;
        let sql = format!(
            "UPDATE {} SET error = $3, rejected_at = $4 WHERE journal_id = $1 AND lsn = $2",
            self.rejected
        );
        let (id, lsn, at) = (journal.to_string(), lsn as i64, now_ms() as i64);
        let r = self.client()?.execute(&sql, &[&id, &lsn, &reason, &at]);
        r.map(|_| ())
            .map_err(|e| self.err("record the new refusal", e))
    }

    fn find_conflicts(&mut self, journal: Uuid, probes: &[Probe]) -> Result<Vec<Option<Remote>>> {
        if !self.opts.change_log || probes.is_empty() {
            return Ok(vec![None; probes.len()]);
        }
        self.send_pending("look for conflicts")?;
        if self.redo.is_some() {
            return Ok(vec![None; probes.len()]);
        }
        let tables = (self.changes_table.clone(), self.head_table.clone());
        let r = conflicts::find(self.client()?, (&tables.0, &tables.1), journal, probes);
        r.or_else(|e| {
            let err = self.err("look for conflicts", e);
            self.failed(err).map(|()| vec![None; probes.len()])
        })
    }

    fn conflict_rows(&mut self, table: &str, key: &Columns, base_seq: u64) -> Result<ConflictRows> {
        self.send_pending("read a conflict's rows")?;
        if self.redo.is_some() {
            return Ok(ConflictRows::default());
        }
        let name = self.name().to_string();
        let Some(client) = self.client.as_mut() else {
            return Err(self.err_no_connection());
        };
        let r = conflicts::rows(
            client,
            &mut self.catalog,
            (&self.schema, &self.changes_table),
            table,
            key,
            base_seq,
        );
        match r {
            Ok(rows) => Ok(rows),
            Err(ApplyError::Server(e)) => {
                self.failed(pg_error(&name, "read a conflict's rows", e.into_inner()))?;
                Ok(ConflictRows::default())
            }
            Err(e) => {
                self.aborted = true;
                Err(Error::Target(TargetError::Server {
                    target: name,
                    message: format!("read a conflict's rows: {e}"),
                    sqlstate: None,
                    transient: matches!(e, ApplyError::Transient(_)),
                    source: None,
                }))
            }
        }
    }

    fn record_conflict(&mut self, c: &NewConflict<'_>) -> Result<()> {
        self.send_pending("record a conflict")?;
        if self.redo.is_some() {
            return Ok(());
        }
        let table = self.conflicts_table.clone();
        let r = conflicts::record(self.client()?, &table, c);
        r.or_else(|e| {
            let err = self.err("record a conflict", e);
            self.failed(err)
        })
    }

    fn conflicts(&mut self, journal: Option<Uuid>, limit: usize) -> Result<Vec<ConflictRecord>> {
        let path = std::path::PathBuf::from(self.name());
        let raws = self.on_conflicts("list conflicts", Vec::new(), |c, t| {
            conflicts::list(c, t, journal, limit)
        })?;
        raws.into_iter().map(|r| r.check(&path)).collect()
    }

    fn conflict(&mut self, id: u64) -> Result<Option<ConflictRecord>> {
        let path = std::path::PathBuf::from(self.name());
        let raw = self.on_conflicts("read a conflict", None, |c, t| conflicts::get(c, t, id))?;
        raw.map(|r| r.check(&path)).transpose()
    }

    fn conflict_counts(&mut self, journal: Uuid) -> Result<ConflictCounts> {
        self.on_conflicts("count conflicts", ConflictCounts::default(), |c, t| {
            conflicts::counts(c, t, journal)
        })
    }

    fn settle_conflicts(&mut self, journal: Uuid, lsn: Lsn, resolution: &str) -> Result<u64> {
        self.on_conflicts("settle conflicts", 0, |c, t| {
            conflicts::settle(c, t, journal, lsn, resolution)
        })
    }

    fn record_cursor(&mut self, journal: Uuid, seq: u64) -> Result<()> {
        if !self.opts.change_log {
            return Ok(());
        }
        Target::connect(self)?;
        let table = self.cursors_table.clone();
        let r = changes::record_cursor(self.client()?, &table, journal, seq);
        r.map_err(|e| self.err("record the cache's cursor", e))
    }

    fn prune_changes(&mut self, retention: &ChangeLogRetention) -> Result<PruneReport> {
        if !self.opts.change_log || !retention.prunes() {
            return Ok(PruneReport::default());
        }
        Target::connect(self)?;
        let tables = (
            self.changes_table.clone(),
            self.head_table.clone(),
            self.cursors_table.clone(),
        );
        let r = changes::prune(
            self.client()?,
            (&tables.0, &tables.1, &tables.2),
            retention,
            now_ms(),
        );
        r.map_err(|e| self.err("prune the change log", e))
    }

    fn quarantine_count(&mut self, journal: Uuid) -> Result<u64> {
        // The table names are the schema's, known once connected.
        Target::connect(self)?;
        let sql = format!(
            "SELECT count(*) FROM {} WHERE journal_id = $1",
            self.rejected
        );
        let id = journal.to_string();
        let r = self.client()?.query_one(&sql, &[&id]);
        r.map(|row| row.get::<_, i64>(0).max(0) as u64)
            .map_err(|e| self.err("count quarantine", e))
    }
}

impl PgTarget {
    /// Runs `f` on the conflict table (outside a batch), or gives `none` if the table does not
    /// exist (a target whose change log is off).
    fn on_conflicts<T>(
        &mut self,
        what: &str,
        none: T,
        f: impl FnOnce(&mut Client, &str) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        Target::connect(self)?;
        let table = self.conflicts_table.clone();
        let client = self.client()?;
        let r = conflicts::exists(client, &table)
            .and_then(|exists| if exists { f(client, &table) } else { Ok(none) });
        r.map_err(|e| self.err(what, e))
    }

    fn err_no_connection(&self) -> Error {
        Error::Target(TargetError::Server {
            target: self.name().to_string(),
            message: "no connection: the batch was ended".into(),
            sqlstate: None,
            transient: true,
            source: None,
        })
    }
}

fn quarantine_row(r: &postgres::Row) -> QuarantineRow {
    QuarantineRow {
        lsn: r.get::<_, i64>(0).max(0) as Lsn,
        kind: r.get::<_, i16>(1) as u8,
        payload: r.get(2),
        summary: r.get(3),
        error: r.get(4),
        rejected_at_ms: r.get::<_, i64>(5).max(0) as u64,
    }
}

/// Reads the watermark and quarantine count of `journal` without writing (nor creating the
/// bookkeeping tables: missing ones count as none), through a connection of its own that
/// gives up after a few seconds.
pub(crate) fn peek(conn: &ConnString, journal: Uuid) -> Result<(Lsn, u64)> {
    let opts = TargetOptions::default().connect_timeout_ms(2000);
    let mut client = connect::connect(conn, &opts)?;
    let err = |what: &str, e| pg_error(conn.redacted(), what, e);
    let _ = client.batch_execute("SET statement_timeout = 5000");
    let schema = &resolve_schema(&mut client, &opts, conn.redacted())?;
    let exists = |client: &mut Client, t: &str| -> Result<bool> {
        client
            .query_one(
                "SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL",
                &[schema, &t],
            )
            .map(|r| r.get(0))
            .map_err(|e| err("read the catalog", e))
    };
    let id = journal.to_string();
    let wm = if exists(&mut client, PROGRESS_TABLE)? {
        let row = client
            .query_opt(
                &format!(
                    "SELECT lsn FROM {}.{} WHERE journal_id = $1",
                    quote_ident(schema),
                    quote_ident(PROGRESS_TABLE)
                ),
                &[&id],
            )
            .map_err(|e| err("read watermark", e))?;
        watermark_value(
            std::path::Path::new(conn.redacted()),
            row.map(|r| r.get::<_, i64>(0)),
        )?
    } else {
        0
    };
    let q = if exists(&mut client, REJECTED_TABLE)? {
        client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}.{} WHERE journal_id = $1",
                    quote_ident(schema),
                    quote_ident(REJECTED_TABLE)
                ),
                &[&id],
            )
            .map(|r| r.get::<_, i64>(0).max(0) as u64)
            .map_err(|e| err("count quarantine", e))?
    } else {
        0
    };
    Ok((wm, q))
}

/// What a read-only look at a server finds (for `check-target`).
pub(crate) struct PgInspection {
    /// The database's size in bytes.
    pub db_bytes: u64,
    /// The columns of the progress table (`None`: no such table).
    pub progress_columns: Option<Vec<String>>,
    /// The columns of the quarantine table (`None`: no such table).
    pub rejected_columns: Option<Vec<String>>,
    /// Rows of the progress table: journal id, watermark, updated at, quarantined.
    pub journals: Vec<(String, i64, i64, i64)>,
    /// How many rows the progress table holds.
    pub journals_total: u64,
}

/// Looks at the server `conn` names without changing it (in a read-only transaction).
pub(crate) fn inspect(conn: &ConnString, rows_max: usize) -> Result<PgInspection> {
    let opts = TargetOptions::default().connect_timeout_ms(5000);
    let mut client = connect::connect(conn, &opts)?;
    let name = conn.redacted().to_string();
    let err = |what: &str, e| pg_error(&name, what, e);
    client
        .batch_execute("SET statement_timeout = 30000; BEGIN READ ONLY")
        .map_err(|e| err("begin", e))?;
    let schema = resolve_schema(&mut client, &opts, &name)?;
    let db_bytes = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .map(|r| r.get::<_, i64>(0).max(0) as u64)
        .map_err(|e| err("read the database size", e))?;
    let mut columns = |t: &str| -> Result<Option<Vec<String>>> {
        let rows = client
            .query(
                "SELECT a.attname FROM pg_catalog.pg_attribute a
                 JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
                &[&schema, &t],
            )
            .map_err(|e| err("read the catalog", e))?;
        Ok((!rows.is_empty()).then(|| rows.iter().map(|r| r.get(0)).collect()))
    };
    let progress_columns = columns(PROGRESS_TABLE)?;
    let rejected_columns = columns(REJECTED_TABLE)?;
    let has = |cols: &Option<Vec<String>>, want: &[&str]| {
        cols.as_ref()
            .is_some_and(|c| want.iter().all(|w| c.iter().any(|x| x == w)))
    };
    let (mut journals, mut journals_total) = (Vec::new(), 0);
    if has(&progress_columns, &PROGRESS_COLUMNS) {
        let schema = quote_ident(&schema);
        let quarantined = if has(&rejected_columns, &REJECTED_COLUMNS) {
            format!(
                "(SELECT count(*) FROM {schema}.{} r WHERE r.journal_id = p.journal_id)",
                quote_ident(REJECTED_TABLE)
            )
        } else {
            "0::bigint".into()
        };
        let progress = format!("{schema}.{}", quote_ident(PROGRESS_TABLE));
        journals_total = client
            .query_one(&format!("SELECT count(*) FROM {progress}"), &[])
            .map(|r| r.get::<_, i64>(0).max(0) as u64)
            .map_err(|e| err("count journals", e))?;
        journals = client
            .query(
                &format!(
                    "SELECT p.journal_id, p.lsn, p.updated_at, {quarantined} FROM {progress} p ORDER BY p.journal_id LIMIT $1"
                ),
                &[&(rows_max as i64)],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                    .collect()
            })
            .map_err(|e| err("list journals", e))?;
    }
    let _ = client.batch_execute("ROLLBACK");
    Ok(PgInspection {
        db_bytes,
        progress_columns,
        rejected_columns,
        journals,
        journals_total,
    })
}

/// True if `e` says the connection itself is gone (closed, reset, the backend terminated or
/// the server shut down), as opposed to a statement's failure.
fn idle_connection_lost(e: &Error) -> bool {
    matches!(
        e,
        Error::Target(TargetError::Server { sqlstate, transient: true, .. })
            if sqlstate.as_deref().is_none_or(|s| s.starts_with("08") || s.starts_with("57P0"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_keys_are_the_ones_journal_format_md_states() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/journal-format.md"))
                .expect("journal-format.md");
        assert!(
            doc.contains(&format!("`{TABLES_LOCK_KEY:#018x}`")),
            "{TABLES_LOCK_KEY:#018x}"
        );
        assert!(doc.contains("first 8 bytes read as a little-endian `i64`"));
        let id = Uuid::from_bytes([1, 2, 3, 4, 5, 6, 7, 0x88, 9, 9, 9, 9, 9, 9, 9, 9]);
        assert_eq!(
            lock_key(id),
            i64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 0x88])
        );
        assert!(
            lock_key(id) < 0,
            "the high bit of byte 7 makes it negative: an i64, not a u64"
        );
    }
}
