//! The Rust side of `python/bench/bench.py`: applies durable single-row change sets through a
//! store for a given time, from a given number of threads, and prints the rate.
//!
//! Run: `apply-rate DIR SECONDS THREADS` (DIR must not exist yet). Prints `<changes> <seconds>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use syncjournal::{ChangeSet, Store, StoreOptions};

/// The schema the Python side uses too.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS hosts (id INTEGER PRIMARY KEY, name TEXT)";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err("usage: apply-rate DIR SECONDS THREADS".into());
    }
    let dir = std::path::PathBuf::from(&args[1]);
    let seconds: f64 = args[2].parse()?;
    let threads: u64 = args[3].parse()?;
    std::fs::create_dir_all(&dir)?;
    let store: Arc<Store> = Arc::new(Store::open(
        dir.join("journal"),
        dir.join("cache.db"),
        StoreOptions::new().cache_schema(SCHEMA),
    )?);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (store, stop, done) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || -> syncjournal::Result<()> {
                let mut i: i64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = (t as i64) << 40 | i;
                    store.apply(&ChangeSet::new().upsert(
                        "hosts",
                        [("id", id)],
                        [("name", "web")],
                    ))?;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| "a worker panicked")??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!("{} {elapsed:.6}", done.load(Ordering::Relaxed));
    Ok(())
}
