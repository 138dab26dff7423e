//! `SyncStatus` from durable state, `last_error`, stall detection, and the two reject
//! policies (`journal-format.md` §11, `src/replay/status.rs`, `src/replay/options.rs`):
//!
//! * the figures (head, cache applied, acknowledged, pending entries/bytes, oldest pending,
//!   stalled since) are right before and after a sync and identical after a restart;
//! * `last_error` is set by a failure (missing target; rejected entry under `Stop`, with its
//!   LSN, summary and reason), survives restarts, applies and failed syncs, and is cleared
//!   only by a successful sync;
//! * `Stop`: nothing after the rejected entry is applied, the entry stays pending, replay
//!   resumes once the target is fixed;
//! * `Quarantine`: the refused entry goes to `syncjournal_rejected` in the batch's
//!   transaction, replay continues, the entry is listed, counted, retried, discarded; every
//!   journal entry is either applied on the target or listed in quarantine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use syncjournal::error::TargetError;

use crate::support::events::now_ms;
use crate::support::store::{
    Paths, SCHEMA, dump_cache, dump_target, item, local_opts, open, store_opts,
    store_opts_existing, store_opts_full, store_opts_with_target_schema, tag, target_item_ids,
};
use crate::support::targets::{TargetKind, TestTarget};
use syncjournal::event::{KIND_CHANGESET, decode_event, encode_event};
use syncjournal::format::frame_bytes;
use syncjournal::replay::TargetFaults;
use syncjournal::{
    ChangeSet, Error, JournalEvent, RejectPolicy, ReplayOptions, Store, SyncStatus, Value,
};

/// The target's schema without the `tags` table: every change set touching `tags` is refused
/// there (while the cache accepts it).
const TARGET_WITHOUT_TAGS: &str = "
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, data BLOB);
CREATE TABLE pairs (a TEXT NOT NULL, b INTEGER NOT NULL, v, note TEXT, PRIMARY KEY (a, b));
";

/// The journal frame bytes of a change set's record (the creation time always takes 9 bytes
/// in this century, so its value does not matter).
fn record_bytes(cs: &ChangeSet) -> u64 {
    // The store ends each payload with its stamp (`journal-format.md` §5.2).
    let payload =
        encode_event(now_ms(), cs).expect("encode").len() + syncjournal::event::STAMP_BYTES;
    frame_bytes(payload) as u64
}

fn status(store: &Store) -> SyncStatus {
    store.status().expect("status")
}

/// The same figures after a restart: everything but the time the target's watermark was last
/// read (a restarted store reads it again when it opens, so it is measured on the target).
fn assert_same_after_restart(after: &SyncStatus, before: &SyncStatus, what: &str) {
    let mut a = after.clone();
    if let (Some(t), Some(b)) = (a.target_read_at_ms, before.target_read_at_ms) {
        assert!(t >= b, "{what}: the target was read again, later");
    }
    a.target_read_at_ms = before.target_read_at_ms;
    assert_eq!(&a, before, "{what}");
}

/// Creates the application's tables the target lacks (creating the target if missing).
fn create_tags_on(target: &TestTarget) {
    target.create_schema(SCHEMA);
}

#[test]
fn status_figures_come_from_durable_state_and_survive_restart() {
    for kind in TargetKind::all() {
        let (_dir, paths) = Paths::temp_of_kind(kind);
        let opts = || {
            store_opts_full(
                &paths.target,
                paths.target.options_creating(SCHEMA),
                ReplayOptions::new()
                    .batch_entries_max(2)
                    .retry_attempts_max(0),
            )
        };
        let t0 = now_ms();
        let store = open(&paths, opts());
        let st = status(&store);
        assert_eq!(
            (
                st.head_lsn,
                st.cache_applied_lsn,
                st.acked_lsn,
                st.target_lsn
            ),
            (0, Some(0), 0, None)
        );
        assert_eq!((st.pending_entries, st.pending_bytes), (0, 0));
        assert_eq!((st.oldest_pending_ms, st.stalled_since_ms), (None, None));
        assert_eq!(
            (&st.last_error, st.last_success_ms, st.quarantined),
            (&None, None, 0)
        );
        assert!(!st.is_stalled(Duration::ZERO));
        assert_eq!(st.journal_id, store.journal_state().journal_id);

        let first = [item(1), item(2), tag("red", 1.0), item(3), item(4)];
        for cs in &first {
            store.apply(cs).unwrap();
        }
        let t1 = now_ms();
        let st = status(&store);
        assert_eq!(st.head_lsn, 5);
        assert_eq!(st.cache_applied_lsn, Some(5));
        assert_eq!(st.acked_lsn, 0);
        assert_eq!(st.pending_entries, 5);
        assert_eq!(
            st.pending_bytes,
            first.iter().map(record_bytes).sum::<u64>(),
            "pending bytes are the frames of the pending records"
        );
        let oldest = st.oldest_pending_ms.expect("entries are pending");
        assert!((t0..=t1).contains(&oldest), "{t0} <= {oldest} <= {t1}");
        let acked_at = store.journal_state().acked_at_ms;
        assert_eq!(st.stalled_since_ms, Some(oldest.max(acked_at)));
        assert!(st.is_stalled(Duration::ZERO));
        assert!(!st.is_stalled(Duration::from_secs(3600)));
        assert_eq!(st.last_error, None);
        assert_eq!(st.last_success_ms, None);

        // A restart resets nothing.
        drop(store);
        let store = open(&paths, opts());
        assert_same_after_restart(&status(&store), &st, "same figures after a restart");

        let before_sync = now_ms();
        let report = store.sync_now();
        let after_sync = now_ms();
        assert!(report.error.is_none(), "{report}");
        assert_eq!(report.applied, 5);
        assert_eq!(report.transactions, 3, "batches of at most 2 entries");
        assert_eq!(report.pending, 0);
        let st = status(&store);
        assert_eq!(
            (st.head_lsn, st.cache_applied_lsn, st.acked_lsn),
            (5, Some(5), 5)
        );
        assert_eq!(st.target_lsn, Some(5));
        assert_eq!((st.pending_entries, st.pending_bytes), (0, 0));
        assert_eq!((st.oldest_pending_ms, st.stalled_since_ms), (None, None));
        assert!(!st.is_stalled(Duration::ZERO));
        assert_eq!(st.last_error, None);
        let success = st.last_success_ms.expect("a sync succeeded");
        assert!((before_sync..=after_sync).contains(&success));
        assert_eq!(paths.target.watermark(st.journal_id), 5);
        assert_eq!(dump_target(&paths.target), dump_cache(&store));

        drop(store);
        let store = open(&paths, opts());
        assert_same_after_restart(&status(&store), &st, "same figures after a restart");

        // New entries after the sync: the head of the queue waits since the later of its
        // creation and the last acknowledgement.
        let second = [item(5), ChangeSet::new().delete("items", [("id", 1)])];
        for cs in &second {
            store.apply(cs).unwrap();
        }
        let st = status(&store);
        assert_eq!((st.head_lsn, st.acked_lsn, st.pending_entries), (7, 5, 2));
        assert_eq!(
            st.pending_bytes,
            second.iter().map(record_bytes).sum::<u64>()
        );
        let oldest = st.oldest_pending_ms.unwrap();
        assert!(oldest >= after_sync);
        let acked_at = store.journal_state().acked_at_ms;
        assert!(acked_at >= before_sync);
        assert_eq!(st.stalled_since_ms, Some(oldest.max(acked_at)));
        assert_eq!(st.last_success_ms, Some(success));
        drop(store);
        let store = open(&paths, opts());
        assert_same_after_restart(&status(&store), &st, "same figures after a restart");
        assert!(store.sync_now().error.is_none());
        assert_eq!(dump_target(&paths.target), dump_cache(&store));
    }
}

/// Pending bytes are measured on disk across segments, from the first unacknowledged record
/// (here in the middle of a segment, behind an entry the target refuses).
#[test]
fn pending_bytes_span_segments() {
    for kind in TargetKind::all() {
        let (_dir, paths) = Paths::temp_of_kind(kind);
        let opts = || {
            store_opts_with_target_schema(&paths.target, RejectPolicy::Stop, TARGET_WITHOUT_TAGS)
        };
        let store = open(&paths, opts());
        let big = |id: i64| {
            ChangeSet::new().upsert(
                "items",
                [("id", id)],
                [("data", syncjournal::Value::Blob(vec![id as u8; 15_000]))],
            )
        };
        let mut entries: Vec<ChangeSet> = (1..=3).map(big).collect();
        entries.push(tag("blocker", 1.0));
        entries.extend((4..=12).map(big));
        for cs in &entries {
            store.apply(cs).unwrap();
        }
        assert!(store.journal_state().segments >= 3, "the journal rotated");
        let st = status(&store);
        assert_eq!(st.pending_entries, entries.len() as u64);
        assert_eq!(
            st.pending_bytes,
            entries.iter().map(record_bytes).sum::<u64>()
        );
        // The target takes the first three, then stops at the tag.
        let report = store.sync_now();
        assert!(
            matches!(
                report.error,
                Some(Error::Target(TargetError::EntryRejected { lsn: 4, .. }))
            ),
            "{report}"
        );
        let st = status(&store);
        assert_eq!(
            (st.acked_lsn, st.pending_entries),
            (3, entries.len() as u64 - 3)
        );
        assert_eq!(
            st.pending_bytes,
            entries[3..].iter().map(record_bytes).sum::<u64>()
        );
        drop(store);
        let store = open(&paths, opts());
        assert_same_after_restart(&status(&store), &st, "after a restart");
        create_tags_on(&paths.target);
        assert!(store.sync_now().error.is_none());
        let st = status(&store);
        assert_eq!((st.pending_entries, st.pending_bytes), (0, 0));
    }
}

#[test]
fn is_stalled_compares_the_stall_start_with_the_threshold() {
    for kind in TargetKind::all() {
        let (_dir, paths) = Paths::temp_of_kind(kind);
        let store = open(&paths, store_opts(&paths.target, RejectPolicy::Stop));
        store.apply(&item(1)).unwrap();
        let mut st = status(&store);
        assert!(st.stalled_since_ms.is_some());
        st.stalled_since_ms = Some(now_ms() - 2 * 3600 * 1000);
        assert!(st.is_stalled(Duration::from_secs(3600)));
        assert!(!st.is_stalled(Duration::from_secs(3 * 3600)));
        st.stalled_since_ms = None;
        assert!(!st.is_stalled(Duration::ZERO));
    }
}

#[test]
fn last_error_from_a_missing_target_survives_restart_and_only_success_clears_it() {
    for kind in TargetKind::all() {
        let (_dir, paths) = Paths::temp_of_kind(kind);
        // A target that must exist (as on a share): missing until the test creates it.
        let opts = || store_opts_existing(&paths.target);
        let store = open(&paths, opts());
        store.apply(&item(1)).unwrap();
        let report = store.sync_now();
        assert!(
            report.error.as_ref().is_some_and(|e| kind.is_missing(e)),
            "{kind}: {report}"
        );
        assert_eq!(report.pending, 1);
        assert!(!paths.target.exists(), "a missing target is never created");
        let st = status(&store);
        let err = st.last_error.clone().expect("the failure is recorded");
        assert!(err.message.contains("does not exist"), "{}", err.message);
        assert_eq!(err.transient, kind.missing_is_transient(), "{kind}");
        assert_eq!((err.lsn, &err.entry), (None, &None));
        assert_eq!(st.last_success_ms, None);
        assert_eq!(st.pending_entries, 1);
        assert!(st.stalled_since_ms.is_some());

        // Not cleared by a restart, by status, by an apply, or by another failure.
        drop(store);
        let store = open(&paths, opts());
        assert_eq!(status(&store).last_error, Some(err.clone()));
        assert_eq!(status(&store).last_error, Some(err.clone()));
        store.apply(&item(2)).unwrap();
        assert_eq!(status(&store).last_error, Some(err.clone()));
        assert!(store.sync_now().error.is_some());
        let again = status(&store).last_error.expect("still failing");
        assert!(again.message.contains("does not exist"));
        assert!(again.at_ms >= err.at_ms);
        drop(store);
        let store = open(&paths, opts());
        assert_eq!(status(&store).last_error, Some(again));
        assert_eq!(status(&store).pending_entries, 2);

        // The share comes back: the next sync succeeds and clears the error, for good.
        create_tags_on(&paths.target);
        let report = store.sync_now();
        assert!(report.error.is_none(), "{report}");
        assert_eq!(report.applied, 2);
        let st = status(&store);
        assert_eq!(st.last_error, None);
        assert!(st.last_success_ms.is_some());
        assert_eq!((st.pending_entries, st.acked_lsn), (0, 2));
        assert_eq!(target_item_ids(&paths.target), vec![1, 2]);
        drop(store);
        let store = open(&paths, opts());
        assert_same_after_restart(&status(&store), &st, "after a restart");

        // And a new failure sets it again; the last success is still known.
        paths.target.remove();
        store.apply(&item(3)).unwrap();
        assert!(store.sync_now().error.is_some());
        let failed = status(&store);
        assert!(failed.last_error.is_some());
        assert_eq!(failed.last_success_ms, st.last_success_ms);
        assert_eq!(failed.target_lsn, st.target_lsn);
    }
}

#[test]
fn stalled_since_is_none_without_pending_entries_even_while_failing() {
    for kind in TargetKind::all() {
        let (_dir, paths) = Paths::temp_of_kind(kind);
        let store = open(&paths, store_opts_existing(&paths.target));
        assert!(store.sync_now().error.is_some());
        let st = status(&store);
        assert!(st.last_error.is_some());
        assert_eq!(st.pending_entries, 0);
        assert_eq!(st.stalled_since_ms, None);
        assert!(!st.is_stalled(Duration::ZERO));
    }
}

/// `SyncStatus::stalled_since_ms` is documented as "the later of the oldest pending entry's
/// creation and the last acknowledgement, or the start of the current run of failures if
/// that is earlier".
#[test]
fn stalled_since_follows_the_queue_head_and_failing_since_the_failure_run() {
    for kind in TargetKind::all() {
        let (_dir, paths) = Paths::temp_of_kind(kind);
        let store = open(&paths, store_opts_existing(&paths.target));
        // The target is missing: the failure run starts now, before any entry exists.
        assert!(store.sync_now().error.is_some());
        let failing_since = status(&store).last_error.expect("failing").at_ms;
        assert_eq!(status(&store).failing_since_ms, Some(failing_since));
        assert_eq!(
            status(&store).stalled_since_ms,
            None,
            "nothing pending: nothing stalled, even while syncs fail"
        );
        // Make sure the entry is created strictly later (no timing assumption: wait for the
        // clock to move).
        while now_ms() <= failing_since {
            std::thread::sleep(Duration::from_millis(1));
        }
        store.apply(&item(1)).unwrap();
        let st = status(&store);
        let oldest = st.oldest_pending_ms.unwrap();
        assert!(oldest > failing_since);
        let acked_at = store.journal_state().acked_at_ms;
        assert_eq!(
            st.stalled_since_ms,
            Some(oldest.max(acked_at)),
            "the head of the queue has waited since it appeared (oldest pending {oldest}, \
         acknowledged at {acked_at})"
        );
        assert_eq!(
            st.failing_since_ms,
            Some(failing_since),
            "the failure run is reported on its own"
        );
        // A later failure does not move the start of the run; a success ends it.
        assert!(store.sync_now().error.is_some());
        assert_eq!(status(&store).failing_since_ms, Some(failing_since));
    }
}

fn stop_policy_case(kind: TargetKind, batch_entries_max: usize) {
    let (_dir, paths) = Paths::temp_of_kind(kind);
    let opts = || {
        store_opts_full(
            &paths.target,
            paths.target.options_creating(TARGET_WITHOUT_TAGS),
            ReplayOptions::new()
                .reject_policy(RejectPolicy::Stop)
                .batch_entries_max(batch_entries_max)
                .retry_attempts_max(0),
        )
    };
    let store = open(&paths, opts());
    let refused = tag("red", 2.5);
    for cs in [item(1), item(2), refused.clone(), item(3), item(4)] {
        store.apply(&cs).unwrap();
    }
    let check_stopped = |store: &Store, report: syncjournal::SyncReport| {
        match &report.error {
            Some(Error::Target(TargetError::EntryRejected { lsn, entry, reason })) => {
                assert_eq!(*lsn, 3);
                assert_eq!(entry, &refused.describe());
                assert!(reason.contains("no table"), "{reason}");
            }
            other => panic!("expected EntryRejected at LSN 3, got {other:?} ({report})"),
        }
        assert_eq!(report.pending, 3);
        let st = status(store);
        assert_eq!((st.head_lsn, st.acked_lsn, st.pending_entries), (5, 2, 3));
        assert_eq!(st.target_lsn, Some(2));
        let e = st.last_error.expect("the rejection is recorded");
        assert_eq!(e.lsn, Some(3));
        assert_eq!(e.entry.as_deref(), Some(refused.describe().as_str()));
        assert!(!e.transient);
        assert!(
            e.message.contains("LSN 3") && e.message.contains("no table"),
            "{}",
            e.message
        );
        assert!(st.stalled_since_ms.is_some());
        // Nothing after the rejected entry reached the target.
        assert_eq!(target_item_ids(&paths.target), vec![1, 2]);
        assert_eq!(paths.target.watermark(st.journal_id), 2);
        assert_eq!(
            paths.target.count_rows("syncjournal_rejected"),
            0,
            "Stop never quarantines"
        );
    };
    let report = store.sync_now();
    assert_eq!(report.applied, 2);
    check_stopped(&store, report);
    // Again: still stopped at the same entry, nothing more applied.
    let report = store.sync_now();
    assert_eq!(report.applied, 0);
    check_stopped(&store, report);
    // After a restart too.
    drop(store);
    let store = open(&paths, opts());
    let report = store.sync_now();
    assert_eq!(report.applied, 0);
    check_stopped(&store, report);

    // Fix the target: replay resumes with the refused entry and clears the error.
    create_tags_on(&paths.target);
    let report = store.sync_now();
    assert!(report.error.is_none(), "{report}");
    assert_eq!(report.applied, 3);
    let st = status(&store);
    assert_eq!((st.acked_lsn, st.pending_entries), (5, 0));
    assert_eq!(st.last_error, None);
    assert_eq!(dump_target(&paths.target), dump_cache(&store));
}

#[test]
fn stop_policy_blocks_at_the_rejected_entry() {
    for kind in TargetKind::all() {
        stop_policy_case(kind, 1000);
    }
}

#[test]
fn stop_policy_blocks_at_the_rejected_entry_one_entry_per_batch() {
    for kind in TargetKind::all() {
        stop_policy_case(kind, 1);
    }
}

/// Fails the statement with the given label while armed.
struct FailOn {
    label: &'static str,
    armed: AtomicBool,
}

impl TargetFaults for FailOn {
    fn before_statement(&self, _index: usize, label: &str) -> rusqlite::Result<()> {
        if label == self.label && self.armed.load(Ordering::SeqCst) {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                Some(format!("injected failure before {label}")),
            ));
        }
        Ok(())
    }
}

/// The rows of `syncjournal_rejected` on the target: (journal id, lsn, kind, payload,
/// summary, error).
type RejectedRow = (String, i64, i64, Vec<u8>, String, String);

fn rejected_rows(target: &TestTarget) -> Vec<RejectedRow> {
    target
        .rows("SELECT journal_id, lsn, kind, payload, summary, error FROM syncjournal_rejected ORDER BY lsn")
        .into_iter()
        .map(|r| match &r[..] {
            [
                Value::Text(id),
                Value::Integer(lsn),
                Value::Integer(kind),
                Value::Blob(payload),
                Value::Text(summary),
                Value::Text(error),
            ] => (
                id.clone(),
                *lsn,
                *kind,
                payload.clone(),
                summary.clone(),
                error.clone(),
            ),
            _ => panic!("a rejected row: {r:?}"),
        })
        .collect()
}

/// Every entry up to the watermark is applied on the target or listed in quarantine (each
/// entry of these tests leaves one recognizable row).
fn every_entry_accounted_for(
    store: &Store,
    target: &TestTarget,
    entries: &[(u64, ChangeSet)],
    discarded: &[u64],
) {
    let listed: Vec<u64> = store.quarantined().unwrap().iter().map(|q| q.lsn).collect();
    let wm = target.watermark(store.journal_state().journal_id);
    for (lsn, cs) in entries.iter().filter(|(l, _)| *l <= wm) {
        let (table, key) = (cs.mutations[0].table(), cs.mutations[0].key());
        let (col, val) = &key[0];
        let literal = match val {
            Value::Integer(i) => i.to_string(),
            Value::Text(t) => format!("'{}'", t.replace('\'', "''")),
            v => panic!("a key of these tests: {v:?}"),
        };
        let applied = target.has_table(table)
            && target.ints(&format!(
                "SELECT count(*) FROM {table} WHERE {col} = {literal}"
            )) == [1];
        let quarantined = listed.contains(lsn);
        assert!(
            applied ^ quarantined || (discarded.contains(lsn) && !applied && !quarantined),
            "LSN {lsn} ({}) is applied: {applied}, quarantined: {quarantined}",
            cs.describe()
        );
    }
}

#[test]
fn quarantine_policy_records_refused_entries_and_continues() {
    for kind in TargetKind::all() {
        let (_dir, paths) = Paths::temp_of_kind(kind);
        let faults = Arc::new(FailOn {
            label: "update watermark",
            armed: AtomicBool::new(true),
        });
        let opts = |faults: &Arc<FailOn>| {
            store_opts_full(
                &paths.target,
                paths
                    .target
                    .options_creating(TARGET_WITHOUT_TAGS)
                    .faults(Arc::clone(faults) as Arc<dyn TargetFaults>),
                ReplayOptions::new()
                    .reject_policy(RejectPolicy::Quarantine)
                    .retry_attempts_max(0),
            )
        };
        let store = open(&paths, opts(&faults));
        let entries: Vec<(u64, ChangeSet)> = [
            item(1),
            tag("red", 1.0),
            item(2),
            tag("green", 2.0),
            item(3),
        ]
        .into_iter()
        .map(|cs| (store.apply(&cs).unwrap(), cs))
        .collect();
        let id = store.journal_state().journal_id;

        // The batch fails after the refused entries were recorded: the quarantine rows roll back
        // with everything else (same transaction).
        let report = store.sync_now();
        assert!(report.error.is_some(), "{report}");
        assert_eq!(rejected_rows(&paths.target), vec![]);
        assert_eq!(target_item_ids(&paths.target), Vec::<i64>::new());
        assert_eq!(paths.target.watermark(id), 0);
        assert_eq!(status(&store).pending_entries, 5);
        assert_eq!(status(&store).quarantined, 0);

        faults.armed.store(false, Ordering::SeqCst);
        let before = now_ms();
        let report = store.sync_now();
        let after = now_ms();
        assert!(
            report.error.is_none(),
            "quarantine is not a failure: {report}"
        );
        assert_eq!(report.quarantined, 2);
        assert_eq!(report.pending, 0);
        let st = status(&store);
        assert_eq!(
            (st.acked_lsn, st.pending_entries, st.quarantined),
            (5, 0, 2)
        );
        assert_eq!(st.last_error, None);
        assert_eq!(paths.target.watermark(id), 5);
        // Replay went on past the refused entries.
        assert_eq!(target_item_ids(&paths.target), vec![1, 2, 3]);

        // On the target: the refused entries with their payload, summary and reason.
        let rows = rejected_rows(&paths.target);
        assert_eq!(rows.len(), 2);
        for ((jid, lsn, kind, payload, summary, error), (want_lsn, cs)) in
            rows.iter().zip([&entries[1], &entries[3]])
        {
            assert_eq!(jid, &id.to_string());
            assert_eq!(*lsn as u64, *want_lsn);
            assert_eq!(*kind, i64::from(KIND_CHANGESET));
            let (_, decoded): (u64, ChangeSet) = decode_event(payload).expect("payload decodes");
            assert_eq!(&decoded, cs);
            assert_eq!(summary, &cs.describe());
            assert!(error.contains("no table"), "{error}");
        }
        // Listed by the store.
        let listed = store.quarantined().unwrap();
        assert_eq!(listed.iter().map(|q| q.lsn).collect::<Vec<_>>(), vec![2, 4]);
        for (q, (_, cs)) in listed.iter().zip([&entries[1], &entries[3]]) {
            assert_eq!(q.kind, KIND_CHANGESET);
            assert_eq!(q.summary, cs.describe());
            assert!(q.error.contains("no table"), "{}", q.error);
            assert!((before..=after).contains(&q.rejected_at_ms));
        }
        every_entry_accounted_for(&store, &paths.target, &entries, &[]);

        // A restart keeps all of it, and a sync with nothing new changes nothing.
        drop(store);
        let store = open(&paths, opts(&faults));
        assert_eq!(status(&store).quarantined, 2);
        assert!(store.sync_now().error.is_none());
        assert_eq!(status(&store).quarantined, 2);
        assert_eq!(store.quarantined().unwrap(), listed);
        assert_eq!(status(&store).quarantined, 2);
        assert_eq!(status(&store).last_error, None);

        // Retrying before the cause is fixed fails and keeps the entry.
        match store.retry_quarantined(2) {
            Err(Error::Target(TargetError::EntryRejected { lsn: 2, reason, .. })) => {
                assert!(reason.contains("no table"), "{reason}")
            }
            other => panic!("expected EntryRejected, got {other:?}"),
        }
        assert_eq!(store.quarantined().unwrap().len(), 2);
        assert!(
            store.retry_quarantined(99).is_err(),
            "no such quarantined entry"
        );
        every_entry_accounted_for(&store, &paths.target, &entries, &[]);

        // Fix the cause: the retry applies it and removes it from quarantine.
        create_tags_on(&paths.target);
        store.retry_quarantined(2).unwrap();
        let tags = paths.target.rows("SELECT tag FROM tags");
        assert_eq!(tags, vec![vec![Value::Text("red".to_string())]]);
        assert_eq!(
            store
                .quarantined()
                .unwrap()
                .iter()
                .map(|q| q.lsn)
                .collect::<Vec<_>>(),
            vec![4]
        );
        every_entry_accounted_for(&store, &paths.target, &entries, &[]);

        // Discard the other one: gone for good, by an explicit decision.
        assert!(store.discard_quarantined(4).unwrap());
        assert!(!store.discard_quarantined(4).unwrap());
        assert_eq!(store.quarantined().unwrap(), vec![]);
        assert_eq!(rejected_rows(&paths.target), vec![]);
        every_entry_accounted_for(&store, &paths.target, &entries, &[4]);
        assert!(store.retry_quarantined(4).is_err());

        // Replay goes on as usual afterwards.
        store.apply(&item(4)).unwrap();
        let report = store.sync_now();
        assert!(report.error.is_none(), "{report}");
        assert_eq!(target_item_ids(&paths.target), vec![1, 2, 3, 4]);
        assert_eq!(status(&store).pending_entries, 0);
    }
}

/// After quarantined entries are retried or discarded, the status no longer counts them
/// (once the replayer has run: `SyncStatus::quarantined` is "as last seen").
#[test]
fn quarantine_count_follows_retry_and_discard() {
    for kind in TargetKind::all() {
        let (_dir, paths) = Paths::temp_of_kind(kind);
        let opts = || {
            store_opts_with_target_schema(
                &paths.target,
                RejectPolicy::Quarantine,
                TARGET_WITHOUT_TAGS,
            )
        };
        let store = open(&paths, opts());
        for cs in [tag("a", 1.0), tag("b", 2.0), tag("c", 3.0), item(1)] {
            store.apply(&cs).unwrap();
        }
        assert!(store.sync_now().error.is_none());
        assert_eq!(status(&store).quarantined, 3);
        create_tags_on(&paths.target);
        store.retry_quarantined(1).unwrap();
        assert!(store.discard_quarantined(2).unwrap());
        // The replayer has seen the table since: one entry is left.
        let report = store.sync_now();
        assert!(report.error.is_none(), "{report}");
        assert_eq!(
            status(&store).quarantined,
            1,
            "status counts the entries still quarantined ({:?})",
            store.quarantined().unwrap()
        );
        drop(store);
        let store = open(&paths, opts());
        assert_eq!(status(&store).quarantined, 1);
        store.retry_quarantined(3).unwrap();
        assert!(store.sync_now().error.is_none());
        assert_eq!(status(&store).quarantined, 0);
        assert_eq!(store.quarantined().unwrap(), vec![]);
    }
}

/// A store without a target: `sync_now` says so, the quarantine calls too, and the status
/// still reports the journal and the cache.
#[test]
fn no_target_is_reported() {
    let (_dir, paths) = Paths::temp();
    let store: Store = Store::open(&paths.journal, &paths.cache, local_opts()).unwrap();
    store.apply(&item(1)).unwrap();
    let report = store.sync_now();
    assert!(
        matches!(report.error, Some(Error::Target(TargetError::NoTarget))),
        "{report}"
    );
    assert_eq!(report.pending, 1);
    assert!(matches!(
        store.quarantined(),
        Err(Error::Target(TargetError::NoTarget))
    ));
    assert!(matches!(
        store.retry_quarantined(1),
        Err(Error::Target(TargetError::NoTarget))
    ));
    let st = status(&store);
    assert_eq!(
        (st.head_lsn, st.cache_applied_lsn, st.pending_entries),
        (1, Some(1), 1)
    );
}
