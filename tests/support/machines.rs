//! Several machines on one target: each its own journal and cache of the inventory schema
//! (in a temporary directory), one target of a kind; stores opened without background sync, so
//! that a test decides when each machine syncs and pulls.

use std::collections::BTreeMap;
use std::path::PathBuf;

use syncjournal::{RejectPolicy, ReplayOptions, Store, StoreOptions, Value};

use super::inventory::{INVENTORY_SCHEMA, dump_inventory, target_inventory};
use super::targets::{TargetKind, TestTarget};

/// Machines `0..n` on one target.
pub struct Machines {
    pub dir: tempfile::TempDir,
    pub target: TestTarget,
    pub n: usize,
}

impl Machines {
    /// `n` machines on a new target of `kind` holding the inventory schema.
    pub fn new(kind: TargetKind, n: usize) -> Machines {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        std::fs::create_dir_all(&share).unwrap();
        let target = TestTarget::create(kind, &share, "inventory.db", INVENTORY_SCHEMA);
        Machines { dir, target, n }
    }

    /// Machine `i`'s journal directory.
    pub fn journal(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}")).join("journal")
    }

    /// Machine `i`'s cache.
    pub fn cache(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}")).join("cache.db")
    }

    /// Store options of the machines: the inventory schema, the target, quarantine of refused
    /// entries, no background sync.
    pub fn options(&self) -> StoreOptions {
        StoreOptions::new()
            .cache_schema(INVENTORY_SCHEMA)
            .target(self.target.spec(), self.target.options())
            .replay(ReplayOptions::new().reject_policy(RejectPolicy::Quarantine))
            .background_sync(false)
    }

    /// Opens machine `i`'s store.
    pub fn open(&self, i: usize) -> Store {
        std::fs::create_dir_all(self.dir.path().join(format!("m{i}"))).unwrap();
        Store::open(self.journal(i), self.cache(i), self.options()).unwrap()
    }

    /// Opens machine `i`'s store with `opts` (say [`options`](Self::options) with another
    /// replay configuration).
    pub fn open_with(&self, i: usize, opts: StoreOptions) -> Store {
        std::fs::create_dir_all(self.dir.path().join(format!("m{i}"))).unwrap();
        Store::open(self.journal(i), self.cache(i), opts).unwrap()
    }

    /// Opens every machine's store.
    pub fn open_all(&self) -> Vec<Store> {
        (0..self.n).map(|i| self.open(i)).collect()
    }

    /// The target's inventory.
    pub fn target_rows(&self) -> BTreeMap<&'static str, Vec<Vec<Value>>> {
        target_inventory(&self.target)
    }
}

/// A store's cache inventory.
pub fn cache_rows(store: &Store) -> BTreeMap<&'static str, Vec<Vec<Value>>> {
    store.read(|c| Ok(dump_inventory(c))).unwrap()
}

/// Syncs every store, then pulls into every one, until nothing moves: quiescence. Panics if
/// a sync or pull fails or it does not settle within a few rounds.
pub fn quiesce(stores: &[Store]) {
    for round in 0..10 {
        let mut moved = false;
        for s in stores {
            let r = s.sync_now();
            assert!(r.error.is_none(), "sync: {:?}", r.error);
            moved |= r.applied + r.quarantined > 0;
        }
        for s in stores {
            let p = s.pull_now();
            assert!(p.error.is_none(), "pull: {:?}", p.error);
            assert!(
                p.held_back.is_none(),
                "held back after every sync: {:?}",
                p.held_back
            );
            moved |= p.applied > 0;
        }
        if !moved && round > 0 {
            return;
        }
    }
    panic!("the machines did not settle in 10 rounds");
}
