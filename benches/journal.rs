//! Criterion benchmarks of syncjournal's hot paths.
//!
//! * `append/<mode>/<payload>B/<threads>t`: `Journal::append` per `PersistMode` (Sync,
//!   Batched every 5 ms, Buffered), payloads of 128 B and 1 KiB, from 1 thread and from 8
//!   threads appending concurrently. Time is per record (for 8 threads: wall time of the whole
//!   concurrent run divided by the records appended by all threads).
//! * `append_batch/sync/1000x128B`: one `append_batch` of 1000 records of 128 B, durable.
//! * `recovery/open_256MiB_128B`: `Journal::open` of a prepared ~256 MiB journal of 128-byte
//!   records (open verifies every record), page cache warm. Throughput in frame bytes.
//! * `reader/sequential_256MiB_128B`: `reader(1)` + `next_ref` over the same journal.
//!
//! Journals live in a temporary directory under `/tmp` (or `$SYNCJOURNAL_BENCH_DIR`), which
//! must be a real disk: on tmpfs an msync is free and the durable figures mean nothing.
//!
//! Each append benchmark uses one journal for all its samples, so it runs deep into its 64 MiB
//! segments (and, for the fast modes, through rotations): the durable figures include the cost
//! of syncing there, which grows with the offset when the kernel builds large page-cache folios
//! under the map (an msync then writes the whole folio). `benches/compare.rs` compares against
//! raw references measured the same way in the same run.
//!
//! Outside the timed regions, every sample acknowledges what is durable so that sealed segments
//! are retired and a long run does not fill the disk. In Buffered mode nothing is synced
//! explicitly: only rotations (timed, they are part of the append cost) make records durable.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use syncjournal::{Journal, JournalOptions, PersistMode};
use tempfile::TempDir;

/// Segment size of the benchmark journals (the default).
const SEGMENT_BYTES: u64 = 64 << 20;
/// Size of the journal the recovery and reader benchmarks read.
const SCAN_SEGMENTS: usize = 4;

fn bench_root() -> PathBuf {
    std::env::var_os("SYNCJOURNAL_BENCH_DIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

fn tempdir() -> TempDir {
    let root = bench_root();
    std::fs::create_dir_all(&root).expect("create bench root");
    warn_if_in_memory(&root);
    tempfile::Builder::new()
        .prefix("syncjournal-bench-")
        .tempdir_in(root)
        .expect("tempdir")
}

/// Durable figures are meaningless on tmpfs/ramfs (msync is free there): say so, once.
fn warn_if_in_memory(dir: &Path) {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(st) = rustix::fs::statfs(dir) {
            #[allow(clippy::unnecessary_cast)]
            let kind = st.f_type as i64;
            if kind == TMPFS_MAGIC || kind == RAMFS_MAGIC {
                eprintln!(
                    "WARNING: {} is in memory (tmpfs/ramfs): durable figures are meaningless; \
                     set SYNCJOURNAL_BENCH_DIR to a directory on a disk",
                    dir.display()
                );
            }
        }
    });
}

/// A payload of `len` bytes whose content differs per salt; `stamp` makes it differ per record.
fn payload(len: usize, salt: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ salt;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn stamp(p: &mut [u8], n: u64) {
    p[..8].copy_from_slice(&n.to_le_bytes());
}

fn open(dir: &Path, mode: PersistMode) -> Journal {
    Journal::open(
        dir,
        JournalOptions::new()
            .persist_mode(mode)
            .segment_bytes_max(SEGMENT_BYTES),
    )
    .expect("open journal")
}

/// Untimed: acknowledges everything durable, which retires sealed segments (disk space).
fn retire(j: &Journal) {
    let s = j.state();
    if s.durable_lsn > s.acked_lsn {
        j.ack(s.durable_lsn).expect("ack");
    }
}

/// `iters` appends from the calling thread; returns their total time.
fn append_1t(j: &Journal, p: &mut [u8], next: &mut u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        stamp(p, *next);
        *next += 1;
        black_box(j.append(p).expect("append"));
    }
    start.elapsed()
}

/// `iters` appends spread over `threads` threads appending concurrently; returns the wall time
/// from the moment all threads are released (thread start-up is not timed) until the last one
/// finishes.
fn append_mt(j: &Journal, threads: usize, len: usize, iters: u64) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| {
                let n = iters / threads as u64 + u64::from(t < iters % threads as u64);
                let (j, barrier) = (j, &barrier);
                s.spawn(move || {
                    let mut p = payload(len, t);
                    barrier.wait();
                    for i in 0..n {
                        stamp(&mut p, i);
                        black_box(j.append(&p).expect("append"));
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("appender thread");
        }
        start.elapsed()
    })
}

fn bench_append(c: &mut Criterion) {
    let modes = [
        ("sync", PersistMode::Sync),
        (
            "batched5ms",
            PersistMode::Batched {
                interval: Duration::from_millis(5),
            },
        ),
        ("buffered", PersistMode::Buffered),
    ];
    let mut g = c.benchmark_group("append");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(15)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    for (name, mode) in modes {
        for len in [128usize, 1024] {
            for threads in [1usize, 8] {
                let dir = tempdir();
                let j = open(dir.path(), mode);
                let id = BenchmarkId::new(name, format!("{len}B/{threads}t"));
                g.bench_function(id, |b| {
                    let mut p = payload(len, 0);
                    let mut next = 0u64;
                    b.iter_custom(|iters| {
                        let t = if threads == 1 {
                            append_1t(&j, &mut p, &mut next, iters)
                        } else {
                            append_mt(&j, threads, len, iters)
                        };
                        retire(&j);
                        t
                    });
                });
                drop(j);
            }
        }
    }
    g.finish();
}

fn bench_append_batch(c: &mut Criterion) {
    const BATCH: u64 = 1000;
    let mut g = c.benchmark_group("append_batch");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(15)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(BATCH));
    let dir = tempdir();
    let j = open(dir.path(), PersistMode::Sync);
    let mut batch: Vec<Vec<u8>> = (0..BATCH).map(|i| payload(128, i)).collect();
    let mut next = 0u64;
    g.bench_function("sync/1000x128B", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Untimed: make every payload differ from the previous batch's.
                for p in &mut batch {
                    stamp(p, next);
                    next += 1;
                }
                let start = Instant::now();
                black_box(j.append_batch(&batch).expect("append_batch"));
                total += start.elapsed();
            }
            retire(&j);
            total
        });
    });
    g.finish();
}

/// Writes `SCAN_SEGMENTS` full segments of 128-byte records and closes the journal (synced).
/// Returns the frame bytes written.
fn prepare_scan_journal(dir: &Path) -> u64 {
    let per_segment = (SEGMENT_BYTES - 4096) / (32 + 128);
    let records = SCAN_SEGMENTS as u64 * per_segment;
    let j = open(dir, PersistMode::Buffered);
    let base = payload(128, 7);
    let mut n = 0;
    while n < records {
        // Batches never straddle a segment boundary (a batch goes into one segment), so every
        // segment is filled to its last frame.
        let end = (n + 4096).min((n / per_segment + 1) * per_segment);
        j.append_batch((n..end).map(|i| {
            let mut p = base.clone();
            stamp(&mut p, i);
            p
        }))
        .expect("append_batch");
        n = end;
    }
    j.close().expect("close");
    // Warm-up open: the page cache now holds every segment, and first-open effects are gone.
    let j = Journal::open(dir, JournalOptions::new()).expect("reopen");
    let bytes = j.recovery_report().bytes;
    assert_eq!(j.recovery_report().records, records);
    assert_eq!(
        j.recovery_report().segments,
        SCAN_SEGMENTS,
        "full segments only"
    );
    bytes
}

fn bench_scan(c: &mut Criterion) {
    let dir = tempdir();
    let bytes = prepare_scan_journal(dir.path());

    // Recovery: the time of `Journal::open` alone (the close after it is not timed).
    let mut g = c.benchmark_group("recovery");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(bytes));
    g.bench_function("open_256MiB_128B", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let j = Journal::open(dir.path(), JournalOptions::new()).expect("open");
                total += start.elapsed();
                assert_eq!(j.recovery_report().bytes, bytes);
                drop(j);
            }
            total
        });
    });
    g.finish();

    // Reader: every record from LSN 1, borrowed, from a journal kept open.
    let j = Journal::open(dir.path(), JournalOptions::new()).expect("open");
    let records = j.recovery_report().records;
    let mut g = c.benchmark_group("reader");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(bytes));
    g.bench_function("sequential_256MiB_128B", |b| {
        b.iter(|| {
            let mut r = j.reader(1).expect("reader");
            let (mut n, mut sum) = (0u64, 0usize);
            while let Some(rec) = r.next_ref().expect("next_ref") {
                n += 1;
                sum += rec.payload.len();
            }
            assert_eq!(n, records);
            black_box(sum)
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().nresamples(10_000);
    targets = bench_append, bench_append_batch, bench_scan
}
criterion_main!(benches);
