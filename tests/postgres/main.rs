//! The PostgreSQL target on a real server (a throwaway PostgreSQL 15 cluster per test), in
//! what only a server has (the replay suites run their fault-at-every-step, in-doubt, outage,
//! status and quarantine bodies on both kinds of target): real in-doubt commits (a backend killed
//! while its COMMIT waits, an immediate shutdown mid-batch), outages, two journals at once,
//! privileges, quarantine, value and identifier checks, passwords.

#[path = "../support/mod.rs"]
mod support;

mod batching;
#[cfg(feature = "tls")]
mod tls;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use syncjournal::fault::TargetFaults;
use syncjournal::{
    ApplyContext, ApplyError, ChangeSet, Error, Journal, JournalEvent, JournalOptions,
    RejectPolicy, ReplayOptions, Replayer, Store, StoreOptions, TargetError, TargetOptions, Value,
};

use support::events::{Bump, fold};
use support::postgres::Cluster;

const COUNTERS: &str = "CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL);
                        CREATE TABLE log (seq BIGINT NOT NULL, counter BIGINT NOT NULL);";

/// An application event that gives only its SQLite apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SqliteOnly(i64);

impl JournalEvent for SqliteOnly {
    const KIND: u8 = 0x43;
    fn apply(&self, _db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
        Ok(())
    }
    fn describe(&self) -> String {
        format!("sqlite-only {}", self.0)
    }
}

fn journal(dir: &Path) -> Arc<Journal> {
    Arc::new(Journal::open(dir, JournalOptions::new()).expect("journal"))
}

fn append_bumps(j: &Journal, from: i64, to: i64) {
    for seq in from..to {
        let ev = Bump::new(seq);
        let payload = syncjournal::event::encode_event(0, &ev).unwrap();
        j.append_kind(Bump::KIND, &payload).unwrap();
    }
    j.sync().unwrap();
}

/// Counters and the log's (rows, distinct seqs) on the server.
fn state(c: &Cluster, db: &str) -> (BTreeMap<i64, i64>, i64, i64) {
    let mut cl = c.client_of(db).unwrap();
    let counters = cl
        .query("SELECT id, n FROM counters", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let r = cl
        .query_one("SELECT count(*), count(DISTINCT seq) FROM log", &[])
        .unwrap();
    (counters, r.get(0), r.get(1))
}

/// The counters after the bumps of sequence numbers `from..to`, once each.
fn expected(from: i64, to: i64) -> BTreeMap<i64, i64> {
    fold(&(from..to).map(Bump::new).collect::<Vec<_>>())
}

fn fast_retries() -> ReplayOptions {
    ReplayOptions::new()
        .retry_delay_ms(5)
        .retry_delay_max_ms(50)
        .retry_attempts_max(3)
}

#[test]
fn a_backend_terminated_while_its_commit_waits_is_in_doubt_and_resolved_as_landed() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("indoubt", COUNTERS);
    let tmp = tempfile::tempdir().unwrap();
    let j = journal(&tmp.path().join("j"));
    append_bumps(&j, 0, 5);
    let mut r: Replayer<Bump> = Replayer::new(
        Arc::clone(&j),
        url.as_str(),
        TargetOptions::new(),
        fast_retries(),
    );
    assert!(r.sync_now().error.is_none());
    // Every COMMIT now waits for a synchronous standby that does not exist: the transaction is
    // committed locally, and the client gets no answer until its backend is terminated.
    let mut admin = c.client().unwrap();
    admin
        .batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        .unwrap();
    c.reload();
    std::thread::sleep(Duration::from_millis(300));
    append_bumps(&j, 5, 12);
    let killer = {
        let admin_url = c.url_for("postgres", "postgres");
        std::thread::spawn(move || {
            let mut a = postgres::Client::connect(&admin_url, postgres::NoTls).unwrap();
            a.batch_execute("SET synchronous_commit = local").unwrap();
            for _ in 0..400 {
                let n = a
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                         WHERE application_name = 'syncjournal' AND wait_event = 'SyncRep'",
                        &[],
                    )
                    .unwrap()
                    .get::<_, i64>(0);
                if n > 0 {
                    // Let the next commit go through.
                    a.batch_execute("ALTER SYSTEM SET synchronous_standby_names = ''")
                        .unwrap();
                    a.query_one("SELECT pg_reload_conf()", &[]).unwrap();
                    return n;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            0
        })
    };
    let rep = r.sync_now();
    let killed = killer.join().unwrap();
    assert_eq!(
        killed, 1,
        "the replayer's backend was caught waiting in COMMIT"
    );
    assert!(rep.error.is_none(), "{:?}", rep.error);
    let (counters, rows, distinct) = state(&c, "indoubt");
    assert_eq!(counters, expected(0, 12));
    assert_eq!(
        (rows, distinct),
        (12, 12),
        "the in-doubt batch landed once, not twice"
    );
    assert_eq!(r.target_watermark().unwrap(), 12);
    assert_eq!(j.state().acked_lsn, 12);
}

#[test]
fn an_immediate_shutdown_mid_batch_and_a_restart_apply_everything_once() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("crash", COUNTERS);
    let tmp = tempfile::tempdir().unwrap();
    let j = journal(&tmp.path().join("j"));
    append_bumps(&j, 0, 30);
    let c = Arc::new(c);
    struct CrashAt {
        cluster: Arc<Cluster>,
        fired: AtomicUsize,
    }
    impl TargetFaults for CrashAt {
        fn before_statement(&self, index: usize, _label: &str) -> rusqlite::Result<()> {
            if index == 9 && self.fired.fetch_add(1, Ordering::SeqCst) == 0 {
                self.cluster.stop_immediate();
            }
            Ok(())
        }
    }
    let faults = Arc::new(CrashAt {
        cluster: Arc::clone(&c),
        fired: AtomicUsize::new(0),
    });
    let mut r: Replayer<Bump> = Replayer::new(
        Arc::clone(&j),
        url.as_str(),
        TargetOptions::new()
            .faults(faults.clone())
            .connect_timeout_ms(500),
        ReplayOptions::new()
            .retry_attempts_max(1)
            .retry_delay_ms(5)
            .batch_entries_max(8),
    );
    let rep = r.sync_now();
    assert_eq!(faults.fired.load(Ordering::SeqCst), 1);
    let e = rep.error.expect("the server went away mid-batch");
    assert!(e.is_transient(), "{e}");
    // The first batch (8 entries) committed before the crash; the crashed one did not.
    c.start_server();
    let rep = r.sync_now();
    assert!(rep.error.is_none(), "{:?}", rep.error);
    let (counters, rows, distinct) = state(&c, "crash");
    assert_eq!(counters, expected(0, 30));
    assert_eq!((rows, distinct), (30, 30));
}

#[test]
fn a_server_down_at_start_is_a_transient_error_and_sync_succeeds_once_it_is_back() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("down", COUNTERS);
    c.stop_immediate();
    let tmp = tempfile::tempdir().unwrap();
    let j = journal(&tmp.path().join("j"));
    append_bumps(&j, 0, 7);
    let mut r: Replayer<Bump> = Replayer::new(
        Arc::clone(&j),
        url.as_str(),
        TargetOptions::new().connect_timeout_ms(500),
        ReplayOptions::new().retry_attempts_max(0),
    );
    let rep = r.sync_now();
    let e = rep.error.expect("no server");
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("connect"), "{e}");
    assert_eq!(rep.pending, 7);
    c.start_server();
    let rep = r.sync_now();
    assert!(rep.error.is_none(), "{:?}", rep.error);
    assert_eq!(state(&c, "down").1, 7);
}

#[test]
fn a_server_named_with_other_options_is_the_same_target_and_is_acknowledged() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("spelled", COUNTERS);
    let tmp = tempfile::tempdir().unwrap();
    let j = journal(&tmp.path().join("j"));
    append_bumps(&j, 0, 5);
    let mut r: Replayer<Bump> = Replayer::new(
        Arc::clone(&j),
        url.as_str(),
        TargetOptions::new(),
        fast_retries(),
    );
    assert!(r.sync_now().error.is_none());
    assert_eq!(j.state().acked_lsn, 5);
    drop(r);
    // Other timeouts and an application name do not make it another database.
    let respelled = format!("{url} connect_timeout=7 application_name=elsewhere");
    append_bumps(&j, 5, 9);
    let mut r: Replayer<Bump> = Replayer::new(
        Arc::clone(&j),
        respelled.as_str(),
        TargetOptions::new(),
        fast_retries(),
    );
    assert_eq!(r.acknowledged_elsewhere(), None);
    let rep = r.sync_now();
    assert!(rep.error.is_none(), "{rep}");
    assert_eq!(j.state().acked_lsn, 9, "acknowledged on the same server");
    assert_eq!(state(&c, "spelled").1, 9);
    // Another database is another target: applied there, never acknowledged for it.
    let other = c.database("other", COUNTERS);
    append_bumps(&j, 9, 10);
    let mut r: Replayer<Bump> = Replayer::new(
        Arc::clone(&j),
        other.as_str(),
        TargetOptions::new(),
        fast_retries(),
    );
    assert!(r.acknowledged_elsewhere().is_some());
    assert!(r.sync_now().error.is_none());
    assert_eq!(j.state().acked_lsn, 9);
}

#[test]
fn two_journals_replaying_concurrently_to_one_database_each_apply_exactly_once() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("two", COUNTERS);
    let tmp = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..2)
        .map(|k| {
            let url = url.clone();
            let dir = tmp.path().join(format!("j{k}"));
            std::thread::spawn(move || {
                let j = journal(&dir);
                let mut r: Replayer<Bump> = Replayer::new(
                    Arc::clone(&j),
                    url.as_str(),
                    TargetOptions::new(),
                    fast_retries().batch_entries_max(50).retry_attempts_max(20),
                );
                for round in 0..10 {
                    let base = k * 100_000 + round * 100;
                    append_bumps(&j, base, base + 100);
                    let rep = r.sync_now();
                    assert!(rep.error.is_none(), "{:?}", rep.error);
                }
                r.target_watermark().unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 1000);
    }
    let (counters, rows, distinct) = state(&c, "two");
    assert_eq!((rows, distinct), (2000, 2000));
    assert_eq!(counters.values().sum::<i64>(), 2000);
}

#[test]
fn a_role_without_write_privilege_gets_an_error_naming_the_privilege() {
    let Some(c) = Cluster::start() else { return };
    c.database("ro", COUNTERS);
    let mut admin = c.client_of("ro").unwrap();
    admin
        .batch_execute(
            "CREATE TABLE syncjournal_progress (journal_id TEXT PRIMARY KEY, lsn BIGINT NOT NULL, updated_at BIGINT NOT NULL);
             CREATE TABLE syncjournal_rejected (journal_id TEXT NOT NULL, lsn BIGINT NOT NULL, kind SMALLINT NOT NULL, payload BYTEA NOT NULL, summary TEXT NOT NULL, error TEXT NOT NULL, rejected_at BIGINT NOT NULL, PRIMARY KEY (journal_id, lsn));
             CREATE ROLE reader LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader;",
        )
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let j = journal(&tmp.path().join("j"));
    append_bumps(&j, 0, 3);
    let mut r: Replayer<Bump> = Replayer::new(
        Arc::clone(&j),
        c.url_for("ro", "reader").as_str(),
        TargetOptions::new(),
        fast_retries(),
    );
    let rep = r.sync_now();
    let e = rep.error.expect("a reader cannot replay");
    let msg = e.to_string();
    assert!(
        msg.contains("42501") && msg.contains("permission denied"),
        "{msg}"
    );
    assert!(!e.is_transient(), "{msg}");
    assert_eq!(rep.retries, 0, "a missing privilege is not retried");
    assert_eq!(state(&c, "ro").1, 0);
}

const INVENTORY_PG: &str = "
CREATE TABLE hosts (id BIGINT PRIMARY KEY, name TEXT NOT NULL, address TEXT, weight DOUBLE PRECISION, small INTEGER);
CREATE TABLE certs (domain TEXT NOT NULL, serial BIGINT NOT NULL, pem BYTEA, PRIMARY KEY (domain, serial));";
const INVENTORY_SQLITE: &str = "
CREATE TABLE hosts (id INTEGER PRIMARY KEY, name TEXT NOT NULL, address TEXT, weight REAL, small INTEGER);
CREATE TABLE certs (domain TEXT NOT NULL, serial INTEGER NOT NULL, pem BLOB, PRIMARY KEY (domain, serial));";

fn store_on(c: &Cluster, db: &str, dir: &Path, policy: RejectPolicy) -> Store {
    let url = c.database(db, INVENTORY_PG);
    Store::open(
        dir.join("journal"),
        dir.join("cache.db"),
        StoreOptions::new()
            .cache_schema(INVENTORY_SQLITE)
            .target(url.as_str(), TargetOptions::new())
            .replay(fast_retries().reject_policy(policy))
            .background_sync(false),
    )
    .expect("store")
}

fn pg_rows(c: &Cluster, db: &str, sql: &str) -> Vec<Vec<String>> {
    let mut cl = c.client_of(db).unwrap();
    cl.simple_query(sql)
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[test]
fn change_sets_replay_to_postgres_with_every_value_type_and_match_the_cache() {
    let Some(c) = Cluster::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let store = store_on(&c, "inv", tmp.path(), RejectPolicy::Stop);
    for i in 1..=50i64 {
        store
            .apply(&ChangeSet::new().upsert(
                "hosts",
                [("id", i)],
                [
                    (
                        "name",
                        Value::from(format!("it's host \"{i}\"; DROP TABLE hosts; --")),
                    ),
                    ("address", Value::Null),
                    ("weight", Value::Real(i as f64 / 3.0)),
                    ("small", Value::Integer(i)),
                ],
            ))
            .unwrap();
    }
    store
        .apply(
            &ChangeSet::new()
                .update("hosts", [("id", 2)], [("address", "10.0.0.2")])
                .delete("hosts", [("id", 3)])
                .insert(
                    "certs",
                    [
                        ("domain", Value::from("a.example")),
                        ("serial", Value::Integer(1)),
                    ],
                    [("pem", Value::Blob(vec![0, 1, 2, 255, b'\'', b'\\']))],
                )
                .upsert(
                    "hosts",
                    [("id", 4)],
                    [("weight", Value::Real(f64::INFINITY))],
                ),
        )
        .unwrap();
    let rep = store.sync_now();
    assert!(rep.error.is_none(), "{:?}", rep.error);
    assert_eq!(rep.pending, 0);
    let hosts = pg_rows(
        &c,
        "inv",
        "SELECT id, name, coalesce(address, 'NULL'), weight, small FROM hosts ORDER BY id",
    );
    assert_eq!(hosts.len(), 49);
    let cache: Vec<Vec<String>> = store
        .read(|conn| {
            let mut s = conn.prepare(
                "SELECT id, name, coalesce(address, 'NULL'), weight, small FROM hosts ORDER BY id",
            )?;
            let rows = s.query_map([], |r| {
                let w: f64 = r.get(3)?;
                Ok(vec![
                    r.get::<_, i64>(0)?.to_string(),
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    if w.is_infinite() {
                        "Infinity".to_string()
                    } else {
                        format!("{w:?}")
                    },
                    r.get::<_, i64>(4)?.to_string(),
                ])
            })?;
            rows.collect()
        })
        .unwrap();
    let pg_norm: Vec<Vec<String>> = hosts
        .into_iter()
        .map(|mut r| {
            if r[3] != "Infinity" {
                r[3] = format!("{:?}", r[3].parse::<f64>().unwrap());
            }
            r
        })
        .collect();
    assert_eq!(
        pg_norm, cache,
        "the server holds exactly what the cache holds"
    );
    let certs = pg_rows(
        &c,
        "inv",
        "SELECT domain, serial, encode(pem, 'hex') FROM certs",
    );
    assert_eq!(
        certs,
        vec![vec![
            "a.example".to_string(),
            "1".into(),
            "000102ff275c".into()
        ]]
    );
}

#[test]
fn values_the_column_cannot_take_and_names_outside_the_schema_are_refused_naming_them() {
    let Some(c) = Cluster::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let url = c.database("bad", INVENTORY_PG);
    let j = journal(&tmp.path().join("j"));
    let bad: Vec<(ChangeSet, &str)> = vec![
        (
            ChangeSet::new().insert("hosts", [("id", 1)], [("name", Value::Blob(vec![1]))]),
            "hosts.name is text but the value is a blob",
        ),
        (
            ChangeSet::new().insert(
                "hosts",
                [("id", 2)],
                [
                    ("name", Value::from("x")),
                    ("small", Value::Integer(1i64 << 40)),
                ],
            ),
            "out of range for column hosts.small",
        ),
        (
            ChangeSet::new().insert("hosts", [("id", 3)], [("name", "x"), ("nope", "x")]),
            "has no column \"nope\"",
        ),
        (
            ChangeSet::new().insert("pg_authid", [("oid", 1)], [("rolname", "x")]),
            "no table \"pg_authid\" in schema \"public\"",
        ),
        (
            ChangeSet::new().upsert("syncjournal_progress", [("journal_id", "x")], [("lsn", 0)]),
            "syncjournal's own bookkeeping",
        ),
        (
            ChangeSet::new().update("hosts", [("id", 999)], [("name", "x")]),
            "no row in hosts has this key",
        ),
        (
            ChangeSet::new().insert("hosts", [("id", 5)], [("address", "no name")]),
            "23502",
        ),
        (
            ChangeSet::new().insert("hosts", [("id", 6)], [("name", "nul\0byte")]),
            "NUL character",
        ),
        (
            ChangeSet::new().insert(
                "hosts",
                [("id", 7)],
                [("name", Value::from("x")), ("small", Value::from("12"))],
            ),
            "hosts.small is int4 but the value is text",
        ),
    ];
    for (cs, _) in &bad {
        let payload = syncjournal::event::encode_event(0, cs).unwrap();
        j.append_kind(syncjournal::event::KIND_CHANGESET, &payload)
            .unwrap();
    }
    j.sync().unwrap();
    let mut r: Replayer = Replayer::new(
        Arc::clone(&j),
        url.as_str(),
        TargetOptions::new(),
        fast_retries().reject_policy(RejectPolicy::Quarantine),
    );
    let rep = r.sync_now();
    assert!(rep.error.is_none(), "{:?}", rep.error);
    assert_eq!(rep.quarantined, bad.len() as u64);
    let q = r.quarantined().unwrap();
    assert_eq!(q.len(), bad.len());
    for (entry, (_, want)) in q.iter().zip(&bad) {
        assert!(
            entry.error.contains(want),
            "LSN {}: {:?} lacks {want:?}",
            entry.lsn,
            entry.error
        );
    }
    assert_eq!(
        pg_rows(&c, "bad", "SELECT count(*) FROM hosts"),
        vec![vec!["0".to_string()]]
    );
    // Retry after the schema is fixed: the missing column now exists.
    c.client_of("bad")
        .unwrap()
        .batch_execute("ALTER TABLE hosts ADD COLUMN nope TEXT")
        .unwrap();
    r.retry_quarantined(3).unwrap();
    assert_eq!(r.quarantined().unwrap().len(), bad.len() - 1);
    let err = r.retry_quarantined(1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Target(TargetError::EntryRejected { lsn: 1, .. })
        ),
        "{err}"
    );
    assert!(r.discard_quarantined(1).unwrap());
    assert!(!r.discard_quarantined(1).unwrap());
    assert_eq!(r.quarantined().unwrap().len(), bad.len() - 2);
    assert_eq!(
        pg_rows(&c, "bad", "SELECT id, nope FROM hosts"),
        vec![vec!["3".to_string(), "x".into()]]
    );
}

#[test]
fn an_event_without_a_postgres_apply_stops_replay_before_it_and_says_what_to_implement() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("noapply", COUNTERS);
    let tmp = tempfile::tempdir().unwrap();
    let j = journal(&tmp.path().join("j"));
    let payload = syncjournal::event::encode_event(0, &SqliteOnly(1)).unwrap();
    j.append_kind(SqliteOnly::KIND, &payload).unwrap();
    j.sync().unwrap();
    let mut r: Replayer<SqliteOnly> = Replayer::new(
        Arc::clone(&j),
        url.as_str(),
        TargetOptions::new(),
        fast_retries().reject_policy(RejectPolicy::Quarantine),
    );
    let rep = r.sync_now();
    let e = rep.error.expect("stopped");
    assert!(
        matches!(e, Error::Target(TargetError::NoApply { lsn: 1, .. })),
        "{e}"
    );
    assert!(e.to_string().contains("apply_postgres"), "{e}");
    assert_eq!(
        rep.quarantined, 0,
        "not quarantined: the entry is not at fault"
    );
    assert_eq!(r.target_watermark().unwrap(), 0);
}

#[test]
fn the_status_is_measured_on_the_server_a_deleted_progress_row_shows_everything_pending() {
    let Some(c) = Cluster::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let store = store_on(&c, "truth", tmp.path(), RejectPolicy::Stop);
    for i in 1..=20i64 {
        store
            .apply(&ChangeSet::new().insert("hosts", [("id", i)], [("name", "h")]))
            .unwrap();
    }
    assert!(store.sync_now().error.is_none());
    assert_eq!(store.status().unwrap().pending_entries, 0);
    // A restore from before the first sync: rows and progress gone.
    c.client_of("truth")
        .unwrap()
        .batch_execute("DELETE FROM hosts; DELETE FROM syncjournal_progress")
        .unwrap();
    let rep = store.sync_now();
    assert!(rep.error.is_none(), "{:?}", rep.error);
    assert_eq!(
        rep.applied, 20,
        "re-applied from the server's watermark, not the local ack"
    );
    assert_eq!(
        pg_rows(&c, "truth", "SELECT count(*) FROM hosts"),
        vec![vec!["20".to_string()]]
    );
}

#[test]
fn passwords_come_from_the_url_pgpassword_or_the_password_file_and_never_show() {
    let Some(c) = Cluster::start() else { return };
    c.database("pw", COUNTERS);
    c.client_of("pw")
        .unwrap()
        .batch_execute("CREATE ROLE app LOGIN PASSWORD 's3cret-pw'; GRANT ALL ON SCHEMA public TO app; GRANT ALL ON ALL TABLES IN SCHEMA public TO app;")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = |target: &str, sub: &str| -> syncjournal::SyncReport {
        let j = journal(&tmp.path().join(sub));
        append_bumps(&j, 0, 2);
        let mut r: Replayer<Bump> = Replayer::new(
            Arc::clone(&j),
            target,
            TargetOptions::new(),
            ReplayOptions::new().retry_attempts_max(0),
        );
        r.sync_now()
    };
    let port = c.port;
    // Wrong password: the message names authentication, never the password.
    let rep = run(&format!("postgres://app:wrong-pw@127.0.0.1:{port}/pw"), "a");
    let e = rep.error.expect("wrong password");
    let msg = format!("{e} {e:?}");
    assert!(
        msg.contains("28P01") || msg.contains("authentication"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-pw"), "{msg}");
    // Right password in the URL.
    let rep = run(
        &format!("postgres://app:s3cret-pw@127.0.0.1:{port}/pw"),
        "b",
    );
    assert!(rep.error.is_none(), "{:?}", rep.error);
    // From a password file.
    let pgpass = tmp.path().join("pgpass");
    std::fs::write(&pgpass, format!("127.0.0.1:{port}:pw:app:s3cret-pw\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    // SAFETY of the test: set before any thread of this test reads the environment; the
    // other tests of this binary do not use PGPASSFILE.
    unsafe { std::env::set_var("PGPASSFILE", &pgpass) };
    let rep = run(
        &format!("host=127.0.0.1 port={port} user=app dbname=pw"),
        "c",
    );
    unsafe { std::env::remove_var("PGPASSFILE") };
    assert!(rep.error.is_none(), "{:?}", rep.error);
    assert_eq!(state(&c, "pw").1, 4);
}

/// `syncjournal args…` (see `support::cli::sj`): exit code, stdout, stderr.
fn sj(args: &[&str]) -> (i32, String, String) {
    let r = support::cli::sj(args);
    (r.code, r.stdout, r.stderr)
}

#[test]
fn the_cli_syncs_shows_status_lists_quarantine_and_checks_a_server_in_a_schema_of_its_own() {
    let Some(c) = Cluster::start() else { return };
    c.database(
        "cli",
        "CREATE SCHEMA inv; CREATE TABLE inv.hosts (id BIGINT PRIMARY KEY, name TEXT NOT NULL);",
    );
    let url = format!(
        "postgresql://postgres@127.0.0.1:{}/cli?options=-csearch_path%3Dinv",
        c.port
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    {
        let j = journal(&dir);
        for i in 1..=30i64 {
            let cs = if i == 7 {
                ChangeSet::new().insert("hosts", [("id", i)], [("nope", "x")])
            } else {
                ChangeSet::new().insert("hosts", [("id", i)], [("name", format!("h{i}"))])
            };
            let payload = syncjournal::event::encode_event(0, &cs).unwrap();
            j.append_kind(syncjournal::event::KIND_CHANGESET, &payload)
                .unwrap();
        }
        j.sync().unwrap();
    }
    let d = dir.to_str().unwrap();
    // Fresh processes each time: nothing is connected before the command's first query.
    let (code, out, err) = sj(&["quarantine", "list", d, "--target", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no quarantined entries"), "{out}");
    let (code, out, err) = sj(&["sync", d, "--target", &url, "--quarantine"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied 29 entries"), "{out}");
    let (code, out, err) = sj(&["status", d, "--target", &url]);
    assert!(
        out.contains("target LSN    30") && out.contains("IN SYNC"),
        "{code} {out}{err}"
    );
    let (code, out, err) = sj(&["quarantine", "list", d, "--target", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains('7') && out.contains("nope"), "{out}");
    let (code, out, err) = sj(&["check-target", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("watermark 30") && out.contains("quarantined 1"),
        "{out}"
    );
    assert_eq!(
        pg_rows(&c, "cli", "SELECT count(*) FROM inv.hosts"),
        vec![vec!["29".to_string()]]
    );
    // Nothing went to public.
    assert_eq!(
        pg_rows(
            &c,
            "cli",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        vec![vec!["0".to_string()]]
    );
}
