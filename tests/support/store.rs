//! The store tests' application: its schema (three tables, one of each key shape), the file
//! names of a test directory, store options without background sync, change sets of it, and
//! dumps of its tables on the cache and on the target.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use syncjournal::{
    ChangeSet, JournalOptions, Lsn, RejectPolicy, ReplayOptions, Store, StoreOptions,
    TargetOptions, Value,
};

use super::journal::SEG_BYTES;
use super::targets::{TargetKind, TestTarget, dump_table};

/// The application schema of the cache (and, unless a test says otherwise, of the target).
///
/// * `items`: integer key (a rowid alias), one column of each declared type;
/// * `pairs`: composite key (text, integer), an untyped column (takes any value as is);
/// * `tags`: text key and a `NOT NULL` column without a default (inserts must give it).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, data BLOB);
CREATE TABLE IF NOT EXISTS pairs (a TEXT NOT NULL, b INTEGER NOT NULL, v, note TEXT, PRIMARY KEY (a, b));
CREATE TABLE IF NOT EXISTS tags (tag TEXT PRIMARY KEY, weight REAL NOT NULL, raw BLOB);
";

/// The application tables and the `ORDER BY` that sorts each by its primary key.
pub const TABLES: [(&str, &str); 3] = [("items", "id"), ("pairs", "a, b"), ("tags", "tag")];

/// The journal, the cache and the target of a test directory.
pub struct Paths {
    pub journal: PathBuf,
    pub cache: PathBuf,
    pub target: TestTarget,
}

impl Paths {
    /// `dir/journal`, `dir/cache.db` and an SQLite target `dir/target.db`.
    pub fn in_dir(dir: &Path) -> Paths {
        Paths::of_kind(TargetKind::Sqlite, dir)
    }

    /// [`Paths::in_dir`] of a new temporary directory (removed when it is dropped).
    pub fn temp() -> (tempfile::TempDir, Paths) {
        Paths::temp_of_kind(TargetKind::Sqlite)
    }

    /// [`Paths::of_kind`] of a new temporary directory (removed when it is dropped).
    pub fn temp_of_kind(kind: TargetKind) -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::of_kind(kind, dir.path());
        (dir, paths)
    }

    /// `dir/journal`, `dir/cache.db` and a target of `kind` named `target.db`.
    pub fn of_kind(kind: TargetKind, dir: &Path) -> Paths {
        Paths {
            journal: dir.join("journal"),
            cache: dir.join("cache.db"),
            target: TestTarget::named(kind, dir, "target.db"),
        }
    }
}

/// A store's files with its target on a share: `dir/journal`, `dir/cache.db` and
/// `dir/share/target.db`.
pub fn files_on_share(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("journal"),
        dir.join("cache.db"),
        dir.join("share").join("target.db"),
    )
}

/// Store options: the shared schema, small segments, a target created on first use with the
/// same schema, no background sync, no retries (a failed `sync_now` returns at once).
pub fn store_opts(target: &TestTarget, policy: RejectPolicy) -> StoreOptions {
    store_opts_with_target_schema(target, policy, SCHEMA)
}

/// Like [`store_opts`], with another schema for the target (created on first use).
pub fn store_opts_with_target_schema(
    target: &TestTarget,
    policy: RejectPolicy,
    target_schema: &str,
) -> StoreOptions {
    store_opts_full(
        target,
        target.options_creating(target_schema),
        ReplayOptions::new()
            .reject_policy(policy)
            .retry_attempts_max(0),
    )
}

/// Store options whose target must exist (never created, as on a share): the shared schema,
/// small segments, no background sync, no retries.
pub fn store_opts_existing(target: &TestTarget) -> StoreOptions {
    store_opts_full(
        target,
        target.options(),
        ReplayOptions::new().retry_attempts_max(0),
    )
}

/// The shared cache schema, small segments, no background sync, and the given target and
/// replay options.
pub fn store_opts_full(
    target: &TestTarget,
    topts: TargetOptions,
    replay: ReplayOptions,
) -> StoreOptions {
    local_opts().target(target.spec(), topts).replay(replay)
}

/// Store options without a target: the shared cache schema, small segments, acknowledged
/// segments removed at once, no background sync.
pub fn local_opts() -> StoreOptions {
    StoreOptions::new()
        .journal(
            JournalOptions::new()
                .segment_bytes_max(SEG_BYTES)
                .retain_acked_ms(0),
        )
        .cache_schema(SCHEMA)
        .background_sync(false)
}

/// A store without a target ([`local_opts`]) in a new directory: (directory, its paths, store).
pub fn local_store() -> (tempfile::TempDir, Paths, Store) {
    let (dir, paths) = Paths::temp();
    let store = open(&paths, local_opts());
    (dir, paths, store)
}

/// Opens a `Store<ChangeSet>`.
pub fn open(paths: &Paths, opts: StoreOptions) -> Store {
    Store::open(&paths.journal, &paths.cache, opts).expect("open store")
}

/// Every application table (see [`TABLES`]).
pub fn dump_all(conn: &Connection) -> rusqlite::Result<Vec<Vec<Vec<Value>>>> {
    TABLES
        .iter()
        .map(|(t, order)| dump_table(conn, t, order))
        .collect()
}

/// The application tables of the store's cache, read through the store.
pub fn dump_cache(store: &Store) -> Vec<Vec<Vec<Value>>> {
    store.read(dump_all).expect("read cache")
}

/// The application tables of the target (of any kind).
pub fn dump_target(target: &TestTarget) -> Vec<Vec<Vec<Value>>> {
    TABLES
        .iter()
        .map(|(t, order)| target.dump_ordered(t, order))
        .collect()
}

/// The item ids on a target (of any kind), in order; as [`item_ids`].
pub fn target_item_ids(target: &TestTarget) -> Vec<i64> {
    target.ints("SELECT id FROM items ORDER BY id")
}

/// A change set that inserts item `id` with a name, a quantity, a price and some bytes.
pub fn item(id: i64) -> ChangeSet {
    ChangeSet::new().insert(
        "items",
        [("id", id)],
        [
            ("name", Value::from(format!("item-{id}"))),
            ("qty", Value::Integer(id * 10)),
            ("price", Value::Real(id as f64 + 0.25)),
            ("data", Value::Blob(vec![id as u8; 3])),
        ],
    )
}

/// Applies `item(i)` for every `i` of `ids`; returns the last LSN (0 if none).
pub fn apply_items(store: &Store, ids: RangeInclusive<i64>) -> Lsn {
    ids.fold(0, |_, i| store.apply(&item(i)).unwrap())
}

/// Applies items `first, first + 1, …` until the journal has `segments` segments; returns the
/// id the next item would take.
pub fn apply_items_until_segments(store: &Store, first: i64, segments: usize) -> i64 {
    let mut i = first;
    while store.journal_state().segments < segments {
        store.apply(&item(i)).unwrap();
        i += 1;
    }
    i
}

/// A store of `paths` ([`store_opts`], `RejectPolicy::Stop`) with items `1..=n` applied and
/// synced.
pub fn synced_store(paths: &Paths, n: i64) -> Store {
    let store = open(paths, store_opts(&paths.target, RejectPolicy::Stop));
    apply_items(&store, 1..=n);
    assert!(store.sync_now().error.is_none());
    store
}

/// A change set that upserts tag `tag` with a weight.
pub fn tag(tag: &str, weight: f64) -> ChangeSet {
    ChangeSet::new().upsert("tags", [("tag", tag)], [("weight", weight)])
}

/// The ids present in `items` of a database.
pub fn item_ids(conn: &Connection) -> Vec<i64> {
    conn.prepare("SELECT id FROM items ORDER BY id")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()
        })
        .expect("read items")
}
