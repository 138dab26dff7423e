//! A randomized state-machine test of "the target is the truth" (issue 9): an owner `Store`
//! with its own target and a follower `Replayer` of the same journal replay NON-IDEMPOTENT
//! events to one SQLite target, while the test drives the target through normal,
//! restored-older, replaced, lost-writes, locked and offline states and the journal through
//! rotations (64 KiB segments, a few hundred entries each).
//!
//! The model knows, after every step, what the target holds — read with a fresh connection
//! (its watermark `W`, its counters and its log) — and when it held it (a timeline of the
//! watermark at the target's path, with the time window of every step). After each step it
//! checks:
//!
//! * the target is exactly the fold of entries `1..=W` (`integrity_check` ok, every entry once:
//!   no watermark past an unapplied entry, nothing lost, nothing duplicated), `W` ≤ the head,
//!   and no sync ever lowers `W`;
//! * every figure a status gives is one the target really had: for `Store::status`, the
//!   follower's state and `offline_status`, a watermark given with `PendingBasis::Target` is
//!   one the timeline allows at its `target_read_at_ms`, and `pending_entries = head − W`;
//!   `offline_status`, which reads the target now, gives the `W` it holds now (and TARGET
//!   BEHIND when `W` is under the acknowledgement); `IN SYNC` only when the target held
//!   everything (with the acknowledgement as basis: when the file, wherever it is, does);
//! * each sync's report: the watermark it read last is the target's `W` after it, `pending` is
//!   measured from it, a sync that reports no error leaves `W` = head;
//! * lost writes are counted, per replayer, exactly when a replayer that had read or committed
//!   a watermark finds a lower one (`SyncStatus::lost_writes`, `ReplayState::lost_writes`,
//!   and in `replay.json` as the last replayer to write it left it);
//! * the acknowledgement is never past a watermark the target ever had.
//!
//! A wrong target (not the fold of its prefix, a watermark lowered by a sync) stops the run at
//! once; a wrong status or report is recorded and the run goes on, so that the failure lists
//! every kind of wrong figure met (with its first occurrence and the steps before it).
//!
//! `SYNCJOURNAL_TRUTH_STEPS` (default 600) and `SYNCJOURNAL_TRUTH_SEED` (printed) replay a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::events::{
    Bump, COUNTER_SCHEMA, WideBump, counters_of, fold, not_the_fold, now_ms,
};
use crate::support::journal::{keep_everything_opts, segment_first_lsns};
use crate::support::process::{count_from_env, shm_tempdir, summary, with_timeout};
use crate::support::rng::Rng;
use crate::support::targets::{create_target, integrity, open_target, watermark_of};
use rusqlite::Connection;
use syncjournal::replay::{PendingBasis, SyncState, SyncStatus, offline_status};
use syncjournal::{Lsn, ReplayOptions, Replayer, Store, StoreOptions, SyncReport, TargetOptions};

const STEPS_ENV: &str = "SYNCJOURNAL_TRUTH_STEPS";
const SEED_ENV: &str = "SYNCJOURNAL_TRUTH_SEED";
const STEPS_DEFAULT: u64 = 600;
/// The replayers' busy timeout on the target (short: the locked steps wait it out).
const BUSY_MS: u64 = 40;
const STALLED_AFTER: Duration = Duration::from_secs(300);
/// Snapshots of the target kept for restores.
const SNAPSHOTS_MAX: usize = 5;

/// The two replayers.
const STORE: usize = 0;
const FOLLOWER: usize = 1;
const NAMES: [&str; 2] = ["store", "follower"];

struct Paths {
    journal: PathBuf,
    cache: PathBuf,
    share: PathBuf,
    target: PathBuf,
    /// Where the target file goes when it is taken offline alone.
    away_file: PathBuf,
    /// Where the whole share directory goes when it is taken offline.
    away_share: PathBuf,
    backups: PathBuf,
}

impl Paths {
    fn in_dir(dir: &Path) -> Paths {
        Paths {
            journal: dir.join("journal"),
            cache: dir.join("cache.db"),
            share: dir.join("share"),
            target: dir.join("share").join("target.db"),
            away_file: dir.join("target-away.db"),
            away_share: dir.join("share-away"),
            backups: dir.join("backups"),
        }
    }
}

fn target_opts() -> TargetOptions {
    TargetOptions::new().busy_timeout_ms(BUSY_MS)
}

fn replay_opts(batch: usize) -> ReplayOptions {
    ReplayOptions::new()
        .batch_entries_max(batch)
        .retry_attempts_max(1)
        .retry_delay_ms(1)
        .retry_delay_max_ms(2)
}

/// How the target is made unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offline {
    /// The file is renamed away (the path disappears).
    File,
    /// The share directory is renamed away (the path's directory disappears).
    Share,
}

/// How another connection locks the target during a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// `BEGIN IMMEDIATE`: readers still read.
    Reserved,
    /// `BEGIN EXCLUSIVE`: nobody reads.
    Exclusive,
}

/// One step's time window and the watermark at the target's path before and after it (`None`:
/// no file there).
#[derive(Debug, Clone)]
struct Span {
    what: String,
    t0: u64,
    t1: u64,
    before: Option<Lsn>,
    after: Option<Lsn>,
    /// A sync: the watermark moved up from `before` to `after` through every value between.
    sync: bool,
}

/// The watermark at the target's path over time.
#[derive(Debug, Default)]
struct Timeline {
    spans: Vec<Span>,
}

impl Timeline {
    /// True if the target's path held watermark `x` at some moment of millisecond `r`.
    fn allows(&self, r: u64, x: Lsn) -> bool {
        // Before the first step: the target was created empty.
        let (mut prev_after, mut prev_t1) = (Some(0), 0);
        for s in &self.spans {
            if prev_t1 <= r && r <= s.t0 && prev_after == Some(x) {
                return true;
            }
            if s.t0 <= r && r <= s.t1 {
                if s.before == Some(x) || s.after == Some(x) {
                    return true;
                }
                if let (true, Some(b), Some(a)) = (s.sync, s.before, s.after)
                    && b <= x
                    && x <= a
                {
                    return true;
                }
            }
            prev_after = s.after;
            prev_t1 = s.t1;
        }
        r >= prev_t1 && prev_after == Some(x)
    }

    /// The steps around millisecond `r`, for messages.
    fn around(&self, r: u64) -> String {
        self.spans
            .iter()
            .filter(|s| s.t1 + 50 >= r && s.t0 <= r + 50)
            .map(|s| {
                format!(
                    "[{}..{} ms] {}: {:?} -> {:?}",
                    s.t0, s.t1, s.what, s.before, s.after
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What the model knows.
#[derive(Default)]
struct Model {
    /// `events[lsn - 1]`.
    events: Vec<Bump>,
    /// The watermark of the target at its path, as read after the last step (`None`: absent).
    w: Option<Lsn>,
    /// The watermark of the target file, wherever it is.
    file_w: Lsn,
    away: Option<Offline>,
    timeline: Timeline,
    /// Per replayer: the watermark it last read or committed (`None`: none since it was
    /// created).
    expect: [Option<Lsn>; 2],
    /// Per replayer: the lost writes it must have counted.
    lost: [u64; 2],
    /// The replayer that wrote `replay.json` last.
    last_persist: Option<usize>,
    snapshots: Vec<(PathBuf, Lsn)>,
    snapshot_seq: u64,
    /// The highest watermark the target ever had.
    max_w: Lsn,
    /// Lost writes detected, over the run.
    lost_detected: u64,
    /// States seen in statuses (`Store::status` and `offline_status`).
    visited: BTreeMap<&'static str, u64>,
    /// Steps taken, by kind.
    steps: BTreeMap<&'static str, u64>,
    /// The last steps, for failure messages.
    log: Vec<String>,
}

struct World {
    p: Paths,
    _dir: tempfile::TempDir,
    store: Option<Store<WideBump>>,
    follower: Replayer<WideBump>,
    journal_id: uuid::Uuid,
    m: Model,
    rng: Rng,
    seed: u64,
    step_no: u64,
    /// Violations of status checks, by the line of the check: how many, and the first.
    violations: std::cell::RefCell<BTreeMap<u32, (u64, String)>>,
}

/// Reads the target at `path` with a fresh connection and checks that it is the fold of
/// entries `1..=W`; returns `W`.
fn read_truth(path: &Path, id: uuid::Uuid, events: &[Bump]) -> Result<Lsn, String> {
    let c = open_target(path);
    let ic = integrity(&c);
    if ic != "ok" {
        return Err(format!("target integrity_check: {ic}"));
    }
    let w = watermark_of(&c, id);
    if w as usize > events.len() {
        return Err(format!(
            "target watermark {w} beyond the journal's {} entries",
            events.len()
        ));
    }
    if let Some(why) = not_the_fold(&c, &events[..w as usize]) {
        return Err(why);
    }
    Ok(w)
}

impl World {
    fn new(seed: u64) -> World {
        let dir = shm_tempdir();
        let p = Paths::in_dir(dir.path());
        std::fs::create_dir_all(&p.share).unwrap();
        std::fs::create_dir_all(&p.backups).unwrap();
        create_target(&p.target, COUNTER_SCHEMA);
        let mut rng = Rng::new(seed);
        let store = open_store(&p, rng.urange(1, 300));
        let journal_id = store.journal_state().journal_id;
        let follower = open_follower(&p, rng.urange(1, 300));
        World {
            p,
            _dir: dir,
            store: Some(store),
            follower,
            journal_id,
            m: Model {
                w: Some(0),
                ..Model::default()
            },
            rng,
            seed,
            step_no: 0,
            violations: Default::default(),
        }
    }

    fn store(&self) -> &Store<WideBump> {
        self.store.as_ref().expect("store open")
    }

    fn fail(&self, what: &str) -> ! {
        let tail = self.m.log.len().saturating_sub(25);
        summary(&format!(
            "truth model: FAILED at step {} (seed {})",
            self.step_no, self.seed
        ));
        panic!(
            "step {} ({SEED_ENV}={} to replay): {what}\nlast steps:\n  {}",
            self.step_no,
            self.seed,
            self.m.log[tail..].join("\n  ")
        );
    }

    fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(&what());
        }
    }

    /// A check of what a status or a report says (not of the target itself): a violation is
    /// recorded (per check, with its first occurrence) and the run goes on; the test fails at
    /// the end, listing them all.
    #[track_caller]
    fn soft(&self, ok: bool, what: impl FnOnce() -> String) {
        if ok {
            return;
        }
        let at = std::panic::Location::caller().line();
        let mut v = self.violations.borrow_mut();
        let e = v.entry(at).or_insert_with(|| {
            let tail = self.m.log.len().saturating_sub(8);
            (
                0,
                format!(
                    "step {}: {}
    after: {}",
                    self.step_no,
                    what(),
                    self.m.log[tail..].join("\n           ")
                ),
            )
        });
        e.0 += 1;
    }

    /// The target's watermark at its path now, checked (`None`: absent).
    fn truth(&self) -> Option<Lsn> {
        if self.m.away.is_some() {
            return None;
        }
        match read_truth(&self.p.target, self.journal_id, &self.m.events) {
            Ok(w) => Some(w),
            Err(e) => self.fail(&e),
        }
    }

    fn head(&self) -> Lsn {
        self.store().journal_state().durable_lsn
    }

    /// Records a step's span and the new truth.
    fn record(&mut self, what: String, t0: u64, before: Option<Lsn>, sync: bool) -> Option<Lsn> {
        let t1 = now_ms();
        let after = self.truth();
        if let Some(a) = after {
            self.m.file_w = a;
            self.m.max_w = self.m.max_w.max(a);
        }
        self.m
            .log
            .push(format!("{what}: W {before:?} -> {after:?}"));
        self.m.timeline.spans.push(Span {
            what,
            t0,
            t1,
            before,
            after,
            sync,
        });
        self.m.w = after;
        after
    }

    // ---- steps ----

    fn append(&mut self, k: usize) {
        let t0 = now_ms();
        for _ in 0..k {
            let seq = self.m.events.len() as i64 + 1;
            let lsn = self
                .store()
                .apply(&WideBump::new(seq))
                .unwrap_or_else(|e| self.fail(&format!("apply #{seq}: {e}")));
            self.check(lsn == seq as Lsn, || {
                format!("event #{seq} journaled as LSN {lsn}")
            });
            self.m.events.push(Bump::new(seq));
        }
        let before = self.m.w;
        self.record(format!("append {k}"), t0, before, false);
    }

    /// A sync by replayer `r`, with the target locked by another connection if `lock`.
    fn sync(&mut self, r: usize, lock: Option<Lock>) {
        let before = self.m.w;
        let blocker = lock.map(|l| {
            let c = open_target(&self.p.target);
            c.execute_batch(match l {
                Lock::Reserved => "BEGIN IMMEDIATE",
                Lock::Exclusive => "BEGIN EXCLUSIVE",
            })
            .expect("lock the target");
            c
        });
        let t0 = now_ms();
        let report = match r {
            STORE => self.store().sync_now(),
            _ => self.follower.sync_now(),
        };
        let what = format!(
            "{} sync{}: {report}",
            NAMES[r],
            match lock {
                Some(l) => format!(" (target locked, {l:?})"),
                None => String::new(),
            }
        );
        self.m.last_persist = Some(r);
        if let Some(c) = blocker {
            self.soft(report.error.is_some(), || {
                format!("{what}: a sync succeeded while another connection held the target locked")
            });
            self.soft(report.applied == 0, || {
                format!("{what}: applied entries through a lock")
            });
            // While still locked: what the statuses say (the timeline has this step, with
            // the watermark unchanged).
            let t1 = now_ms();
            self.m.timeline.spans.push(Span {
                what: what.clone(),
                t0,
                t1,
                before,
                after: before,
                sync: false,
            });
            self.m.log.push(format!("{what} [checks under the lock]"));
            self.note_sync(r, &report, before, before.unwrap_or(0), &what);
            self.check_statuses(lock == Some(Lock::Reserved));
            c.execute_batch("ROLLBACK").expect("unlock the target");
            drop(c);
            let after = self.record(format!("unlock after {what}"), now_ms(), before, false);
            self.check(after == before, || {
                format!("{what}: the watermark moved from {before:?} to {after:?} through a lock")
            });
            return;
        }
        let after = self.record(what.clone(), t0, before, true);
        self.check(
            match (before, after) {
                (Some(b), Some(a)) => a >= b,
                (b, a) => b == a,
            },
            || format!("{what}: the sync lowered the watermark from {before:?} to {after:?}"),
        );
        if report.error.is_none() {
            let head = self.head();
            self.soft(after == Some(head), || {
                format!("{what}: a sync without error left the target at {after:?}, head {head}")
            });
        }
        self.note_sync(r, &report, before, after.unwrap_or(0), &what);
    }

    /// What a sync report must say, and what the replayer must have concluded.
    fn note_sync(
        &mut self,
        r: usize,
        report: &SyncReport,
        before: Option<Lsn>,
        after: Lsn,
        what: &str,
    ) {
        let head = self.head();
        match report.target_lsn {
            Some(x) => {
                let b = before.unwrap_or_else(|| {
                    self.fail(&format!("{what}: read watermark {x} from an absent target"))
                });
                if self.m.expect[r].is_some_and(|e| b < e) {
                    self.m.lost[r] += 1;
                    self.m.lost_detected += 1;
                }
                self.m.expect[r] = Some(x);
                self.soft(x == after, || {
                    format!("{what}: the report's watermark {x} is not the target's {after}")
                });
                self.soft(report.pending_basis == PendingBasis::Target, || {
                    format!(
                        "{what}: watermark read, but pending measured against the acknowledgement"
                    )
                });
                self.soft(report.pending == head - x.min(head), || {
                    format!(
                        "{what}: pending {} but head {head} − watermark {x} = {}",
                        report.pending,
                        head - x.min(head)
                    )
                });
            }
            None => {
                self.soft(report.error.is_some(), || {
                    format!("{what}: a sync that could not read the target reported success")
                });
                self.soft(
                    report.pending_basis == PendingBasis::Acknowledgement,
                    || format!("{what}: no watermark read, yet pending measured on the target"),
                );
            }
        }
    }

    fn snapshot(&mut self) {
        let t0 = now_ms();
        self.m.snapshot_seq += 1;
        let path = self
            .p
            .backups
            .join(format!("snap-{}.db", self.m.snapshot_seq));
        std::fs::copy(&self.p.target, &path).expect("copy the target");
        let w = read_truth(&path, self.journal_id, &self.m.events)
            .unwrap_or_else(|e| self.fail(&format!("snapshot: {e}")));
        self.m.snapshots.push((path, w));
        if self.m.snapshots.len() > SNAPSHOTS_MAX {
            let (old, _) = self.m.snapshots.remove(0);
            let _ = std::fs::remove_file(old);
        }
        let before = self.m.w;
        self.record(format!("snapshot at W {w}"), t0, before, false);
    }

    /// The target restored from a snapshot: through SQLite's backup API (same file, pages
    /// rewritten), or a copy renamed over it (another file).
    fn restore(&mut self) {
        let (snap, w) = self.m.snapshots[self.rng.urange(0, self.m.snapshots.len())].clone();
        let before = self.m.w;
        let t0 = now_ms();
        let how = if self.rng.coin() {
            let mut c = open_target(&self.p.target);
            c.restore(
                rusqlite::MAIN_DB,
                &snap,
                None::<fn(rusqlite::backup::Progress)>,
            )
            .expect("restore the target with the backup API");
            "backup API"
        } else {
            let tmp = self.p.share.join("restore.tmp");
            std::fs::copy(&snap, &tmp).unwrap();
            std::fs::rename(&tmp, &self.p.target).unwrap();
            "renamed over"
        };
        let after = self.record(
            format!("restore snapshot of W {w} ({how})"),
            t0,
            before,
            false,
        );
        self.soft(after == Some(w), || {
            format!("restored a snapshot of W {w}, found {after:?}")
        });
    }

    /// Another file, with the schema only, renamed over the target.
    fn replace(&mut self) {
        let before = self.m.w;
        let t0 = now_ms();
        let tmp = self.p.share.join("replacement.db");
        let _ = std::fs::remove_file(&tmp);
        create_target(&tmp, COUNTER_SCHEMA);
        std::fs::rename(&tmp, &self.p.target).unwrap();
        self.record("replaced by an empty file".into(), t0, before, false);
    }

    /// The target loses its last writes (in one transaction of the same file): back to a
    /// consistent `W' < W`; for `W' = 0`, sometimes with the progress row deleted.
    fn lose_writes(&mut self) {
        let before = self.m.w;
        let w = before.expect("present");
        let to = self.rng.range(0, w);
        let delete_row = to == 0 && self.rng.coin();
        let t0 = now_ms();
        let c = open_target(&self.p.target);
        let progress = if delete_row {
            "DELETE FROM syncjournal_progress".to_string()
        } else {
            format!(
                "UPDATE syncjournal_progress SET lsn = {to} WHERE journal_id = '{}'",
                self.journal_id
            )
        };
        c.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             DELETE FROM log WHERE seq > {to};
             DELETE FROM counters;
             INSERT INTO counters (id, n) SELECT counter, count(*) FROM log GROUP BY counter;
             {progress};
             COMMIT;"
        ))
        .expect("lose writes");
        drop(c);
        let after = self.record(
            format!(
                "lost writes back to W {to}{}",
                if delete_row {
                    " (progress row deleted)"
                } else {
                    ""
                }
            ),
            t0,
            before,
            false,
        );
        self.soft(after == Some(to), || {
            format!("lost writes back to {to}, found {after:?}")
        });
    }

    fn go_offline(&mut self, how: Offline) {
        let before = self.m.w;
        let t0 = now_ms();
        match how {
            Offline::File => std::fs::rename(&self.p.target, &self.p.away_file),
            Offline::Share => std::fs::rename(&self.p.share, &self.p.away_share),
        }
        .expect("take the target offline");
        self.m.away = Some(how);
        self.record(format!("offline ({how:?})"), t0, before, false);
    }

    fn come_back(&mut self) {
        let before = self.m.w;
        let t0 = now_ms();
        match self.m.away.take().expect("offline") {
            Offline::File => std::fs::rename(&self.p.away_file, &self.p.target),
            Offline::Share => std::fs::rename(&self.p.away_share, &self.p.share),
        }
        .expect("bring the target back");
        let w = self.m.file_w;
        let after = self.record("back online".into(), t0, before, false);
        self.soft(after == Some(w), || {
            format!("the target came back with {after:?}, it held {w}")
        });
    }

    fn restart_store(&mut self) {
        let before = self.m.w;
        let t0 = now_ms();
        self.store.take().expect("store open").close().unwrap();
        let batch = self.rng.urange(1, 300);
        self.store = Some(open_store(&self.p, batch));
        self.m.lost[STORE] = self.m.last_persist.map_or(0, |p| self.m.lost[p]);
        let st = self.store().status().unwrap();
        self.m.expect[STORE] = st.target_lsn;
        self.record(format!("store reopened (batch {batch})"), t0, before, false);
    }

    fn restart_follower(&mut self) {
        let before = self.m.w;
        let t0 = now_ms();
        let batch = self.rng.urange(1, 300);
        self.follower = open_follower(&self.p, batch);
        self.m.lost[FOLLOWER] = self.m.last_persist.map_or(0, |p| self.m.lost[p]);
        self.m.expect[FOLLOWER] = None;
        self.record(
            format!("follower restarted (batch {batch})"),
            t0,
            before,
            false,
        );
    }

    // ---- checks ----

    fn visit(&mut self, s: SyncState) {
        *self.m.visited.entry(s.label()).or_insert(0) += 1;
    }

    /// A watermark a status gives with `PendingBasis::Target` must be one the target had when
    /// it says it read it, and the pending count must be measured from it.
    fn check_target_figure(&self, who: &str, st: &SyncStatus) {
        let head = st.head_lsn;
        match st.pending_basis {
            PendingBasis::Target => {
                let (Some(x), Some(r)) = (st.target_lsn, st.target_read_at_ms) else {
                    self.fail(&format!(
                        "{who}: basis Target without a watermark and a time: {st:?}"
                    ))
                };
                self.soft(self.m.timeline.allows(r, x), || {
                    format!(
                        "{who}: says the target held {x} at {r} ms; the target then: {}",
                        self.m.timeline.around(r)
                    )
                });
                self.soft(x <= head, || {
                    format!("{who}: watermark {x} past head {head}")
                });
                self.soft(st.pending_entries == head - x, || {
                    format!(
                        "{who}: pending {} but head {head} − target {x} = {}",
                        st.pending_entries,
                        head - x
                    )
                });
            }
            PendingBasis::Acknowledgement => {
                self.soft(st.target_lsn.is_none(), || {
                    format!("{who}: a watermark but basis Acknowledgement: {st:?}")
                });
                self.soft(st.pending_entries == head - st.acked_lsn.min(head), || {
                    format!(
                        "{who}: pending {} but head {head} − acknowledged {} = {}",
                        st.pending_entries,
                        st.acked_lsn,
                        head - st.acked_lsn.min(head)
                    )
                });
            }
        }
        if st.state == SyncState::InSync {
            self.soft(st.pending_entries == 0, || {
                format!("{who}: IN SYNC with {} pending", st.pending_entries)
            });
            // With the target as basis the timeline check above says it held `head`. With
            // the acknowledgement as basis: the file, wherever it is, must hold everything.
            if st.pending_basis == PendingBasis::Acknowledgement {
                self.soft(self.m.file_w == head, || {
                    format!(
                        "{who}: IN SYNC (per the acknowledgement {}, target unread) while the \
                         target file holds {} of {head} entries",
                        st.acked_lsn, self.m.file_w
                    )
                });
            }
        }
        self.soft(st.acked_lsn <= self.m.max_w, || {
            format!(
                "{who}: acknowledged {} but the target never held more than {}",
                st.acked_lsn, self.m.max_w
            )
        });
    }

    /// Every status against the model. `readable`: the target can be read now (not locked
    /// exclusively).
    fn check_statuses(&mut self, readable: bool) {
        let head = self.head();
        self.soft(head == self.m.events.len() as Lsn, || {
            format!(
                "durable head {head}, {} entries applied",
                self.m.events.len()
            )
        });
        // The owner's status.
        let st = self.store().status().unwrap();
        self.soft(st.head_lsn == head, || {
            format!("status head {} vs journal {head}", st.head_lsn)
        });
        self.check_target_figure("Store::status", &st);
        self.soft(st.lost_writes == self.m.lost[STORE], || {
            format!(
                "Store::status counts {} lost writes, the model {}",
                st.lost_writes, self.m.lost[STORE]
            )
        });
        self.visit(st.state);
        // The follower's state.
        let fs = self.follower.state();
        if let (Some(x), Some(r)) = (fs.target_lsn, fs.target_read_at_ms) {
            self.soft(self.m.timeline.allows(r, x), || {
                format!(
                    "follower: says the target held {x} at {r} ms; the target then: {}",
                    self.m.timeline.around(r)
                )
            });
        }
        self.soft(fs.lost_writes == self.m.lost[FOLLOWER], || {
            format!(
                "the follower counts {} lost writes, the model {}",
                fs.lost_writes, self.m.lost[FOLLOWER]
            )
        });
        if !readable {
            return;
        }
        // The offline status reads the target now.
        let target = self.p.target.clone();
        let os = offline_status(&self.p.journal, Some(&target), STALLED_AFTER)
            .unwrap_or_else(|e| self.fail(&format!("offline_status: {e}")));
        let s = &os.status;
        self.soft(s.head_lsn == head, || {
            format!("offline_status head {} vs journal {head}", s.head_lsn)
        });
        self.check_target_figure("offline_status", s);
        let file_lost = self.m.last_persist.map_or(0, |p| self.m.lost[p]);
        self.soft(s.lost_writes == file_lost, || {
            format!(
                "offline_status (replay.json) counts {} lost writes, the model {file_lost}",
                s.lost_writes
            )
        });
        match self.m.w {
            Some(w) => {
                self.soft(
                    s.pending_basis == PendingBasis::Target && s.target_lsn == Some(w),
                    || format!("offline_status: target holds {w}, status says {s:?}"),
                );
                self.soft(s.pending_entries == head - w, || {
                    format!(
                        "offline_status: pending {} but head {head} − W {w}",
                        s.pending_entries
                    )
                });
                self.soft(s.state != SyncState::InSync || w == head, || {
                    format!("offline_status: IN SYNC with the target at {w} of {head}")
                });
                if w < s.acked_lsn {
                    self.soft(s.state == SyncState::TargetBehind, || {
                        format!(
                            "offline_status: target at {w} under the acknowledgement {}: {} instead of TARGET BEHIND",
                            s.acked_lsn, s.state
                        )
                    });
                }
            }
            None => {
                self.soft(
                    os.target_error.is_some() && s.pending_basis == PendingBasis::Acknowledgement,
                    || format!("offline_status of an absent target: {os:?}"),
                );
            }
        }
        let state = s.state;
        self.visit(state);
    }

    fn step(&mut self) {
        self.step_no += 1;
        let present = self.m.away.is_none();
        let roll = self.rng.range(0, 100);
        let kind: &'static str = match roll {
            0..=21 => {
                let k = if self.rng.range(0, 10) < 7 {
                    self.rng.urange(1, 21)
                } else {
                    self.rng.urange(100, 601)
                };
                self.append(k);
                "append"
            }
            22..=36 => {
                self.sync(FOLLOWER, None);
                "follower sync"
            }
            37..=51 => {
                self.sync(STORE, None);
                "store sync"
            }
            52..=57 if present => {
                self.snapshot();
                "snapshot"
            }
            58..=63 if present && !self.m.snapshots.is_empty() => {
                self.restore();
                "restored older"
            }
            64..=66 if present => {
                self.replace();
                "replaced"
            }
            67..=71 if present && self.m.w.is_some_and(|w| w > 0) => {
                self.lose_writes();
                "lost writes"
            }
            72..=78 if present => {
                let lock = if self.rng.one_in(4) {
                    Lock::Exclusive
                } else {
                    Lock::Reserved
                };
                let r = if self.rng.coin() { STORE } else { FOLLOWER };
                self.sync(r, Some(lock));
                "locked"
            }
            79..=83 if present => {
                let how = if self.rng.coin() {
                    Offline::File
                } else {
                    Offline::Share
                };
                self.go_offline(how);
                "offline"
            }
            84..=93 if !present => {
                self.come_back();
                "back online"
            }
            94..=96 => {
                self.restart_store();
                "store restart"
            }
            97..=99 => {
                self.restart_follower();
                "follower restart"
            }
            _ => {
                self.sync(STORE, None);
                "store sync"
            }
        };
        *self.m.steps.entry(kind).or_insert(0) += 1;
        self.check_statuses(true);
    }

    /// Back online, everything synced: the target is the fold of the whole journal, and every
    /// status says IN SYNC on the target's word.
    fn finish(&mut self) {
        if self.m.away.is_some() {
            self.come_back();
        }
        self.sync(STORE, None);
        self.sync(FOLLOWER, None);
        let head = self.head();
        self.check(self.m.w == Some(head), || {
            format!(
                "after the final syncs the target holds {:?} of {head}",
                self.m.w
            )
        });
        self.check_statuses(true);
        let st = self.store().status().unwrap();
        self.check(
            st.state == SyncState::InSync && st.pending_basis == PendingBasis::Target,
            || format!("final Store::status: {st:?}"),
        );
        let os = offline_status(&self.p.journal, Some(&self.p.target), STALLED_AFTER).unwrap();
        self.check(os.status.state == SyncState::InSync, || {
            format!("final offline_status: {:?}", os.status)
        });
        let c: Connection = open_target(&self.p.target);
        self.check(counters_of(&c) == fold(self.m.events.iter()), || {
            "final counters are not the fold of the journal".into()
        });
    }
}

fn open_store(p: &Paths, batch: usize) -> Store<WideBump> {
    Store::open(
        &p.journal,
        &p.cache,
        StoreOptions::new()
            .journal(keep_everything_opts())
            .cache_schema(COUNTER_SCHEMA)
            .target(&p.target, target_opts())
            .replay(replay_opts(batch))
            .background_sync(false),
    )
    .expect("open the store")
}

fn open_follower(p: &Paths, batch: usize) -> Replayer<WideBump> {
    Replayer::follower(&p.journal, &p.target, target_opts(), replay_opts(batch))
        .expect("follow the journal")
}

#[test]
fn every_status_tells_the_truth_about_the_target_through_restores_replacements_locks_and_outages() {
    let steps: u64 = count_from_env(STEPS_ENV, STEPS_DEFAULT);
    with_timeout(120 + steps, move || {
        let (_, seed) = Rng::from_env_or_time(SEED_ENV);
        let mut w = World::new(seed);
        for _ in 0..steps {
            w.step();
        }
        w.finish();
        let segments = segment_first_lsns(&w.p.journal).len();
        summary(&format!(
            "truth model: steps {steps}, entries {}, segments {segments}, lost writes detected {}, \
             states visited {:?}, steps {:?}, seed {seed}",
            w.m.events.len(),
            w.m.lost_detected,
            w.m.visited,
            w.m.steps,
        ));
        let violations = w.violations.borrow();
        assert!(
            violations.is_empty(),
            "{} kinds of status violations (seed {seed}):\n{}",
            violations.len(),
            violations
                .iter()
                .map(|(line, (n, first))| format!("[check at line {line}, {n} times] {first}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        if steps >= 300 {
            for s in ["IN SYNC", "SYNCING", "TARGET BEHIND", "FAILING"] {
                assert!(
                    w.m.visited.contains_key(s),
                    "no status said {s}: the run did not test that (seed {seed})"
                );
            }
            for k in [
                "append",
                "follower sync",
                "store sync",
                "restored older",
                "replaced",
                "lost writes",
                "locked",
                "offline",
                "back online",
            ] {
                assert!(
                    w.m.steps.contains_key(k),
                    "no {k} step: the run did not test that (seed {seed})"
                );
            }
            assert!(w.m.lost_detected > 0, "no lost writes were detected");
            assert!(segments > 3, "the journal rotated only {segments} times");
        }
    });
}

/// A store whose target holds entries `1..=10` of 20, taken offline after it was restored from
/// that older copy (the journal acknowledged all 20 before the restore).
fn behind_and_offline(dir: &Path) -> (Paths, Store<WideBump>) {
    let p = Paths::in_dir(dir);
    std::fs::create_dir_all(&p.share).unwrap();
    std::fs::create_dir_all(&p.backups).unwrap();
    create_target(&p.target, COUNTER_SCHEMA);
    let store = open_store(&p, 100);
    let older = p.backups.join("older.db");
    for seq in 1..=20 {
        store.apply(&WideBump::new(seq)).unwrap();
        if seq == 10 {
            let r = store.sync_now();
            assert!(r.error.is_none(), "{r}");
            std::fs::copy(&p.target, &older).unwrap();
        }
    }
    let r = store.sync_now();
    assert!(r.error.is_none(), "{r}");
    let st = store.status().unwrap();
    assert_eq!((st.acked_lsn, st.state), (20, SyncState::InSync));
    std::fs::copy(&older, p.share.join("restore.tmp")).unwrap();
    std::fs::rename(p.share.join("restore.tmp"), &p.target).unwrap();
    std::fs::rename(&p.share, &p.away_share).unwrap();
    (p, store)
}

/// Finding (truth model, check "IN SYNC … with the acknowledgement as basis"): with the target
/// named but unreadable, `offline_status` falls back to the acknowledgement and calls the
/// journal IN SYNC — `syncjournal status DIR --target DB` exits 0 — while the target holds
/// half of the entries.
#[test]
fn offline_status_does_not_call_a_target_it_cannot_read_in_sync_when_it_is_behind() {
    let dir = shm_tempdir();
    let (p, _store) = behind_and_offline(dir.path());
    let os = offline_status(&p.journal, Some(&p.target), STALLED_AFTER).unwrap();
    assert!(os.target_error.is_some(), "{os:?}");
    std::fs::rename(&p.away_share, &p.share).unwrap();
    let held = watermark_of(&open_target(&p.target), os.status.journal_id);
    assert_eq!((held, os.status.head_lsn), (10, 20));
    assert_ne!(
        os.status.state,
        SyncState::InSync,
        "the target holds 10 of 20 entries and could not be read: {os:?}"
    );
}

/// The same finding through `Store::status`: a store opened while its target is unreadable
/// has only the acknowledgement to go by, and says IN SYNC.
#[test]
fn a_store_opened_while_its_target_is_unreadable_does_not_call_it_in_sync_when_it_is_behind() {
    let dir = shm_tempdir();
    let (p, store) = behind_and_offline(dir.path());
    store.close().unwrap();
    let store = open_store(&p, 100);
    let st = store.status().unwrap();
    store.close().unwrap();
    std::fs::rename(&p.away_share, &p.share).unwrap();
    let held = watermark_of(&open_target(&p.target), st.journal_id);
    assert_eq!((held, st.head_lsn), (10, 20));
    assert_ne!(
        st.state,
        SyncState::InSync,
        "the target holds 10 of 20 entries and could not be read: {st:?}"
    );
}
