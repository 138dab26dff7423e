//! Many threads appending at once, in every persist mode, with segment rotation happening
//! under them: LSNs are unique and contiguous, every payload is stored exactly once under the
//! LSN its appender was given, each thread's records keep its order, and all of it survives a
//! reopen.

use std::sync::Arc;
use std::time::Duration;

use crate::support::journal::{parse_payload, payload, read_all, segment_files, varied_len};
use crate::support::process::with_timeout;
use crate::support::rng::Rng;
use syncjournal::{Journal, JournalOptions, KIND_DATA, Lsn, PersistMode};

const THREADS: u32 = 8;
const SEGMENT_BYTES: u64 = 64 << 10;
/// Payload lengths vary between 16 and 16 + SPREAD bytes.
const SPREAD: usize = 400;

/// How a thread appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// `append`, one record at a time.
    Single,
    /// `write` then `wait_durable`.
    WriteThenWait,
    /// `append_batch` of 1 to 8 records.
    Batch,
}

fn opts(mode: PersistMode) -> JournalOptions {
    JournalOptions::new()
        .persist_mode(mode)
        .segment_bytes_max(SEGMENT_BYTES)
}

/// Runs `THREADS` appenders, `per_thread` records each, and returns for each thread the LSN
/// it was given for each of its sequence numbers.
fn run_appenders(
    journal: &Arc<Journal>,
    mode: PersistMode,
    tag: u64,
    per_thread: u32,
    style_of: fn(u32) -> Style,
) -> Vec<Vec<Lsn>> {
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let journal = Arc::clone(journal);
            std::thread::spawn(move || {
                let style = style_of(t);
                let mut rng = Rng::new(u64::from(t) * 7919 + tag);
                let mut lsns = Vec::with_capacity(per_thread as usize);
                let mut seq = 0u32;
                while seq < per_thread {
                    match style {
                        Style::Single => {
                            let p = payload(t, seq, tag, varied_len(t, seq, SPREAD));
                            let lsn = journal.append(&p).expect("append");
                            if mode == PersistMode::Sync {
                                assert!(
                                    journal.state().durable_lsn >= lsn,
                                    "a Sync append of LSN {lsn} returned before it was durable"
                                );
                            }
                            if mode == PersistMode::Sync && seq.is_multiple_of(16) {
                                // Sync mode: durable, hence visible, once append returned.
                                let r = journal.read(lsn).expect("read").unwrap_or_else(|| {
                                    panic!("LSN {lsn} not readable after a Sync append returned")
                                });
                                assert_eq!(r.payload, p, "LSN {lsn} read back differs");
                            }
                            lsns.push(lsn);
                            seq += 1;
                        }
                        Style::WriteThenWait => {
                            let p = payload(t, seq, tag, varied_len(t, seq, SPREAD));
                            let lsn = journal.write(KIND_DATA, &p).expect("write");
                            journal.wait_durable(lsn).expect("wait_durable");
                            assert!(
                                journal.state().durable_lsn >= lsn,
                                "wait_durable({lsn}) returned before the LSN was durable"
                            );
                            lsns.push(lsn);
                            seq += 1;
                        }
                        Style::Batch => {
                            let n = (rng.range(1, 9) as u32).min(per_thread - seq);
                            let batch: Vec<Vec<u8>> = (seq..seq + n)
                                .map(|s| payload(t, s, tag, varied_len(t, s, SPREAD)))
                                .collect();
                            let range = journal.append_batch(&batch).expect("append_batch");
                            assert_eq!(
                                range.end - range.start,
                                u64::from(n),
                                "append_batch of {n} records returned LSNs {range:?}"
                            );
                            lsns.extend(range);
                            seq += n;
                        }
                    }
                }
                lsns
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("appender thread panicked"))
        .collect()
}

/// Checks the LSNs the appenders got, then the journal's content against them.
fn verify(journal: &Journal, tag: u64, lsns: &[Vec<Lsn>], what: &str) {
    let total: u64 = lsns.iter().map(|v| v.len() as u64).sum();

    // Unique and contiguous 1..=N over all threads.
    let mut all: Vec<Lsn> = lsns.iter().flatten().copied().collect();
    all.sort_unstable();
    let expected: Vec<Lsn> = (1..=total).collect();
    if all != expected {
        let dup = all.windows(2).find(|w| w[0] == w[1]);
        panic!(
            "{what}: LSNs given to appenders are not exactly 1..={total} (first duplicate: {dup:?}, \
             min {:?}, max {:?}, count {})",
            all.first(),
            all.last(),
            all.len()
        );
    }
    // Each thread's LSNs follow its own order.
    for (t, v) in lsns.iter().enumerate() {
        if let Some(w) = v.windows(2).find(|w| w[0] >= w[1]) {
            panic!("{what}: thread {t} got LSN {} after LSN {}", w[1], w[0]);
        }
    }

    let state = journal.state();
    assert_eq!(state.next_lsn, total + 1, "{what}: next_lsn");
    assert_eq!(state.durable_lsn, total, "{what}: durable_lsn");
    assert_eq!(state.poisoned, None, "{what}: poisoned");

    // Every payload present exactly once, under the LSN its appender was given.
    let records = read_all(journal);
    assert_eq!(
        records.len() as u64,
        total,
        "{what}: number of records read back"
    );
    let mut seen = vec![vec![false; lsns[0].len().max(1)]; lsns.len()];
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.lsn, i as u64 + 1, "{what}: records are not contiguous");
        assert_eq!(r.kind, KIND_DATA, "{what}: LSN {} kind", r.lsn);
        let (t, seq, rtag) = parse_payload(r.lsn, &r.payload);
        assert_eq!(
            rtag, tag,
            "{what}: LSN {} holds a payload of another run",
            r.lsn
        );
        let (t, seq) = (t as usize, seq as usize);
        assert!(
            t < lsns.len() && seq < lsns[t].len(),
            "{what}: LSN {} holds unknown payload ({t}, {seq})",
            r.lsn
        );
        assert!(
            !seen[t][seq],
            "{what}: payload ({t}, {seq}) stored twice (again at LSN {})",
            r.lsn
        );
        seen[t][seq] = true;
        assert_eq!(
            lsns[t][seq], r.lsn,
            "{what}: payload ({t}, {seq}) is at LSN {} but its appender was given LSN {}",
            r.lsn, lsns[t][seq]
        );
    }
}

fn scenario(mode: PersistMode, tag: u64, per_thread: u32, style_of: fn(u32) -> Style) {
    with_timeout(120, move || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let journal = Arc::new(Journal::open(&jdir, opts(mode)).unwrap());
        let lsns = run_appenders(&journal, mode, tag, per_thread, style_of);
        if mode != PersistMode::Sync {
            journal.sync().expect("final sync");
        }
        verify(&journal, tag, &lsns, &format!("{mode:?} before reopen"));
        let segments = segment_files(&jdir).len();
        assert!(
            segments >= 3,
            "expected several rotations during the concurrent appends, got {segments} segments"
        );
        let journal = Arc::into_inner(journal).expect("no other handle");
        journal.close().expect("close");

        let journal = Journal::open(&jdir, opts(mode)).unwrap();
        let report = journal.recovery_report();
        assert!(
            report.cuts.is_empty(),
            "clean close, yet recovery cut something: {:?}",
            report.cuts
        );
        assert_eq!(report.segments, segments, "segments after reopen");
        verify(&journal, tag, &lsns, &format!("{mode:?} after reopen"));
    });
}

fn all_single(_: u32) -> Style {
    Style::Single
}

fn mixed(t: u32) -> Style {
    match t % 4 {
        0 | 2 => Style::Batch,
        1 => Style::Single,
        _ => Style::WriteThenWait,
    }
}

fn all_batches(_: u32) -> Style {
    Style::Batch
}

#[test]
fn sync_mode_eight_threads() {
    scenario(PersistMode::Sync, 1, 600, all_single);
}

#[test]
fn sync_mode_mixed_single_write_and_batches() {
    scenario(PersistMode::Sync, 2, 600, mixed);
}

#[test]
fn batched_mode_eight_threads() {
    scenario(
        PersistMode::Batched {
            interval: Duration::from_millis(2),
        },
        3,
        3000,
        mixed,
    );
}

#[test]
fn buffered_mode_eight_threads_then_sync() {
    scenario(PersistMode::Buffered, 4, 3000, all_single);
}

#[test]
fn buffered_mode_batches_from_all_threads() {
    scenario(PersistMode::Buffered, 5, 3000, all_batches);
}
