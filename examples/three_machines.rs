//! The field application on three machines: each with its own journal and cache, all on one
//! database on a "share". Machine A imports the inventory; B and C pull it. Then, at once, B
//! edits certificate 2 while C deletes the host it belongs to, and A edits another host. They
//! sync and pull in the background, and each machine prints its status: what it has pulled,
//! what it holds back, the conflicts it met and how they were settled. At the end every cache
//! equals the target.
//!
//! Run: `cargo run --example three_machines [DIR]` (default: a new temporary directory).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use syncjournal::{
    ChangeSet, RejectPolicy, ReplayOptions, Store, StoreOptions, TargetOptions, Value,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hosts (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, address TEXT, os TEXT);
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY, host_id INTEGER, registrar TEXT);
CREATE TABLE IF NOT EXISTS certificates (
    id INTEGER PRIMARY KEY, domain TEXT NOT NULL, not_after TEXT NOT NULL, pem BLOB);
";

fn rows(store: &Store) -> syncjournal::Result<Vec<String>> {
    store.read(|c| {
        let mut out = Vec::new();
        for t in ["hosts", "domains", "certificates"] {
            let mut st = c.prepare(&format!("SELECT * FROM {t} ORDER BY 1"))?;
            let n = st.column_count();
            let r = st.query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, Value>(i).map(|v| v.to_string()))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })?;
            for row in r {
                out.push(format!("{t}: {}", row?.join(" | ")));
            }
        }
        Ok(out)
    })
}

fn print_status(name: &str, store: &Store) -> syncjournal::Result<()> {
    let st = store.status()?;
    let p = store.pull_status()?;
    println!(
        "  {name}: {} | pending {} | quarantined {} | conflicts resolved {}, pending {} | pulled to change {} (behind {}){}",
        st.state,
        st.pending_entries,
        st.quarantined,
        st.conflicts.resolved,
        st.conflicts.pending,
        p.cursor_seq,
        p.behind.unwrap_or(0),
        p.held_back
            .map(|h| format!(" | holding back change {} of {} {}", h.seq, h.table, h.key))
            .unwrap_or_default()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir: PathBuf = match std::env::args().nth(1) {
        Some(d) => d.into(),
        None => tempfile::Builder::new()
            .prefix("syncjournal-three-")
            .tempdir()?
            .keep(),
    };
    let share = dir.join("share.db");
    println!("directory: {}", dir.display());
    let open = |name: &str| -> syncjournal::Result<Store> {
        let m = dir.join(name);
        std::fs::create_dir_all(&m).expect("machine directory");
        Store::open(
            m.join("journal"),
            m.join("cache.db"),
            StoreOptions::new()
                .cache_schema(SCHEMA)
                .target(
                    &share,
                    TargetOptions::new()
                        .create_if_missing(true)
                        .create_schema(SCHEMA),
                )
                // Sync and pull every 100 ms in the background; a change the target refuses
                // is kept aside (listed) instead of stopping the machine's sync.
                .replay(
                    ReplayOptions::new()
                        .sync_interval_ms(100)
                        .reject_policy(RejectPolicy::Quarantine),
                ),
        )
    };
    let machines = [("A", open("A")?), ("B", open("B")?), ("C", open("C")?)];
    let (a, b, c) = (&machines[0].1, &machines[1].1, &machines[2].1);

    for (id, name) in [(1, "web"), (2, "db"), (3, "mail")] {
        let domain = format!("{name}.example.org");
        a.apply(
            &ChangeSet::new()
                .insert("hosts", [("id", id)], [("name", Value::from(name))])
                .insert(
                    "domains",
                    [("name", domain.as_str())],
                    [("host_id", Value::from(id))],
                )
                .insert(
                    "certificates",
                    [("id", id)],
                    [
                        ("domain", Value::from(domain.as_str())),
                        ("not_after", "2027-01-01".into()),
                    ],
                ),
        )?;
    }
    let settle = |what: &str| -> syncjournal::Result<()> {
        // Wait until every machine is in sync and has pulled the whole log.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            // (`behind` is measured against the log's head as this machine last read it:
            // compare the cursors too.)
            let mut done = true;
            let mut cursors = Vec::new();
            for (_, s) in &machines {
                let p = s.pull_status()?;
                done &= s.status()?.pending_entries == 0
                    && p.held_back.is_none()
                    && p.behind == Some(0);
                cursors.push(p.cursor_seq);
            }
            if done && cursors.iter().all(|&c| c == cursors[0]) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("\n{what}");
        for (name, s) in &machines {
            print_status(name, s)?;
        }
        Ok(())
    };
    settle("A imported 3 hosts; every machine pulled them:")?;

    b.apply(&ChangeSet::new().update("certificates", [("id", 2)], [("not_after", "2028-06-30")]))?;
    c.apply(
        &ChangeSet::new()
            .delete("certificates", [("id", 2)])
            .delete("domains", [("name", "db.example.org")])
            .delete("hosts", [("id", 2)]),
    )?;
    a.apply(&ChangeSet::new().update("hosts", [("id", 3)], [("os", "debian-12")]))?;
    settle(
        "at once: B renewed certificate 2, C retired host 2 (with its certificate), A edited host 3:",
    )?;
    for (name, s) in &machines {
        for c in s.conflicts(20)? {
            println!(
                "  {name}'s LSN {} met a {} conflict on {} (machine change {}): {}",
                c.lsn, c.kind, c.table, c.remote_seq, c.resolution
            );
        }
    }
    let first = rows(a)?;
    let same = rows(b)? == first && rows(c)? == first;
    println!(
        "\n{}: every cache {} the target",
        if same { "IN AGREEMENT" } else { "DIVERGED" },
        if same { "equals" } else { "does not equal" }
    );
    for r in &first {
        println!("  {r}");
    }
    for (_, s) in machines {
        s.close()?;
    }
    if same {
        Ok(())
    } else {
        Err("the caches diverged".into())
    }
}
