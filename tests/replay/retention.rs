//! Retention of the change log, on both kinds of target (`sync-protocol.md` §2.6):
//!
//! * a replayer prunes the log to its limits after a sync that applied something;
//! * a cache that reported its cursor holds pruning back until it has pulled, and so does the
//!   base of its oldest entry not on the target yet (what its conflict check reads);
//! * an unknown cache, or one whose cursor went stale, does not: it is told to reseed.

use syncjournal::error::CacheError;
use syncjournal::{ChangeLogRetention, Error, Store};

use crate::support::inventory::host;
use crate::support::machines::{Machines, cache_rows};
use crate::support::process::with_timeout;
use crate::support::targets::TargetKind;

fn open(m: &Machines, i: usize, retention: ChangeLogRetention) -> Store {
    let opts = m.options().target(
        m.target.spec(),
        m.target.options().change_log_retention(retention),
    );
    m.open_with(i, opts)
}

/// (head, floor) of the target's change log.
fn log(m: &Machines) -> (i64, i64) {
    let r = m
        .target
        .ints("SELECT seq FROM syncjournal_change_head UNION ALL SELECT floor_seq FROM syncjournal_change_head");
    (r[0], r[1])
}

fn write(s: &Store, ids: std::ops::Range<i64>) {
    for i in ids {
        s.apply(&host(i)).unwrap();
    }
    let r = s.sync_now();
    assert!(r.error.is_none(), "{:?}", r.error);
}

#[test]
fn pruning_keeps_what_a_known_cache_has_not_pulled_and_tells_the_others_to_reseed() {
    for kind in TargetKind::all() {
        with_timeout(180, move || {
            let m = Machines::new(kind, 2);
            let keep = || {
                ChangeLogRetention::new()
                    .keep_records_max(5)
                    .prune_interval_ms(0)
            };
            let s0 = open(&m, 0, keep());
            let s1 = open(&m, 1, ChangeLogRetention::new());
            // Nobody has reported a cursor: the log is pruned to its last 5 records.
            write(&s0, 1..21);
            assert_eq!(log(&m), (20, 15), "{kind}");
            assert_eq!(m.target.count_rows("syncjournal_changes"), 5);
            // Machine 1 never pulled: it is told to reseed, and the reseed brings it up.
            let p = s1.pull_now();
            assert!(
                matches!(
                    p.error,
                    Some(Error::Cache(CacheError::NeedsReseed {
                        cursor_seq: 0,
                        floor_seq: 15,
                        ..
                    }))
                ),
                "{kind}: {:?}",
                p.error
            );
            s1.reseed().unwrap();
            assert_eq!(cache_rows(&s1), m.target_rows(), "{kind}");
            let p = s1.pull_now();
            assert!(p.error.is_none(), "{kind}: {:?}", p.error);
            assert_eq!(s1.pull_status().unwrap().reported_seq, Some(20), "{kind}");

            // Machine 1's cursor (20) holds pruning back.
            write(&s0, 21..31);
            assert_eq!(log(&m), (30, 20), "{kind}: held by machine 1's cursor");
            // An entry of machine 1 made at cursor 30 and not replayed holds it at 30 even
            // after machine 1 pulls further.
            assert!(s1.pull_now().error.is_none());
            s1.apply(&host(99)).unwrap();
            write(&s0, 31..41);
            assert_eq!(log(&m), (40, 30), "{kind}");
            assert!(s1.pull_now().error.is_none());
            assert_eq!(s1.pull_status().unwrap().cursor_seq, 40);
            assert_eq!(
                s1.pull_status().unwrap().reported_seq,
                Some(30),
                "{kind}: the pending entry's base"
            );
            write(&s0, 41..42);
            assert_eq!(log(&m), (41, 30), "{kind}: still held");
            // Replayed and pulled: pruning goes on to the limit.
            assert!(s1.sync_now().error.is_none());
            assert!(s1.pull_now().error.is_none());
            write(&s0, 42..43);
            let (head, floor) = log(&m);
            assert_eq!(floor, head - 5, "{kind}");
            assert!(s1.pull_now().error.is_none());
            assert_eq!(cache_rows(&s1), m.target_rows(), "{kind}");
            drop(s0);

            // A cursor older than `cursor_stale_after_ms` no longer holds pruning back.
            let s0 = open(&m, 0, keep().cursor_stale_after_ms(1));
            std::thread::sleep(std::time::Duration::from_millis(20));
            write(&s0, 43..63);
            let (head, floor) = log(&m);
            assert_eq!(
                floor,
                head - 5,
                "{kind}: machine 1's stale cursor was passed"
            );
            let p = s1.pull_now();
            assert!(
                matches!(p.error, Some(Error::Cache(CacheError::NeedsReseed { .. }))),
                "{kind}: {:?}",
                p.error
            );
            assert!(s1.pull_status().unwrap().needs_reseed);
        });
    }
}
