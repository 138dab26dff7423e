//! Three machines on one target, each a child process with its own journal and cache, making
//! random concurrent edits to overlapping rows (inserts, updates, deletes of hosts and
//! domains) and syncing and pulling, while the parent kills any of them with SIGKILL at random
//! moments (and starts it again), and on PostgreSQL also cuts one machine's link (a proxy of
//! its own) and kills the server (`-m immediate`), on both target kinds. The SQLite target is
//! a local file here; the same faults on a real share are `netshare.rs`'s.
//!
//! Every entry also inserts one row of its own into `ledger` (`<machine>-<n>`), so that each
//! entry leaves exactly one change-log record of that table. Afterwards, once every machine
//! has synced and pulled until nothing moves:
//!
//! * each journal applied exactly once: its watermark is its head, and the change log holds
//!   exactly one `ledger` record per LSN, `head` of them, and the target `head` ledger rows;
//! * nothing lost silently: no entry quarantined, nothing pending;
//! * every conflict counted and settled per the policy (last writer wins): the status's count
//!   is the number of conflict records, none pending, and each record's resolution is the one
//!   the rule gives for its clocks (an update against a delete: the deletion stands);
//! * every cache equal to the target, and `integrity_check` ok on the caches (and target).
//!
//! `SYNCJOURNAL_MACHINES_SECS` (default 15) is how long the faults go on per target kind;
//! `SYNCJOURNAL_MACHINES_SEED` replays a run's fault schedule.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use syncjournal::{
    ChangeSet, RejectPolicy, ReplayOptions, Store, StoreOptions, TargetOptions, TargetSpec, Value,
};

use crate::support::inventory::{INVENTORY_SCHEMA, INVENTORY_TABLES, dump_inventory};
use crate::support::machines::quiesce;
use crate::support::process::{
    ChildLines, alongside, child_test_command, count_from_env, summary, test_path, with_timeout,
};
use crate::support::rng::Rng;
use crate::support::targets::{TargetKind, TestTarget};

const ENV_DIR: &str = "SYNCJOURNAL_MACHINES_DIR";
const CHILD_TEST: &str = "machines_kill9_child";
const MACHINES: usize = 3;

/// The inventory, and the ledger of entries.
fn schema() -> String {
    format!(
        "{INVENTORY_SCHEMA}CREATE TABLE IF NOT EXISTS ledger (entry TEXT PRIMARY KEY, machine INTEGER NOT NULL);\n"
    )
}

/// The store options of a machine on `spec` (the children's and the parent's).
fn machine_opts(spec: TargetSpec) -> StoreOptions {
    StoreOptions::new()
        .cache_schema(schema())
        .target(spec, TargetOptions::new().connect_timeout_ms(2_000))
        .replay(
            ReplayOptions::new()
                .reject_policy(RejectPolicy::Quarantine)
                .retry_attempts_max(1)
                .retry_delay_ms(50),
        )
        .background_sync(false)
}

/// A target spec as the parent writes it for a child: `sqlite <path>` or `pg <url>`.
fn parse_spec(s: &str) -> TargetSpec {
    match s.split_once(' ') {
        Some(("sqlite", p)) => TargetSpec::from(PathBuf::from(p)),
        Some(("pg", url)) => TargetSpec::from(url),
        _ => panic!("bad spec {s:?}"),
    }
}

/// Entry `n` of machine `m`: its ledger row and one random edit of overlapping rows.
fn edit(rng: &mut Rng, m: i64, n: i64) -> ChangeSet {
    let cs = ChangeSet::new().insert("ledger", [("entry", format!("{m}-{n}"))], [("machine", m)]);
    let id = rng.range(1, 10) as i64;
    match rng.below(6) {
        0 => cs.delete("hosts", [("id", id)]),
        1 => cs.insert("hosts", [("id", id)], [("name", format!("ins-{m}-{n}"))]),
        2 => cs.update("hosts", [("id", id)], [("os", format!("os-{m}-{n}"))]),
        3 => cs.upsert(
            "domains",
            [("name", format!("d{}", id % 4))],
            [("host_id", id)],
        ),
        4 => cs.delete("domains", [("name", format!("d{}", id % 4))]),
        _ => cs
            .upsert("hosts", [("id", id)], [("name", format!("up-{m}-{n}"))])
            .upsert(
                "domains",
                [("name", format!("d{}", id % 3))],
                [("registrar", format!("r{m}"))],
            ),
    }
}

/// A machine: edits, syncs and pulls until `../stop` exists. Started by
/// `machines_kill9_soak` only.
#[test]
#[ignore = "child process of machines_kill9_soak"]
fn machines_kill9_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let m: i64 = read("machine").trim().parse().unwrap();
    let seed: u64 = read("seed").trim().parse().unwrap();
    let spec = read("spec");
    let mut rng = Rng::mixed(seed ^ u64::from(std::process::id()));
    let store: Store = loop {
        match Store::open(
            dir.join("journal"),
            dir.join("cache.db"),
            machine_opts(parse_spec(&spec)),
        ) {
            Ok(s) => break s,
            Err(e) => {
                println!("sjm-open-error {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    // The entries this machine made so far are its ledger rows in its own cache.
    let mut n: i64 = store
        .read(|c| {
            c.query_row("SELECT count(*) FROM ledger WHERE machine = ?1", [m], |r| {
                r.get(0)
            })
        })
        .unwrap();
    println!("sjm-open {n}");
    let stop = dir.parent().unwrap().join("stop");
    while !stop.exists() {
        // A change the cache refuses (an insert of a row it has, an update of one it does
        // not) is not journaled: the cache's rule.
        if store.apply(&edit(&mut rng, m, n)).is_ok() {
            n += 1;
        }
        if rng.one_in(4) {
            let r = store.sync_now();
            println!(
                "sjm-sync {} {:?}",
                r.applied,
                r.error.map(|e| e.to_string())
            );
            let p = store.pull_now();
            println!(
                "sjm-pull {} {:?}",
                p.applied,
                p.error.map(|e| e.to_string())
            );
        }
        std::thread::sleep(Duration::from_millis(rng.below(15)));
    }
    println!("sjm-stopped {n}");
}

/// What the faults did.
#[derive(Default, Debug)]
struct Tally {
    kills: u32,
    cuts: u32,
    server_kills: u32,
}

fn spawn(dir: &Path, i: usize) -> ChildLines {
    let m = dir.join(format!("m{i}"));
    ChildLines::spawn_logged(
        child_test_command(&test_path(module_path!(), CHILD_TEST), ENV_DIR, &m),
        &m.join("child.stderr"),
    )
}

/// One target kind's run; returns its summary line.
fn soak(kind: TargetKind, secs: u64, rng: &mut Rng, seed: u64) -> Option<String> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    #[cfg(feature = "postgres")]
    let mut cluster = None;
    #[cfg(feature = "postgres")]
    let mut proxies = Vec::new();
    let target = match kind {
        TargetKind::Sqlite => {
            std::fs::create_dir_all(dir.join("share")).unwrap();
            TestTarget::create(kind, &dir.join("share"), "machines.db", &schema())
        }
        #[cfg(feature = "postgres")]
        TargetKind::Postgres => {
            use crate::support::postgres::{Cluster, Proxy};
            let c = Cluster::start_with("-c max_connections=100")?;
            let t = TestTarget::postgres_on(c.server(), &dir, "machines");
            t.create_schema(&schema());
            for _ in 0..MACHINES {
                proxies.push(Proxy::start(c.port));
            }
            cluster = Some(c);
            t
        }
    };
    // Each machine reaches the target its own way (PostgreSQL: through a proxy of its own).
    let spec_of = |i: usize| match kind {
        TargetKind::Sqlite => format!("sqlite {}", target.path().display()),
        #[cfg(feature = "postgres")]
        TargetKind::Postgres => format!("pg {}", target.url_through(proxies[i].port())),
    };
    for i in 0..MACHINES {
        let m = dir.join(format!("m{i}"));
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("machine"), i.to_string()).unwrap();
        std::fs::write(m.join("seed"), rng.next_u64().to_string()).unwrap();
        std::fs::write(m.join("spec"), spec_of(i)).unwrap();
    }
    let mut children: Vec<ChildLines> = (0..MACHINES).map(|i| spawn(&dir, i)).collect();
    let mut tally = Tally::default();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let faults = if kind == TargetKind::Sqlite { 5 } else { 8 };
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(rng.range(200, 1200)));
        let i = rng.urange(0, MACHINES);
        match rng.below(faults) {
            0..=4 => {
                children[i].kill9(&mut |_| {}).unwrap();
                tally.kills += 1;
                std::thread::sleep(Duration::from_millis(rng.below(300)));
                children[i] = spawn(&dir, i);
            }
            #[cfg(feature = "postgres")]
            5 | 6 => {
                proxies[i].down();
                std::thread::sleep(Duration::from_millis(rng.range(200, 2500)));
                proxies[i].up();
                tally.cuts += 1;
            }
            #[cfg(feature = "postgres")]
            _ => {
                let c = cluster.as_ref().unwrap();
                c.stop_immediate();
                std::thread::sleep(Duration::from_millis(rng.range(300, 1500)));
                c.start_server();
                tally.server_kills += 1;
            }
            #[cfg(not(feature = "postgres"))]
            _ => unreachable!("faults beyond kill -9 are PostgreSQL's"),
        }
    }
    std::fs::write(dir.join("stop"), b"").unwrap();
    let mut made = Vec::new();
    for (i, c) in children.iter_mut().enumerate() {
        let mut last = String::new();
        c.wait_for("sjm-stopped", Duration::from_secs(120), &mut |l| {
            last = l.to_owned()
        })
        .unwrap_or_else(|e| {
            let err = std::fs::read_to_string(dir.join(format!("m{i}/child.stderr")));
            panic!("{kind} seed {seed}: machine {i}: {e}; stderr {err:?}")
        });
        let _ = c.child.wait();
        made.push(last);
    }
    // Quiescence, through this process's own stores (the children are gone).
    let stores: Vec<Store> = (0..MACHINES)
        .map(|i| {
            let m = dir.join(format!("m{i}"));
            Store::open(
                m.join("journal"),
                m.join("cache.db"),
                machine_opts(target.spec()),
            )
            .unwrap()
        })
        .collect();
    quiesce(&stores);
    check(kind, seed, &target, &stores);
    let conflicts: u64 = stores
        .iter()
        .map(|s| s.status().unwrap().conflicts.resolved)
        .sum();
    let entries: Vec<u64> = stores
        .iter()
        .map(|s| s.status().unwrap().head_lsn)
        .collect();
    Some(format!(
        "machines_kill9 {kind}: {MACHINES} machines, {secs} s of faults ({} kill -9, {} link cuts, {} server kills); entries {entries:?}, each applied once; {conflicts} conflicts settled by last writer wins; every cache equals the target; integrity ok",
        tally.kills, tally.cuts, tally.server_kills
    ))
}

/// The checks after quiescence (see the module's comment).
fn check(kind: TargetKind, seed: u64, target: &TestTarget, stores: &[Store]) {
    let ctx = |i: usize| format!("{kind} seed {seed}: machine {i}");
    let mut tables: Vec<&str> = INVENTORY_TABLES.to_vec();
    tables.push("ledger");
    let on_target: BTreeMap<&str, Vec<Vec<Value>>> =
        tables.iter().map(|t| (*t, target.dump(t))).collect();
    for (i, s) in stores.iter().enumerate() {
        let st = s.status().unwrap();
        let head = st.head_lsn;
        assert_eq!(st.pending_entries, 0, "{}: {st:?}", ctx(i));
        assert_eq!(st.quarantined, 0, "{}: nothing quarantined", ctx(i));
        assert_eq!(st.target_lsn, Some(head), "{}: the watermark", ctx(i));
        let id = st.journal_id.to_string();
        let ledger = target.ints(&format!("SELECT count(*) FROM ledger WHERE machine = {i}"))[0];
        let log: Vec<i64> = target.rows(&format!(
            "SELECT count(*), count(DISTINCT lsn), coalesce(min(lsn), 0), coalesce(max(lsn), 0) FROM syncjournal_changes WHERE table_name = 'ledger' AND journal_id = '{id}'"
        ))[0]
            .iter()
            .map(|v| match v {
                Value::Integer(i) => *i,
                other => panic!("not an integer: {other:?}"),
            })
            .collect();
        let head = head as i64;
        assert_eq!(
            (ledger, log),
            (head, vec![head, head, head.min(1), head]),
            "{}: one ledger row and one change-log record per entry, for every LSN once",
            ctx(i)
        );
        // Conflicts: counted, none pending, each settled as last writer wins says.
        let records = s.conflicts(1_000_000).unwrap();
        assert_eq!(
            (st.conflicts.resolved, st.conflicts.pending),
            (records.len() as u64, 0),
            "{}: the status counts the conflict records",
            ctx(i)
        );
        for r in &records {
            let local_newer = (r.local_hlc, r.journal_id.as_bytes())
                > (r.remote_hlc, r.remote_journal_id.as_bytes());
            let want = if r.kind == "update/delete" || r.kind == "event/delete" || !local_newer {
                "target"
            } else {
                "local"
            };
            assert_eq!(r.resolution, want, "{}: conflict {r:?}", ctx(i));
            assert!(!r.pending);
        }
        let cache: BTreeMap<&str, Vec<Vec<Value>>> = s
            .read(|c| {
                let mut t = dump_inventory(c);
                t.insert("ledger", crate::support::targets::dump(c, "ledger"));
                Ok(t)
            })
            .unwrap();
        assert_eq!(cache, on_target, "{}: the cache equals the target", ctx(i));
        let ok: String = s
            .read(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(ok, "ok", "{}: the cache's integrity", ctx(i));
    }
    assert_eq!(target.integrity(), "ok", "{kind} seed {seed}: the target");
}

#[test]
fn machines_kill9_soak() {
    let _g = alongside();
    with_timeout(900, || {
        let (mut rng, seed) = Rng::from_env_or_time("SYNCJOURNAL_MACHINES_SEED");
        let secs: u64 = count_from_env("SYNCJOURNAL_MACHINES_SECS", 15);
        eprintln!("machines_kill9: SYNCJOURNAL_MACHINES_SEED={seed}");
        for kind in TargetKind::all() {
            if let Some(line) = soak(kind, secs, &mut rng, seed) {
                summary(&line);
            }
        }
    });
}
