//! `status` and `dump` on a journal of many segments, against `verify` on the same journal, in
//! the same run (issue 10's bar: within 2x of `verify`). Prints the figures; asserts nothing.
//!
//! `cargo bench --bench many_segments` (10 000 segments of 64 KiB, ~2 min to build);
//! `-- --segments N` for another count.

use std::time::{Duration, Instant};

use syncjournal::journal::Until;
use syncjournal::journal::offline::OfflineReader;
use syncjournal::{Journal, JournalOptions, PersistMode};

fn main() {
    let mut segments = 10_000usize;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--segments") {
        segments = args[i + 1].parse().expect("--segments N");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let jdir = dir.path().join("j");
    let built = Instant::now();
    {
        let j = Journal::open(
            &jdir,
            JournalOptions::new()
                .segment_bytes_max(64 << 10)
                .persist_mode(PersistMode::Buffered),
        )
        .expect("open");
        // Two 24 KiB records per 64 KiB segment: the third one rotates.
        let payload = vec![0x5Au8; 24 << 10];
        while j.state().segments < segments {
            j.append(&payload).expect("append");
        }
        j.close().expect("close");
    }
    println!(
        "journal: {segments} segments of 64 KiB, built in {:.1?}",
        built.elapsed()
    );
    let time = |f: &dyn Fn()| -> Duration {
        // Best of 3, page cache warm after the first.
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .min()
            .expect("three runs")
    };
    let verify = time(&|| {
        let ins = syncjournal::inspect::inspect(&jdir).expect("inspect");
        assert!(ins.is_clean());
    });
    let status = time(&|| {
        let st = syncjournal::replay::offline_status(&jdir, None, Duration::from_secs(300))
            .expect("status");
        assert!(st.journal_error.is_none(), "{:?}", st.journal_error);
    });
    let dump = time(&|| {
        let mut r = OfflineReader::open(&jdir, 1, Until::End).expect("reader");
        let mut n = 0u64;
        while let Some(rec) = r.next_ref().expect("record") {
            n += rec.payload.len() as u64;
        }
        assert!(n > 0);
    });
    println!("verify (inspect)         {verify:>10.1?}");
    println!(
        "status (offline_status)  {status:>10.1?}  = {:.2}x verify",
        status.as_secs_f64() / verify.as_secs_f64()
    );
    println!(
        "dump (read every record) {dump:>10.1?}  = {:.2}x verify",
        dump.as_secs_f64() / verify.as_secs_f64()
    );
}
