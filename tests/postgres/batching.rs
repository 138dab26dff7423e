//! Combined batches on PostgreSQL: a batch's entries go to the server together (a few round
//! trips per batch, counted in the server's statement log), and when the server refuses one of
//! them the batch is done again entry by entry, so that exactly the refused entries are
//! quarantined (or stopped before) and every other entry is applied once, in order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use syncjournal::{
    ChangeSet, Error, Journal, JournalEvent, JournalOptions, RejectPolicy, ReplayOptions, Replayer,
    TargetError, TargetOptions, Value,
};

use crate::support::postgres::Cluster;

/// `items` holds a CHECK the server enforces (the client cannot see it); `seen` has no key, so
/// an insert applied twice shows as two rows.
const SCHEMA: &str =
    "CREATE TABLE items (id BIGINT PRIMARY KEY, qty BIGINT NOT NULL CHECK (qty >= 0), label TEXT);
                      CREATE TABLE seen (seq BIGINT NOT NULL, item BIGINT NOT NULL);";

/// How entry `seq` is poisoned, if it is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Poison {
    /// A negative quantity: the CHECK constraint refuses it (SQLSTATE 23514).
    Check,
    /// An update of an item that does not exist: no row changed.
    NoRow,
}

/// Items the entries upsert: entry `seq` upserts item `seq % ITEMS` (hot keys: a key repeats
/// in every batch).
const ITEMS: i64 = 23;

/// Entry `seq`: upsert item `seq % items` and record the entry in `seen` (one change set); a
/// poisoned entry is refused by the server as a whole.
fn entry(seq: i64, items: i64, poison: Option<Poison>) -> ChangeSet {
    let item = seq % items;
    let qty = if poison == Some(Poison::Check) {
        -1
    } else {
        seq
    };
    let cs = ChangeSet::new()
        .upsert(
            "items",
            [("id", item)],
            [
                ("qty", Value::Integer(qty)),
                ("label", Value::from(format!("it's #{seq}"))),
            ],
        )
        .insert(
            "seen",
            [("seq", Value::Integer(seq)), ("item", Value::Integer(item))],
            [] as [(&str, Value); 0],
        );
    if poison == Some(Poison::NoRow) {
        return cs.update("items", [("id", 1_000_000 + seq)], [("qty", 1)]);
    }
    cs
}

/// A journal of `n` entries over `items` items (LSN = seq + 1), poisoned where `poison` says.
fn journal(dir: &Path, n: i64, items: i64, poison: &dyn Fn(i64) -> Option<Poison>) -> Arc<Journal> {
    let j = Arc::new(Journal::open(dir, JournalOptions::new()).expect("journal"));
    for seq in 0..n {
        let payload = syncjournal::event::encode_event(0, &entry(seq, items, poison(seq))).unwrap();
        j.append_kind(ChangeSet::KIND, &payload).unwrap();
    }
    j.sync().unwrap();
    j
}

/// The items after the entries `0..n` over `items` items that `applied` keeps, in order.
fn model(n: i64, items: i64, applied: &dyn Fn(i64) -> bool) -> BTreeMap<i64, i64> {
    let mut m = BTreeMap::new();
    for seq in (0..n).filter(|s| applied(*s)) {
        m.insert(seq % items, seq);
    }
    m
}

/// The items and the `seen` sequence numbers (sorted, with repeats) on the server.
fn server_state(c: &Cluster, db: &str) -> (BTreeMap<i64, i64>, Vec<i64>) {
    let mut cl = c.client_of(db).unwrap();
    let items = cl
        .query("SELECT id, qty FROM items", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let seen = cl
        .query("SELECT seq FROM seen ORDER BY seq", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (items, seen)
}

fn opts(policy: RejectPolicy, batch: usize) -> ReplayOptions {
    ReplayOptions::new()
        .batch_entries_max(batch)
        .reject_policy(policy)
        .retry_delay_ms(5)
        .retry_delay_max_ms(50)
        .retry_attempts_max(3)
}

#[test]
fn refused_entries_in_a_combined_batch_are_found_entry_by_entry_and_only_they_are_quarantined() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("quarantine", SCHEMA);
    let tmp = tempfile::tempdir().unwrap();
    let n = 700;
    let poisoned = |seq: i64| match seq {
        5 | 399 => Some(Poison::Check),
        250 | 698 => Some(Poison::NoRow),
        _ => None,
    };
    let j = journal(&tmp.path().join("j"), n, ITEMS, &poisoned);
    let mut r: Replayer<ChangeSet> = Replayer::new(
        Arc::clone(&j),
        url.as_str(),
        TargetOptions::new(),
        opts(RejectPolicy::Quarantine, 200),
    );
    let rep = r.sync_now();
    assert!(rep.error.is_none(), "{:?}", rep.error);
    assert_eq!(rep.pending, 0);
    let q = r.quarantined().unwrap();
    let lsns: Vec<u64> = q.iter().map(|e| e.lsn).collect();
    assert_eq!(
        lsns,
        [6, 251, 400, 699],
        "exactly the refused entries: {q:?}"
    );
    assert!(
        q[0].error.contains("23514") && q[0].error.contains("items"),
        "the server's reason, with its SQLSTATE: {}",
        q[0].error
    );
    assert!(
        q[1].error.contains("no row"),
        "an update that found no row says so: {}",
        q[1].error
    );
    let (items, seen) = server_state(&c, "quarantine");
    let kept = |s: i64| poisoned(s).is_none();
    assert_eq!(
        seen,
        (0..n).filter(|s| kept(*s)).collect::<Vec<_>>(),
        "every other entry once, none of a refused one"
    );
    assert_eq!(items, model(n, ITEMS, &kept), "applied in journal order");
    assert_eq!(r.target_watermark().unwrap(), n as u64);
}

#[test]
fn a_refusal_in_a_combined_batch_under_the_stop_policy_applies_everything_before_it_once() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("stop", SCHEMA);
    let tmp = tempfile::tempdir().unwrap();
    let n = 300;
    let poisoned = |seq: i64| (seq == 137).then_some(Poison::Check);
    let j = journal(&tmp.path().join("j"), n, ITEMS, &poisoned);
    let mut r: Replayer<ChangeSet> = Replayer::new(
        Arc::clone(&j),
        url.as_str(),
        TargetOptions::new(),
        opts(RejectPolicy::Stop, 100),
    );
    let rep = r.sync_now();
    match &rep.error {
        Some(Error::Target(TargetError::EntryRejected { lsn, reason, .. })) => {
            assert_eq!(*lsn, 138, "stopped before the refused entry");
            assert!(reason.contains("23514"), "{reason}");
        }
        other => panic!("expected EntryRejected, got {other:?}"),
    }
    let (items, seen) = server_state(&c, "stop");
    assert_eq!(seen, (0..137).collect::<Vec<_>>());
    assert_eq!(items, model(137, ITEMS, &|_| true));
    assert_eq!(r.target_watermark().unwrap(), 137);
    assert!(r.quarantined().unwrap().is_empty());
}

/// The messages a database's sessions sent, as the server logged them (`log_statement =
/// all`: one `statement:` line per simple-query message, one `execute` line per prepared
/// execution).
fn messages_logged(c: &Cluster, marker: &str) -> usize {
    let log = std::fs::read_to_string(Path::new(&c.socket_dir()).join("server.log")).unwrap();
    let after = log.rsplit_once(marker).map(|(_, a)| a).unwrap_or("");
    after
        .lines()
        .filter(|l| l.contains("LOG:  statement:") || l.contains("LOG:  execute"))
        .count()
}

#[test]
fn a_combined_batch_costs_a_few_messages_to_the_server_however_many_entries_it_holds() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("trips", SCHEMA);
    c.client()
        .unwrap()
        .batch_execute("ALTER DATABASE trips SET log_statement = 'all'")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let n = 1000;
    // Every entry its own item: rows of one table and one shape all the way.
    let j = journal(&tmp.path().join("j"), n, n, &|_| None);
    // Connected (and the bookkeeping created) before counting.
    let mut r: Replayer<ChangeSet> = Replayer::new(
        Arc::clone(&j),
        url.as_str(),
        TargetOptions::new(),
        opts(RejectPolicy::Stop, 250),
    );
    assert_eq!(r.target_watermark().unwrap(), 0);
    let marker = "sj-batching-marker";
    c.client_of("trips")
        .unwrap()
        .batch_execute(&format!("SELECT '{marker}'"))
        .unwrap();
    let rep = r.sync_now();
    assert!(rep.error.is_none(), "{:?}", rep.error);
    let (items, seen) = server_state(&c, "trips");
    assert_eq!(seen.len(), n as usize);
    assert_eq!(items, model(n, n, &|_| true));
    let messages = messages_logged(&c, marker);
    let batches = 4;
    // Per batch: BEGIN + lock, the watermark, a run of rows per table (the two tables have
    // neither triggers nor foreign keys, so their rows need not interleave), the watermark
    // update, COMMIT; the change log's head lock, one read of the touched rows per table and
    // the records' insert (sync-protocol.md §2.5); plus a catalog lookup per table and a
    // prepare per shape on the connection, and the last batch that finds nothing to do.
    // Entry by entry it would be more than 1000.
    assert!(
        messages <= batches * 10 + 12,
        "{messages} messages for {n} entries in {batches} batches"
    );
    assert!(
        messages >= batches * 3,
        "the log counts messages: {messages}"
    );
    println!("{n} entries in {batches} batches: {messages} messages to the server");
}

/// Tables whose rows' order shows: `parent`/`child` with a foreign key, `a`/`b` with
/// triggers that append to `trail` as rows arrive.
const ORDERED: &str = "
    CREATE TABLE parent (id BIGINT PRIMARY KEY);
    CREATE TABLE child (id BIGINT PRIMARY KEY, parent BIGINT REFERENCES parent (id));
    CREATE TABLE trail (n BIGSERIAL PRIMARY KEY, what TEXT NOT NULL);
    CREATE TABLE a (id BIGINT PRIMARY KEY);
    CREATE TABLE b (id BIGINT PRIMARY KEY);
    CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO trail (what) VALUES (TG_TABLE_NAME || NEW.id); RETURN NEW; END $$;
    CREATE TRIGGER a_note AFTER INSERT ON a FOR EACH ROW EXECUTE FUNCTION note();
    CREATE TRIGGER b_note AFTER INSERT ON b FOR EACH ROW EXECUTE FUNCTION note();";

#[test]
fn rows_of_tables_with_foreign_keys_or_triggers_keep_the_journal_order() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("ordered", ORDERED);
    c.client()
        .unwrap()
        .batch_execute("ALTER DATABASE ordered SET log_statement = 'all'")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let j = Arc::new(Journal::open(tmp.path().join("j"), JournalOptions::new()).unwrap());
    let n = 300i64;
    let mut want = Vec::new();
    for i in 0..n {
        // A child that refers to the parent of the entry before (whose table first appeared
        // after the child table's): moved ahead of that parent, it would break the key.
        let mut cs = ChangeSet::new().insert(
            "child",
            [("id", Value::Integer(i))],
            [(
                "parent",
                if i == 0 {
                    Value::Null
                } else {
                    Value::Integer(i - 1)
                },
            )],
        );
        cs = cs.insert(
            "parent",
            [("id", Value::Integer(i))],
            [] as [(&str, Value); 0],
        );
        let (first, second) = if i % 3 == 0 { ("b", "a") } else { ("a", "b") };
        for t in [first, second] {
            cs = cs.insert(t, [("id", Value::Integer(i))], [] as [(&str, Value); 0]);
            want.push(format!("{t}{i}"));
        }
        let payload = syncjournal::event::encode_event(0, &cs).unwrap();
        j.append_kind(ChangeSet::KIND, &payload).unwrap();
    }
    j.sync().unwrap();
    let mut r: Replayer<ChangeSet> = Replayer::new(
        Arc::clone(&j),
        url.as_str(),
        TargetOptions::new(),
        opts(RejectPolicy::Stop, 100),
    );
    assert_eq!(r.target_watermark().unwrap(), 0);
    let marker = "sj-ordered-marker";
    c.client_of("ordered")
        .unwrap()
        .batch_execute(&format!("SELECT '{marker}'"))
        .unwrap();
    let rep = r.sync_now();
    assert!(rep.error.is_none(), "{:?}", rep.error);
    let mut cl = c.client_of("ordered").unwrap();
    let trail: Vec<String> = cl
        .query("SELECT what FROM trail ORDER BY n", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(trail, want, "the triggers saw the rows in journal order");
    let children: i64 = cl
        .query_one("SELECT count(*) FROM child", &[])
        .unwrap()
        .get(0);
    assert_eq!(children, n);
    // In order, nothing was refused: no batch was done again entry by entry.
    let messages = messages_logged(&c, marker);
    assert!(
        messages < 100,
        "{messages} messages for {n} entries in 3 batches: a batch was redone"
    );
}
