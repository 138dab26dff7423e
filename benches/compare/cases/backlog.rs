//! The `backlog` and `pg_backlog` groups: the replay of a large backlog in a child process
//! (this binary re-executed with a hidden flag) into an SQLite target or a PostgreSQL database
//! on a server the bench starts, its peak RSS read from `/proc/<pid>/status` once it has
//! finished, against a 10× smaller backlog to show that it is flat.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use syncjournal::{ChangeSet, Journal, JournalOptions, ReplayOptions, Replayer, TargetOptions};

use crate::cases::replay::write_changeset_journal;
use crate::cluster::Cluster;
use crate::harness::{Config, REPLAY_BATCH, fmt_num, settle};
use crate::pg_workload::{drop_pg_target, make_pg_target, start_server};
use crate::report::Results;
use crate::workload::{cert_payload, make_target};

/// Hidden flag: run as the backlog replay child.
pub const CHILD_FLAG: &str = "--backlog-child";

/// A field of `/proc/<pid>/status` in KiB.
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The child: open the journal, then replay all of it into the target (an SQLite file's path
/// or a PostgreSQL connection string). Reports on stdout, then waits for the parent (which
/// reads our `VmHWM`) to close stdin.
pub fn backlog_child(journal: &Path, target: &str) {
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

pub struct Backlog {
    pub entries: u64,
    pub applied: u64,
    pub replay_secs: f64,
    pub open_hwm_kib: u64,
    pub replay_hwm_kib: u64,
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub reset: bool,
    pub error: String,
}

impl Backlog {
    pub fn peak_mib(&self) -> f64 {
        self.open_hwm_kib.max(self.replay_hwm_kib) as f64 / 1024.0
    }
}

/// Where a backlog is replayed.
#[derive(Clone, Copy)]
pub enum BacklogTarget<'a> {
    /// A fresh SQLite file in the backlog's directory.
    Sqlite,
    /// A fresh database on this server.
    Postgres(&'a Cluster),
}

pub fn run_backlog(dir: &Path, entries: u64, to: BacklogTarget) -> Backlog {
    let kind = match to {
        BacklogTarget::Sqlite => "sqlite",
        BacklogTarget::Postgres(_) => "pg",
    };
    let bdir = dir.join(format!("backlog-{kind}-{entries}"));
    std::fs::create_dir_all(&bdir).unwrap();
    let jdir = bdir.join("journal");
    let db = format!("backlog_{entries}");
    let t = Instant::now();
    write_changeset_journal(&jdir, (0..entries).map(cert_payload));
    let target = match to {
        BacklogTarget::Sqlite => {
            let path = bdir.join("target.db");
            make_target(&path);
            path.to_str().expect("UTF-8 bench directory").to_string()
        }
        BacklogTarget::Postgres(c) => make_pg_target(c, &db),
    };
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
    if let BacklogTarget::Postgres(c) = to {
        drop_pg_target(c, &db);
    }
    settle(&bdir);
    b
}

pub fn group_backlog(cfg: &Config, dir: &Path, res: &mut Results) {
    if !cfg.wants("backlog", "sj_backlog") {
        return;
    }
    run_pair(
        dir,
        res,
        "backlog",
        cfg.backlog,
        BacklogTarget::Sqlite,
        ["small", "big"],
    );
}

pub fn group_pg_backlog(cfg: &Config, dir: &Path, res: &mut Results) {
    if !cfg.wants("pg_backlog", "pg_sj_backlog") {
        return;
    }
    let Some(cluster) = start_server("pg_backlog", false, res) else {
        return;
    };
    run_pair(
        dir,
        res,
        "pg_backlog",
        cfg.pg_backlog,
        BacklogTarget::Postgres(&cluster),
        ["pg_small", "pg_big"],
    );
}

/// A backlog of `big` entries and one 10× smaller, each replayed by a child process; the
/// results kept under `tags` (small, big).
fn run_pair(
    dir: &Path,
    res: &mut Results,
    group: &str,
    big: u64,
    to: BacklogTarget,
    tags: [&'static str; 2],
) {
    let small = (big / 10).max(1000);
    println!("[{group}] {small} then {big} entries, replayed by a child process each");
    for (entries, tag) in [(small, tags[0]), (big, tags[1])] {
        let b = run_backlog(dir, entries, to);
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
                "WARNING: {group} {entries}: applied {} of {} (error {})",
                b.applied, b.entries, b.error
            ));
        }
        res.backlog.insert(tag, b);
    }
}
