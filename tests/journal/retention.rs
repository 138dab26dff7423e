//! Acknowledgement and retention: `ack(lsn)` durably records how far the journal was applied
//! and removes exactly the sealed segments whose records are all acknowledged (keeping
//! `retain_acked_segments` of them); it is monotonic, refused beyond the durable LSN, survives a
//! reopen, and a torn newest `ACK` slot falls back to the previous acknowledgement.

use std::path::Path;
use std::sync::Arc;
use syncjournal::error::JournalError;

use crate::support::journal::{payload, read_from, segment_files, segments_with_first_lsn};
use crate::support::process::with_timeout;
use syncjournal::fault::{FaultPlan, IoOp};
use syncjournal::format::{ACK_ACKED_LSN_OFFSET, ACK_GENERATION_OFFSET, ACK_SLOT_OFFSETS};
use syncjournal::{Error, Journal, JournalOptions, Lsn, PersistMode};

const SEGMENT_BYTES: u64 = 64 << 10;
const RECORDS: u32 = 400;

fn opts(retain: usize) -> JournalOptions {
    JournalOptions::new()
        .persist_mode(PersistMode::Buffered)
        .segment_bytes_max(SEGMENT_BYTES)
        .retain_acked_segments(retain)
        .retain_acked_ms(0)
}

fn rec(seq: u32) -> Vec<u8> {
    payload(0, seq, 7, 1000)
}

/// Appends `RECORDS` records of 1000 bytes (several segments) and syncs. Returns the segments
/// as (seq, first_lsn).
fn fill(journal: &Journal) -> Vec<(u64, Lsn)> {
    for seq in 0..RECORDS {
        assert_eq!(journal.append(&rec(seq)).unwrap(), u64::from(seq) + 1);
    }
    journal.sync().unwrap();
    let segs = segments_with_first_lsn(journal.dir());
    assert!(segs.len() >= 5, "expected several segments, got {segs:?}");
    segs
}

fn seqs(dir: &Path) -> Vec<u64> {
    segment_files(dir).into_iter().map(|(s, _)| s).collect()
}

/// Checks that reading from `first` returns the records `first..=RECORDS` intact.
fn assert_readable_from(journal: &Journal, first: Lsn) {
    let records = read_from(journal, first);
    assert_eq!(
        records.len() as u64,
        u64::from(RECORDS) - first + 1,
        "records readable from {first}"
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.lsn, first + i as u64);
        assert_eq!(r.payload, rec(r.lsn as u32 - 1), "payload of LSN {}", r.lsn);
    }
}

fn assert_retired<T: std::fmt::Debug>(r: syncjournal::Result<T>, lsn: Lsn, first: Lsn) {
    match r {
        Err(Error::Journal(JournalError::Retired {
            lsn: l,
            first_retained,
        })) => {
            assert_eq!(l, lsn, "Retired names the LSN asked for");
            assert_eq!(
                first_retained, first,
                "Retired names the first retained LSN"
            );
        }
        other => panic!("reading LSN {lsn} below the first retained {first}: got {other:?}"),
    }
}

#[test]
fn ack_removes_exactly_the_fully_acknowledged_sealed_segments() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let journal = Journal::open(&jdir, opts(0)).unwrap();
        let segs = fill(&journal);
        let all: Vec<u64> = segs.iter().map(|s| s.0).collect();
        let first_of = |i: usize| segs[i].1;

        // Segment 1 still holds an unacknowledged record: nothing goes.
        journal.ack(first_of(1) - 2).unwrap();
        assert_eq!(seqs(&jdir), all, "segment 1 has a record above the ack");
        assert_eq!(journal.state().acked_lsn, first_of(1) - 2);

        // Its last record acknowledged: exactly segment 1 goes.
        journal.ack(first_of(1) - 1).unwrap();
        assert_eq!(seqs(&jdir), all[1..], "exactly segment 1 removed");

        // Acknowledging the first record of segment 3 removes segment 2 only.
        journal.ack(first_of(2)).unwrap();
        assert_eq!(seqs(&jdir), all[2..], "exactly segment 2 removed");
        let state = journal.state();
        assert_eq!(state.acked_lsn, first_of(2));
        assert_eq!(state.first_lsn, first_of(2));
        assert_eq!(state.segments, all.len() - 2);

        // Reading below the first retained LSN: Retired. At it and above: the records.
        assert_retired(journal.reader(1), 1, first_of(2));
        assert_retired(journal.read(first_of(2) - 1), first_of(2) - 1, first_of(2));
        assert_readable_from(&journal, first_of(2));
        assert_eq!(
            journal.read(first_of(2)).unwrap().map(|r| r.lsn),
            Some(first_of(2))
        );

        // Lower or equal acks do nothing: no write of ACK, no change.
        let ack_bytes = std::fs::read(jdir.join("ACK")).unwrap();
        for lower in [0, 1, first_of(1), first_of(2)] {
            journal.ack(lower).unwrap();
            assert_eq!(
                journal.state().acked_lsn,
                first_of(2),
                "ack({lower}) lowered it"
            );
        }
        assert_eq!(
            std::fs::read(jdir.join("ACK")).unwrap(),
            ack_bytes,
            "a lower ack rewrote the ACK file"
        );
        assert_eq!(seqs(&jdir), all[2..]);

        // Acknowledging everything removes every sealed segment, never the active one.
        let last = u64::from(RECORDS);
        journal.ack(last).unwrap();
        assert_eq!(
            seqs(&jdir),
            [*all.last().unwrap()],
            "only the active segment remains"
        );
        let active_first = segs.last().unwrap().1;
        assert_eq!(journal.state().first_lsn, active_first);
        assert_readable_from(&journal, active_first);
        journal.close().unwrap();

        // The acknowledgement survives a reopen; retired LSNs stay retired.
        let journal = Journal::open(&jdir, opts(0)).unwrap();
        let state = journal.state();
        assert_eq!(state.acked_lsn, last);
        assert_eq!(journal.recovery_report().acked_lsn, last);
        assert_eq!(state.first_lsn, active_first);
        assert_eq!(state.next_lsn, last + 1);
        assert_eq!(seqs(&jdir), [*all.last().unwrap()]);
        assert_retired(journal.reader(1), 1, active_first);
        assert_readable_from(&journal, active_first);
        assert_eq!(journal.append(b"next").unwrap(), last + 1);
    });
}

#[test]
fn retain_acked_segments_keeps_the_newest_acknowledged_ones() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let journal = Journal::open(&jdir, opts(2)).unwrap();
        let segs = fill(&journal);
        let all: Vec<u64> = segs.iter().map(|s| s.0).collect();

        // Segments 1..=3 fully acknowledged: the oldest one goes, two are kept.
        journal.ack(segs[3].1 - 1).unwrap();
        assert_eq!(seqs(&jdir), all[1..], "retain 2 of 3 acknowledged segments");
        assert_retired(journal.reader(1), 1, segs[1].1);
        assert_readable_from(&journal, segs[1].1);

        // Everything acknowledged: the two newest sealed segments and the active one stay.
        let n = all.len();
        journal.ack(u64::from(RECORDS)).unwrap();
        assert_eq!(
            seqs(&jdir),
            all[n - 3..],
            "retain the 2 newest sealed segments"
        );
        assert_eq!(journal.state().first_lsn, segs[n - 3].1);
        assert_readable_from(&journal, segs[n - 3].1);

        // Appending until the next rotation keeps the count at 2 sealed acknowledged ones.
        let mut seq = RECORDS;
        while journal.state().segments == 3 {
            journal.append(&rec(seq)).unwrap();
            seq += 1;
        }
        journal.sync().unwrap();
        assert_eq!(
            seqs(&jdir).len(),
            4,
            "the new sealed segment is not acknowledged"
        );
        journal.close().unwrap();

        // Reopened with no extra retention: the acknowledged segments go at open.
        let journal = Journal::open(&jdir, opts(0)).unwrap();
        assert_eq!(journal.state().acked_lsn, u64::from(RECORDS));
        let left = seqs(&jdir);
        assert_eq!(
            left,
            [all[n - 1], all[n - 1] + 1],
            "open retires what the new retention no longer keeps"
        );
    });
}

#[test]
fn ack_beyond_durable_is_refused() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let journal = Journal::open(&jdir, opts(0)).unwrap();
        for seq in 0..10 {
            journal.append(&rec(seq)).unwrap();
        }
        // Buffered: written, not durable.
        for lsn in [1, 10, 11] {
            match journal.ack(lsn) {
                Err(Error::Journal(JournalError::AckBeyondDurable { lsn: l, durable })) => {
                    assert_eq!((l, durable), (lsn, 0));
                }
                other => panic!("ack({lsn}) of a non-durable LSN: {other:?}"),
            }
        }
        assert_eq!(journal.state().acked_lsn, 0);
        journal.sync().unwrap();
        journal.ack(10).unwrap();
        match journal.ack(11) {
            Err(Error::Journal(JournalError::AckBeyondDurable {
                lsn: 11,
                durable: 10,
            })) => {}
            other => panic!("ack(11) beyond durable 10: {other:?}"),
        }
        assert_eq!(journal.state().acked_lsn, 10);
        assert_eq!(journal.state().poisoned, None);
        journal.close().unwrap();

        let journal = Journal::open(&jdir, opts(0)).unwrap();
        assert_eq!(journal.state().acked_lsn, 10);
    });
}

/// Reads (generation, acked_lsn) of both slots of `ACK`.
fn ack_slots(dir: &Path) -> [(u64, u64); 2] {
    let bytes = std::fs::read(dir.join("ACK")).unwrap();
    ACK_SLOT_OFFSETS.map(|at| {
        let g = u64::from_le_bytes(
            bytes[at + ACK_GENERATION_OFFSET..at + ACK_GENERATION_OFFSET + 8]
                .try_into()
                .unwrap(),
        );
        let a = u64::from_le_bytes(
            bytes[at + ACK_ACKED_LSN_OFFSET..at + ACK_ACKED_LSN_OFFSET + 8]
                .try_into()
                .unwrap(),
        );
        (g, a)
    })
}

#[test]
fn torn_newest_ack_slot_falls_back_to_the_previous_acknowledgement() {
    type Tear = fn(&mut [u8]);
    let tears: [(&str, Tear); 3] = [
        ("one flipped bit in acked_lsn", |slot| {
            slot[ACK_ACKED_LSN_OFFSET] ^= 0x04
        }),
        ("garbage over the second half", |slot| {
            for (i, b) in slot[32..].iter_mut().enumerate() {
                *b = 0xA5 ^ i as u8;
            }
        }),
        ("zeros from the generation on", |slot| slot[32..].fill(0)),
    ];
    for (name, tear) in tears {
        with_timeout(60, move || {
            let dir = tempfile::tempdir().unwrap();
            let jdir = dir.path().join("j");
            let o = || opts(0).persist_mode(PersistMode::Sync);
            {
                let journal = Journal::open(&jdir, o()).unwrap();
                for seq in 0..20 {
                    journal.append(&rec(seq)).unwrap();
                }
                journal.ack(5).unwrap();
                journal.ack(12).unwrap();
            }
            let slots = ack_slots(&jdir);
            let newest = if slots[0].0 > slots[1].0 { 0 } else { 1 };
            assert_eq!(
                slots[newest].1, 12,
                "{name}: newest slot holds the last ack"
            );
            assert_eq!(
                slots[1 - newest].1,
                5,
                "{name}: older slot holds the previous ack"
            );
            assert_eq!(
                slots[newest].0,
                slots[1 - newest].0 + 1,
                "{name}: generations"
            );

            let path = jdir.join("ACK");
            let mut bytes = std::fs::read(&path).unwrap();
            let at = ACK_SLOT_OFFSETS[newest];
            tear(&mut bytes[at..at + 64]);
            std::fs::write(&path, &bytes).unwrap();

            let journal = Journal::open(&jdir, o())
                .unwrap_or_else(|e| panic!("{name}: open with a torn ACK slot: {e}"));
            assert_eq!(
                journal.state().acked_lsn,
                5,
                "{name}: a torn newest slot falls back to the previous acknowledgement"
            );
            assert_eq!(journal.recovery_report().acked_lsn, 5, "{name}: report");
            // Nothing was lost, and acknowledging again works and sticks.
            assert_eq!(read_from(&journal, 1).len(), 20, "{name}");
            journal.ack(15).unwrap();
            drop(journal);
            let journal = Journal::open(&jdir, o()).unwrap();
            assert_eq!(
                journal.state().acked_lsn,
                15,
                "{name}: ack after the fallback"
            );
        });
    }
}

#[test]
fn failed_segment_removal_is_retried_later() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let plan = Arc::new(FaultPlan::new());
        let journal = Journal::open(&jdir, opts(0).fault_injector(plan.clone())).unwrap();
        let segs = fill(&journal);
        let all: Vec<u64> = segs.iter().map(|s| s.0).collect();
        plan.fail(IoOp::RemoveSegment, 0, Some(1), 5);
        let ack = segs[3].1 - 1; // segments 1..=3 fully acknowledged
        let r = journal.ack(ack);
        assert!(
            matches!(r, Err(Error::Journal(JournalError::Io { .. })) | Ok(())),
            "ack with a failed removal: {r:?}"
        );
        let state = journal.state();
        assert_eq!(
            state.acked_lsn, ack,
            "the acknowledgement itself was recorded"
        );
        assert_eq!(state.poisoned, None, "a failed removal does not poison");
        let left = seqs(&jdir);
        assert!(left.contains(&all[0]), "the failed removal left segment 1");

        // The next rotation retires what is still due.
        let mut seq = RECORDS;
        let segments = segment_files(&jdir).len();
        while segment_files(&jdir).len() == segments {
            journal.append(&rec(seq)).unwrap();
            seq += 1;
            assert!(seq < RECORDS + 1000, "no rotation");
        }
        let left = seqs(&jdir);
        assert_eq!(
            left[0], all[3],
            "segments 1..=3 removed at the next rotation: {left:?}"
        );
        assert_readable_from_lsn(&journal, segs[3].1, seq);
    });
}

fn assert_readable_from_lsn(journal: &Journal, first: Lsn, count_to: u32) {
    journal.sync().unwrap();
    let records = read_from(journal, first);
    assert_eq!(records.len() as u64, u64::from(count_to) - first + 1);
    for r in &records {
        assert_eq!(r.payload, rec(r.lsn as u32 - 1));
    }
}
