//! Pull: the target's change log after the cache's cursor, applied to the cache with the cursor
//! moved in the same cache transaction (crash-safe, exactly once); a change to a row this
//! journal has changed and the target does not hold yet stops the pull before it, until that
//! change is on the target (`sync-protocol.md` §3).

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::apply::{ApplyContext, ApplyError};
use crate::error::{CacheError, Error, Result};
use crate::event::{JournalEvent, decode_event, decode_stamped_event};
use crate::format::Lsn;
use crate::journal::Journal;
use crate::journal::ack::now_ms;
use crate::mutation::{Columns, Mutation};
use crate::target::changes::{PULL_PAGE_ROWS, row_identity};
use crate::target::{Change, ChangePage};

use crate::store::cache::CacheWriter;
use crate::store::handle::{Inner, cache_err, lock};

/// Journal entries a pull reads at most to learn which rows are changed locally and not yet on
/// the target: with more pending, every remote change waits until replay has caught up.
pub(crate) const PENDING_SCAN_MAX: u64 = 100_000;

/// The cache's pull cursor table (one row).
pub(crate) const CREATE_CURSOR_TABLE: &str = "
CREATE TABLE IF NOT EXISTS syncjournal_pull (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO syncjournal_pull (id, seq) VALUES (1, 0);";

/// A remote change the pull stopped before: the row is changed locally by an entry the target
/// does not hold yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldBack {
    /// The change's sequence number on the target.
    pub seq: u64,
    /// The row's table.
    pub table: String,
    /// The row's key, as text.
    pub key: String,
    /// The local entry that changed it (0: the local entries could not all be read, so every
    /// remote change waits).
    pub local_lsn: Lsn,
}

/// What a pull did.
#[derive(Debug)]
pub struct PullReport {
    /// Changes applied to the cache.
    pub applied: u64,
    /// The cache's cursor afterwards: every change up to it is in the cache.
    pub cursor_seq: u64,
    /// The change log's head as read.
    pub head_seq: u64,
    /// The change the pull stopped before, if it did.
    pub held_back: Option<HeldBack>,
    /// Why the pull stopped early, if it failed.
    pub error: Option<Error>,
}

/// The pull's side of the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct PullStatus {
    /// The cache's cursor: every change of the target's log up to it is in the cache.
    pub cursor_seq: u64,
    /// The log's head as last read (`None`: not read yet).
    pub head_seq: Option<u64>,
    /// When it was read, ms since the Unix epoch.
    pub read_at_ms: Option<u64>,
    /// Changes on the target the cache does not have yet (as of that read).
    pub behind: Option<u64>,
    /// The change the last pull stopped before.
    pub held_back: Option<HeldBack>,
    /// The cursor is older than what the log keeps: the cache must be reseeded.
    pub needs_reseed: bool,
    /// The last pull's error.
    pub last_error: Option<String>,
    /// What this store last told the target it needs of the change log (its cursor, or the
    /// base of its oldest entry not on the target if lower: retention keeps the log from
    /// there, `sync-protocol.md` §2.6). `None`: not told yet since the store opened.
    pub reported_seq: Option<u64>,
}

/// What the store remembers of its last pull (in memory: the cursor itself is in the cache).
#[derive(Debug, Default)]
pub(crate) struct PullMemory {
    pub head_seq: Option<u64>,
    pub read_at_ms: Option<u64>,
    pub held_back: Option<HeldBack>,
    pub needs_reseed: bool,
    pub last_error: Option<String>,
    pub reported: Option<u64>,
}

/// Rows changed by journal entries the target does not hold yet.
enum Pending {
    /// By row identity, the last entry changing it.
    Rows(HashMap<Vec<u8>, Lsn>),
    /// Unknown (too many, or unreadable): every remote change waits.
    All(String),
}

impl Pending {
    fn lookup(&self, c: &Change) -> Option<Lsn> {
        match self {
            Pending::Rows(m) if m.is_empty() => None,
            Pending::Rows(m) => m.get(&row_identity(&c.table, &c.key)).copied(),
            Pending::All(_) => Some(0),
        }
    }
}

/// The rows the entries `(watermark, head]` change.
fn pending_rows<E: JournalEvent>(journal: &Journal, watermark: Lsn, head: Lsn) -> Pending {
    if watermark >= head {
        return Pending::Rows(HashMap::new());
    }
    if head - watermark > PENDING_SCAN_MAX {
        return Pending::All(format!(
            "{} local entries are not on the target yet",
            head - watermark
        ));
    }
    let mut reader = match journal.reader(watermark + 1) {
        Ok(r) => r,
        Err(e) => return Pending::All(format!("the pending entries cannot be read: {e}")),
    };
    let mut rows = HashMap::new();
    loop {
        let rec = match reader.next_ref() {
            Ok(Some(r)) if r.lsn <= head => r,
            Ok(_) => break,
            Err(e) => return Pending::All(format!("the pending entries cannot be read: {e}")),
        };
        if rec.gap().is_some() {
            continue;
        }
        if rec.kind != E::KIND {
            return Pending::All(format!("LSN {} is of another kind", rec.lsn));
        }
        match decode_event::<E>(rec.payload) {
            Ok((_, ev)) => {
                for (table, key) in ev.touched_rows() {
                    rows.insert(row_identity(table, key), rec.lsn);
                }
            }
            Err(e) => return Pending::All(format!("LSN {} does not decode: {e}", rec.lsn)),
        }
    }
    Pending::Rows(rows)
}

/// The key as text, for a status line.
fn key_text(key: &Columns) -> String {
    key.iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl<E: JournalEvent> Inner<E> {
    /// The cache's pull cursor.
    pub(crate) fn pull_cursor(&self) -> Result<u64> {
        let conn = lock(&self.reader);
        conn.query_row("SELECT seq FROM syncjournal_pull WHERE id = 1", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|s| s.max(0) as u64)
        .map_err(cache_err(&self.cache_path))
    }

    /// The cache's writer, once no journal transaction is open on it (entries being applied
    /// commit theirs first): what a pull or a reseed writes its own transaction with.
    pub(crate) fn writer_between_transactions(&self) -> std::sync::MutexGuard<'_, CacheWriter> {
        let mut w = lock(&self.writer);
        while w.txn_open || w.closing {
            w = self
                .writer_cv
                .wait_timeout(w, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        w
    }

    /// The pull's status (the cursor read from the cache now).
    pub(crate) fn pull_status(&self) -> Result<PullStatus> {
        let cursor_seq = self.pull_cursor()?;
        let m = lock(&self.pull);
        Ok(PullStatus {
            cursor_seq,
            head_seq: m.head_seq,
            read_at_ms: m.read_at_ms,
            behind: m.head_seq.map(|h| h.saturating_sub(cursor_seq)),
            held_back: m.held_back.clone(),
            needs_reseed: m.needs_reseed,
            last_error: m.last_error.clone(),
            reported_seq: m.reported,
        })
    }

    /// Pulls every change after the cursor, page by page, until caught up or held back.
    pub(crate) fn pull_now(&self) -> PullReport {
        let mut report = PullReport {
            applied: 0,
            cursor_seq: 0,
            head_seq: 0,
            held_back: None,
            error: None,
        };
        let r = self.pull_pages(&mut report);
        if let Ok(watermark) = &r {
            self.report_cursor(report.cursor_seq, *watermark);
        }
        if let Some(rep) = &self.replayer {
            lock(rep).idle();
        }
        let mut m = lock(&self.pull);
        m.held_back = report.held_back.clone();
        match r {
            Ok(_) => {
                m.last_error = None;
                m.needs_reseed = false;
            }
            Err(e) => {
                m.needs_reseed = matches!(e, Error::Cache(CacheError::NeedsReseed { .. }));
                m.last_error = Some(e.to_string());
                report.error = Some(e);
            }
        }
        report
    }

    /// Tells the target how far back this cache needs the change log: its cursor, or the
    /// base of its oldest entry the target does not have (after `watermark`) if lower, so that
    /// retention keeps what its conflict checks read. Only when that changed; best effort.
    fn report_cursor(&self, cursor: u64, watermark: Lsn) {
        let Some(rep) = &self.replayer else { return };
        let base = self.journal.reader(watermark + 1).ok().and_then(|mut r| {
            let rec = r.next_ref().ok()??;
            let (_, _, stamp) = decode_stamped_event::<E>(rec.payload).ok()?;
            Some(stamp?.base_seq)
        });
        let need = base.map_or(cursor, |b| b.min(cursor));
        if lock(&self.pull).reported == Some(need) {
            return;
        }
        match lock(rep).report_cursor(need) {
            Ok(()) => lock(&self.pull).reported = Some(need),
            Err(e) => tracing::debug!(error = %e, "the cache's cursor was not reported"),
        }
    }

    /// Pulls page after page; returns the last page's watermark of this journal.
    fn pull_pages(&self, report: &mut PullReport) -> Result<Lsn> {
        let rep = self.replayer()?;
        loop {
            self.check()?;
            let cursor = self.pull_cursor()?;
            report.cursor_seq = cursor;
            let mut page = lock(rep).changes_after(cursor, PULL_PAGE_ROWS)?;
            {
                let mut m = lock(&self.pull);
                m.head_seq = Some(page.head_seq);
                m.read_at_ms = Some(now_ms());
            }
            report.head_seq = page.head_seq;
            if page.floor_seq > cursor {
                return Err(Error::Cache(CacheError::NeedsReseed {
                    path: self.cache_path.clone(),
                    cursor_seq: cursor,
                    floor_seq: page.floor_seq,
                }));
            }
            let full = page.changes.len() >= PULL_PAGE_ROWS;
            let watermark = page.watermark;
            let damaged = page.damaged.take();
            if !page.changes.is_empty() {
                let (applied, last, held) = self.apply_page(page, cursor)?;
                report.applied += applied;
                report.cursor_seq = last;
                if held.is_some() {
                    report.held_back = held;
                    return Ok(watermark);
                }
            }
            if let Some(e) = damaged {
                return Err(e);
            }
            if !full {
                return Ok(watermark);
            }
        }
    }

    /// Applies one page to the cache in one transaction with the cursor; returns the changes
    /// applied, the new cursor and the change it stopped before.
    fn apply_page(&self, page: ChangePage, cursor: u64) -> Result<(u64, u64, Option<HeldBack>)> {
        let ce = cache_err(&self.cache_path);
        let mut w = self.writer_between_transactions();
        self.check()?;
        // Every entry written is in the journal: those after the target's watermark (read in
        // the page's snapshot) may not be on the target yet.
        let pending = pending_rows::<E>(&self.journal, page.watermark, w.txn_max);
        w.conn.execute_batch("BEGIN IMMEDIATE").map_err(&ce)?;
        let now: i64 =
            match w
                .conn
                .query_row("SELECT seq FROM syncjournal_pull WHERE id = 1", [], |r| {
                    r.get(0)
                }) {
                Ok(s) => s,
                Err(e) => {
                    let _ = w.conn.execute_batch("ROLLBACK");
                    return Err(ce(e));
                }
            };
        if now.max(0) as u64 != cursor {
            // Another pull moved it meanwhile.
            let _ = w.conn.execute_batch("ROLLBACK");
            return Ok((0, now.max(0) as u64, None));
        }
        let mut last = cursor;
        let mut applied = 0u64;
        let mut held = None;
        let w = &mut *w;
        for c in page.changes {
            if c.superseded {
                // An own record a later record of the row replaces: the cache has the row as
                // this journal left it, at least as new (§3.2). Passed, held back or not.
                w.hlc_last = w.hlc_last.max(c.hlc);
                last = c.seq;
                continue;
            }
            if let Some(local_lsn) = pending.lookup(&c) {
                if let Pending::All(why) = &pending {
                    tracing::debug!(%why, "remote changes wait for the local ones");
                }
                held = Some(HeldBack {
                    seq: c.seq,
                    table: c.table.clone(),
                    key: key_text(&c.key),
                    local_lsn,
                });
                break;
            }
            let seq = c.seq;
            // The store's clock passes every change it sees (`sync-protocol.md` §4.1).
            w.hlc_last = w.hlc_last.max(c.hlc);
            let m = match c.row {
                Some(values) => Mutation::Upsert {
                    table: c.table,
                    key: c.key,
                    values,
                },
                None => Mutation::Delete {
                    table: c.table,
                    key: c.key,
                },
            };
            let r = ApplyContext::new(&w.conn, &mut w.schema, 0).apply_mutation(&m);
            if let Err(e) = r {
                let _ = w.conn.execute_batch("ROLLBACK");
                return Err(match e {
                    ApplyError::Transient(e) => ce(e.into_inner()),
                    other => Error::Cache(CacheError::PullRefused {
                        seq,
                        reason: other.to_string(),
                    }),
                });
            }
            applied += 1;
            last = seq;
        }
        let r = w
            .conn
            .execute(
                "UPDATE syncjournal_pull SET seq = ?1 WHERE id = 1",
                [last as i64],
            )
            .and_then(|_| w.conn.execute_batch("COMMIT"));
        if let Err(e) = r {
            let _ = w.conn.execute_batch("ROLLBACK");
            return Err(ce(e));
        }
        Ok((applied, last, held))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_limit_is_the_one_sync_protocol_md_states() {
        assert_eq!(super::PENDING_SCAN_MAX, 100_000);
        assert!(include_str!("../../sync-protocol.md").contains("at most 100 000)"));
    }
}
