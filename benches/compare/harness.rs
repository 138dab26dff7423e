//! The measuring harness: the command line, the constants the cases share, tallies of records
//! against wall-clock and CPU time, threads released together and closed loops, payloads,
//! `fallocate`d regions, and settling the machine between measurements.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use memmap2::{MmapMut, MmapOptions};
use rustix::fs::FallocateFlags;
use syncjournal::{Journal, JournalOptions, PersistMode};

/// Payload of the 128-byte cases.
pub const P128: usize = 128;
/// Payload of the 1 KiB cases.
pub const P1K: usize = 1024;
/// Thread count of the concurrent cases.
pub const THREADS: usize = 8;
/// Length of one durable slice.
pub const SLICE: Duration = Duration::from_millis(100);
/// Raw durable regions: the journal's default segment size, so both rotate alike.
pub const REGION_DURABLE: usize = 64 << 20;
/// Raw no-sync region, and the buffered journal's one segment (as the baseline's A3).
pub const REGION_NOSYNC: usize = 256 << 20;
/// Journal segments start their first frame at this offset; a frame is a 32-byte header plus
/// the payload rounded up to 8.
pub const SEGMENT_DATA_OFFSET: usize = 4096;
pub const FRAME_128: usize = 32 + P128;
/// Journal segment size of the scan journal.
pub const SEGMENT_64M: usize = 64 << 20;

/// Replay batch size (the replayer's default, and the raw loop's).
pub const REPLAY_BATCH: usize = 1000;
/// Interval of the Batched persist mode.
pub const BATCHED_INTERVAL: Duration = Duration::from_millis(5);

pub struct Config {
    pub reps: usize,
    pub secs: f64,
    pub scan_mib: usize,
    pub replay_entries: u64,
    pub backlog: u64,
    /// Entries of the PostgreSQL backlog (`--pg-backlog N`, env `SYNCJOURNAL_BENCH_PG_BACKLOG`).
    pub pg_backlog: u64,
    pub dir: PathBuf,
    pub only: Vec<String>,
    pub quick: bool,
}

impl Config {
    pub fn from_args(args: &[String]) -> Config {
        let mut c = Config {
            reps: 5,
            secs: 1.0,
            scan_mib: 512,
            replay_entries: 100_000,
            backlog: 5_000_000,
            pg_backlog: 5_000_000,
            dir: std::env::var_os("SYNCJOURNAL_BENCH_DIR")
                .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from),
            only: Vec::new(),
            quick: false,
        };
        let (mut reps, mut secs, mut scan, mut replay, mut backlog) =
            (None, None, None, None, None);
        let mut pg_backlog: Option<u64> = std::env::var("SYNCJOURNAL_BENCH_PG_BACKLOG")
            .ok()
            .map(|v| v.parse().expect("SYNCJOURNAL_BENCH_PG_BACKLOG=N"));
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
                "--pg-backlog" => {
                    pg_backlog = Some(value("--pg-backlog").parse().expect("--pg-backlog N"))
                }
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
                        "compare [--quick] [--only a,b,c] [--dir PATH] [--backlog N] [--pg-backlog N]\n\
                         [--reps N] [--secs S] [--scan-mib M] [--replay-entries N]\n\
                         groups: durable, nosync, replay, scan, backlog, pg_replay, pg_backlog\n\
                         (or case names/prefixes)\n\
                         (env SYNCJOURNAL_BENCH_DIR also sets the directory; default /tmp;\n\
                         env SYNCJOURNAL_BENCH_PG_BACKLOG the PostgreSQL backlog)"
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
            c.pg_backlog = 300_000;
        }
        c.reps = reps.unwrap_or(c.reps).max(1);
        c.secs = secs.unwrap_or(c.secs).max(0.05);
        c.scan_mib = scan.unwrap_or(c.scan_mib).max(64);
        c.replay_entries = replay.unwrap_or(c.replay_entries).max(REPLAY_BATCH as u64);
        c.backlog = backlog.unwrap_or(c.backlog).max(10_000);
        c.pg_backlog = pg_backlog.unwrap_or(c.pg_backlog).max(10_000);
        c
    }

    /// The cases of `group` among `cases` this run measures.
    pub fn wanted(&self, group: &str, cases: &[&'static str]) -> Vec<&'static str> {
        cases
            .iter()
            .copied()
            .filter(|n| self.wants(group, n))
            .collect()
    }

    pub fn wants(&self, group: &str, case: &str) -> bool {
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|t| t == group || t == case || case.starts_with(t.as_str()))
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }
}

/// Records counted and the time they took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub records: u64,
    pub time: Duration,
    /// CPU seconds the whole process used meanwhile (all threads).
    pub cpu: f64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.records += other.records;
        self.time += other.time;
        self.cpu += other.cpu;
    }

    pub fn rate(&self) -> f64 {
        self.records as f64 / self.time.as_secs_f64().max(1e-9)
    }

    /// CPU cores busy on average (process-wide).
    pub fn cores(&self) -> f64 {
        self.cpu / self.time.as_secs_f64().max(1e-9)
    }
}

/// CPU time of this process so far (user + system, every thread, exited ones included), from
/// `/proc/self/stat` (clock ticks of 10 ms: good to a few % over a measurement).
pub fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// Wall clock and process CPU time from one moment.
pub struct Clock {
    pub start: Instant,
    pub cpu: f64,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            cpu: cpu_secs(),
            start: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn tally(&self, records: u64) -> Tally {
        Tally {
            records,
            time: self.start.elapsed(),
            cpu: cpu_secs() - self.cpu,
        }
    }
}

/// A payload of `N` pseudo-random bytes; `stamp` makes it differ per record.
pub fn base_payload<const N: usize>(salt: u64) -> [u8; N] {
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

pub fn stamp(p: &mut [u8], n: u64) {
    p[..8].copy_from_slice(&n.to_le_bytes());
}

/// splitmix64.
pub fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A file of `len` bytes reserved with `fallocate`, fsynced, and mapped shared read-write:
/// what a journal segment is before its first record.
pub fn prealloc_map(path: &Path, len: usize) -> (File, MmapMut) {
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
pub fn put_raw_record<const N: usize>(map: &mut [u8], off: usize, payload: &[u8; N]) {
    let crc = crc32fast::hash(payload);
    let rec = &mut map[off..off + 8 + N];
    rec[..4].copy_from_slice(&(N as u32).to_le_bytes());
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
    rec[8..].copy_from_slice(payload);
}

/// Removes files and flushes the machine's dirty pages, outside the timed regions, so that one
/// measurement's writeback does not slow the next.
pub fn settle(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
    rustix::fs::sync();
}

pub fn fmt_num(x: f64) -> String {
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
pub fn run_threads(threads: usize, f: impl Fn(usize, Instant) -> u64 + Sync) -> Tally {
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
pub fn repeat_for(start: Instant, d: Duration, mut op: impl FnMut(u64)) -> u64 {
    let mut n = 0u64;
    loop {
        op(n);
        n += 1;
        if start.elapsed() >= d {
            return n;
        }
    }
}

pub fn open_journal(dir: &Path, mode: PersistMode, segment: usize) -> Journal {
    Journal::open(
        dir,
        JournalOptions::new()
            .persist_mode(mode)
            .segment_bytes_max(segment as u64),
    )
    .expect("open journal")
}
