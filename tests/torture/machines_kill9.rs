//! Three machines on one target, each a child process with its own journal and cache, making
//! random concurrent edits to overlapping rows (inserts, updates, deletes of hosts and
//! domains) and syncing and pulling, while the parent kills any of them with SIGKILL at random
//! moments (and starts it again), on both target kinds: on PostgreSQL it also cuts one
//! machine's link (a proxy of its own) and kills the server (`-m immediate`); the SQLite
//! target is a local file here, and on the real share ([`on_share`], a scenario of
//! `netshare.rs`'s run) the faults are one machine's link cut, every link cut and a server
//! crash.
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

fn spawn(dir: &Path, i: usize) -> ChildLines {
    let m = dir.join(format!("m{i}"));
    ChildLines::spawn_logged(
        child_test_command(&test_path(module_path!(), CHILD_TEST), ENV_DIR, &m),
        &m.join("child.stderr"),
    )
}

/// A fault besides kill -9: its name, and what it does to machine `i` (undoing it before it
/// returns).
pub type FaultFn<'a> = (&'static str, Box<dyn FnMut(usize, &mut Rng) + 'a>);

/// Three machines on `target`, machine `i` reaching it through `specs[i]` (in [`parse_spec`]'s
/// form, for the children and for this process's checks), for `secs` s of kill -9 and
/// `faults`; then quiescence and [`check`]. Returns the summary line.
fn run(
    name: &str,
    target: &TestTarget,
    specs: &[String],
    faults: &mut [FaultFn<'_>],
    secs: u64,
    rng: &mut Rng,
    seed: u64,
) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    for (i, spec) in specs.iter().enumerate() {
        let m = dir.join(format!("m{i}"));
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("machine"), i.to_string()).unwrap();
        std::fs::write(m.join("seed"), rng.next_u64().to_string()).unwrap();
        std::fs::write(m.join("spec"), spec).unwrap();
    }
    let mut children: Vec<ChildLines> = (0..MACHINES).map(|i| spawn(&dir, i)).collect();
    let mut tally: BTreeMap<&str, u32> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(rng.range(200, 1200)));
        let i = rng.urange(0, MACHINES);
        // kill -9 half of the time, the other faults share the rest.
        let pick = rng.below(2 * faults.len().max(1) as u64) as usize;
        match faults.get_mut(pick) {
            Some((what, f)) => {
                f(i, rng);
                *tally.entry(what).or_default() += 1;
            }
            None => {
                children[i].kill9(&mut |_| {}).unwrap();
                *tally.entry("kill -9").or_default() += 1;
                std::thread::sleep(Duration::from_millis(rng.below(300)));
                children[i] = spawn(&dir, i);
            }
        }
    }
    std::fs::write(dir.join("stop"), b"").unwrap();
    for (i, c) in children.iter_mut().enumerate() {
        c.wait_for("sjm-stopped", Duration::from_secs(120), &mut |_| {})
            .unwrap_or_else(|e| {
                let err = std::fs::read_to_string(dir.join(format!("m{i}/child.stderr")));
                panic!("{name} seed {seed}: machine {i}: {e}; stderr {err:?}")
            });
        let _ = c.child.wait();
    }
    // Quiescence, through this process's own stores (the children are gone).
    let stores: Vec<Store> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let m = dir.join(format!("m{i}"));
            Store::open(
                m.join("journal"),
                m.join("cache.db"),
                machine_opts(parse_spec(spec)),
            )
            .unwrap()
        })
        .collect();
    quiesce(&stores);
    check(name, seed, target, &stores);
    let conflicts: u64 = stores
        .iter()
        .map(|s| s.status().unwrap().conflicts.resolved)
        .sum();
    let entries: Vec<u64> = stores
        .iter()
        .map(|s| s.status().unwrap().head_lsn)
        .collect();
    format!(
        "machines_kill9 {name}: {MACHINES} machines, {secs} s of faults {tally:?}; entries {entries:?}, each applied once; {conflicts} conflicts settled by last writer wins; every cache equals the target; integrity ok"
    )
}

/// On a local SQLite file: kill -9 only (the share's faults are [`on_share`]'s).
fn on_sqlite(secs: u64, rng: &mut Rng, seed: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let target = TestTarget::create(TargetKind::Sqlite, dir.path(), "machines.db", &schema());
    let specs = vec![format!("sqlite {}", target.path().display()); MACHINES];
    run("sqlite", &target, &specs, &mut [], secs, rng, seed)
}

/// On a PostgreSQL server of its own: kill -9, one machine's link cut (each reaches the
/// server through a proxy of its own), the server killed (`-m immediate`) and restarted.
#[cfg(feature = "postgres")]
fn on_postgres(secs: u64, rng: &mut Rng, seed: u64) -> Option<String> {
    use crate::support::postgres::{Cluster, Proxy};
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with("-c max_connections=100")?;
    let target = TestTarget::postgres_on(c.server(), dir.path(), "machines");
    target.create_schema(&schema());
    let proxies: Vec<Proxy> = (0..MACHINES).map(|_| Proxy::start(c.port)).collect();
    let specs: Vec<String> = proxies
        .iter()
        .map(|p| format!("pg {}", target.url_through(p.port())))
        .collect();
    let mut faults: Vec<FaultFn<'_>> = vec![
        (
            "link cut",
            Box::new(|i, rng| {
                proxies[i].down();
                std::thread::sleep(Duration::from_millis(rng.range(200, 2500)));
                proxies[i].up();
            }),
        ),
        (
            "server kill",
            Box::new(|_, rng| {
                c.stop_immediate();
                std::thread::sleep(Duration::from_millis(rng.range(300, 1500)));
                c.start_server();
            }),
        ),
    ];
    Some(run(
        "postgres",
        &target,
        &specs,
        &mut faults,
        secs,
        rng,
        seed,
    ))
}

/// On the real share (`netshare.rs`'s scenario `machines`): machines 0 and 1 through mount
/// 1, machine 2 through mount 2 (no locks shared: the lease keeps them apart); kill -9, a cut
/// of machine 2's link alone, a cut of every link, a server crash, each for long enough to
/// become I/O errors (the soft profile's 3-4 s) or not.
pub fn on_share(share: &std::sync::Arc<crate::support::netshare::Share>) -> String {
    use crate::support::netshare::Fault;
    let (mut rng, seed) = Rng::from_env_or_time("SYNCJOURNAL_MACHINES_SEED");
    let secs: u64 = count_from_env("SYNCJOURNAL_MACHINES_SECS", 15);
    let name = "machines.db";
    for suffix in ["", "-journal", "-sjlease"] {
        let _ = std::fs::remove_file(share.export.join(format!("{name}{suffix}")));
    }
    drop(TestTarget::create(
        TargetKind::Sqlite,
        &share.mnt,
        name,
        &schema(),
    ));
    let server = TestTarget::named(TargetKind::Sqlite, &share.export, name);
    let specs = vec![
        format!("sqlite {}", share.mnt.join(name).display()),
        format!("sqlite {}", share.mnt.join(name).display()),
        format!("sqlite {}", share.mnt2.join(name).display()),
    ];
    let outage = |share: &crate::support::netshare::Share, fault: Fault, rng: &mut Rng| {
        share.inject(fault).expect("inject");
        std::thread::sleep(Duration::from_millis(rng.range(300, 5000)));
        share.heal().expect("heal");
    };
    let mut faults: Vec<FaultFn<'_>> = vec![
        (
            "machine 2's link cut",
            Box::new(|_, rng| outage(share, Fault::CutMount2, rng)),
        ),
        (
            "every link cut",
            Box::new(|_, rng| outage(share, Fault::Link, rng)),
        ),
        (
            "server kill",
            Box::new(|_, rng| outage(share, Fault::Kill, rng)),
        ),
    ];
    run(
        &format!("share (SYNCJOURNAL_MACHINES_SEED={seed})"),
        &server,
        &specs,
        &mut faults,
        secs,
        &mut rng,
        seed,
    )
}

/// The checks after quiescence (see the module's comment).
fn check(name: &str, seed: u64, target: &TestTarget, stores: &[Store]) {
    let ctx = |i: usize| format!("{name} seed {seed}: machine {i}");
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
    assert_eq!(target.integrity(), "ok", "{name} seed {seed}: the target");
}

#[test]
fn machines_kill9_soak() {
    let _g = alongside();
    with_timeout(900, || {
        let (mut rng, seed) = Rng::from_env_or_time("SYNCJOURNAL_MACHINES_SEED");
        let secs: u64 = count_from_env("SYNCJOURNAL_MACHINES_SECS", 15);
        eprintln!("machines_kill9: SYNCJOURNAL_MACHINES_SEED={seed}");
        summary(&on_sqlite(secs, &mut rng, seed));
        #[cfg(feature = "postgres")]
        if let Some(line) = on_postgres(secs, &mut rng, seed) {
            summary(&line);
        }
    });
}
