//! A full disk at rotation: `append` fails with `JournalError::DiskFull`, nothing written before is
//! lost, the journal is not poisoned, and appends continue once space is available again.
//! Once through the fault seam, once on a real 1 MiB tmpfs (root only).

use std::path::{Path, PathBuf};

use std::sync::Arc;
use syncjournal::error::JournalError;

use crate::support::journal::{assert_contiguous, payload, read_from, segment_files, tmp_files};
use crate::support::process::{TmpfsMount, skip_or_fail, with_timeout};
use syncjournal::fault::{FaultPlan, IoOp};
use syncjournal::{Error, Journal, JournalOptions, Lsn, PersistMode};

const ENOSPC: i32 = 28;

fn assert_disk_full<T: std::fmt::Debug>(r: syncjournal::Result<T>, what: &str) -> Error {
    match r {
        Err(e @ Error::Journal(JournalError::DiskFull { .. })) => e,
        other => panic!("{what}: expected Error::Journal(JournalError::DiskFull), got {other:?}"),
    }
}

/// Checks that the journal holds exactly `expected` (payloads of LSNs first.., in order).
fn assert_holds(journal: &Journal, first: Lsn, expected: &[Vec<u8>], what: &str) {
    let records = read_from(journal, first);
    assert_eq!(records.len(), expected.len(), "{what}: number of records");
    for (i, (r, p)) in records.iter().zip(expected).enumerate() {
        assert_eq!(r.lsn, first + i as u64, "{what}: LSNs not contiguous");
        assert!(&r.payload == p, "{what}: payload of LSN {} differs", r.lsn);
    }
}

/// A journal in a new directory `j` (`Sync`, 64 KiB segments) with a fault plan of its own:
/// (directory, journal directory, plan, journal).
fn journal_with_faults() -> (tempfile::TempDir, PathBuf, Arc<FaultPlan>, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("j");
    let plan = Arc::new(FaultPlan::new());
    let opts = JournalOptions::new()
        .persist_mode(PersistMode::Sync)
        .segment_bytes_max(64 << 10)
        .fault_injector(plan.clone());
    let journal = Journal::open(&jdir, opts).unwrap();
    (dir, jdir, plan, journal)
}

#[test]
fn allocation_failure_at_rotation_is_disk_full_and_recoverable() {
    with_timeout(60, || {
        let (_dir, jdir, plan, journal) = journal_with_faults();
        // From now on, every new segment fails to reserve its space.
        plan.fail(IoOp::Allocate, 0, None, ENOSPC);

        let mut written: Vec<Vec<u8>> = Vec::new();
        let err = loop {
            let p = payload(0, written.len() as u32, 1, 1000);
            match journal.append(&p) {
                Ok(lsn) => {
                    assert_eq!(lsn, written.len() as u64 + 1, "LSNs contiguous");
                    written.push(p);
                }
                Err(e) => break e,
            }
            assert!(written.len() < 1000, "the first segment never filled up");
        };
        let Error::Journal(JournalError::DiskFull { bytes, path, .. }) = &err else {
            panic!("append needing a rotation: expected DiskFull, got {err:?}");
        };
        assert_eq!(*bytes, 64 << 10, "DiskFull names the bytes it needed");
        assert!(path.starts_with(&jdir), "DiskFull path {}", path.display());
        assert!(err.to_string().contains("no space left"), "message: {err}");
        let k = written.len() as u64;
        assert!(k > 10, "only {k} records fit before the disk filled");

        // Retrying is refused the same way, through every append path; nothing is consumed.
        assert_disk_full(journal.append(&payload(9, 0, 1, 1000)), "retried append");
        assert_disk_full(
            journal.write(syncjournal::KIND_DATA, &payload(9, 1, 1, 1000)),
            "write",
        );
        assert_disk_full(
            journal.append_batch([payload(9, 2, 1, 1000)]),
            "append_batch",
        );

        // Not poisoned, nothing lost, nothing half-created.
        let state = journal.state();
        assert_eq!(state.poisoned, None, "DiskFull must not poison the journal");
        assert_eq!(
            state.next_lsn,
            k + 1,
            "a failed append must not consume an LSN"
        );
        assert_eq!(state.durable_lsn, k);
        assert_eq!(state.segments, 1);
        assert_eq!(segment_files(&jdir).len(), 1);
        assert!(
            tmp_files(&jdir).is_empty(),
            "left over: {:?}",
            tmp_files(&jdir)
        );
        journal.sync().expect("sync while the disk is full");
        assert_holds(&journal, 1, &written, "while full");

        // A record that still fits in the active segment needs no new segment: it works.
        let small = payload(0, written.len() as u32, 1, 100);
        assert_eq!(journal.append(&small).unwrap(), k + 1);
        written.push(small);

        // Space is back: appends continue with the next LSNs, and rotation works.
        plan.clear();
        for _ in 0..100 {
            let p = payload(0, written.len() as u32, 1, 1000);
            let lsn = journal.append(&p).expect("append after the disk was freed");
            assert_eq!(lsn, written.len() as u64 + 1);
            written.push(p);
        }
        assert!(
            journal.state().segments >= 2,
            "rotation happened after clearing"
        );
        assert_holds(&journal, 1, &written, "after clearing");
        journal.close().unwrap();

        let journal = Journal::open(&jdir, JournalOptions::new().segment_bytes_max(64 << 10))
            .expect("reopen");
        let report = journal.recovery_report();
        assert!(report.cuts.is_empty(), "reopen cut {:?}", report.cuts);
        assert_eq!(report.removed_tmp_files, 0);
        assert_holds(&journal, 1, &written, "after reopen");
        assert_eq!(
            journal.append(b"more").unwrap(),
            written.len() as u64 + 1,
            "appends continue after reopen"
        );
    });
}

#[test]
fn batched_and_buffered_modes_report_disk_full_too() {
    for mode in [
        PersistMode::Buffered,
        PersistMode::Batched {
            interval: std::time::Duration::from_millis(5),
        },
    ] {
        with_timeout(60, move || {
            let dir = tempfile::tempdir().unwrap();
            let jdir = dir.path().join("j");
            let plan = Arc::new(FaultPlan::new());
            let opts = JournalOptions::new()
                .persist_mode(mode)
                .segment_bytes_max(64 << 10)
                .fault_injector(plan.clone());
            let journal = Journal::open(&jdir, opts).unwrap();
            plan.fail(IoOp::Allocate, 0, None, ENOSPC);
            let mut written = Vec::new();
            let err = loop {
                let p = payload(1, written.len() as u32, 2, 700);
                match journal.append(&p) {
                    Ok(_) => written.push(p),
                    Err(e) => break e,
                }
                assert!(
                    written.len() < 1000,
                    "{mode:?}: the segment never filled up"
                );
            };
            assert!(
                matches!(err, Error::Journal(JournalError::DiskFull { .. })),
                "{mode:?}: {err:?}"
            );
            assert_eq!(journal.state().poisoned, None, "{mode:?}: poisoned");
            // The rotation synced the full segment before failing: everything is visible.
            assert_holds(&journal, 1, &written, &format!("{mode:?} while full"));
            plan.clear();
            let p = payload(1, written.len() as u32, 2, 700);
            assert_eq!(journal.append(&p).unwrap(), written.len() as u64 + 1);
            written.push(p);
            journal.sync().unwrap();
            assert_holds(&journal, 1, &written, &format!("{mode:?} after clearing"));
        });
    }
}

/// `JournalError::DiskFull` promises "nothing was lost: the journal is unchanged" and tells the caller
/// to free space and retry. A batch whose later record needs a rotation that fails must then
/// not have appended its first records: a retry would store them twice.
#[test]
fn batch_refused_with_disk_full_leaves_the_journal_unchanged() {
    with_timeout(60, || {
        let (_dir, _jdir, plan, journal) = journal_with_faults();
        let first = payload(5, 0, 4, 1000);
        assert_eq!(journal.append(&first).unwrap(), 1);
        plan.fail(IoOp::Allocate, 0, None, ENOSPC);

        // A batch larger than a whole segment is refused before anything is written.
        let max = journal.options().payload_bytes_limit();
        let too_big = [payload(5, 1, 4, 100), payload(5, 3, 4, max)];
        assert!(
            matches!(
                journal.append_batch(&too_big),
                Err(Error::Journal(JournalError::BatchTooLarge { .. }))
            ),
            "a batch that no segment can hold must be refused up front"
        );
        assert_eq!(journal.state().next_lsn, 2);

        // Two small records that would fit in the active segment, then one that does not:
        // the batch needs a new segment, which the full disk refuses.
        let batch = [
            payload(5, 1, 4, 100),
            payload(5, 2, 4, 100),
            payload(5, 3, 4, max - 2 * 160),
        ];
        let err = assert_disk_full(journal.append_batch(&batch), "batch needing a rotation");
        let state = journal.state();
        assert_eq!(state.poisoned, None);
        assert_eq!(
            state.next_lsn, 2,
            "append_batch returned {err:?} (\"the journal is unchanged\") but appended part of \
             the batch"
        );
        assert_holds(
            &journal,
            1,
            std::slice::from_ref(&first),
            "after the refused batch",
        );

        // Retrying after freeing space stores every record exactly once.
        plan.clear();
        let range = journal.append_batch(&batch).expect("retry");
        assert_eq!(range, 2..5);
        assert_holds(
            &journal,
            1,
            &[first, batch[0].clone(), batch[1].clone(), batch[2].clone()],
            "after the retry",
        );
    });
}

#[test]
fn real_full_tmpfs_gives_disk_full_not_sigbus() {
    let dir = tempfile::tempdir().unwrap();
    let mount = match TmpfsMount::mount(dir.path(), "1m") {
        Ok(m) => m,
        Err(why) => {
            skip_or_fail("disk_full real tmpfs", &why);
            return;
        }
    };
    let mount_path = mount.path.clone();
    let result = std::panic::catch_unwind(move || {
        with_timeout(60, move || real_tmpfs_scenario(&mount_path.join("j")))
    });
    drop(mount);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn real_tmpfs_scenario(jdir: &Path) {
    let opts = || {
        JournalOptions::new()
            .persist_mode(PersistMode::Sync)
            .segment_bytes_max(256 << 10)
            .retain_acked_ms(0)
    };
    let mut written: Vec<Vec<u8>> = Vec::new();
    {
        let journal = Journal::open(jdir, opts()).unwrap();
        let err = loop {
            let p = payload(2, written.len() as u32, 3, 4000);
            match journal.append(&p) {
                Ok(lsn) => {
                    assert_eq!(lsn, written.len() as u64 + 1);
                    written.push(p);
                }
                Err(e) => break e,
            }
            assert!(written.len() < 2000, "1 MiB tmpfs never filled up");
        };
        assert!(
            matches!(err, Error::Journal(JournalError::DiskFull { .. })),
            "a full tmpfs at rotation must give DiskFull, got {err:?}"
        );
        assert!(
            written.len() >= 64,
            "not even one segment fit: {}",
            written.len()
        );
        assert_disk_full(
            journal.append(&payload(2, 9999, 3, 4000)),
            "retry while full",
        );
        let state = journal.state();
        assert_eq!(state.poisoned, None);
        assert_eq!(state.next_lsn, written.len() as u64 + 1);
        assert!(
            tmp_files(jdir).is_empty(),
            "left over: {:?}",
            tmp_files(jdir)
        );
        assert_holds(&journal, 1, &written, "tmpfs full");
        journal.close().expect("close on a full file system");
    }

    // Reopen on the still-full file system: clean, everything there, still full.
    let journal = Journal::open(jdir, opts()).expect("reopen on a full file system");
    let report = journal.recovery_report();
    assert!(report.cuts.is_empty(), "reopen cut {:?}", report.cuts);
    assert_holds(&journal, 1, &written, "tmpfs reopened");
    assert_disk_full(
        journal.append(&payload(2, 9999, 3, 4000)),
        "append after reopen, still full",
    );

    // Acknowledging everything retires the sealed segments, which frees space: appends go on.
    let last = written.len() as u64;
    let segments_before = segment_files(jdir).len();
    journal.ack(last).unwrap();
    assert!(
        segment_files(jdir).len() < segments_before,
        "ack removed no segment"
    );
    let p = payload(2, written.len() as u32, 3, 4000);
    assert_eq!(
        journal
            .append(&p)
            .expect("append once retention freed space"),
        last + 1
    );
    assert_eq!(journal.read(last + 1).unwrap().unwrap().payload, p);
    journal.close().unwrap();

    let journal = Journal::open(jdir, opts()).unwrap();
    assert!(journal.recovery_report().cuts.is_empty());
    let state = journal.state();
    assert_eq!(state.acked_lsn, last);
    assert_eq!(state.next_lsn, last + 2);
    let records = read_all_from_first(&journal);
    assert_eq!(records.last().map(|r| r.lsn), Some(last + 1));
}

fn read_all_from_first(journal: &Journal) -> Vec<syncjournal::Record> {
    let first = journal.state().first_lsn;
    let records = read_from(journal, first);
    assert_contiguous(&records, first);
    records
}
