//! Shared schema and helpers for the store tests (`model_store`, `status_quarantine`,
//! `cache`). Each test binary uses a subset of them.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};
use syncjournal::{
    ChangeSet, JournalOptions, RejectPolicy, ReplayOptions, Store, StoreOptions, TargetOptions,
    Value,
};

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

/// The smallest segment size: a few large records rotate the journal.
pub const SMALL_SEGMENT: u64 = 65536;

/// File names used inside a test directory.
pub struct Paths {
    pub journal: PathBuf,
    pub cache: PathBuf,
    pub target: PathBuf,
}

impl Paths {
    pub fn in_dir(dir: &Path) -> Paths {
        Paths {
            journal: dir.join("journal"),
            cache: dir.join("cache.db"),
            target: dir.join("target.db"),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Store options: the shared schema, small segments, a target created on first use with the
/// same schema, no background sync, no retries (a failed `sync_now` returns at once).
pub fn store_opts(target: &Path, policy: RejectPolicy) -> StoreOptions {
    store_opts_with_target_schema(target, policy, SCHEMA)
}

/// Like [`store_opts`], with another schema for the target (created on first use).
pub fn store_opts_with_target_schema(
    target: &Path,
    policy: RejectPolicy,
    target_schema: &str,
) -> StoreOptions {
    store_opts_full(
        target,
        TargetOptions::new()
            .create_if_missing(true)
            .create_schema(target_schema),
        ReplayOptions::new()
            .reject_policy(policy)
            .retry_attempts_max(0),
    )
}

/// The shared cache schema, small segments, no background sync, and the given target and
/// replay options.
pub fn store_opts_full(target: &Path, topts: TargetOptions, replay: ReplayOptions) -> StoreOptions {
    StoreOptions::new()
        .journal(
            JournalOptions::new()
                .segment_bytes_max(SMALL_SEGMENT)
                .retain_acked_ms(0),
        )
        .cache_schema(SCHEMA)
        .target(target, topts)
        .replay(replay)
        .background_sync(false)
}

/// Store options without a target.
pub fn local_opts() -> StoreOptions {
    StoreOptions::new()
        .journal(
            JournalOptions::new()
                .segment_bytes_max(SMALL_SEGMENT)
                .retain_acked_ms(0),
        )
        .cache_schema(SCHEMA)
        .background_sync(false)
}

/// Opens a `Store<ChangeSet>`.
pub fn open(paths: &Paths, opts: StoreOptions) -> Store {
    Store::open(&paths.journal, &paths.cache, opts).expect("open store")
}

/// Every row of `table` ordered by its primary key, all columns in declaration order.
pub fn dump_table(
    conn: &Connection,
    table: &str,
    order: &str,
) -> rusqlite::Result<Vec<Vec<Value>>> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))?;
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())?
        .collect()
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

/// A read-only connection to a database file.
pub fn open_ro(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()))
}

/// The application tables of the target.
pub fn dump_target(path: &Path) -> Vec<Vec<Vec<Value>>> {
    dump_all(&open_ro(path)).expect("read target")
}

/// The target's watermark for `journal_id` (0 if it has none).
pub fn target_watermark(path: &Path, journal_id: impl std::fmt::Display) -> u64 {
    let conn = open_ro(path);
    conn.query_row(
        "SELECT lsn FROM syncjournal_progress WHERE journal_id = ?1",
        [journal_id.to_string()],
        |r| r.get::<_, i64>(0),
    )
    .map(|l| l as u64)
    .unwrap_or(0)
}

/// Copies a database file to `dst` through SQLite (`VACUUM INTO`), so that whatever sits in
/// its WAL is included. Works on the cache while the guards are installed (it only reads).
pub fn copy_db(src: &Path, dst: &Path) {
    let conn = Connection::open(src).expect("open database to copy");
    conn.execute("VACUUM INTO ?1", [dst.to_str().expect("utf-8 path")])
        .expect("VACUUM INTO");
}

/// Copies a directory's files (recursively).
pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).expect("create copy directory");
    for e in fs::read_dir(src).expect("read directory") {
        let e = e.expect("directory entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).expect("copy file");
        }
    }
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
