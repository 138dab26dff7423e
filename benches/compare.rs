//! One-run comparison of syncjournal against the machine's raw limits and the naive
//! approaches it replaces, with every project target checked as a SAME-RUN ratio.
//!
//! The references follow `../shared/baseline/README.md` (cases A1, A3, B, C). The machine drifts 10–20% between runs (and the shared disk's flush
//! latency from one second to the next), so both sides of every claim are measured in the same
//! repetition ("rep"), interleaved, and a claim's ratio is the MEDIAN of the per-rep (paired)
//! ratios. Rates are medians over reps, printed with `[min..max]`.
//!
//! Groups (each case name can be given to `--only`, as can a group name or a name prefix):
//!
//! * `durable` — every case that waits for the disk, run in slices of ~0.1 s in rotating order
//!   inside each rep (fresh files every rep), so disk latency swings hit every side alike:
//!   raw `fdatasync` of 4 KiB (append / overwrite), raw mmap + CRC with `msync` per record and
//!   per 1000 records (128 B and 1 KiB payloads, 64 MiB `fallocate`d regions rotated like
//!   journal segments, rotation timed on both sides), the outbox (`sync_tracking` row per
//!   mutation, WAL, synchronous FULL / NORMAL, 1 thread; FULL with 8 threads, own connection
//!   each, busy_timeout), okaywal (128 B entry, commit each, 1 and 8 threads), syncjournal
//!   `append` with `PersistMode::Sync` (1 and 8 threads), `append_batch` of 1000 × 128 B, and
//!   `Store::apply` of one ~128 B certificate upsert per change set (1 and 8 threads).
//! * `nosync` — CPU-bound cases: raw mmap + CRC copy loop never synced, cold (first touch of a
//!   freshly `fallocate`d region, as a journal segment always is) and warm (second pass over
//!   mapped pages); syncjournal `Buffered` (1 and 8 threads, one 256 MiB segment: no rotation,
//!   like the raw loop) and `Batched` every 5 ms (1 and 8 threads, default segments).
//! * `replay` — the same upsert change sets into a fresh SQLite target (journal_mode=TRUNCATE,
//!   synchronous=FULL, 10,000 rows preloaded, ids spread over 0..20,000): the `Replayer`
//!   (batches of 1000), a raw loop of the same rows (prepared upsert, 1000 per transaction,
//!   watermark row updated in the same transaction), and a naive replay committing one
//!   entry (plus its watermark) per transaction.
//! * `scan` — `syncjournal::inspect::inspect` and `Journal::open` of a prepared journal of
//!   128 B records, page cache warm, in GB/s of valid frame bytes.
//! * `backlog` — the replay of a large backlog (`--backlog N`, default 5,000,000 change sets)
//!   in a CHILD process (this binary re-executed with a hidden flag); its peak RSS is read
//!   from `/proc/<pid>/status` (`VmHWM`) once it has finished, and compared with a 10×
//!   smaller backlog to show that it is flat. The child reports `VmHWM` after `Journal::open`
//!   and resets it (`/proc/self/clear_refs` = 5), so the open and the replay phases are shown
//!   apart; the claim is on the whole child's peak.
//!
//! The table: one line per case (value = median rate over reps, `[min..max]`, `cpu` = CPU
//! cores the process kept busy, which tells CPU-bound cases from flush-bound ones), then one
//! continuation line per further reference. `ceiling_8t_x_msync_each` is derived: 8 × the raw
//! msync-per-record rate of the same rep, the most any group commit can reach with 8
//! closed-loop threads (at most 8 records per flush). The header prints the machine facts and
//! the source revision built (src/ may hold uncommitted changes).
//!
//! Usage: `cargo bench --bench compare -- [--quick] [--only a,b,c] [--dir PATH] [--backlog N]
//! [--reps N] [--secs S] [--scan-mib M] [--replay-entries N]`. The exit code is 0 whatever
//! the outcome: this is a measurement, not a test.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use memmap2::{MmapMut, MmapOptions};
use okaywal::{LogVoid, WriteAheadLog};
use rusqlite::Connection;
use rustix::fs::FallocateFlags;
use syncjournal::event::{KIND_CHANGESET, decode_event, encode_event};
use syncjournal::mutation::{Mutation, Value};
use syncjournal::{
    ChangeSet, Journal, JournalOptions, PersistMode, ReplayOptions, Replayer, Store, StoreOptions,
    TargetOptions,
};

/// Payload of the 128-byte cases.
const P128: usize = 128;
/// Payload of the 1 KiB cases.
const P1K: usize = 1024;
/// Thread count of the concurrent cases.
const THREADS: usize = 8;
/// Length of one durable slice.
const SLICE: Duration = Duration::from_millis(100);
/// Raw durable regions: the journal's default segment size, so both rotate alike.
const REGION_DURABLE: usize = 64 << 20;
/// Raw no-sync region, and the buffered journal's one segment (as the baseline's A3).
const REGION_NOSYNC: usize = 256 << 20;
/// Journal segments start their first frame at this offset; a frame is a 32-byte header plus
/// the payload rounded up to 8.
const SEGMENT_DATA_OFFSET: usize = 4096;
const FRAME_128: usize = 32 + P128;
/// Journal segment size of the scan journal.
const SEGMENT_64M: usize = 64 << 20;
/// Certificates: rows preloaded into each target, and the id range upserts spread over.
const PRELOADED_ROWS: u64 = 10_000;
const CERT_IDS: u64 = 20_000;
/// Body bytes of a certificate row (name ~17 B + body = ~128 B of row data).
const CERT_BODY: usize = 111;
/// The target schema (the baseline's C case).
const CERT_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS certificates (id INTEGER PRIMARY KEY, name TEXT, body BLOB);";
/// Replay batch size (the replayer's default, and the raw loop's).
const REPLAY_BATCH: usize = 1000;
/// Interval of the Batched persist mode.
const BATCHED_INTERVAL: Duration = Duration::from_millis(5);
/// Hidden flag: run as the backlog replay child.
const CHILD_FLAG: &str = "--backlog-child";

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

struct Config {
    reps: usize,
    secs: f64,
    scan_mib: usize,
    replay_entries: u64,
    backlog: u64,
    dir: PathBuf,
    only: Vec<String>,
    quick: bool,
}

impl Config {
    fn from_args(args: &[String]) -> Config {
        let mut c = Config {
            reps: 5,
            secs: 1.0,
            scan_mib: 512,
            replay_entries: 100_000,
            backlog: 5_000_000,
            dir: std::env::var_os("SYNCJOURNAL_BENCH_DIR")
                .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from),
            only: Vec::new(),
            quick: false,
        };
        let (mut reps, mut secs, mut scan, mut replay, mut backlog) =
            (None, None, None, None, None);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .unwrap_or_else(|| panic!("{name} needs a value"))
            };
            match a.as_str() {
                "--quick" => c.quick = true,
                "--reps" => reps = Some(value("--reps").parse().expect("--reps N")),
                "--secs" => secs = Some(value("--secs").parse().expect("--secs S")),
                "--scan-mib" => scan = Some(value("--scan-mib").parse().expect("--scan-mib M")),
                "--replay-entries" => {
                    replay = Some(
                        value("--replay-entries")
                            .parse()
                            .expect("--replay-entries N"),
                    )
                }
                "--backlog" => backlog = Some(value("--backlog").parse().expect("--backlog N")),
                "--dir" => c.dir = PathBuf::from(value("--dir")),
                "--only" => c.only.extend(
                    value("--only")
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                ),
                // `cargo bench` passes `--bench` to harness=false binaries.
                "--bench" => {}
                "-h" | "--help" => {
                    println!(
                        "compare [--quick] [--only a,b,c] [--dir PATH] [--backlog N] [--reps N]\n\
                         [--secs S] [--scan-mib M] [--replay-entries N]\n\
                         groups: durable, nosync, replay, scan, backlog (or case names/prefixes)\n\
                         (env SYNCJOURNAL_BENCH_DIR also sets the directory; default /tmp)"
                    );
                    std::process::exit(0);
                }
                other => eprintln!("ignoring unknown argument {other:?}"),
            }
        }
        if c.quick {
            c.reps = 3;
            c.secs = 0.3;
            c.scan_mib = 128;
            c.replay_entries = 20_000;
            c.backlog = 300_000;
        }
        c.reps = reps.unwrap_or(c.reps).max(1);
        c.secs = secs.unwrap_or(c.secs).max(0.05);
        c.scan_mib = scan.unwrap_or(c.scan_mib).max(64);
        c.replay_entries = replay.unwrap_or(c.replay_entries).max(REPLAY_BATCH as u64);
        c.backlog = backlog.unwrap_or(c.backlog).max(10_000);
        c
    }

    fn wants(&self, group: &str, case: &str) -> bool {
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|t| t == group || t == case || case.starts_with(t.as_str()))
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Records counted and the time they took.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    records: u64,
    time: Duration,
    /// CPU seconds the whole process used meanwhile (all threads).
    cpu: f64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.records += other.records;
        self.time += other.time;
        self.cpu += other.cpu;
    }

    fn rate(&self) -> f64 {
        self.records as f64 / self.time.as_secs_f64().max(1e-9)
    }

    /// CPU cores busy on average (process-wide).
    fn cores(&self) -> f64 {
        self.cpu / self.time.as_secs_f64().max(1e-9)
    }
}

/// CPU time of this process so far (user + system, every thread, exited ones included), from
/// `/proc/self/stat` (clock ticks of 10 ms: good to a few % over a measurement).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// Wall clock and process CPU time from one moment.
struct Clock {
    start: Instant,
    cpu: f64,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            cpu: cpu_secs(),
            start: Instant::now(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn tally(&self, records: u64) -> Tally {
        Tally {
            records,
            time: self.start.elapsed(),
            cpu: cpu_secs() - self.cpu,
        }
    }
}

/// A payload of `N` pseudo-random bytes; `stamp` makes it differ per record.
fn base_payload<const N: usize>(salt: u64) -> [u8; N] {
    let mut p = [0u8; N];
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ salt;
    for b in p.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    p
}

fn stamp(p: &mut [u8], n: u64) {
    p[..8].copy_from_slice(&n.to_le_bytes());
}

/// splitmix64.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A file of `len` bytes reserved with `fallocate`, fsynced, and mapped shared read-write:
/// what a journal segment is before its first record.
fn prealloc_map(path: &Path, len: usize) -> (File, MmapMut) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .expect("create raw region");
    rustix::fs::fallocate(&file, FallocateFlags::empty(), 0, len as u64).expect("fallocate");
    file.sync_all().expect("fsync raw region");
    // SAFETY: the file was just created by this process in a private temporary directory;
    // nothing else truncates or writes it while mapped.
    let map = unsafe { MmapOptions::new().len(len).map_mut(&file) }.expect("mmap raw region");
    (file, map)
}

/// Writes one raw record `u32 len | u32 crc32 | payload` at `off`.
#[inline(always)]
fn put_raw_record<const N: usize>(map: &mut [u8], off: usize, payload: &[u8; N]) {
    let crc = crc32fast::hash(payload);
    let rec = &mut map[off..off + 8 + N];
    rec[..4].copy_from_slice(&(N as u32).to_le_bytes());
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
    rec[8..].copy_from_slice(payload);
}

/// Removes files and flushes the machine's dirty pages, outside the timed regions, so that one
/// measurement's writeback does not slow the next.
fn settle(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
    rustix::fs::sync();
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Runs `f(thread, start)` on `threads` threads released together (on the calling thread if
/// there is one), each returning its record count; timed from the release to the last end.
fn run_threads(threads: usize, f: impl Fn(usize, Instant) -> u64 + Sync) -> Tally {
    if threads == 1 {
        let clock = Clock::start();
        let records = f(0, clock.start);
        return clock.tally(records);
    }
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(t, Instant::now())
                })
            })
            .collect();
        barrier.wait();
        let clock = Clock::start();
        let records = handles.into_iter().map(|h| h.join().unwrap()).sum();
        clock.tally(records)
    })
}

/// Calls `op(n)` for n = 0, 1, … until `d` has passed since `start` (at least once); returns
/// how many calls were made. The per-thread loop of the closed-loop cases.
fn repeat_for(start: Instant, d: Duration, mut op: impl FnMut(u64)) -> u64 {
    let mut n = 0u64;
    loop {
        op(n);
        n += 1;
        if start.elapsed() >= d {
            return n;
        }
    }
}

fn open_journal(dir: &Path, mode: PersistMode, segment: usize) -> Journal {
    Journal::open(
        dir,
        JournalOptions::new()
            .persist_mode(mode)
            .segment_bytes_max(segment as u64),
    )
    .expect("open journal")
}

// ---------------------------------------------------------------------------------------------
// Certificates: the rows of the store, replay and backlog cases
// ---------------------------------------------------------------------------------------------

/// Row `i` of the certificate stream: an id spread over 0..CERT_IDS, a name and a body.
fn cert_row(i: u64) -> (i64, String, Vec<u8>) {
    let id = mix(i) % CERT_IDS;
    let name = format!("cert-{id:05}-{:06x}", i & 0xff_ffff);
    let mut x = mix(i ^ 0x5555_5555) | 1;
    let body = (0..CERT_BODY)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    (id as i64, name, body)
}

/// Row `i` as a change set of one upsert.
fn cert_changeset(i: u64) -> ChangeSet {
    let (id, name, body) = cert_row(i);
    ChangeSet::new().upsert(
        "certificates",
        [("id", Value::Integer(id))],
        [("name", Value::Text(name)), ("body", Value::Blob(body))],
    )
}

/// Encoded store payload of row `i`.
fn cert_payload(i: u64) -> Vec<u8> {
    encode_event(1_700_000_000_000 + i, &cert_changeset(i)).expect("encode")
}

/// A fresh target database: the certificates table with `PRELOADED_ROWS` rows (even ids),
/// and a watermark table for the raw and naive loops (the replayer creates its own tables).
fn make_target(path: &Path) {
    let c = Connection::open(path).expect("create target");
    let _: String = c
        .query_row("PRAGMA journal_mode=TRUNCATE", [], |r| r.get(0))
        .expect("journal_mode");
    c.execute_batch(CERT_SCHEMA).expect("schema");
    c.execute_batch(
        "CREATE TABLE replay_watermark (journal_id TEXT PRIMARY KEY, lsn INTEGER NOT NULL);
         INSERT INTO replay_watermark VALUES ('bench', 0);",
    )
    .expect("watermark table");
    c.execute_batch("BEGIN").unwrap();
    {
        let mut s = c
            .prepare("INSERT INTO certificates (id, name, body) VALUES (?1, ?2, ?3)")
            .unwrap();
        for k in 0..PRELOADED_ROWS {
            let (_, name, body) = cert_row(k + (1 << 40));
            s.execute((k as i64 * 2, name, body)).unwrap();
        }
    }
    c.execute_batch("COMMIT").unwrap();
}

/// A target connection as the replayer opens one: TRUNCATE, synchronous=FULL.
fn open_target(path: &Path) -> Connection {
    let c = Connection::open(path).expect("open target");
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let _: String = c
        .query_row("PRAGMA journal_mode=TRUNCATE", [], |r| r.get(0))
        .expect("journal_mode");
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c
}

// ---------------------------------------------------------------------------------------------
// Durable cases (group `durable`)
// ---------------------------------------------------------------------------------------------

/// One measured side of the durable group: runs one slice at a time.
trait Case {
    fn run(&mut self, d: Duration) -> Tally;
}

/// Raw A1: pwrite of 4 KiB + fdatasync, appending (each sync also commits the new size) or
/// overwriting a pre-zeroed, fsynced file.
struct Fdatasync {
    file: File,
    overwrite: bool,
    n: u64,
    buf: [u8; 4096],
}

const OVERWRITE_FILE: u64 = 64 << 20;

impl Fdatasync {
    fn new(dir: &Path, overwrite: bool) -> Self {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join(if overwrite { "a1-over" } else { "a1-append" }))
            .expect("create fdatasync file");
        if overwrite {
            // Zeros in 4 KiB pieces (no large page-cache folios), then fsync.
            let z = [0u8; 4096];
            for k in 0..OVERWRITE_FILE / 4096 {
                file.write_all_at(&z, k * 4096).unwrap();
            }
            file.sync_all().unwrap();
        }
        Fdatasync {
            file,
            overwrite,
            n: 0,
            buf: base_payload::<4096>(11),
        }
    }
}

impl Case for Fdatasync {
    fn run(&mut self, d: Duration) -> Tally {
        let start = Clock::start();
        let first = self.n;
        loop {
            stamp(&mut self.buf, self.n);
            let off = if self.overwrite {
                (self.n * 4096) % OVERWRITE_FILE
            } else {
                self.n * 4096
            };
            self.file.write_all_at(&self.buf, off).expect("pwrite");
            self.file.sync_data().expect("fdatasync");
            self.n += 1;
            if start.elapsed() >= d {
                break;
            }
        }
        start.tally(self.n - first)
    }
}

/// 64 MiB `fallocate`d regions, rotated (timed) like journal segments when full.
struct Region {
    dir: PathBuf,
    tag: &'static str,
    seq: u32,
    map: MmapMut,
    _file: File,
    off: usize,
    synced: usize,
}

impl Region {
    fn new(dir: &Path, tag: &'static str) -> Region {
        let (file, map) = prealloc_map(&dir.join(format!("{tag}-0")), REGION_DURABLE);
        Region {
            dir: dir.to_path_buf(),
            tag,
            seq: 0,
            map,
            _file: file,
            off: 0,
            synced: 0,
        }
    }

    /// msync(MS_SYNC) of the page-aligned range dirtied since the last sync.
    fn sync(&mut self) {
        if self.off > self.synced {
            self.map
                .flush_range(self.synced, self.off - self.synced)
                .expect("msync");
            self.synced = self.off;
        }
    }

    fn rotate(&mut self) {
        self.sync();
        self.seq += 1;
        let (file, map) = prealloc_map(
            &self.dir.join(format!("{}-{}", self.tag, self.seq)),
            REGION_DURABLE,
        );
        self.map = map;
        self._file = file;
        self.off = 0;
        self.synced = 0;
    }
}

/// Raw A3 with sync: records `u32 len | u32 crc | payload` copied into the region, msync of
/// the dirty range after every `every` records.
struct RawMsync<const N: usize> {
    region: Region,
    every: usize,
    n: u64,
    payload: [u8; N],
}

impl<const N: usize> RawMsync<N> {
    fn new(dir: &Path, tag: &'static str, every: usize) -> Self {
        RawMsync {
            region: Region::new(dir, tag),
            every,
            n: 0,
            payload: base_payload::<N>(1),
        }
    }
}

impl<const N: usize> Case for RawMsync<N> {
    fn run(&mut self, d: Duration) -> Tally {
        let start = Clock::start();
        let first = self.n;
        loop {
            for _ in 0..self.every {
                if self.region.off + 8 + N > REGION_DURABLE {
                    self.region.rotate();
                }
                stamp(&mut self.payload, self.n);
                put_raw_record(&mut self.region.map, self.region.off, &self.payload);
                self.region.off += 8 + N;
                self.n += 1;
            }
            self.region.sync();
            if start.elapsed() >= d {
                break;
            }
        }
        start.tally(self.n - first)
    }
}

/// The cost of waking a group: `THREADS` threads meet at a mutex + condvar barrier in a loop
/// and do nothing else, as closed-loop appenders do around each group flush (all wait, one
/// releases them, all run again). Records = barrier passages of all threads.
struct WakeupRounds {
    threads: usize,
}

/// A generation barrier whose last arriver decides, for everyone, whether to stop.
struct StopBarrier {
    state: Mutex<(usize, u64, bool)>,
    cv: std::sync::Condvar,
}

impl StopBarrier {
    fn wait(&self, n: usize, stop_now: impl FnOnce() -> bool) -> bool {
        let mut g = self.state.lock().unwrap();
        g.0 += 1;
        if g.0 == n {
            g.0 = 0;
            g.1 += 1;
            g.2 = stop_now();
            self.cv.notify_all();
            return g.2;
        }
        let generation = g.1;
        while g.1 == generation {
            g = self.cv.wait(g).unwrap();
        }
        g.2
    }
}

impl Case for WakeupRounds {
    fn run(&mut self, d: Duration) -> Tally {
        let b = StopBarrier {
            state: Mutex::new((0, 0, false)),
            cv: std::sync::Condvar::new(),
        };
        let n = self.threads;
        run_threads(n, |_, start| {
            let mut rounds = 0u64;
            loop {
                rounds += 1;
                if b.wait(n, || start.elapsed() >= d) {
                    break;
                }
            }
            rounds
        })
    }
}

/// Case B, the naive outbox: one `sync_tracking` row per mutation, autocommit, WAL.
struct Outbox {
    conns: Vec<Mutex<Connection>>,
    n: AtomicU64,
}

impl Outbox {
    fn new(dir: &Path, full: bool, threads: usize) -> Self {
        let path = dir.join("outbox.db");
        let conns = (0..threads)
            .map(|t| {
                let c = Connection::open(&path).expect("open outbox");
                c.busy_timeout(Duration::from_secs(5)).unwrap();
                if t == 0 {
                    let mode: String = c
                        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                        .unwrap();
                    assert!(
                        mode.eq_ignore_ascii_case("wal"),
                        "outbox not in WAL: {mode}"
                    );
                    c.execute_batch(
                        "CREATE TABLE IF NOT EXISTS sync_tracking (
                             id INTEGER PRIMARY KEY,
                             table_name TEXT NOT NULL,
                             record_id INTEGER NOT NULL,
                             operation TEXT NOT NULL,
                             payload BLOB NOT NULL,
                             ts INTEGER NOT NULL)",
                    )
                    .unwrap();
                }
                c.pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })
                    .unwrap();
                Mutex::new(c)
            })
            .collect();
        Outbox {
            conns,
            n: AtomicU64::new(0),
        }
    }
}

impl Case for Outbox {
    fn run(&mut self, d: Duration) -> Tally {
        let (conns, counter) = (&self.conns, &self.n);
        run_threads(conns.len(), |t, start| {
            let c = conns[t].lock().unwrap();
            let mut stmt = c
                .prepare_cached(
                    "INSERT INTO sync_tracking (table_name, record_id, operation, payload, ts)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .unwrap();
            let mut payload = base_payload::<P128>(200 + t as u64);
            repeat_for(start, d, |_| {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                stamp(&mut payload, i);
                stmt.execute((
                    "certificates",
                    (i % CERT_IDS) as i64,
                    "upsert",
                    &payload[..],
                    i as i64,
                ))
                .expect("outbox insert");
            })
        })
    }
}

/// okaywal: one 128-byte chunk per entry, committed (fsynced, shared among concurrent
/// committers) each time. Default configuration, a no-op checkpointer.
struct Okaywal {
    wal: WriteAheadLog,
    threads: usize,
}

impl Case for Okaywal {
    fn run(&mut self, d: Duration) -> Tally {
        let wal = &self.wal;
        run_threads(self.threads, |t, start| {
            let mut payload = base_payload::<P128>(300 + t as u64);
            repeat_for(start, d, |n| {
                stamp(&mut payload, n);
                let mut e = wal.begin_entry().expect("begin_entry");
                e.write_chunk(&payload).expect("write_chunk");
                e.commit().expect("commit");
            })
        })
    }
}

/// syncjournal `append`, `PersistMode::Sync`.
struct SjAppend {
    j: Journal,
    threads: usize,
}

impl Case for SjAppend {
    fn run(&mut self, d: Duration) -> Tally {
        let j = &self.j;
        run_threads(self.threads, |t, start| {
            let mut payload = base_payload::<P128>(100 + t as u64);
            repeat_for(start, d, |n| {
                stamp(&mut payload, n);
                j.append(&payload).expect("append");
            })
        })
    }
}

/// syncjournal `append_batch` of 1000 × 128 B, `PersistMode::Sync`.
struct SjBatch {
    j: Journal,
    batch: Vec<[u8; P128]>,
    n: u64,
}

impl Case for SjBatch {
    fn run(&mut self, d: Duration) -> Tally {
        let start = Clock::start();
        let first = self.n;
        loop {
            for p in self.batch.iter_mut() {
                stamp(p, self.n);
                self.n += 1;
            }
            self.j
                .append_batch(self.batch.iter())
                .expect("append_batch");
            if start.elapsed() >= d {
                break;
            }
        }
        start.tally(self.n - first)
    }
}

/// syncjournal `Store::apply` of one certificate upsert per change set, durable default mode.
struct SjStore {
    store: Store,
    threads: usize,
    n: AtomicU64,
}

impl Case for SjStore {
    fn run(&mut self, d: Duration) -> Tally {
        let (store, counter) = (&self.store, &self.n);
        run_threads(self.threads, |_, start| {
            repeat_for(start, d, |_| {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                store.apply(&cert_changeset(i)).expect("store apply");
            })
        })
    }
}

/// Derived: `THREADS` x raw_mmap_msync_each_128B, the group-commit ceiling of 8 closed-loop
/// threads (each has one record in flight; one flush per group of at most 8).
const CEILING_8T: &str = "ceiling_8t_x_msync_each";
/// Derived: the same ceiling once waking the group is paid for: `THREADS` records per
/// (one msync + one barrier round of `THREADS` threads), per rep.
const CEILING_8T_WAKE: &str = "ceiling_8t_msync_plus_wakeup";

/// Durable group cases, in display order.
const DURABLE_CASES: &[&str] = &[
    "raw_fdatasync_4KiB_append",
    "raw_fdatasync_4KiB_overwrite",
    "raw_mmap_msync_each_128B",
    "raw_mmap_msync_each_1KiB",
    "raw_mmap_msync_1000_128B",
    "raw_mmap_msync_1000_1KiB",
    "raw_wakeup_rounds_8t",
    "outbox_full_1t",
    "outbox_normal_1t",
    "outbox_full_8t",
    "okaywal_1t_128B",
    "okaywal_8t_128B",
    "sj_append_sync_1t_128B",
    "sj_append_sync_8t_128B",
    "sj_append_batch_1000x128B",
    "sj_store_1t",
    "sj_store_8t",
];

fn build_durable(name: &str, dir: &Path) -> Box<dyn Case> {
    std::fs::create_dir_all(dir).expect("case dir");
    let journal = || open_journal(&dir.join("journal"), PersistMode::Sync, SEGMENT_64M);
    let store = || {
        Store::open(
            dir.join("journal"),
            dir.join("cache.db"),
            StoreOptions::new().cache_schema(CERT_SCHEMA),
        )
        .expect("open store")
    };
    match name {
        "raw_fdatasync_4KiB_append" => Box::new(Fdatasync::new(dir, false)),
        "raw_fdatasync_4KiB_overwrite" => Box::new(Fdatasync::new(dir, true)),
        "raw_mmap_msync_each_128B" => Box::new(RawMsync::<P128>::new(dir, "r", 1)),
        "raw_mmap_msync_each_1KiB" => Box::new(RawMsync::<P1K>::new(dir, "r", 1)),
        "raw_mmap_msync_1000_128B" => Box::new(RawMsync::<P128>::new(dir, "r", 1000)),
        "raw_mmap_msync_1000_1KiB" => Box::new(RawMsync::<P1K>::new(dir, "r", 1000)),
        "raw_wakeup_rounds_8t" => Box::new(WakeupRounds { threads: THREADS }),
        "outbox_full_1t" => Box::new(Outbox::new(dir, true, 1)),
        "outbox_normal_1t" => Box::new(Outbox::new(dir, false, 1)),
        "outbox_full_8t" => Box::new(Outbox::new(dir, true, THREADS)),
        "okaywal_1t_128B" | "okaywal_8t_128B" => Box::new(Okaywal {
            wal: WriteAheadLog::recover(dir.join("wal"), LogVoid).expect("okaywal"),
            threads: if name.contains("_8t") { THREADS } else { 1 },
        }),
        "sj_append_sync_1t_128B" => Box::new(SjAppend {
            j: journal(),
            threads: 1,
        }),
        "sj_append_sync_8t_128B" => Box::new(SjAppend {
            j: journal(),
            threads: THREADS,
        }),
        "sj_append_batch_1000x128B" => Box::new(SjBatch {
            j: journal(),
            batch: vec![base_payload::<P128>(7); 1000],
            n: 0,
        }),
        "sj_store_1t" | "sj_store_8t" => Box::new(SjStore {
            store: store(),
            threads: if name.ends_with("_8t") { THREADS } else { 1 },
            n: AtomicU64::new(0),
        }),
        other => unreachable!("unknown durable case {other}"),
    }
}

fn group_durable(cfg: &Config, dir: &Path, res: &mut Results) {
    let names: Vec<&str> = DURABLE_CASES
        .iter()
        .copied()
        .filter(|n| cfg.wants("durable", n))
        .collect();
    if names.is_empty() {
        return;
    }
    let d = cfg.duration();
    let slices = (d.as_secs_f64() / SLICE.as_secs_f64()).ceil().max(1.0) as usize;
    let slice = d / slices as u32;
    println!(
        "[durable] {} cases x {} reps x {:.2} s, in {slices} slices of {:.0} ms, rotating order",
        names.len(),
        cfg.reps,
        cfg.secs,
        slice.as_secs_f64() * 1e3
    );
    for rep in 0..cfg.reps {
        // Fresh files every rep, removed (and the machine synced) only at its end: no unlink
        // (an ext4 `discard`) lands in the middle of another case's slice.
        let rep_dir = dir.join(format!("durable-{rep}"));
        let mut cases: Vec<Box<dyn Case>> = names
            .iter()
            .enumerate()
            .map(|(k, n)| build_durable(n, &rep_dir.join(format!("{k:02}-{n}"))))
            .collect();
        rustix::fs::sync();
        let mut t = vec![Tally::default(); cases.len()];
        let k = cases.len();
        for s in 0..slices {
            for o in 0..k {
                // Rotate the order every slice, and start each rep elsewhere.
                let m = (s + o + rep * 5) % k;
                t[m].add(cases[m].run(slice));
            }
        }
        drop(cases);
        settle(&rep_dir);
        if let Some(k) = names.iter().position(|n| *n == "raw_mmap_msync_each_128B") {
            // With 8 closed-loop threads a group holds at most 8 records: 8 records per flush
            // is the most group commit can reach at this flush latency.
            res.push(CEILING_8T, THREADS as f64 * t[k].rate());
            if let Some(w) = names.iter().position(|n| *n == "raw_wakeup_rounds_8t") {
                // Seconds per group: one flush plus one round (all THREADS threads woken).
                let group_s = 1.0 / t[k].rate() + THREADS as f64 / t[w].rate();
                res.push(CEILING_8T_WAKE, THREADS as f64 / group_s);
            }
        }
        let mut line = format!("  rep {rep}:");
        for (n, t) in names.iter().zip(&t) {
            res.push_tally(n, t);
            line.push_str(&format!(" {n}={}", fmt_num(t.rate())));
        }
        println!("{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// No-sync cases (group `nosync`)
// ---------------------------------------------------------------------------------------------

/// One pass of the raw copy loop over the whole region, never synced.
fn raw_fill_pass<const N: usize>(map: &mut [u8], first: u64) -> u64 {
    let mut payload = base_payload::<N>(2);
    let mut n = first;
    let mut off = 0;
    while off + 8 + N <= map.len() {
        stamp(&mut payload, n);
        put_raw_record(map, off, &payload);
        off += 8 + N;
        n += 1;
    }
    black_box(&map[..8]);
    n - first
}

/// Raw no-sync loop: a fresh 256 MiB `fallocate`d region; the first pass faults every page in
/// (cold), the next passes write over mapped pages (warm). Returns (cold, warm).
fn raw_nosync<const N: usize>(path: &Path, d: Duration) -> (Tally, Tally) {
    let (file, mut map) = prealloc_map(path, REGION_NOSYNC);
    let start = Clock::start();
    let n = raw_fill_pass::<N>(&mut map, 0);
    let cold = start.tally(n);
    let mut warm = Tally::default();
    let mut first = n;
    while warm.time < d {
        let start = Clock::start();
        let n = raw_fill_pass::<N>(&mut map, first);
        warm.add(start.tally(n));
        first += n;
    }
    drop((map, file));
    settle(path);
    (cold, warm)
}

/// Buffered appends into a fresh journal with one 256 MiB segment, until `d` is spent or the
/// segment is full (no rotation, like the raw loop). Only the appends are timed.
fn sj_buffered(dir: &Path, threads: usize, d: Duration) -> Tally {
    let jdir = dir.join(format!("j-buffered-{threads}t"));
    let j = open_journal(&jdir, PersistMode::Buffered, REGION_NOSYNC);
    let cap = ((REGION_NOSYNC - SEGMENT_DATA_OFFSET) / FRAME_128) as u64;
    let reserved = AtomicU64::new(0);
    let t = run_threads(threads, |t, start| {
        let mut payload = base_payload::<P128>(400 + t as u64);
        let mut n = 0u64;
        'outer: loop {
            // Reserve 256 records at a time; look at the clock once per reservation.
            let from = reserved.fetch_add(256, Ordering::Relaxed);
            if from >= cap {
                break;
            }
            for k in 0..256.min(cap - from) {
                stamp(&mut payload, from + k);
                j.append(&payload).expect("append");
                n += 1;
            }
            if start.elapsed() >= d {
                break 'outer;
            }
        }
        n
    });
    drop(j);
    settle(&jdir);
    t
}

/// Batched appends (background msync every 5 ms, default 64 MiB segments) for `d`.
fn sj_batched(dir: &Path, threads: usize, d: Duration) -> Tally {
    let jdir = dir.join(format!("j-batched-{threads}t"));
    let j = open_journal(
        &jdir,
        PersistMode::Batched {
            interval: BATCHED_INTERVAL,
        },
        SEGMENT_64M,
    );
    let t = run_threads(threads, |t, start| {
        let mut payload = base_payload::<P128>(500 + t as u64);
        let mut n = 0u64;
        loop {
            for _ in 0..64 {
                stamp(&mut payload, n);
                j.append(&payload).expect("append");
                n += 1;
            }
            if start.elapsed() >= d {
                break;
            }
        }
        n
    });
    drop(j);
    settle(&jdir);
    t
}

const NOSYNC_UNITS: &[(&str, &[&str])] = &[
    (
        "raw128",
        &["raw_mmap_crc_128B_cold", "raw_mmap_crc_128B_warm"],
    ),
    (
        "raw1k",
        &["raw_mmap_crc_1KiB_cold", "raw_mmap_crc_1KiB_warm"],
    ),
    ("buf1", &["sj_append_buffered_1t_128B"]),
    ("buf8", &["sj_append_buffered_8t_128B"]),
    ("bat1", &["sj_append_batched_1t_128B"]),
    ("bat8", &["sj_append_batched_8t_128B"]),
];

fn group_nosync(cfg: &Config, dir: &Path, res: &mut Results) {
    let units: Vec<(&str, &[&str])> = NOSYNC_UNITS
        .iter()
        .copied()
        .filter(|(_, names)| names.iter().any(|n| cfg.wants("nosync", n)))
        .collect();
    if units.is_empty() {
        return;
    }
    let d = cfg.duration();
    println!(
        "[nosync] {} units x {} reps x ~{:.2} s, rotating order (one untimed warm-up round first)",
        units.len(),
        cfg.reps,
        cfg.secs
    );
    let run_unit = |unit: &str, res: Option<&mut Results>| {
        let got: Vec<(&str, Tally)> = match unit {
            "raw128" => {
                let (c, w) = raw_nosync::<P128>(&dir.join("raw128"), d);
                vec![("raw_mmap_crc_128B_cold", c), ("raw_mmap_crc_128B_warm", w)]
            }
            "raw1k" => {
                let (c, w) = raw_nosync::<P1K>(&dir.join("raw1k"), d);
                vec![("raw_mmap_crc_1KiB_cold", c), ("raw_mmap_crc_1KiB_warm", w)]
            }
            "buf1" => vec![("sj_append_buffered_1t_128B", sj_buffered(dir, 1, d))],
            "buf8" => vec![("sj_append_buffered_8t_128B", sj_buffered(dir, THREADS, d))],
            "bat1" => vec![("sj_append_batched_1t_128B", sj_batched(dir, 1, d))],
            "bat8" => vec![("sj_append_batched_8t_128B", sj_batched(dir, THREADS, d))],
            _ => unreachable!(),
        };
        if let Some(res) = res {
            for (n, t) in got {
                res.push_tally(n, &t);
            }
        }
    };
    // Warm-up: the first touch of fresh guest memory is slow on this VM.
    for (unit, _) in &units {
        if matches!(*unit, "raw128" | "buf1") {
            run_unit(unit, None);
        }
    }
    for rep in 0..cfg.reps {
        let k = units.len();
        for o in 0..k {
            let (unit, _) = units[(rep + o) % k];
            run_unit(unit, Some(res));
        }
        let mut line = format!("  rep {rep}:");
        for (_, names) in &units {
            for n in names.iter() {
                line.push_str(&format!(" {n}={}", res.last(n)));
            }
        }
        println!("{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// Replay (group `replay`)
// ---------------------------------------------------------------------------------------------

/// A journal holding the encoded certificate change sets `payloads` (LSN i+1 = row i), closed.
fn write_changeset_journal(jdir: &Path, payloads: impl Iterator<Item = Vec<u8>>) {
    let j = Journal::open(
        jdir,
        JournalOptions::new().persist_mode(PersistMode::Buffered),
    )
    .expect("open journal");
    let mut batch = Vec::with_capacity(1000);
    for p in payloads {
        batch.push(p);
        if batch.len() == 1000 {
            j.append_batch_kind(KIND_CHANGESET, batch.drain(..))
                .expect("append_batch");
        }
    }
    if !batch.is_empty() {
        j.append_batch_kind(KIND_CHANGESET, batch.drain(..))
            .expect("append_batch");
    }
    j.close().expect("close");
}

/// The Replayer: every durable entry into a fresh target, batches of 1000 (the default).
/// The connection is made (and the replayer's tables created) before the clock starts.
fn sj_replay(j: &Arc<Journal>, target: &Path, n: u64) -> Tally {
    let mut r: Replayer<ChangeSet> = Replayer::new(
        Arc::clone(j),
        target,
        TargetOptions::new(),
        ReplayOptions::new().batch_entries_max(REPLAY_BATCH),
    );
    assert_eq!(r.target_watermark().expect("connect target"), 0);
    let start = Clock::start();
    let report = r.sync_now();
    let t = start.tally(report.applied);
    assert!(report.error.is_none(), "replay failed: {:?}", report.error);
    assert_eq!(report.applied, n, "replay applied {}", report.applied);
    t
}

/// The raw reference: the same rows, prepared upsert, 1000 per transaction, watermark updated
/// in the same transaction, same target settings.
fn raw_batched_upserts(target: &Path, rows: &[(i64, String, Vec<u8>)]) -> Tally {
    let c = open_target(target);
    let start = Clock::start();
    for (b, chunk) in rows.chunks(REPLAY_BATCH).enumerate() {
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        {
            let mut up = c
                .prepare_cached(
                    "INSERT INTO certificates (id, name, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body",
                )
                .unwrap();
            for (id, name, body) in chunk {
                up.execute((id, name, body)).unwrap();
            }
            let mut wm = c
                .prepare_cached("UPDATE replay_watermark SET lsn = ?1 WHERE journal_id = ?2")
                .unwrap();
            wm.execute((((b + 1) * REPLAY_BATCH) as i64, "bench"))
                .unwrap();
        }
        c.execute_batch("COMMIT").unwrap();
    }
    start.tally(rows.len() as u64)
}

/// The naive replay: read each entry from the journal, decode it, and apply it with its
/// watermark update in a transaction of its own, for `d`.
fn naive_replay(j: &Journal, target: &Path, d: Duration) -> Tally {
    let c = open_target(target);
    let mut reader = j.reader(1).expect("reader");
    let mut n = 0u64;
    let start = Clock::start();
    while start.elapsed() < d {
        let Some(rec) = reader.next_ref().expect("read") else {
            break;
        };
        let (_, cs) = decode_event::<ChangeSet>(rec.payload).expect("decode");
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        for m in &cs.mutations {
            let Mutation::Upsert { table, key, values } = m else {
                unreachable!("the bench journals upserts only")
            };
            let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            let cols: Vec<String> = key.iter().chain(values).map(|(c, _)| q(c)).collect();
            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
            let keys: Vec<String> = key.iter().map(|(c, _)| q(c)).collect();
            let set: Vec<String> = values
                .iter()
                .map(|(c, _)| format!("{0} = excluded.{0}", q(c)))
                .collect();
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
                q(table),
                cols.join(", "),
                marks.join(", "),
                keys.join(", "),
                set.join(", ")
            );
            c.prepare_cached(&sql)
                .unwrap()
                .execute(rusqlite::params_from_iter(
                    key.iter().chain(values).map(|(_, v)| v),
                ))
                .unwrap();
        }
        c.prepare_cached("UPDATE replay_watermark SET lsn = ?1 WHERE journal_id = ?2")
            .unwrap()
            .execute((rec.lsn as i64, "bench"))
            .unwrap();
        c.execute_batch("COMMIT").unwrap();
        n += 1;
    }
    start.tally(n)
}

const REPLAY_CASES: &[&str] = &[
    "sj_replay_batch1000",
    "raw_sqlite_upsert_batch1000_wm",
    "naive_replay_1_per_txn",
];

fn group_replay(cfg: &Config, dir: &Path, res: &mut Results) {
    let names: Vec<&str> = REPLAY_CASES
        .iter()
        .copied()
        .filter(|n| cfg.wants("replay", n))
        .collect();
    if names.is_empty() {
        return;
    }
    let n = cfg.replay_entries;
    let t = Instant::now();
    let payloads: Vec<Vec<u8>> = (0..n).map(cert_payload).collect();
    let rows: Vec<(i64, String, Vec<u8>)> = (0..n).map(cert_row).collect();
    let avg = payloads.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    let row_bytes = rows.iter().map(|r| r.1.len() + r.2.len()).sum::<usize>() as f64 / n as f64;
    res.note(format!(
        "replay entries: {n} upsert change sets, journal payload {avg:.0} B, row data (name+body) {row_bytes:.0} B"
    ));
    println!(
        "[replay] {n} entries per rep, {} reps; payloads encoded in {:.1?}",
        cfg.reps,
        t.elapsed()
    );
    for rep in 0..cfg.reps {
        let rep_dir = dir.join(format!("replay-{rep}"));
        std::fs::create_dir_all(&rep_dir).unwrap();
        let jdir = rep_dir.join("journal");
        write_changeset_journal(&jdir, payloads.iter().cloned());
        let j = Arc::new(
            Journal::open(
                &jdir,
                JournalOptions::new().retain_acked_segments(usize::MAX >> 1),
            )
            .expect("open replay journal"),
        );
        rustix::fs::sync();
        let k = names.len();
        for o in 0..k {
            let name = names[(rep + o) % k];
            let target = rep_dir.join(format!("{name}.db"));
            make_target(&target);
            rustix::fs::sync();
            let t = match name {
                "sj_replay_batch1000" => sj_replay(&j, &target, n),
                "raw_sqlite_upsert_batch1000_wm" => raw_batched_upserts(&target, &rows),
                _ => naive_replay(&j, &target, cfg.duration()),
            };
            res.push_tally(name, &t);
        }
        drop(j);
        settle(&rep_dir);
        let mut line = format!("  rep {rep}:");
        for nm in &names {
            line.push_str(&format!(" {nm}={}", res.last(nm)));
        }
        println!("{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// Scan (group `scan`)
// ---------------------------------------------------------------------------------------------

/// Writes a journal of `segments` full 64 MiB segments of 128-byte records, closed.
fn prepare_scan_journal(jdir: &Path, segments: usize) {
    let per_segment = ((SEGMENT_64M - SEGMENT_DATA_OFFSET) / FRAME_128) as u64;
    let records = segments as u64 * per_segment;
    let j = open_journal(jdir, PersistMode::Buffered, SEGMENT_64M);
    let base = base_payload::<P128>(5);
    let mut n = 0u64;
    while n < records {
        // Batches never straddle a segment boundary, so every segment is filled.
        let end = (n + 4096).min((n / per_segment + 1) * per_segment);
        j.append_batch((n..end).map(|i| {
            let mut p = base;
            stamp(&mut p, i);
            p
        }))
        .expect("append_batch");
        n = end;
    }
    j.close().expect("close");
}

fn group_scan(cfg: &Config, dir: &Path, res: &mut Results) {
    let want_inspect = cfg.wants("scan", "sj_verify_inspect");
    let want_open = cfg.wants("scan", "sj_recovery_open");
    if !want_inspect && !want_open {
        return;
    }
    let jdir = dir.join("scan-journal");
    let segments = cfg.scan_mib / 64;
    let t = Instant::now();
    prepare_scan_journal(&jdir, segments);
    println!(
        "[scan] journal of {segments} x 64 MiB segments of 128 B records prepared in {:.1?}; {} reps, warm cache",
        t.elapsed(),
        cfg.reps
    );
    let inspect = || {
        let start = Instant::now();
        let i = syncjournal::inspect::inspect(&jdir).expect("inspect");
        let wall = start.elapsed();
        assert!(i.is_clean(), "the scan journal must be intact");
        (i.bytes as f64 / wall.as_secs_f64() / 1e9, i.records)
    };
    let open = || {
        let start = Instant::now();
        let j = Journal::open(&jdir, JournalOptions::new()).expect("open for scan");
        let wall = start.elapsed();
        let r = j.recovery_report();
        assert!(r.cuts.is_empty(), "the scan journal must be intact");
        let out = (
            r.bytes as f64 / wall.as_secs_f64() / 1e9,
            r.bytes as f64 / r.duration.as_secs_f64() / 1e9,
            r.bytes,
        );
        drop(j);
        out
    };
    // Warm-up: pages into the cache, first-open effects.
    let _ = inspect();
    let _ = open();
    for rep in 0..cfg.reps {
        let mut line = format!("  rep {rep}:");
        let ops: [bool; 2] = if rep % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for first_inspect in ops {
            if first_inspect && want_inspect {
                let (gb, _) = inspect();
                res.push("sj_verify_inspect", gb);
                line.push_str(&format!(" inspect={gb:.3} GB/s"));
            }
            if !first_inspect && want_open {
                let (gb, gb_rep, bytes) = open();
                res.push("sj_recovery_open", gb);
                res.push("sj_recovery_open_report", gb_rep);
                line.push_str(&format!(
                    " open={gb:.3} GB/s (report.duration {gb_rep:.3}; {bytes} B)"
                ));
            }
        }
        println!("{line}");
    }
    settle(&jdir);
}

// ---------------------------------------------------------------------------------------------
// Backlog peak RSS (group `backlog`)
// ---------------------------------------------------------------------------------------------

/// A field of `/proc/<pid>/status` in KiB.
fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The child: open the journal, then replay all of it into the target. Reports on stdout,
/// then waits for the parent (which reads our `VmHWM`) to close stdin.
fn backlog_child(journal: &Path, target: &Path) {
    let start = Instant::now();
    let j = Arc::new(Journal::open(journal, JournalOptions::new()).expect("child: open journal"));
    let open_secs = start.elapsed().as_secs_f64();
    let open_hwm = status_kib("self", "VmHWM").unwrap_or(0);
    // Reset the peak so that the parent's reading is the replay's alone (Linux: "5" resets
    // VmHWM); the open's peak is reported above.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let mut r: Replayer<ChangeSet> = Replayer::new(
        Arc::clone(&j),
        target,
        TargetOptions::new(),
        ReplayOptions::new().batch_entries_max(REPLAY_BATCH),
    );
    let start = Instant::now();
    let report = r.sync_now();
    let secs = start.elapsed().as_secs_f64();
    let err = report
        .error
        .map_or_else(|| "none".to_string(), |e| e.to_string().replace(' ', "_"));
    println!(
        "done applied={} transactions={} replay_secs={secs:.3} open_secs={open_secs:.3} open_hwm_kib={open_hwm} reset={reset} error={err}",
        report.applied, report.transactions
    );
    std::io::stdout().flush().unwrap();
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
}

struct Backlog {
    entries: u64,
    applied: u64,
    replay_secs: f64,
    open_hwm_kib: u64,
    replay_hwm_kib: u64,
    rss_anon_kib: u64,
    rss_file_kib: u64,
    reset: bool,
    error: String,
}

impl Backlog {
    fn peak_mib(&self) -> f64 {
        self.open_hwm_kib.max(self.replay_hwm_kib) as f64 / 1024.0
    }
}

fn run_backlog(dir: &Path, entries: u64) -> Backlog {
    let bdir = dir.join(format!("backlog-{entries}"));
    std::fs::create_dir_all(&bdir).unwrap();
    let jdir = bdir.join("journal");
    let target = bdir.join("target.db");
    let t = Instant::now();
    write_changeset_journal(&jdir, (0..entries).map(cert_payload));
    make_target(&target);
    rustix::fs::sync();
    println!(
        "  backlog of {entries} entries written in {:.1?}; replaying in a child process",
        t.elapsed()
    );
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .arg(CHILD_FLAG)
        .arg(&jdir)
        .arg(&target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let pid = child.id().to_string();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("child report");
    // The child has finished its replay and waits: read its peak now.
    let replay_hwm = status_kib(&pid, "VmHWM").unwrap_or(0);
    let rss_anon = status_kib(&pid, "RssAnon").unwrap_or(0);
    let rss_file = status_kib(&pid, "RssFile").unwrap_or(0);
    drop(child.stdin.take());
    let _ = child.wait();
    let field = |k: &str| -> String {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .unwrap_or("")
            .to_string()
    };
    let b = Backlog {
        entries,
        applied: field("applied").parse().unwrap_or(0),
        replay_secs: field("replay_secs").parse().unwrap_or(f64::NAN),
        open_hwm_kib: field("open_hwm_kib").parse().unwrap_or(0),
        replay_hwm_kib: replay_hwm,
        rss_anon_kib: rss_anon,
        rss_file_kib: rss_file,
        reset: field("reset") == "true",
        error: field("error"),
    };
    settle(&bdir);
    b
}

fn group_backlog(cfg: &Config, dir: &Path, res: &mut Results) {
    if !cfg.wants("backlog", "sj_backlog") {
        return;
    }
    let big = cfg.backlog;
    let small = (big / 10).max(1000);
    println!("[backlog] {small} then {big} entries, replayed by a child process each");
    for (entries, tag) in [(small, "small"), (big, "big")] {
        let b = run_backlog(dir, entries);
        println!(
            "  {} entries: applied {} in {:.1} s ({} entries/s); peak RSS open {:.1} MiB, replay {:.1} MiB{}; at end RssAnon {:.1} MiB RssFile {:.1} MiB; error={}",
            b.entries,
            b.applied,
            b.replay_secs,
            fmt_num(b.applied as f64 / b.replay_secs),
            b.open_hwm_kib as f64 / 1024.0,
            b.replay_hwm_kib as f64 / 1024.0,
            if b.reset {
                ""
            } else {
                " (VmHWM reset refused: replay figure includes the open)"
            },
            b.rss_anon_kib as f64 / 1024.0,
            b.rss_file_kib as f64 / 1024.0,
            b.error
        );
        if b.applied != b.entries || b.error != "none" {
            res.note(format!(
                "WARNING: backlog {entries}: applied {} of {} (error {})",
                b.applied, b.entries, b.error
            ));
        }
        res.backlog.insert(tag, b);
    }
}

// ---------------------------------------------------------------------------------------------
// Results and report
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Results {
    series: BTreeMap<String, Vec<f64>>,
    backlog: BTreeMap<&'static str, Backlog>,
    notes: Vec<String>,
}

impl Results {
    fn push(&mut self, name: &str, v: f64) {
        self.series.entry(name.to_string()).or_default().push(v);
    }

    /// The rate of a measurement and the CPU cores it kept busy.
    fn push_tally(&mut self, name: &str, t: &Tally) {
        self.push(name, t.rate());
        self.push(&format!("{name}@cpu"), t.cores());
    }

    fn note(&mut self, s: String) {
        self.notes.push(s);
    }

    fn get(&self, name: &str) -> Option<&[f64]> {
        self.series
            .get(name)
            .map(|v| v.as_slice())
            .filter(|v| !v.is_empty())
    }

    fn last(&self, name: &str) -> String {
        self.get(name)
            .and_then(|v| v.last())
            .map_or_else(|| "-".into(), |&v| fmt_num(v))
    }

    /// Paired ratios num/den per rep (both measured in the same reps), else None.
    fn paired(&self, num: &str, den: &str) -> Option<Vec<f64>> {
        let (n, d) = (self.get(num)?, self.get(den)?);
        (n.len() == d.len()).then(|| n.iter().zip(d).map(|(a, b)| a / b).collect())
    }
}

/// A claim: `case` against `reference` (ratio), or an absolute bound.
enum Target {
    /// Ratio case/reference (reference, target `>= x` or information only, why).
    Ratio(&'static str, Option<f64>, &'static str),
    /// Absolute value `>= x`.
    AtLeast(f64),
}

struct Row {
    case: &'static str,
    metric: &'static str,
    targets: Vec<Target>,
}

fn row(case: &'static str, metric: &'static str, targets: Vec<Target>) -> Row {
    Row {
        case,
        metric,
        targets,
    }
}

fn report_rows() -> Vec<Row> {
    use Target::*;
    vec![
        row("raw_fdatasync_4KiB_append", "op/s", vec![]),
        row("raw_fdatasync_4KiB_overwrite", "op/s", vec![]),
        row("raw_mmap_msync_each_128B", "rec/s", vec![]),
        row("raw_mmap_msync_each_1KiB", "rec/s", vec![]),
        row(CEILING_8T, "rec/s", vec![]),
        row("raw_wakeup_rounds_8t", "rec/s", vec![]),
        row(CEILING_8T_WAKE, "rec/s", vec![]),
        row("raw_mmap_msync_1000_128B", "rec/s", vec![]),
        row("raw_mmap_msync_1000_1KiB", "rec/s", vec![]),
        row("raw_mmap_crc_128B_cold", "rec/s", vec![]),
        row("raw_mmap_crc_128B_warm", "rec/s", vec![]),
        row("raw_mmap_crc_1KiB_cold", "rec/s", vec![]),
        row("raw_mmap_crc_1KiB_warm", "rec/s", vec![]),
        row("outbox_full_1t", "rows/s", vec![]),
        row("outbox_normal_1t", "rows/s", vec![]),
        row(
            "outbox_full_8t",
            "rows/s",
            vec![Ratio("outbox_full_1t", None, "")],
        ),
        row("okaywal_1t_128B", "rec/s", vec![]),
        row(
            "okaywal_8t_128B",
            "rec/s",
            vec![
                Ratio("okaywal_1t_128B", None, ""),
                Ratio(CEILING_8T, None, ""),
                Ratio(CEILING_8T_WAKE, None, ""),
            ],
        ),
        row(
            "sj_append_sync_1t_128B",
            "rec/s",
            vec![
                Ratio("raw_mmap_msync_each_128B", Some(0.9), ""),
                Ratio("okaywal_1t_128B", None, ""),
                Ratio("outbox_full_1t", None, ""),
            ],
        ),
        row(
            "sj_append_sync_8t_128B",
            "rec/s",
            vec![
                Ratio("outbox_full_1t", Some(10.0), ""),
                Ratio("okaywal_8t_128B", Some(3.0), ""),
                Ratio("sj_append_sync_1t_128B", Some(5.0), "group commit"),
                Ratio(CEILING_8T, None, ""),
                Ratio(CEILING_8T_WAKE, None, ""),
            ],
        ),
        row(
            "sj_append_batch_1000x128B",
            "rec/s",
            vec![Ratio("raw_mmap_msync_1000_128B", Some(0.5), "")],
        ),
        row(
            "sj_append_buffered_1t_128B",
            "rec/s",
            vec![
                Ratio(
                    "raw_mmap_crc_128B_cold",
                    Some(0.3),
                    "like-for-like: fresh pages",
                ),
                Ratio("raw_mmap_crc_128B_warm", Some(0.3), "pages already mapped"),
            ],
        ),
        row(
            "sj_append_buffered_8t_128B",
            "rec/s",
            vec![Ratio("raw_mmap_crc_128B_cold", None, "")],
        ),
        row("sj_append_batched_1t_128B", "rec/s", vec![]),
        row("sj_append_batched_8t_128B", "rec/s", vec![]),
        row(
            "sj_store_1t",
            "chg/s",
            vec![Ratio("outbox_full_1t", Some(1.0), "")],
        ),
        row(
            "sj_store_8t",
            "chg/s",
            vec![
                Ratio("outbox_full_1t", Some(5.0), ""),
                Ratio("outbox_full_8t", None, ""),
                Ratio("sj_append_sync_8t_128B", None, ""),
            ],
        ),
        row(
            "sj_replay_batch1000",
            "entries/s",
            vec![
                Ratio("raw_sqlite_upsert_batch1000_wm", Some(0.8), ""),
                Ratio("naive_replay_1_per_txn", Some(40.0), ""),
            ],
        ),
        row("raw_sqlite_upsert_batch1000_wm", "entries/s", vec![]),
        row("naive_replay_1_per_txn", "entries/s", vec![]),
        row("sj_verify_inspect", "GB/s", vec![AtLeast(2.0)]),
        row("sj_recovery_open", "GB/s", vec![AtLeast(2.0)]),
        row("sj_recovery_open_report", "GB/s", vec![]),
    ]
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// One line of the table: case, metric, value, spread, cpu, reference, ratio, ratio spread,
/// target, verdict.
fn print_line(cols: [&str; 10]) {
    let [c, m, v, s, cpu, r, q, qs, t, verd] = cols;
    println!("{c:<30} {m:<9} {v:>9} {s:<21} {cpu:>4}  {r:<34} {q:>6} {qs:<15} {t:<6} {verd}");
}

fn spread(v: &[f64]) -> String {
    let (a, b) = min_max(v);
    format!("[{}..{}]", fmt_num(a), fmt_num(b))
}

fn print_report(res: &Results) {
    println!();
    println!(
        "== results: value = median over reps [min..max]; cpu = cores busy (process); \
         ratio = median of the per-rep (paired) ratios [min..max] =="
    );
    print_line([
        "case",
        "metric",
        "value",
        "[min..max]",
        "cpu",
        "reference",
        "ratio",
        "[min..max]",
        "target",
        "verdict",
    ]);
    let mut fails = Vec::new();
    for r in report_rows() {
        let Some(v) = res.get(r.case) else { continue };
        let (value, sp) = (fmt_num(median(v)), spread(v));
        let cpu = res
            .get(&format!("{}@cpu", r.case))
            .map_or_else(|| "-".to_string(), |c| format!("{:.2}", median(c)));
        let mut first = true;
        let mut emit = |reference: &str, ratio: &str, rs: &str, target: &str, verd: &str| {
            let (c, m, val, s, u) = if first {
                (r.case, r.metric, value.as_str(), sp.as_str(), cpu.as_str())
            } else {
                ("  \"", "", "", "", "")
            };
            print_line([c, m, val, s, u, reference, ratio, rs, target, verd]);
            first = false;
        };
        if r.targets.is_empty() {
            emit("-", "-", "", "-", "-");
        }
        for t in &r.targets {
            match t {
                Target::Ratio(den, x, why) => {
                    let den: &str = den;
                    let target = x.map_or_else(|| "info".to_string(), |x| format!(">={x}"));
                    let refname = if why.is_empty() {
                        den.to_string()
                    } else {
                        format!("{den} ({why})")
                    };
                    match res.paired(r.case, den) {
                        Some(p) => {
                            let q = median(&p);
                            let verd = match x {
                                Some(x) => {
                                    if q < *x {
                                        fails.push(format!("{} vs {den}", r.case));
                                    }
                                    verdict(q >= *x)
                                }
                                None => "-",
                            };
                            emit(&refname, &format!("{q:.2}"), &spread(&p), &target, verd);
                        }
                        None => emit(&refname, "n/a", "(not measured)", &target, "-"),
                    }
                }
                Target::AtLeast(x) => {
                    let q = median(v);
                    let (ok, target) = (q >= *x, format!(">={x}"));
                    if !ok {
                        fails.push(r.case.to_string());
                    }
                    emit("(absolute)", "-", "", &target, verdict(ok));
                }
            }
        }
    }
    // Backlog: one child run per size, no reps.
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    for (tag, b) in res.backlog.iter().rev() {
        let n = short(b.entries);
        let rate = b.applied as f64 / b.replay_secs;
        print_line([
            &format!("sj_backlog_replay_{n}"),
            "entries/s",
            &fmt_num(rate),
            "(1 run, child)",
            "-",
            "-",
            "-",
            "",
            "-",
            "-",
        ]);
        let peak = b.peak_mib();
        let ok = peak <= 64.0;
        if !ok && *tag == "big" {
            fails.push(format!("sj_backlog_peak_rss_{n}"));
        }
        print_line([
            &format!("sj_backlog_peak_rss_{n}"),
            "MiB",
            &format!("{peak:.1}"),
            "(VmHWM, whole child)",
            "-",
            "(absolute)",
            "-",
            "",
            "<=64",
            verdict(ok),
        ]);
        print_line([
            "  \" open phase",
            "MiB",
            &mib(b.open_hwm_kib),
            "(Journal::open)",
            "-",
            "-",
            "-",
            "",
            "info",
            "-",
        ]);
        print_line([
            "  \" replay phase",
            "MiB",
            &mib(b.replay_hwm_kib),
            if b.reset {
                "(VmHWM reset after open)"
            } else {
                "(reset refused: incl. open)"
            },
            "-",
            "-",
            "-",
            "",
            "info",
            "-",
        ]);
    }
    if let (Some(big), Some(small)) = (res.backlog.get("big"), res.backlog.get("small")) {
        let (nb, ns) = (short(big.entries), short(small.entries));
        for (what, b, s) in [
            ("peak", big.peak_mib(), small.peak_mib()),
            (
                "replay",
                big.replay_hwm_kib as f64,
                small.replay_hwm_kib as f64,
            ),
        ] {
            print_line([
                &format!("sj_backlog_rss_{nb}/{ns}"),
                &format!("x {what}"),
                &format!("{:.2}", b / s),
                "(flat = 1.0)",
                "-",
                "-",
                "-",
                "",
                "info",
                "-",
            ]);
        }
    }
    println!();
    for n in &res.notes {
        println!("note: {n}");
    }
    println!(
        "note: buffered vs raw: the journal always writes fresh (just fallocated) pages, so the \
         like-for-like reference is raw_mmap_crc_128B_cold; _warm rewrites already-mapped pages."
    );
    println!(
        "note: raw durable regions are 64 MiB like journal segments; region rotation \
         (fallocate+fsync+mmap) is timed, as segment rotation is for the journal."
    );
    println!(
        "note: {CEILING_8T} = {THREADS} x raw_mmap_msync_each_128B per rep: {THREADS} closed-loop \
         threads have at most {THREADS} records per flush, so no group commit exceeds it."
    );
    println!(
        "note: {CEILING_8T_WAKE} = {THREADS} / (1 / raw_mmap_msync_each_128B + {THREADS} / \
         raw_wakeup_rounds_8t) per rep: each group also pays one round of waking its {THREADS} \
         threads (a mutex + condvar barrier with nothing else to do) on this machine's cores."
    );
    if fails.is_empty() {
        println!("all targets measured: PASS");
    } else {
        println!("FAIL: {}", fails.join("; "));
    }
}

fn short(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Machine facts
// ---------------------------------------------------------------------------------------------

/// The mount (device, type, options) holding `dir`: the longest mount point that prefixes it.
fn mount_of(dir: &Path) -> Option<(String, String, String, String)> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(String, String, String, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let mnt = f[1].replace("\\040", " ");
        if dir.starts_with(&mnt) && best.as_ref().is_none_or(|b| mnt.len() > b.1.len()) {
            best = Some((f[0].into(), mnt, f[2].into(), f[3].into()));
        }
    }
    best
}

fn first_line_with(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_string())
}

/// The crate's git revision, and whether its sources differ from it (they are built as they
/// are on disk).
fn source_revision() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return format!("{root} (no git revision)");
    };
    let dirty = git(&["status", "--porcelain", "--", "src", "Cargo.toml"]).unwrap_or_default();
    let n = dirty.lines().count();
    if n == 0 {
        format!("{head} (src/ clean)")
    } else {
        format!("{head} + uncommitted changes in {n} file(s) of src/, Cargo.toml")
    }
}

fn print_facts(cfg: &Config, bench_dir: &Path) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = first_line_with("/proc/cpuinfo", "model name");
    let mem = first_line_with("/proc/meminfo", "MemTotal");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("== syncjournal compare: same-run ratios against raw limits and naive approaches ==");
    println!("nproc        {nproc}");
    println!("kernel       {}", kernel.trim());
    println!("cpu          {cpu}");
    println!("memory       {mem}");
    println!("loadavg      {}", load.trim());
    println!("sqlite       {} (rusqlite, bundled)", rusqlite::version());
    println!("source       {}", source_revision());
    println!("bench dir    {}", bench_dir.display());
    match mount_of(bench_dir) {
        Some((dev, mnt, fstype, opts)) => {
            println!("filesystem   {dev} on {mnt} type {fstype} ({opts})");
            let name = dev.trim_start_matches("/dev/");
            let wc = std::fs::read_to_string(format!("/sys/block/{name}/queue/write_cache"));
            if let Ok(wc) = wc {
                println!("write cache  {name}: {}", wc.trim());
            }
            if matches!(fstype.as_str(), "tmpfs" | "ramfs") {
                println!(
                    "WARNING: the bench dir is in memory ({fstype}): msync/fsync are free there, \
                     every durable figure is meaningless; use --dir on a disk (ext4)"
                );
            } else if fstype != "ext4" {
                println!(
                    "WARNING: the bench dir is on {fstype}, not ext4 like the baseline machines"
                );
            }
        }
        None => println!("filesystem   unknown"),
    }
    println!(
        "config       reps={} secs/case/rep={} scan={} MiB replay={} entries backlog={} threads={THREADS}{}",
        cfg.reps,
        cfg.secs,
        cfg.scan_mib,
        cfg.replay_entries,
        cfg.backlog,
        if cfg.quick { " (--quick)" } else { "" }
    );
    if !cfg.only.is_empty() {
        println!("only         {}", cfg.only.join(","));
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(CHILD_FLAG) {
        backlog_child(Path::new(&args[1]), Path::new(&args[2]));
        return;
    }
    let cfg = Config::from_args(&args);
    let began = Instant::now();
    std::fs::create_dir_all(&cfg.dir).expect("create bench dir");
    let tmp = tempfile::Builder::new()
        .prefix("syncjournal-compare-")
        .tempdir_in(&cfg.dir)
        .expect("tempdir");
    let dir = tmp.path();
    print_facts(&cfg, dir);
    let mut res = Results::default();
    type Group = fn(&Config, &Path, &mut Results);
    let groups: [(&str, Group); 5] = [
        ("durable", group_durable),
        ("nosync", group_nosync),
        ("replay", group_replay),
        ("scan", group_scan),
        ("backlog", group_backlog),
    ];
    for (name, g) in groups {
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g(&cfg, dir, &mut res)));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            res.note(format!("group {name} FAILED to run: {msg}"));
            println!("[{name}] FAILED: {msg}");
        } else if t.elapsed() > Duration::from_millis(50) {
            println!("[{name}] {:.1} s", t.elapsed().as_secs_f64());
        }
    }
    print_report(&res);
    println!();
    println!("total_wall_s={:.1}", began.elapsed().as_secs_f64());
    drop(tmp);
    std::process::exit(0);
}
