//! The seed application's inventory (hosts, domains, certificates, as in
//! `examples/inventory.rs`): its schema, a journal, cache and target of it in a temporary
//! directory, a store over them, and the check that target and cache agree.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rusqlite::Connection;
use syncjournal::{ChangeSet, ReplayOptions, Store, StoreOptions, TargetOptions, Value};

use super::targets::{TargetKind, TestTarget, dump};

/// The seed application's schema (as in `examples/inventory.rs`).
pub const INVENTORY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hosts (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, address TEXT, os TEXT);
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY, host_id INTEGER, registrar TEXT);
CREATE TABLE IF NOT EXISTS certificates (
    id INTEGER PRIMARY KEY, domain TEXT NOT NULL, not_after TEXT NOT NULL, pem BLOB);
";

/// The inventory's tables.
pub const INVENTORY_TABLES: [&str; 3] = ["hosts", "domains", "certificates"];

/// Every inventory table.
pub fn dump_inventory(c: &Connection) -> BTreeMap<&'static str, Vec<Vec<Value>>> {
    INVENTORY_TABLES.iter().map(|t| (*t, dump(c, t))).collect()
}

/// Every inventory table of a target (of any kind), through a fresh connection; as
/// [`dump_inventory`].
pub fn target_inventory(target: &TestTarget) -> BTreeMap<&'static str, Vec<Vec<Value>>> {
    INVENTORY_TABLES
        .iter()
        .map(|t| (*t, target.dump(t)))
        .collect()
}

/// An inventory's journal (`dir/journal`), cache (`dir/cache.db`) and target (of a kind,
/// `dir/share/inventory.db`, not created) in a temporary directory; the share directory
/// exists.
pub struct Inventory {
    pub dir: tempfile::TempDir,
    pub journal: PathBuf,
    pub cache: PathBuf,
    /// The directory the target lives in (a share).
    pub share: PathBuf,
    pub target: TestTarget,
}

impl Inventory {
    /// A fresh inventory whose target is of `kind`.
    pub fn new(kind: TargetKind) -> Inventory {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        std::fs::create_dir_all(&share).unwrap();
        Inventory {
            journal: dir.path().join("journal"),
            cache: dir.path().join("cache.db"),
            target: TestTarget::named(kind, &share, "inventory.db"),
            share,
            dir,
        }
    }

    /// A store of the inventory (its schema on the cache, no background sync) replaying to
    /// its target with `topts` and `ropts`.
    pub fn store(&self, topts: TargetOptions, ropts: ReplayOptions) -> Store {
        Store::open(
            &self.journal,
            &self.cache,
            StoreOptions::new()
                .cache_schema(INVENTORY_SCHEMA)
                .target(self.target.spec(), topts)
                .replay(ropts)
                .background_sync(false),
        )
        .unwrap()
    }
}

/// A change set that upserts host `i` (`web-NN`).
pub fn host(i: i64) -> ChangeSet {
    ChangeSet::new().upsert(
        "hosts",
        [("id", i)],
        [("name", Value::from(format!("web-{i:02}")))],
    )
}

/// Asserts that the target holds exactly what the cache holds, that nothing is pending, and
/// that the target's watermark equals the acknowledgement and the journal head.
pub fn assert_in_sync(store: &Store, target: &TestTarget) {
    let cache = store.read(|c| Ok(dump_inventory(c))).unwrap();
    let shared = target_inventory(target);
    assert_eq!(cache, shared, "target rows must equal cache rows");
    let st = store.status().unwrap();
    assert_eq!(st.pending_entries, 0);
    assert_eq!(st.acked_lsn, st.head_lsn);
    assert_eq!(
        target.watermark(st.journal_id),
        st.acked_lsn,
        "target watermark = local acknowledgement"
    );
    assert!(st.last_error.is_none(), "{:?}", st.last_error);
}
