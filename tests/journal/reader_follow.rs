//! Readers: a follower (`next_timeout`) receives records appended later by another thread, in
//! order, across segment rotations; readers only ever see durable records (with
//! `PersistMode::Buffered`, not before `sync()`); `read(lsn)` and `seek` find records in sealed
//! and active segments, before and after a reopen.

use std::sync::Arc;
use std::time::Duration;

use crate::support::journal::{assert_contiguous, payload, segments_with_first_lsn, varied_len};
use crate::support::process::with_timeout;
use crate::support::rng::Rng;
use syncjournal::{Journal, JournalOptions, Lsn, PersistMode};

const SEGMENT_BYTES: u64 = 64 << 10;

fn rec(seq: u32) -> Vec<u8> {
    payload(0, seq, 11, varied_len(0, seq, 400))
}

fn opts(mode: PersistMode) -> JournalOptions {
    JournalOptions::new()
        .persist_mode(mode)
        .segment_bytes_max(SEGMENT_BYTES)
}

/// Follows from `from` until `until` (inclusive), checking order and payloads.
fn follow(journal: Arc<Journal>, from: Lsn, until: Lsn) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut reader = journal.reader(from).expect("follower reader");
        let mut expect = from;
        let mut empty_waits = 0u64;
        while expect <= until {
            match reader
                .next_timeout(Duration::from_millis(200))
                .expect("next_timeout")
            {
                Some(r) => {
                    assert_eq!(r.lsn, expect, "follower from {from}: out of order");
                    assert_eq!(r.payload, rec(r.lsn as u32 - 1), "LSN {} payload", r.lsn);
                    expect += 1;
                }
                // Nothing new yet; the hang guard bounds the whole test.
                None => empty_waits += 1,
            }
        }
        empty_waits
    })
}

fn follow_scenario(mode: PersistMode) {
    with_timeout(90, move || {
        const N: u32 = 1500;
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let journal = Arc::new(Journal::open(&jdir, opts(mode)).unwrap());
        // Followers start on an empty journal, and one in the middle of the future stream.
        let followers = [
            follow(Arc::clone(&journal), 1, u64::from(N)),
            follow(Arc::clone(&journal), 1, u64::from(N)),
            follow(Arc::clone(&journal), 700, u64::from(N)),
        ];
        let appender = {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || {
                for seq in 0..N {
                    assert_eq!(journal.append(&rec(seq)).unwrap(), u64::from(seq) + 1);
                    if seq.is_multiple_of(97) {
                        std::thread::yield_now();
                    }
                }
            })
        };
        appender.join().expect("appender");
        if mode == PersistMode::Buffered {
            journal.sync().unwrap();
        }
        for f in followers {
            f.join().expect("follower");
        }
        let segments = segments_with_first_lsn(&jdir).len();
        assert!(
            segments >= 4,
            "the followers crossed only {segments} segments"
        );
    });
}

#[test]
fn follower_receives_later_records_across_rotations_sync_mode() {
    follow_scenario(PersistMode::Sync);
}

#[test]
fn follower_receives_later_records_across_rotations_batched_mode() {
    // No explicit sync: the background flusher makes the records durable, hence visible.
    follow_scenario(PersistMode::Batched {
        interval: Duration::from_millis(3),
    });
}

#[test]
fn follower_receives_later_records_across_rotations_buffered_mode() {
    follow_scenario(PersistMode::Buffered);
}

#[test]
fn buffered_records_are_invisible_until_sync() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let journal = Arc::new(
            Journal::open(
                &jdir,
                JournalOptions::new()
                    .persist_mode(PersistMode::Buffered)
                    .segment_bytes_max(1 << 20),
            )
            .unwrap(),
        );
        let mut early = journal.reader(1).unwrap();
        for seq in 0..5 {
            assert_eq!(journal.append(&rec(seq)).unwrap(), u64::from(seq) + 1);
        }
        let state = journal.state();
        assert_eq!((state.next_lsn, state.durable_lsn), (6, 0));
        assert_eq!(
            early.next_record().unwrap(),
            None,
            "reader saw a non-durable record"
        );
        assert_eq!(journal.reader(1).unwrap().next_record().unwrap(), None);
        assert_eq!(
            journal.read(1).unwrap(),
            None,
            "read() found a non-durable record"
        );
        assert_eq!(
            early.next_timeout(Duration::from_millis(30)).unwrap(),
            None,
            "follower saw a non-durable record"
        );

        // A follower blocked in next_timeout is woken by the sync.
        let waiter = {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || {
                let mut r = journal.reader(1).unwrap();
                r.next_timeout(Duration::from_secs(30)).unwrap()
            })
        };
        journal.sync().unwrap();
        let got = waiter
            .join()
            .unwrap()
            .expect("follower woken by sync got nothing");
        assert_eq!(got.lsn, 1);
        assert_eq!(got.payload, rec(0));

        for lsn in 1..=5u64 {
            let r = early.next_record().unwrap().expect("visible after sync");
            assert_eq!((r.lsn, &r.payload), (lsn, &rec(lsn as u32 - 1)));
        }
        assert_eq!(journal.read(3).unwrap().unwrap().payload, rec(2));

        // And again: new records invisible to the same reader until the next sync.
        for seq in 5..8 {
            journal.append(&rec(seq)).unwrap();
        }
        assert_eq!(early.next_record().unwrap(), None);
        assert_eq!(journal.read(6).unwrap(), None);
        journal.sync().unwrap();
        assert_eq!(early.next_record().unwrap().unwrap().lsn, 6);
        assert_eq!(journal.read(8).unwrap().unwrap().payload, rec(7));
    });
}

#[test]
fn buffered_rotation_makes_the_sealed_segment_visible_but_not_the_new_records() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let journal = Journal::open(&jdir, opts(PersistMode::Buffered)).unwrap();
        let mut seq = 0;
        while journal.state().segments < 2 {
            journal.append(&rec(seq)).unwrap();
            seq += 1;
        }
        for _ in 0..5 {
            journal.append(&rec(seq)).unwrap();
            seq += 1;
        }
        let second_first = segments_with_first_lsn(&jdir)[1].1;
        assert_eq!(
            journal.state().durable_lsn,
            second_first - 1,
            "rotation syncs the sealed segment, nothing more"
        );
        let mut reader = journal.reader(1).unwrap();
        let mut last = 0;
        while let Some(r) = reader.next_record().unwrap() {
            assert_eq!(r.lsn, last + 1);
            last = r.lsn;
        }
        assert_eq!(
            last,
            second_first - 1,
            "visible exactly up to the end of the sealed segment"
        );
        assert_eq!(journal.read(second_first).unwrap(), None);
        journal.sync().unwrap();
        assert_eq!(
            reader.next_record().unwrap().map(|r| r.lsn),
            Some(second_first)
        );
    });
}

#[test]
fn read_and_seek_find_records_in_sealed_and_active_segments() {
    with_timeout(60, || {
        const N: u32 = 2000;
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let journal = Journal::open(&jdir, opts(PersistMode::Buffered)).unwrap();
        for seq in 0..N {
            journal.append(&rec(seq)).unwrap();
        }
        journal.sync().unwrap();
        let segs = segments_with_first_lsn(&jdir);
        assert!(segs.len() >= 5, "{segs:?}");
        check_lookups(&journal, N, &segs, "before reopen");
        journal.close().unwrap();

        let journal = Journal::open(&jdir, opts(PersistMode::Buffered)).unwrap();
        check_lookups(&journal, N, &segs, "after reopen");

        // Seeking past the end waits for new records.
        let mut reader = journal.reader(1).unwrap();
        reader.seek(u64::from(N) + 1).unwrap();
        assert_eq!(reader.next_record().unwrap(), None);
        journal.append(&rec(N)).unwrap();
        journal.sync().unwrap();
        let r = reader.next_record().unwrap().unwrap();
        assert_eq!((r.lsn, r.payload), (u64::from(N) + 1, rec(N)));
    });
}

fn check_lookups(journal: &Journal, n: u32, segs: &[(u64, Lsn)], what: &str) {
    let n = u64::from(n);
    // Every LSN through read(): sealed segments and the active one.
    for lsn in 1..=n {
        let r = journal
            .read(lsn)
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: read({lsn}) found nothing"));
        assert_eq!(r.lsn, lsn, "{what}");
        assert_eq!(
            r.payload,
            rec(lsn as u32 - 1),
            "{what}: read({lsn}) payload"
        );
    }
    assert_eq!(
        journal.read(n + 1).unwrap(),
        None,
        "{what}: read past the end"
    );

    // Seeks to segment boundaries, index-stride boundaries and random LSNs, in both directions.
    let mut targets: Vec<Lsn> = Vec::new();
    for &(_, first) in segs {
        targets.extend([first.saturating_sub(1).max(1), first, first + 1]);
        targets.extend([first + 63, first + 64, first + 65]);
    }
    let mut rng = Rng::new(42);
    targets.extend((0..200).map(|_| rng.range(1, n + 1)));
    targets.extend([n, 1, n - 1]);
    let mut reader = journal.reader(1).unwrap();
    for &lsn in targets.iter().filter(|&&l| l <= n) {
        reader.seek(lsn).unwrap();
        assert_eq!(reader.next_lsn(), lsn, "{what}: position after seek");
        let r = reader.next_ref().unwrap().unwrap_or_else(|| {
            panic!("{what}: nothing after seek({lsn})");
        });
        assert_eq!(r.lsn, lsn, "{what}: seek({lsn})");
        assert_eq!(
            r.payload,
            rec(lsn as u32 - 1).as_slice(),
            "{what}: seek({lsn}) payload"
        );
        if lsn < n {
            let next = reader.next_record().unwrap().unwrap();
            assert_eq!(next.lsn, lsn + 1, "{what}: record after seek({lsn})");
        }
    }
    // The iterator interface reads everything in order.
    let all: Vec<_> = journal
        .reader(1)
        .unwrap()
        .collect::<syncjournal::Result<Vec<_>>>()
        .unwrap();
    assert_eq!(all.len() as u64, n, "{what}: iterator");
    assert_contiguous(&all, 1);
}
