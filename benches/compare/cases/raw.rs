//! The machine's raw limits (the baseline's cases A1 and A3): `fdatasync` of 4 KiB, records
//! copied with their CRC into `fallocate`d mapped regions with `msync` per record or per 1000
//! (durable) or never (no-sync, cold and warm pages), and the cost of waking a group of threads.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use memmap2::MmapMut;

use crate::cases::durable::Case;
use crate::harness::{
    Clock, REGION_DURABLE, REGION_NOSYNC, Tally, base_payload, prealloc_map, put_raw_record,
    run_threads, settle, stamp,
};

/// Raw A1: pwrite of 4 KiB + fdatasync, appending (each sync also commits the new size) or
/// overwriting a pre-zeroed, fsynced file.
pub struct Fdatasync {
    pub file: File,
    pub overwrite: bool,
    pub n: u64,
    pub buf: [u8; 4096],
}

pub const OVERWRITE_FILE: u64 = 64 << 20;

impl Fdatasync {
    pub fn new(dir: &Path, overwrite: bool) -> Self {
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
pub struct Region {
    pub dir: PathBuf,
    pub tag: &'static str,
    pub seq: u32,
    pub map: MmapMut,
    pub _file: File,
    pub off: usize,
    pub synced: usize,
}

impl Region {
    pub fn new(dir: &Path, tag: &'static str) -> Region {
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
    pub fn sync(&mut self) {
        if self.off > self.synced {
            self.map
                .flush_range(self.synced, self.off - self.synced)
                .expect("msync");
            self.synced = self.off;
        }
    }

    pub fn rotate(&mut self) {
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
pub struct RawMsync<const N: usize> {
    pub region: Region,
    pub every: usize,
    pub n: u64,
    pub payload: [u8; N],
}

impl<const N: usize> RawMsync<N> {
    pub fn new(dir: &Path, tag: &'static str, every: usize) -> Self {
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
pub struct WakeupRounds {
    pub threads: usize,
}

/// A generation barrier whose last arriver decides, for everyone, whether to stop.
pub struct StopBarrier {
    pub state: Mutex<(usize, u64, bool)>,
    pub cv: std::sync::Condvar,
}

impl StopBarrier {
    pub fn wait(&self, n: usize, stop_now: impl FnOnce() -> bool) -> bool {
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

/// One pass of the raw copy loop over the whole region, never synced.
pub fn raw_fill_pass<const N: usize>(map: &mut [u8], first: u64) -> u64 {
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
pub fn raw_nosync<const N: usize>(path: &Path, d: Duration) -> (Tally, Tally) {
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
