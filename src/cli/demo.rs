//! `syncjournal demo`: the main job on an embedded example — an infrastructure inventory
//! (certificates, hosts, domains) kept in a local cache and synced to a "share" database.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use syncjournal::inspect::inspect;
use syncjournal::{ChangeSet, Store, StoreOptions, TargetOptions, TargetSpec, Value};

use crate::cli::fmt::{bytes, duration};
use crate::cli::outcome::{Failure, OK, Outcome};

/// The seed application's tables.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hosts (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, address TEXT, os TEXT);
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY, host_id INTEGER NOT NULL, registrar TEXT);
CREATE TABLE IF NOT EXISTS certificates (
    id INTEGER PRIMARY KEY, domain TEXT NOT NULL, not_after TEXT NOT NULL, pem BLOB);
";

/// A small deterministic generator (xorshift64*), so every demo run does the same work.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed application's tables on a PostgreSQL server (in schema [`PG_SCHEMA`]).
const PG_SCHEMA_SQL: &str = "
DROP SCHEMA IF EXISTS syncjournal_demo CASCADE;
CREATE SCHEMA syncjournal_demo;
CREATE TABLE syncjournal_demo.hosts (
    id BIGINT PRIMARY KEY, name TEXT NOT NULL, address TEXT, os TEXT);
CREATE TABLE syncjournal_demo.domains (
    name TEXT PRIMARY KEY, host_id BIGINT NOT NULL, registrar TEXT);
CREATE TABLE syncjournal_demo.certificates (
    id BIGINT PRIMARY KEY, domain TEXT NOT NULL, not_after TEXT NOT NULL, pem BYTEA);
";

/// The schema the demo uses on a PostgreSQL server (dropped and created again by each run).
const PG_SCHEMA: &str = "syncjournal_demo";

/// Runs the demo in `dir` (a new temporary directory if `None`), replaying to a new SQLite
/// "share" file there, or to `target`.
pub fn run(
    out: &mut dyn Write,
    dir: Option<PathBuf>,
    changes: usize,
    target: Option<TargetSpec>,
    machines: usize,
) -> Outcome {
    if machines > 1 && target.is_some() {
        return Err(Failure::Msg(
            "--machines runs on a new SQLite share file of its own: leave out --target".into(),
        ));
    }
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .map_err(|e| Failure::Msg(format!("cannot create {}: {e}", d.display())))?;
            d
        }
        None => tempfile::Builder::new()
            .prefix("syncjournal-demo-")
            .tempdir()
            .map_err(|e| Failure::Msg(format!("cannot create a temporary directory: {e}")))?
            .keep(),
    };
    if machines != 1 {
        return crate::cli::demo_machines::run_machines(out, &dir, machines);
    }
    let journal_dir = dir.join("journal");
    let cache = dir.join("cache.db");
    let share = match &target {
        // Every command given this connection string sees the demo's schema.
        Some(TargetSpec::Postgres(conn)) => TargetSpec::parse(&with_search_path(conn.as_str())),
        Some(t) => t.clone(),
        None => TargetSpec::from(dir.join("share.db")),
    };
    writeln!(out, "demo directory: {}", dir.display())?;
    let topts = match &share {
        TargetSpec::Postgres(conn) => {
            prepare_server(conn.as_str())?;
            writeln!(out, "target: {share} (schema {PG_SCHEMA}, created afresh)")?;
            TargetOptions::new()
        }
        // The demo creates its "share"; against a real share, leave this off so that an
        // unmounted share is an error instead of a new empty local file.
        _ => TargetOptions::new()
            .create_if_missing(true)
            .create_schema(SCHEMA),
    };
    let store: Store = Store::open(
        &journal_dir,
        &cache,
        StoreOptions::new()
            .cache_schema(SCHEMA)
            .target(&share, topts),
    )?;

    // The workload: hosts come and go with their domains and certificates; certificates are
    // renewed; hosts move.
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut live: Vec<i64> = Vec::new();
    let mut next_id = store.read(|c| {
        c.query_row("SELECT coalesce(max(id), 0) + 1 FROM hosts", [], |r| {
            r.get::<_, i64>(0)
        })
    })?;
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let started = Instant::now();
    for _ in 0..changes {
        let roll = rng.below(100);
        let cs = if live.len() < 20 || roll < 40 {
            let id = next_id;
            next_id += 1;
            live.push(id);
            let name = format!("srv-{id:05}");
            let domain = format!("{name}.example.org");
            *counts.entry("hosts added").or_default() += 1;
            ChangeSet::new()
                .insert(
                    "hosts",
                    [("id", id)],
                    [
                        ("name", Value::from(name.as_str())),
                        (
                            "address",
                            format!("10.{}.{}.{}", id >> 16 & 255, id >> 8 & 255, id & 255).into(),
                        ),
                        (
                            "os",
                            ["debian-12", "rhel-9", "ubuntu-24.04"][rng.below(3) as usize].into(),
                        ),
                    ],
                )
                .insert(
                    "domains",
                    [("name", domain.as_str())],
                    [("host_id", Value::from(id)), ("registrar", "acme".into())],
                )
                .insert(
                    "certificates",
                    [("id", id)],
                    [
                        ("domain", Value::from(domain.as_str())),
                        ("not_after", "2026-12-31".into()),
                        ("pem", pem(&mut rng).into()),
                    ],
                )
        } else if roll < 70 {
            let id = live[rng.below(live.len() as u64) as usize];
            *counts.entry("certificates renewed").or_default() += 1;
            ChangeSet::new().update(
                "certificates",
                [("id", id)],
                [
                    (
                        "not_after",
                        Value::from(format!("20{}-12-31", 27 + rng.below(3))),
                    ),
                    ("pem", pem(&mut rng).into()),
                ],
            )
        } else if roll < 85 {
            let id = live[rng.below(live.len() as u64) as usize];
            *counts.entry("hosts moved").or_default() += 1;
            ChangeSet::new().update(
                "hosts",
                [("id", id)],
                [(
                    "address",
                    format!("10.99.{}.{}", rng.below(256), rng.below(256)),
                )],
            )
        } else {
            let id = live.swap_remove(rng.below(live.len() as u64) as usize);
            *counts.entry("hosts decommissioned").or_default() += 1;
            ChangeSet::new()
                .delete("certificates", [("id", id)])
                .delete("domains", [("name", format!("srv-{id:05}.example.org"))])
                .delete("hosts", [("id", id)])
        };
        store.apply(&cs)?;
    }
    let elapsed = started.elapsed();
    writeln!(
        out,
        "applied {changes} change sets in {} ({:.0}/s), each durable in the journal before it returned:",
        duration(elapsed),
        changes as f64 / elapsed.as_secs_f64().max(1e-9)
    )?;
    for (what, n) in &counts {
        writeln!(out, "  {n:>6} {what}")?;
    }
    let before = store.status()?;
    writeln!(
        out,
        "status: head LSN {}, acknowledged by the share {}, pending {} entries ({})",
        before.head_lsn,
        before.acked_lsn,
        before.pending_entries,
        bytes(before.pending_bytes)
    )?;
    let report = store.sync_now();
    if report.applied == 0 && report.pending == 0 && report.error.is_none() {
        writeln!(
            out,
            "force sync: nothing left to apply (the background sync thread had applied it all)"
        )?;
    } else {
        writeln!(out, "force sync: {report}")?;
    }
    if let Some(e) = report.error {
        return Err(e.into());
    }
    // The share holds exactly what the cache holds.
    let mut shared = Shared::open(&share)?;
    for table in ["hosts", "domains", "certificates"] {
        let q = format!("SELECT * FROM {table} ORDER BY 1");
        let dump = |c: &rusqlite::Connection| -> rusqlite::Result<Vec<Vec<Value>>> {
            let mut s = c.prepare(&q)?;
            let n = s.column_count();
            s.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())?
                .collect()
        };
        let in_cache = store.read(dump)?;
        let in_share = shared.dump(table, &dump)?;
        if in_cache != in_share {
            return Err(Failure::Msg(format!(
                "{table} differs between the cache ({} rows) and the share ({} rows)",
                in_cache.len(),
                in_share.len()
            )));
        }
        writeln!(
            out,
            "  {table:<13} {:>6} rows: share equals cache",
            in_share.len()
        )?;
    }
    let after = store.status()?;
    writeln!(
        out,
        "status: head LSN {}, acknowledged {}, pending {}, last error: {}",
        after.head_lsn,
        after.acked_lsn,
        after.pending_entries,
        after
            .last_error
            .as_ref()
            .map_or("none", |e| e.message.as_str())
    )?;
    let ins = inspect(&journal_dir)?;
    writeln!(
        out,
        "journal verified: {} records in {} segment(s), {}",
        ins.records,
        ins.segments.len(),
        if ins.is_clean() {
            "no damage"
        } else {
            "DAMAGE (run syncjournal verify)"
        }
    )?;
    store.close()?;
    writeln!(out, "files:")?;
    writeln!(out, "  journal  {}", journal_dir.display())?;
    writeln!(out, "  cache    {}", cache.display())?;
    writeln!(out, "  share    {share}")?;
    writeln!(out, "try:")?;
    writeln!(
        out,
        "  syncjournal status {} --target '{share}'",
        journal_dir.display(),
    )?;
    writeln!(out, "  syncjournal dump {} | head", journal_dir.display())?;
    writeln!(out, "  syncjournal verify {}", journal_dir.display())?;
    Ok(OK)
}

/// The connection string with the demo's schema as its search path.
fn with_search_path(conn: &str) -> String {
    let opt = format!("-csearch_path={PG_SCHEMA}");
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let sep = if conn.contains('?') { '&' } else { '?' };
        format!("{conn}{sep}options={}", opt.replace('=', "%3D"))
    } else {
        format!("{conn} options={opt}")
    }
}

/// Creates the demo's schema on a server afresh.
fn prepare_server(conn: &str) -> Result<(), Failure> {
    let mut c = postgres::Client::connect(conn, postgres::NoTls)
        .map_err(|e| Failure::Msg(format!("cannot connect to the demo's server: {e}")))?;
    c.batch_execute(PG_SCHEMA_SQL)
        .map_err(|e| Failure::Msg(format!("cannot create the demo's schema: {e}")))
}

/// The demo's target, read back to compare it with the cache.
enum Shared {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Client>),
}

impl Shared {
    fn open(t: &TargetSpec) -> Result<Shared, Failure> {
        match t {
            TargetSpec::Postgres(conn) => postgres::Client::connect(conn.as_str(), postgres::NoTls)
                .map(|c| Shared::Postgres(Box::new(c)))
                .map_err(|e| Failure::Msg(format!("cannot connect to {t}: {e}"))),
            _ => {
                let path = t.sqlite_path().unwrap_or(std::path::Path::new(""));
                rusqlite::Connection::open(path)
                    .map(Shared::Sqlite)
                    .map_err(|e| Failure::Msg(format!("cannot open {t}: {e}")))
            }
        }
    }

    fn dump(
        &mut self,
        table: &str,
        sqlite: &dyn Fn(&rusqlite::Connection) -> rusqlite::Result<Vec<Vec<Value>>>,
    ) -> Result<Vec<Vec<Value>>, Failure> {
        match self {
            Shared::Sqlite(c) => {
                sqlite(c).map_err(|e| Failure::Msg(format!("reading the share: {e}")))
            }
            Shared::Postgres(c) => {
                let rows = c
                    .query(
                        &format!("SELECT * FROM {PG_SCHEMA}.{table} ORDER BY 1"),
                        &[],
                    )
                    .map_err(|e| Failure::Msg(format!("reading the server: {e}")))?;
                Ok(rows
                    .iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| {
                                let ty = r.columns()[i].type_().name().to_string();
                                match ty.as_str() {
                                    "int8" => r
                                        .get::<_, Option<i64>>(i)
                                        .map_or(Value::Null, Value::Integer),
                                    "bytea" => r
                                        .get::<_, Option<Vec<u8>>>(i)
                                        .map_or(Value::Null, Value::Blob),
                                    _ => r
                                        .get::<_, Option<String>>(i)
                                        .map_or(Value::Null, Value::Text),
                                }
                            })
                            .collect()
                    })
                    .collect())
            }
        }
    }
}

fn pem(rng: &mut Rng) -> Vec<u8> {
    let n = 200 + rng.below(200) as usize;
    (0..n).map(|_| rng.next() as u8).collect()
}
