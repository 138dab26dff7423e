//! `kill -9` of a store while it pulls the target's change log into its cache.
//!
//! A writer machine (in this process) adds a few hundred row changes to the target per cycle:
//! upserts and deletes of overlapping hosts. Each cycle starts a child (this test binary
//! re-executed to run only the ignored `pull_kill9_child`), which opens the puller machine's
//! store and pulls in a loop, and kills it with SIGKILL at a random moment: during its open,
//! inside a cache transaction holding a page, between pages. Every fifth cycle the puller's
//! cache is deleted first, so that the child pulls the whole log from the start. After each
//! kill, before anything else:
//!
//! * the cache is intact (`integrity_check`), and its rows are exactly the fold of the change
//!   log up to the cursor it holds: every page applied whole with its cursor, or not at all.
//!
//! At the end a pull brings the cache level with the target.
//!
//! 40 cycles by default (`SYNCJOURNAL_SOAK_CYCLES` for more); `SYNCJOURNAL_PULL_SEED` replays a
//! run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use syncjournal::{ChangeSet, Store, StoreOptions, Value};

use crate::support::inventory::{INVENTORY_SCHEMA, dump_inventory};
use crate::support::process::{
    CHILD_WAIT, ChildLines, SOAK_ENV, alongside, child_test_command, count_from_env, summary,
    test_path, with_timeout,
};
use crate::support::rng::Rng;
use crate::support::targets::{TargetKind, TestTarget, open_target};

const ENV_DIR: &str = "SYNCJOURNAL_PULL_DIR";
const SEED_ENV: &str = "SYNCJOURNAL_PULL_SEED";
const CHILD_TEST: &str = "pull_kill9_child";
const CYCLES_DEFAULT: u64 = 40;

fn puller(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("puller-journal"), dir.join("puller-cache.db"))
}

fn target_path(dir: &Path) -> PathBuf {
    dir.join("share").join("inventory.db")
}

fn puller_opts(dir: &Path) -> StoreOptions {
    StoreOptions::new()
        .cache_schema(INVENTORY_SCHEMA)
        .target(target_path(dir), syncjournal::TargetOptions::new())
        .background_sync(false)
}

/// The child: pulls until killed. Does nothing unless started by `pull_kill9_cycles`.
#[test]
#[ignore = "child process of pull_kill9_cycles"]
fn pull_kill9_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let (j, c) = puller(&dir);
    let store: Store = Store::open(&j, &c, puller_opts(&dir)).expect("child: open store");
    println!("READY");
    for _ in 0..100_000 {
        let r = store.pull_now();
        assert!(r.error.is_none(), "child: pull {:?}", r.error);
        println!("PULLED {} {}", r.applied, r.cursor_seq);
        std::thread::sleep(Duration::from_millis(1));
    }
    std::process::exit(3);
}

/// The hosts table as the change log has it up to `cursor`: each row's last record.
fn fold_hosts(target: &Path, cursor: i64) -> Vec<Vec<Value>> {
    let c = open_target(target);
    let mut rows: BTreeMap<i64, Option<Vec<Value>>> = BTreeMap::new();
    let mut st = c
        .prepare("SELECT key, row FROM syncjournal_changes WHERE seq <= ?1 AND table_name = 'hosts' ORDER BY seq")
        .unwrap();
    let mut q = st.query([cursor]).unwrap();
    let decode = |b: &[u8]| -> Vec<(String, Value)> {
        bincode::serde::decode_from_slice(b, bincode::config::standard())
            .expect("a record's columns")
            .0
    };
    while let Some(r) = q.next().unwrap() {
        let key = decode(&r.get::<_, Vec<u8>>(0).unwrap());
        let row: Option<Vec<u8>> = r.get(1).unwrap();
        let Value::Integer(id) = key[0].1 else {
            panic!("host key {key:?}")
        };
        rows.insert(
            id,
            row.map(|b| {
                let mut v = vec![key[0].1.clone()];
                v.extend(decode(&b).into_iter().map(|(_, x)| x));
                v
            }),
        );
    }
    rows.into_values().flatten().collect()
}

#[test]
fn pull_kill9_cycles() {
    let _g = alongside();
    with_timeout(600, || {
        let (mut rng, seed) = Rng::from_env_or_time(SEED_ENV);
        let cycles: u64 = count_from_env(SOAK_ENV, CYCLES_DEFAULT);
        eprintln!("pull_kill9: {cycles} cycles, {SEED_ENV}={seed}");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("share")).unwrap();
        let target = TestTarget::create(
            TargetKind::Sqlite,
            &dir.join("share"),
            "inventory.db",
            INVENTORY_SCHEMA,
        );
        let writer: Store = Store::open(
            dir.join("writer-journal"),
            dir.join("writer-cache.db"),
            puller_opts(&dir).pull(false),
        )
        .unwrap();
        let (mut kills_mid_pull, mut checked_nonempty, mut checked_partial) = (0u64, 0u64, 0u64);
        for cycle in 0..cycles {
            for _ in 0..20 {
                let mut cs = ChangeSet::new();
                for _ in 0..15 {
                    let id = rng.range(0, 600) as i64;
                    cs = cs.upsert(
                        "hosts",
                        [("id", id)],
                        [(
                            "name",
                            Value::from(format!("h{id}-{cycle}-{}", rng.below(1000))),
                        )],
                    );
                }
                for _ in 0..5 {
                    cs = cs.delete("hosts", [("id", rng.range(0, 600) as i64)]);
                }
                writer.apply(&cs).unwrap();
            }
            let r = writer.sync_now();
            assert!(r.error.is_none(), "writer sync: {:?}", r.error);
            if cycle % 5 == 0 {
                let (_, cache) = puller(&dir);
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", cache.display()));
                }
            }
            let mut child = ChildLines::spawn_logged(
                child_test_command(&test_path(module_path!(), CHILD_TEST), ENV_DIR, &dir),
                &dir.join("child.stderr"),
            );
            let mut pulled = false;
            let mut on_line = |l: &str| {
                if l.contains("PULLED ") && !l.contains("PULLED 0 ") {
                    pulled = true;
                }
            };
            if !rng.one_in(4) {
                child
                    .wait_for("READY", CHILD_WAIT, &mut on_line)
                    .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
            }
            std::thread::sleep(Duration::from_micros(rng.range(0, 120_000)));
            child
                .kill9(&mut on_line)
                .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
            if !pulled {
                kills_mid_pull += 1;
            }
            // The cache as the kill left it.
            let (j, c) = puller(&dir);
            if !c.exists() {
                continue;
            }
            let store: Store = Store::open(&j, &c, puller_opts(&dir).pull(false)).unwrap();
            let cursor = store.pull_status().unwrap().cursor_seq as i64;
            let ok: String = store
                .read(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
                .unwrap();
            assert_eq!(ok, "ok", "cycle {cycle} seed {seed}");
            let cache = store.read(|c| Ok(dump_inventory(c))).unwrap();
            assert_eq!(
                cache["hosts"],
                fold_hosts(target.path(), cursor),
                "cycle {cycle} seed {seed}: the cache is the log's fold up to its cursor {cursor}"
            );
            let head: i64 = open_target(target.path())
                .query_row("SELECT seq FROM syncjournal_change_head", [], |r| r.get(0))
                .unwrap();
            if cursor > 0 && cursor < head {
                checked_partial += 1;
            }
            if cursor > 0 {
                checked_nonempty += 1;
            }
        }
        let (j, c) = puller(&dir);
        let store: Store = Store::open(&j, &c, puller_opts(&dir)).unwrap();
        let r = store.pull_now();
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(
            store.read(|c| Ok(dump_inventory(c))).unwrap(),
            crate::support::inventory::target_inventory(&target),
            "seed {seed}: after a last pull the cache equals the target"
        );
        summary(&format!(
            "pull_kill9: {cycles} cycles, {kills_mid_pull} kills before the child had reported a pull that applied changes, {checked_nonempty} caches checked against the log's fold at a non-zero cursor ({checked_partial} of them part way through the log), 0 torn pages"
        ));
    });
}
