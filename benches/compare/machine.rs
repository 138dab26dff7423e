//! The machine facts printed at the head of the report: cores, kernel, memory, load, SQLite,
//! the source revision built, and the file system (and its write cache) under the bench dir.

use std::path::Path;
use std::process::Command;

use crate::harness::{Config, THREADS};

/// The mount (device, type, options) holding `dir`: the longest mount point that prefixes it.
pub fn mount_of(dir: &Path) -> Option<(String, String, String, String)> {
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

pub fn first_line_with(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_string())
}

/// The crate's git revision, and whether its sources differ from it (they are built as they
/// are on disk).
pub fn source_revision() -> String {
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

pub fn print_facts(cfg: &Config, bench_dir: &Path) {
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
