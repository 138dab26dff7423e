//! Events: the NON-IDEMPOTENT counter event ([`Bump`]: applying an entry twice shows in its
//! counter and in the log of applications), its padded variant, the reference fold that checks
//! a target against the journal ([`Ledger`], [`fold`]), and readers of the counter tables.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use syncjournal::event::encode_event;
use syncjournal::{ApplyContext, ApplyError, Journal, JournalEvent, Lsn, Value};

use super::targets::TestTarget;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------------------------------------
// The counter event.

/// Schema of the counter tables, on the cache and on the target: one row per counter, and a
/// log of every application with no key, so that an entry applied twice shows as two rows.
pub const COUNTER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log (seq INTEGER NOT NULL, counter INTEGER NOT NULL);
";

/// Number of distinct counters.
pub const COUNTERS: i64 = 5;

/// A NON-IDEMPOTENT event: applying it twice increments its counter twice and logs it twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bump {
    /// The counter, in `1..=COUNTERS`.
    pub counter: i64,
    /// Unique per event (logged, to name duplicates).
    pub seq: i64,
}

impl Bump {
    /// The event with sequence number `seq` (its counter derived from it).
    pub fn new(seq: i64) -> Bump {
        Bump {
            counter: ((seq as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as i64 % COUNTERS + 1,
            seq,
        }
    }
}

impl JournalEvent for Bump {
    const KIND: u8 = 0x42;

    fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
        db.conn().execute(
            "INSERT INTO counters (id, n) VALUES (?1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1",
            [self.counter],
        )?;
        db.conn().execute(
            "INSERT INTO log (seq, counter) VALUES (?1, ?2)",
            (self.seq, self.counter),
        )?;
        Ok(())
    }

    #[cfg(feature = "postgres")]
    fn apply_postgres(
        &self,
        db: &mut syncjournal::target::PgApplyContext<'_>,
    ) -> Result<(), ApplyError> {
        db.execute(
            "INSERT INTO counters (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = counters.n + 1",
            &[&self.counter],
        )?;
        db.execute(
            "INSERT INTO log (seq, counter) VALUES ($1, $2)",
            &[&self.seq, &self.counter],
        )?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("bump counter {} (#{})", self.counter, self.seq)
    }
}

/// A [`Bump`] carrying padding, so that a 64 KiB segment holds only a few hundred of them: a
/// journal of `WideBump`s rotates every few hundred entries. Applies exactly as its `Bump`
/// (NON-IDEMPOTENT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WideBump {
    pub bump: Bump,
    pub pad: String,
}

/// Padding bytes per [`WideBump`]: about 200 bytes a record, about 300 records per 64 KiB
/// segment.
pub const WIDE_BUMP_PAD_BYTES: usize = 160;

impl WideBump {
    /// The padded event with sequence number `seq`.
    pub fn new(seq: i64) -> WideBump {
        WideBump {
            bump: Bump::new(seq),
            pad: "p".repeat(WIDE_BUMP_PAD_BYTES),
        }
    }
}

impl JournalEvent for WideBump {
    const KIND: u8 = 0x44;

    fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
        self.bump.apply(db)
    }

    fn describe(&self) -> String {
        self.bump.describe()
    }
}

/// The counters after applying `events` (in order) once each.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a Bump>) -> BTreeMap<i64, i64> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e.counter).or_insert(0) += 1;
    }
    m
}

/// What the journal holds, LSN by LSN: the counter each entry bumps (`None` for entries that
/// are not bumps).
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// `ids[lsn - 1]`.
    pub ids: Vec<Option<i64>>,
}

impl Ledger {
    /// Notes that `lsn` bumps counter `id`. LSNs must be noted in order, from 1.
    pub fn note(&mut self, lsn: Lsn, id: Option<i64>) {
        assert_eq!(
            lsn,
            self.ids.len() as Lsn + 1,
            "ledger LSNs must be contiguous"
        );
        self.ids.push(id);
    }

    /// The last LSN noted.
    pub fn head(&self) -> Lsn {
        self.ids.len() as Lsn
    }

    /// The counters after applying exactly the entries `1..=upto`.
    pub fn fold(&self, upto: Lsn) -> BTreeMap<i64, i64> {
        let mut m = BTreeMap::new();
        for id in self.ids.iter().take(upto as usize).flatten() {
            *m.entry(*id).or_insert(0) += 1;
        }
        m
    }

    /// Appends `n` bumps (one record each, durable when this returns; sequence number = LSN)
    /// and notes them.
    pub fn append_increments(&mut self, journal: &Journal, n: u64) -> std::ops::Range<Lsn> {
        self.append_increments_batched(journal, n, 1)
    }

    /// Appends `n` bumps in batches of `chunk` records (one sync per batch; one record a
    /// batch is a plain append).
    pub fn append_increments_batched(
        &mut self,
        journal: &Journal,
        n: u64,
        chunk: u64,
    ) -> std::ops::Range<Lsn> {
        let first = self.head() + 1;
        let mut done = 0;
        while done < n {
            let k = chunk.min(n - done);
            let start = self.head() + 1;
            let evs: Vec<Bump> = (start..start + k)
                .map(|seq| Bump::new(seq as i64))
                .collect();
            let payloads: Vec<Vec<u8>> = evs
                .iter()
                .map(|e| encode_event(now_ms(), e).expect("encode"))
                .collect();
            let lsns = if k == 1 {
                let lsn = journal
                    .append_kind(Bump::KIND, &payloads[0])
                    .expect("append");
                lsn..lsn + 1
            } else {
                journal
                    .append_batch_kind(Bump::KIND, &payloads)
                    .expect("append batch")
            };
            assert_eq!(lsns.start, start, "batch LSNs");
            for (lsn, e) in lsns.zip(&evs) {
                self.note(lsn, Some(e.counter));
            }
            done += k;
        }
        first..self.head() + 1
    }
}

/// The counters read through `c`. Counters at zero are left out: only a test's own writes
/// (a lock holder's) leave one, never a bump.
pub fn counters_of(c: &Connection) -> BTreeMap<i64, i64> {
    let mut s = c
        .prepare("SELECT id, n FROM counters WHERE n <> 0 ORDER BY id")
        .expect("read counters");
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
        .expect("read counters")
}

/// Every logged sequence number, sorted (duplicates kept).
pub fn logged_seqs(c: &Connection) -> Vec<i64> {
    let mut s = c
        .prepare("SELECT seq FROM log ORDER BY seq")
        .expect("read log");
    s.query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
        .expect("read log")
}

/// `(log rows, sequence numbers applied more than once)` read through `c`.
pub fn log_stats(c: &Connection) -> (i64, Vec<i64>) {
    let rows: i64 = c
        .query_row("SELECT count(*) FROM log", [], |r| r.get(0))
        .expect("count the log");
    let mut s = c
        .prepare("SELECT seq FROM log GROUP BY seq HAVING count(*) > 1 ORDER BY seq")
        .expect("read log");
    let dups = s
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
        .expect("read log");
    (rows, dups)
}

/// `(rows, distinct sequence numbers, smallest, largest)` of the counter log, read through
/// `c` in one query. The log holds exactly the sequence numbers `1..=n` once each iff this is
/// `(n, n, 1, n)` (or `(0, 0, 0, 0)` for `n = 0`).
pub fn log_shape(c: &Connection) -> (i64, i64, i64, i64) {
    c.query_row(
        "SELECT count(*), count(DISTINCT seq), coalesce(min(seq), 0), coalesce(max(seq), 0) FROM log",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .expect("read log shape")
}

/// Why the counter tables read through `c` are not exactly the fold of `prefix` (the events of
/// LSNs `1..=prefix.len()`, sequence numbers equal to their LSNs), if they are not.
pub fn not_the_fold(c: &Connection, prefix: &[Bump]) -> Option<String> {
    let w = prefix.len() as i64;
    let shape = log_shape(c);
    let want_shape = if w == 0 { (0, 0, 0, 0) } else { (w, w, 1, w) };
    let want = fold(prefix);
    let have = counters_of(c);
    (shape != want_shape || have != want).then(|| {
        format!(
            "target is not the fold of LSNs 1..={w}: log (rows, distinct, min, max) {shape:?}, \
             expected {want_shape:?}; counters {have:?}, expected {want:?}"
        )
    })
}

/// Sorted LSNs (or sequence numbers) as inclusive ranges of consecutive values.
pub fn ranges_of(sorted: &[i64]) -> Vec<std::ops::RangeInclusive<i64>> {
    let mut out: Vec<std::ops::RangeInclusive<i64>> = Vec::new();
    for &v in sorted {
        match out.last_mut() {
            Some(r) if *r.end() + 1 == v => *r = *r.start()..=v,
            Some(r) if *r.end() == v => {}
            _ => out.push(v..=v),
        }
    }
    out
}

/// The counters on a target (of any kind), through a fresh connection; as [`counters_of`].
pub fn target_counters(target: &TestTarget) -> BTreeMap<i64, i64> {
    target
        .rows("SELECT id, n FROM counters WHERE n <> 0 ORDER BY id")
        .into_iter()
        .map(|r| match &r[..] {
            [Value::Integer(id), Value::Integer(n)] => (*id, *n),
            _ => panic!("a counter row: {r:?}"),
        })
        .collect()
}

/// `(log rows, sequence numbers applied more than once)` on a target (of any kind); as
/// [`log_stats`].
pub fn target_log_stats(target: &TestTarget) -> (i64, Vec<i64>) {
    let rows = target.ints("SELECT count(*) FROM log")[0];
    let dups = target.ints("SELECT seq FROM log GROUP BY seq HAVING count(*) > 1 ORDER BY seq");
    (rows, dups)
}

/// Asserts that the counter target holds exactly the fold of the entries up to its watermark,
/// with no duplicate, and returns the watermark.
pub fn assert_target_is_fold(target: &TestTarget, journal_id: uuid::Uuid, ledger: &Ledger) -> Lsn {
    let w = target.watermark(journal_id);
    assert_eq!(target.integrity(), "ok", "target integrity");
    assert_eq!(
        target_counters(target),
        ledger.fold(w),
        "target counters must be the fold of LSNs 1..={w}"
    );
    let (rows, dups) = target_log_stats(target);
    assert!(dups.is_empty(), "entries applied twice: {dups:?}");
    let increments = ledger.fold(w).values().sum::<i64>();
    assert_eq!(rows, increments, "log rows = increments up to {w}");
    w
}
