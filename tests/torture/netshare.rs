//! Replay to a target database on a REAL network share, with real faults.
//!
//! The harness in `tests/support/netshare/` brings up, for this test only, an sshd (internal-sftp
//! only) in a network namespace of its own behind a veth pair, an sshfs mount of its export
//! (soft profile: keepalive every second, EIO after about 3-4 s of outage, reconnect on the
//! next access), a userspace relay that adds 1 ms of latency in each direction, and faults
//! (link down, server killed), and tears it all down at the end. Each scenario writes
//! NON-IDEMPOTENT `Bump` events through a [`Store`] (a duplicate application shows in a
//! counter and in the log table) to a fresh target database on the share, and checks it
//! against a reference model ([`Ledger`]) through a fresh connection on the mount and
//! directly in the server's export directory:
//!
//! * `latency`: a few thousand entries in several batches over ~2 ms of round trip: target
//!   == model, `integrity_check` ok, on both sides;
//! * `cut-link`: the link is cut in the middle of a target transaction (from the target
//!   hook, at a chosen statement); during the outage `sync_now` reports a transient error and
//!   `status()` tells the truth (entries pending, `last_error` set, acknowledgement unchanged,
//!   the server's copy at that watermark); after healing one sync completes: nothing lost,
//!   nothing applied twice;
//! * `kill-server`: the file server is killed at moments spread over a COMMIT (timed from the
//!   commit hook), and once right after a commit landed while the replayer is told it failed
//!   (an in-doubt commit that cannot be verified until the server is back); each time the
//!   server's state is examined, the server restarted, and the next sync must resolve the
//!   in-doubt commit by reading the watermark through a new connection.
//!
//! The scenarios run in sequence in one test function (faults are global to the share). It
//! needs root and `apt-get install sshfs fuse3 openssh-server openssh-sftp-server iptables`;
//! without them it prints `SKIPPED netshare: <reason>` and passes, unless `CI` is set, when it
//! fails. `SJNS_KEEP=1` leaves the share up afterwards (for debugging; `tests/support/netshare/down.sh`
//! removes it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::support::events::{Bump, COUNTER_SCHEMA, Ledger, counters_of};
use crate::support::faults::ioerr;
use crate::support::netshare::{Fault, Healer, Share};
use crate::support::process::{alone, skip_or_fail, summary};
use crate::support::targets::{create_target, integrity, open_ro, open_target, watermark_of};
use rusqlite::Connection;
use syncjournal::replay::TargetFaults;
use syncjournal::{Lsn, ReplayOptions, Store, StoreOptions, SyncReport, TargetOptions};

/// One-way latency the relay adds in each direction during every scenario.
const DELAY_MS: u32 = 1;

// ---------------------------------------------------------------------------------------------
// The target hook: runs closures at chosen statements, times commits.

/// Called before each target statement with (transaction number, statement index, label).
type StatementFn = Box<dyn FnMut(usize, usize, &str) + Send>;
/// Called after a COMMIT succeeded; `true` makes the replayer believe it failed (in doubt).
type CommitFn = Box<dyn FnMut() -> bool + Send>;

#[derive(Default)]
struct Hook {
    /// `BEGIN`s seen since the last reset.
    txns: AtomicUsize,
    commit_started: Mutex<Option<Instant>>,
    commit_times: Mutex<Vec<Duration>>,
    on_statement: Mutex<Option<StatementFn>>,
    on_commit: Mutex<Option<CommitFn>>,
}

impl Hook {
    fn reset(&self) {
        self.txns.store(0, Ordering::SeqCst);
        *self.on_statement.lock().unwrap() = None;
        *self.on_commit.lock().unwrap() = None;
        self.commit_times.lock().unwrap().clear();
    }

    fn on_statement(&self, f: impl FnMut(usize, usize, &str) + Send + 'static) {
        *self.on_statement.lock().unwrap() = Some(Box::new(f));
    }

    fn on_commit(&self, f: impl FnMut() -> bool + Send + 'static) {
        *self.on_commit.lock().unwrap() = Some(Box::new(f));
    }

    fn commit_times(&self) -> Vec<Duration> {
        self.commit_times.lock().unwrap().clone()
    }
}

impl TargetFaults for Hook {
    fn before_statement(&self, index: usize, label: &str) -> rusqlite::Result<()> {
        if index == 0 {
            self.txns.fetch_add(1, Ordering::SeqCst);
        }
        let txn = self.txns.load(Ordering::SeqCst).saturating_sub(1);
        if label == "commit" {
            *self.commit_started.lock().unwrap() = Some(Instant::now());
        }
        if let Some(f) = self.on_statement.lock().unwrap().as_mut() {
            f(txn, index, label);
        }
        Ok(())
    }

    fn after_commit(&self) -> rusqlite::Result<()> {
        if let Some(t) = self.commit_started.lock().unwrap().take() {
            self.commit_times.lock().unwrap().push(t.elapsed());
        }
        if let Some(f) = self.on_commit.lock().unwrap().as_mut()
            && f()
        {
            return Err(ioerr());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// A store whose target lives on the share, and its reference model.

struct Rig {
    _dir: tempfile::TempDir,
    store: Store<Bump>,
    /// The target through the mount.
    target: PathBuf,
    /// The same file in the server's export directory.
    server_file: PathBuf,
    ledger: Ledger,
    hook: Arc<Hook>,
    journal_id: uuid::Uuid,
}

impl Rig {
    /// A store with a local journal and cache, and a fresh target on the share (with the
    /// scenarios' latency set).
    fn new(share: &Share, name: &str, replay: ReplayOptions) -> Rig {
        share.set_delay_ms(DELAY_MS).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = format!("{name}-{}.db", std::process::id());
        let target = share.mnt.join(&file);
        let server_file = share.export.join(&file);
        create_target(&target, COUNTER_SCHEMA);
        assert!(server_file.exists(), "the target was created on the server");
        let hook = Arc::new(Hook::default());
        let store: Store<Bump> = Store::open(
            dir.path().join("journal"),
            dir.path().join("cache.db"),
            StoreOptions::new()
                .cache_schema(COUNTER_SCHEMA)
                .target(
                    &target,
                    TargetOptions::new()
                        .busy_timeout_ms(2000)
                        .faults(Arc::clone(&hook) as Arc<dyn TargetFaults>),
                )
                .replay(replay)
                .background_sync(false),
        )
        .unwrap();
        let journal_id = store.status().unwrap().journal_id;
        Rig {
            _dir: dir,
            store,
            target,
            server_file,
            ledger: Ledger::default(),
            hook,
            journal_id,
        }
    }

    /// Applies `n` increments through the store (journaled durably, applied to the cache).
    fn append(&mut self, n: u64) -> Lsn {
        for _ in 0..n {
            let seq = self.ledger.head() + 1;
            let ev = Bump::new(seq as i64);
            let lsn = self.store.apply(&ev).unwrap();
            self.ledger.note(lsn, Some(ev.counter));
        }
        self.ledger.head()
    }

    fn acked(&self) -> Lsn {
        self.store.journal_state().acked_lsn
    }

    /// During an outage: the sync failed with a transient error and the status says so.
    fn assert_outage_status(&self, what: &str, rep: &SyncReport, acked_before: Lsn) {
        let e = rep
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: sync during the outage succeeded: {rep}"));
        assert!(e.is_transient(), "{what}: not transient: {e}");
        let head = self.ledger.head();
        let st = self.store.status().unwrap();
        assert_eq!(st.head_lsn, head, "{what}: status head");
        assert_eq!(
            st.acked_lsn, acked_before,
            "{what}: the acknowledgement must not move during the outage"
        );
        assert!(st.pending_entries > 0, "{what}: status pending: {st:?}");
        assert_eq!(
            st.pending_entries,
            head - acked_before,
            "{what}: status pending: {st:?}"
        );
        assert_eq!(rep.pending, st.pending_entries, "{what}: report pending");
        let last = st
            .last_error
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: status has no last_error: {st:?}"));
        assert!(last.transient, "{what}: last_error not transient: {last:?}");
        assert!(
            st.failing_since_ms.is_some(),
            "{what}: failing_since: {st:?}"
        );
    }

    /// After the last sync: target == model on both sides, acknowledged, status clean.
    fn assert_complete(&self, what: &str) -> Tally {
        let head = self.ledger.head();
        let st = self.store.status().unwrap();
        assert_eq!(st.acked_lsn, head, "{what}: acknowledged: {st:?}");
        assert_eq!(st.pending_entries, 0, "{what}: pending: {st:?}");
        assert!(st.last_error.is_none(), "{what}: last_error: {st:?}");
        assert!(
            st.failing_since_ms.is_none(),
            "{what}: failing_since: {st:?}"
        );
        assert!(st.last_success_ms.is_some(), "{what}: last_success: {st:?}");
        assert_eq!(st.target_lsn, Some(head), "{what}: target_lsn: {st:?}");
        assert_eq!(st.cache_applied_lsn, Some(head), "{what}: cache: {st:?}");
        let mount = tally(&open_target(&self.target), self.journal_id, &self.ledger);
        mount.assert_exact(&format!("{what} (fresh connection on the mount)"), head);
        let server = tally(&open_ro(&self.server_file), self.journal_id, &self.ledger);
        server.assert_exact(&format!("{what} (server's export directory)"), head);
        // The cache folds the same entries.
        let cache = self.store.read(|c| Ok(counters_of(c))).unwrap();
        assert_eq!(cache, self.ledger.fold(head), "{what}: cache");
        mount
    }

    /// The server's state right now, examined on a copy of its files (the database and any
    /// hot rollback journal, which opening the copy rolls back): its watermark and tally. The
    /// share itself is not touched (it may be down).
    fn server_copy(&self) -> Tally {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("copy.db");
        std::fs::copy(&self.server_file, &db).unwrap();
        let journal = PathBuf::from(format!("{}-journal", self.server_file.display()));
        if journal.exists() {
            std::fs::copy(&journal, tmp.path().join("copy.db-journal")).unwrap();
        }
        let c = Connection::open(&db).unwrap();
        tally(&c, self.journal_id, &self.ledger)
    }
}

/// What a target holds, compared with the model.
#[derive(Debug)]
struct Tally {
    integrity: String,
    watermark: Lsn,
    counters: BTreeMap<i64, i64>,
    /// The counters the model gives for entries 1..=watermark.
    expected: BTreeMap<i64, i64>,
    /// Entries up to the watermark with no application logged.
    lost: u64,
    /// Applications logged more than once (extra rows).
    duplicated: u64,
    /// Applications logged for entries after the watermark.
    beyond: u64,
}

fn tally(c: &Connection, journal_id: uuid::Uuid, ledger: &Ledger) -> Tally {
    let integrity = integrity(c);
    let watermark = watermark_of(c, journal_id);
    let (rows, distinct_upto, beyond): (i64, i64, i64) = c
        .query_row(
            "SELECT count(*), count(DISTINCT CASE WHEN seq <= ?1 THEN seq END),
                    count(CASE WHEN seq > ?1 THEN 1 END) FROM log",
            [watermark as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let distinct: i64 = c
        .query_row("SELECT count(DISTINCT seq) FROM log", [], |r| r.get(0))
        .unwrap();
    Tally {
        integrity,
        watermark,
        counters: counters_of(c),
        expected: ledger.fold(watermark),
        lost: (watermark as i64 - distinct_upto).max(0) as u64,
        duplicated: (rows - distinct) as u64,
        beyond: beyond as u64,
    }
}

impl Tally {
    /// The target is exactly the fold of entries 1..=watermark (whatever the watermark).
    fn assert_fold(&self, what: &str) {
        assert_eq!(self.integrity, "ok", "{what}: integrity_check");
        assert_eq!(self.lost, 0, "{what}: entries lost: {self:?}");
        assert_eq!(
            self.duplicated, 0,
            "{what}: entries applied twice: {self:?}"
        );
        assert_eq!(
            self.beyond, 0,
            "{what}: entries past the watermark: {self:?}"
        );
        assert_eq!(
            self.counters, self.expected,
            "{what}: counters must be the fold of LSNs 1..={}",
            self.watermark
        );
    }

    /// The target is the fold of exactly entries 1..=head.
    fn assert_exact(&self, what: &str, head: Lsn) {
        self.assert_fold(what);
        assert_eq!(self.watermark, head, "{what}: watermark");
    }
}

/// Replay options of the scenarios: batches of `batch` entries, `retries` retries from
/// `retry_delay_ms` up to ten times that.
fn replay_opts(batch: usize, retries: u32, retry_delay_ms: u64) -> ReplayOptions {
    ReplayOptions::new()
        .batch_entries_max(batch)
        .retry_attempts_max(retries)
        .retry_delay_ms(retry_delay_ms)
        .retry_delay_max_ms(10 * retry_delay_ms)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

// ---------------------------------------------------------------------------------------------
// Scenarios. Each returns its one-line summary.

/// Appends `n` entries and syncs, timed: the sync must apply exactly them.
fn append_and_sync(rig: &mut Rig, n: u64) -> (SyncReport, Duration) {
    rig.append(n);
    let t = Instant::now();
    let r = rig.store.sync_now();
    let d = t.elapsed();
    assert!(r.error.is_none(), "latency: {r}");
    assert_eq!(r.applied, n, "{r}");
    (r, d)
}

/// A few thousand entries in several batches over ~2 ms of round trip.
fn latency(share: &Arc<Share>) -> String {
    const FIRST: u64 = 2000;
    const MORE: u64 = 1000;
    const BATCH: usize = 500;
    let mut rig = Rig::new(share, "latency", replay_opts(BATCH, 3, 100));
    let (r1, d1) = append_and_sync(&mut rig, FIRST);
    assert_eq!(r1.transactions, FIRST.div_ceil(BATCH as u64), "{r1}");
    assert_eq!(r1.pending, 0, "{r1}");
    rig.assert_complete("latency, first sync");
    let (r2, d2) = append_and_sync(&mut rig, MORE);
    let tally = rig.assert_complete("latency");
    let txns = r1.transactions + r2.transactions;
    let commits = rig.hook.commit_times();
    let commit_avg = commits.iter().sum::<Duration>() / commits.len().max(1) as u32;
    format!(
        "netshare latency: entries {}, batches {txns}, one-way delay {DELAY_MS} ms, sync {} ({} per batch, commit {}), retries {}, lost {}, duplicated {}, integrity {} (mount and export)",
        rig.ledger.head(),
        secs(d1 + d2),
        ms((d1 + d2) / txns as u32),
        ms(commit_avg),
        r1.retries + r2.retries,
        tally.lost,
        tally.duplicated,
        tally.integrity,
    )
}

/// The link is cut in the middle of a target transaction, then healed.
fn cut_link(share: &Arc<Share>) -> String {
    const ENTRIES: u64 = 3000;
    const BATCH: usize = 1000;
    /// The cut: before the savepoint of the 401st entry of the second batch (BEGIN = 0, read
    /// watermark = 1, then savepoint / event / release per entry).
    const CUT_TXN: usize = 1;
    const CUT_INDEX: usize = 2 + 3 * 400;
    let mut rig = Rig::new(share, "cutlink", replay_opts(BATCH, 2, 200));
    rig.append(ENTRIES);
    let heal_guard = Healer::new(share);
    let cut: Arc<Mutex<Option<(Instant, String)>>> = Arc::default();
    {
        let cut = Arc::clone(&cut);
        let share = Arc::clone(share);
        rig.hook.on_statement(move |txn, index, label| {
            let mut c = cut.lock().unwrap();
            if txn == CUT_TXN && index == CUT_INDEX && c.is_none() {
                share.inject(Fault::Link).expect("cut the link");
                *c = Some((Instant::now(), label.to_string()));
            }
        });
    }
    let t = Instant::now();
    let r1 = rig.store.sync_now();
    let sync_time = t.elapsed();
    let (cut_at, cut_label) = cut.lock().unwrap().clone().expect("the hook cut the link");
    assert_eq!(cut_label, "savepoint", "the cut point is mid-batch");
    // The first batch committed before the cut; nothing after it.
    assert_eq!(r1.applied, BATCH as u64, "cut-link: {r1}");
    assert_eq!(r1.transactions, 1, "cut-link: {r1}");
    assert_eq!(rig.acked(), BATCH as u64);
    rig.assert_outage_status("cut-link", &r1, BATCH as u64);
    eprintln!("cut-link: sync during the outage: {r1}");
    // The server holds exactly the first batch (the cut transaction never reached it).
    let server = rig.server_copy();
    server.assert_fold("cut-link, server during the outage");
    assert_eq!(
        server.watermark, BATCH as Lsn,
        "cut-link: server watermark during the outage"
    );
    // A second sync during the outage fails too, and changes nothing.
    let t = Instant::now();
    let r1b = rig.store.sync_now();
    let sync_time_b = t.elapsed();
    rig.assert_outage_status("cut-link, second sync", &r1b, BATCH as u64);
    eprintln!("cut-link: second sync during the outage: {r1b}");
    let outage = cut_at.elapsed();
    rig.hook.reset();
    heal_guard.heal().expect("heal");
    let t = Instant::now();
    let r2 = rig.store.sync_now();
    let recover = t.elapsed();
    assert!(r2.error.is_none(), "cut-link: after healing: {r2}");
    assert_eq!(
        r2.applied,
        ENTRIES - BATCH as u64,
        "cut-link: the rest, once: {r2}"
    );
    let tally = rig.assert_complete("cut-link");
    format!(
        "netshare cut-link: entries {ENTRIES}, cut at statement {CUT_INDEX} of batch {} (after {} entries), outage {} (syncs failed after {} and {}), sync after healing {}, retries {}, lost {}, duplicated {}, integrity {}",
        CUT_TXN + 1,
        BATCH + 400,
        secs(outage),
        secs(sync_time),
        secs(sync_time_b),
        secs(recover),
        r1.retries + r1b.retries + r2.retries,
        tally.lost,
        tally.duplicated,
        tally.integrity,
    )
}

/// How a kill during a commit came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The commit completed and was acknowledged before the kill hit.
    Committed,
    /// The commit reported an error but had landed: resolved by reading the watermark.
    InDoubtLanded,
    /// The commit failed and did not land: applied again after healing.
    RolledBack,
}

/// Heals the share (after the kill at `killed_at`: the outage is noted in `outages`) and
/// syncs: the sync must succeed.
fn heal_and_sync(
    rig: &Rig,
    heal_guard: Healer<'_>,
    outages: &mut Vec<Duration>,
    killed_at: Instant,
    what: &str,
) -> SyncReport {
    rig.hook.reset();
    heal_guard.heal().expect("heal");
    outages.push(killed_at.elapsed());
    let r = rig.store.sync_now();
    assert!(r.error.is_none(), "{what}: after healing: {r}");
    r
}

/// The file server is killed during COMMITs, then restarted.
fn kill_server(share: &Arc<Share>) -> String {
    const BATCH: u64 = 1000;
    const EXTRA: u64 = 10;
    let mut rig = Rig::new(share, "killserver", replay_opts(BATCH as usize, 3, 100));
    let mut retries = 0u32;
    let mut outages = Vec::new();
    let mut outcomes = Vec::new();

    // Calibration: how long a COMMIT of one batch takes here.
    for _ in 0..2 {
        rig.append(BATCH);
        let r = rig.store.sync_now();
        assert!(r.error.is_none(), "kill-server calibration: {r}");
        retries += r.retries;
    }
    rig.assert_complete("kill-server calibration");
    let mut commits = rig.hook.commit_times();
    commits.sort();
    let commit = commits[commits.len() / 2];

    // 1. In doubt, for sure: the commit landed, the server dies before the replayer learns it,
    //    and the replayer is told the commit failed. It cannot verify until the server is back.
    {
        let what = "kill-server, in-doubt commit";
        rig.hook.reset();
        let acked0 = rig.acked();
        let head = rig.append(BATCH);
        let heal_guard = Healer::new(share);
        let killed: Arc<Mutex<Option<Instant>>> = Arc::default();
        {
            let killed = Arc::clone(&killed);
            let pids = share.server_pids();
            rig.hook.on_commit(move || {
                let mut k = killed.lock().unwrap();
                if k.is_none() {
                    Share::kill_pids(&pids).expect("kill the server");
                    *k = Some(Instant::now());
                    return true;
                }
                false
            });
        }
        let r1 = rig.store.sync_now();
        let killed_at = killed.lock().unwrap().expect("the hook killed the server");
        retries += r1.retries;
        assert_eq!(
            r1.applied, 0,
            "{what}: an unverified commit is not counted: {r1}"
        );
        rig.assert_outage_status(what, &r1, acked0);
        let server = rig.server_copy();
        server.assert_fold(&format!("{what}: server during the outage"));
        assert_eq!(server.watermark, head, "{what}: the commit did land");
        eprintln!("{what}: sync during the outage: {r1}");
        let r2 = heal_and_sync(&rig, heal_guard, &mut outages, killed_at, what);
        retries += r2.retries;
        assert_eq!(
            r2.applied, 0,
            "{what}: the landed batch is not applied again: {r2}"
        );
        rig.assert_complete(what);
        outcomes.push(Outcome::InDoubtLanded);
    }

    // 2. Kills spread over the COMMIT, from its start to just past its end.
    let fractions = [0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9, 1.05];
    for f in fractions {
        let delay = commit.mul_f64(f);
        let what = format!("kill-server, kill {} into the commit", ms(delay));
        rig.hook.reset();
        let acked0 = rig.acked();
        let head = rig.append(BATCH);
        let heal_guard = Healer::new(share);
        let killer: Arc<Mutex<Option<std::thread::JoinHandle<Instant>>>> = Arc::default();
        {
            let killer = Arc::clone(&killer);
            let pids = share.server_pids();
            rig.hook.on_statement(move |_, _, label| {
                let mut k = killer.lock().unwrap();
                if label == "commit" && k.is_none() {
                    let pids = pids.clone();
                    *k = Some(std::thread::spawn(move || {
                        std::thread::sleep(delay);
                        Share::kill_pids(&pids).expect("kill the server");
                        Instant::now()
                    }));
                }
            });
        }
        let r1 = rig.store.sync_now();
        retries += r1.retries;
        let killed_at = killer
            .lock()
            .unwrap()
            .take()
            .expect("the commit hook ran")
            .join()
            .expect("killer thread");
        let (failed, acked_before) = if rig.acked() == head {
            // The commit finished and was acknowledged before the kill hit (the sync may still
            // have failed afterwards, in its caught-up check): new entries meet the dead server.
            assert_eq!(r1.applied, BATCH, "{what}: {r1}");
            if let Some(e) = &r1.error {
                assert!(e.is_transient(), "{what}: {e}");
            }
            rig.append(EXTRA);
            let r = rig.store.sync_now();
            retries += r.retries;
            (r, head)
        } else {
            assert_eq!(rig.acked(), acked0, "{what}");
            assert_eq!(r1.applied, 0, "{what}: {r1}");
            (r1, acked0)
        };
        eprintln!("{what}: sync during the outage: {failed}");
        rig.assert_outage_status(&what, &failed, acked_before);
        let server = rig.server_copy();
        server.assert_fold(&format!("{what}: server during the outage"));
        assert!(
            server.watermark == acked_before || server.watermark == head,
            "{what}: server watermark {} is neither the acknowledgement {acked_before} nor the batch's end {head}",
            server.watermark
        );
        let outcome = if acked_before == head {
            Outcome::Committed
        } else if server.watermark == head {
            Outcome::InDoubtLanded
        } else {
            Outcome::RolledBack
        };
        let r2 = heal_and_sync(&rig, heal_guard, &mut outages, killed_at, &what);
        retries += r2.retries;
        let expect_applied = rig.ledger.head() - server.watermark;
        assert_eq!(
            r2.applied, expect_applied,
            "{what} ({outcome:?}): applied after healing: {r2}"
        );
        rig.assert_complete(&what);
        outcomes.push(outcome);
    }

    let tally = rig.assert_complete("kill-server");
    let count = |o: Outcome| outcomes.iter().filter(|x| **x == o).count();
    let outage_avg = outages.iter().sum::<Duration>() / outages.len().max(1) as u32;
    format!(
        "netshare kill-server: entries {}, kills {} (1 after a landed commit reported failed, {} spread over a {} commit): {} rolled back, {} in doubt and landed, {} committed first; outage {} avg, retries {retries}, lost {}, duplicated {}, integrity {}",
        rig.ledger.head(),
        outcomes.len(),
        fractions.len(),
        ms(commit),
        count(Outcome::RolledBack),
        count(Outcome::InDoubtLanded),
        count(Outcome::Committed),
        secs(outage_avg),
        tally.lost,
        tally.duplicated,
        tally.integrity,
    )
}

// ---------------------------------------------------------------------------------------------

/// A scenario: returns its one-line summary, panics on failure.
type ScenarioFn = fn(&Arc<Share>) -> String;

/// Runs `f` on a thread with a hang guard: after `timeout` the FUSE connection is aborted
/// (a thread blocked on it gets an error) and the scenario counts as failed.
fn run_scenario(
    share: &Arc<Share>,
    name: &str,
    timeout: Duration,
    f: ScenarioFn,
) -> Result<String, String> {
    let (tx, rx) = mpsc::channel();
    let sh = Arc::clone(share);
    std::thread::Builder::new()
        .name(format!("netshare-{name}"))
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&sh)));
            let _ = tx.send(r.map_err(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into())
            }));
        })
        .map_err(|e| format!("spawn: {e}"))?;
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            share.abort_fuse();
            let after = match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Ok(_)) => "it then finished".to_string(),
                Ok(Err(e)) => format!("it then failed: {e}"),
                Err(_) => "it is still blocked".to_string(),
            };
            Err(format!(
                "hang guard: no result within {timeout:?}; FUSE connection aborted; {after}"
            ))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the scenario thread died".into()),
    }
}

#[test]
fn replay_to_a_real_network_share() {
    let _load = alone();
    let t0 = Instant::now();
    let share = match Share::up() {
        Ok(s) => Arc::new(s),
        Err(reason) => {
            skip_or_fail("netshare", &reason);
            return;
        }
    };
    summary(&format!(
        "netshare: up in {} (mount {}, export {})",
        secs(t0.elapsed()),
        share.mnt.display(),
        share.export.display()
    ));
    let scenarios: [(&str, u64, ScenarioFn); 9] = [
        ("latency", 60, latency),
        ("cut-link", 90, cut_link),
        ("kill-server", 90, kill_server),
        ("two-mounts", 240, crate::netshare_lease::two_mounts),
        ("holder-stopped", 180, crate::netshare_lease::holder_stopped),
        ("holder-killed", 180, crate::netshare_lease::holder_killed),
        ("holder-cut", 180, crate::netshare_lease::holder_cut),
        ("lease-cost", 180, crate::netshare_lease::lease_cost),
        ("machines", 400, crate::machines_kill9::on_share),
    ];
    // SJNS_ONLY=a,b runs only the named scenarios (while working on one).
    let only = std::env::var("SJNS_ONLY").ok();
    let mut failures = Vec::new();
    for (name, timeout, f) in scenarios {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|n| n == name))
        {
            continue;
        }
        let t = Instant::now();
        // Heals whatever a previous scenario left, clears the latency, rebuilds a dead mount.
        if let Err(e) = share.reset() {
            summary(&format!("netshare {name}: FAILED: reset: {e}"));
            failures.push(format!("{name}: reset: {e}"));
            continue;
        }
        match run_scenario(&share, name, Duration::from_secs(timeout), f) {
            Ok(line) => summary(&format!("{line} [{}]", secs(t.elapsed()))),
            Err(e) => {
                summary(&format!("netshare {name}: FAILED: {e}"));
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    let t = Instant::now();
    share.down();
    summary(&format!(
        "netshare: down in {}; total {}",
        secs(t.elapsed()),
        secs(t0.elapsed())
    ));
    assert!(
        failures.is_empty(),
        "netshare scenarios failed:\n{}",
        failures.join("\n")
    );
}
