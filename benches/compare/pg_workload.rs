//! The PostgreSQL side of the workload: a throwaway server for the run (started by the bench
//! itself, skipped with a printed reason where the server binaries are missing), and a fresh
//! database per measurement holding the same certificates table, preloaded rows and watermark
//! row as the SQLite targets of `workload`.

use postgres::{Client, NoTls};

use crate::cluster::{Cluster, bin_dir};
use crate::report::Results;
use crate::workload::{PRELOADED_ROWS, cert_row};

/// The target schema on the server: the SQLite schema's types as the PostgreSQL target maps
/// them (integer → BIGINT, text → TEXT, blob → BYTEA), and the raw loops' watermark row.
pub const PG_SCHEMA: &str =
    "CREATE TABLE certificates (id BIGINT PRIMARY KEY, name TEXT, body BYTEA);
     CREATE TABLE replay_watermark (journal_id TEXT PRIMARY KEY, lsn BIGINT NOT NULL);
     INSERT INTO replay_watermark VALUES ('bench', 0);";

/// A server for `group` (with `durable`, one that fsyncs its commits, as in production; else
/// the test cluster's `fsync=off`), or `None` with the reason printed and noted.
pub fn start_server(group: &str, durable: bool, res: &mut Results) -> Option<Cluster> {
    if bin_dir().is_none() {
        let why = format!(
            "{group} skipped: PostgreSQL server binaries not found (install postgresql-15)"
        );
        println!("[{group}] {why}");
        res.note(why);
        return None;
    }
    let c = Cluster::start()?;
    if durable {
        c.restart_with("-c fsync=on -c synchronous_commit=on -c full_page_writes=on");
    }
    let mut client = c.client().expect("connect to the bench server");
    let version: String = client
        .query_one("SHOW server_version", &[])
        .expect("server_version")
        .get(0);
    let fsync: String = client.query_one("SHOW fsync", &[]).expect("fsync").get(0);
    assert_eq!(fsync == "on", durable, "the server's fsync setting");
    let note = format!(
        "{group}: PostgreSQL {version} started by the bench (unix socket, fsync={fsync}, shared_buffers=32MB), on the same 2 cores as the client"
    );
    println!("[{group}] {note}");
    res.note(note);
    Some(c)
}

/// A fresh database `name` with the certificates table preloaded like the SQLite targets
/// (`PRELOADED_ROWS` rows, even ids), vacuumed and analysed; returns its connection string.
pub fn make_pg_target(cluster: &Cluster, name: &str) -> String {
    let url = cluster.database(name, PG_SCHEMA);
    let mut c = Client::connect(&url, NoTls).expect("connect to the bench database");
    let mut ids = Vec::with_capacity(PRELOADED_ROWS as usize);
    let mut names = Vec::with_capacity(PRELOADED_ROWS as usize);
    let mut bodies = Vec::with_capacity(PRELOADED_ROWS as usize);
    for k in 0..PRELOADED_ROWS {
        let (_, name, body) = cert_row(k + (1 << 40));
        ids.push(k as i64 * 2);
        names.push(name);
        bodies.push(body);
    }
    c.execute(
        "INSERT INTO certificates (id, name, body)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[])",
        &[&ids, &names, &bodies],
    )
    .expect("preload certificates");
    c.batch_execute("VACUUM ANALYZE certificates")
        .expect("vacuum");
    url
}

/// Drops database `name` (its connections closed by force).
pub fn drop_pg_target(cluster: &Cluster, name: &str) {
    let mut c = cluster.client().expect("connect");
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .expect("drop database");
}
