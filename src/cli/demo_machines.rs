//! `syncjournal demo --machines N`: the inventory on N machines sharing one SQLite "share"
//! file, each with its own journal and cache. One machine imports, the others pull; then they
//! edit at once (one deletes a host another is editing), sync and pull, and every machine's
//! status and cache is printed, with the conflicts each met and how they were settled: every
//! cache ends equal to the target.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use syncjournal::{ChangeSet, RejectPolicy, ReplayOptions, Store, StoreOptions, TargetOptions};

use crate::cli::demo::SCHEMA;
use crate::cli::outcome::{Failure, OK, Outcome};

const TABLES: [&str; 3] = ["hosts", "domains", "certificates"];

fn rows(store: &Store) -> syncjournal::Result<BTreeMap<&'static str, Vec<String>>> {
    store.read(|c| {
        let mut out = BTreeMap::new();
        for t in TABLES {
            let mut st = c.prepare(&format!("SELECT * FROM {t} ORDER BY 1"))?;
            let n = st.column_count();
            let v: Vec<String> = st
                .query_map([], |r| {
                    (0..n)
                        .map(|i| r.get::<_, syncjournal::Value>(i).map(|v| v.to_string()))
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map(|v| v.join("|"))
                })?
                .collect::<rusqlite::Result<_>>()?;
            out.insert(t, v);
        }
        Ok(out)
    })
}

fn status_line(out: &mut dyn Write, name: char, store: &Store) -> Outcome {
    let st = store.status()?;
    let p = store.pull_status()?;
    let r = rows(store)?;
    let held = p.held_back.as_ref().map_or_else(String::new, |h| {
        format!(", holding back change {} ({} {})", h.seq, h.table, h.key)
    });
    writeln!(
        out,
        "  machine {name}: {} | pending {} | quarantined {} | conflicts resolved {}, pending {} | pulled up to change {} of {}{held} | {} hosts, {} domains, {} certificates",
        st.state,
        st.pending_entries,
        st.quarantined,
        st.conflicts.resolved,
        st.conflicts.pending,
        p.cursor_seq,
        p.head_seq.map_or_else(|| "?".into(), |h| h.to_string()),
        r["hosts"].len(),
        r["domains"].len(),
        r["certificates"].len(),
    )?;
    Ok(OK)
}

fn sync_all(stores: &[Store]) -> Outcome {
    for s in stores {
        let r = s.sync_now();
        if let Some(e) = r.error {
            return Err(e.into());
        }
    }
    for s in stores {
        if let Some(e) = s.pull_now().error {
            return Err(e.into());
        }
    }
    Ok(OK)
}

fn host(id: i64, name: &str) -> ChangeSet {
    let domain = format!("{name}.example.org");
    ChangeSet::new()
        .insert(
            "hosts",
            [("id", id)],
            [
                ("name", name.into()),
                ("os", syncjournal::Value::from("debian-12")),
            ],
        )
        .insert(
            "domains",
            [("name", domain.as_str())],
            [("host_id", syncjournal::Value::from(id))],
        )
        .insert(
            "certificates",
            [("id", id)],
            [
                ("domain", syncjournal::Value::from(domain.as_str())),
                ("not_after", "2027-01-01".into()),
            ],
        )
}

/// Runs the demo with `n` machines (2 to 8) in `dir`.
pub fn run_machines(out: &mut dyn Write, dir: &Path, n: usize) -> Outcome {
    if !(2..=8).contains(&n) {
        return Err(Failure::Msg(format!("--machines takes 2 to 8, not {n}")));
    }
    let share = dir.join("share.db");
    writeln!(out, "demo directory: {}", dir.display())?;
    writeln!(
        out,
        "target: {} (one SQLite file, {n} machines)",
        share.display()
    )?;
    let names: Vec<char> = ('A'..='Z').take(n).collect();
    let mut stores = Vec::with_capacity(n);
    for name in &names {
        let m = dir.join(format!("machine-{name}"));
        std::fs::create_dir_all(&m)
            .map_err(|e| Failure::Msg(format!("cannot create {}: {e}", m.display())))?;
        let store: Store = Store::open(
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
                .replay(ReplayOptions::new().reject_policy(RejectPolicy::Quarantine))
                .background_sync(false),
        )?;
        stores.push(store);
    }
    // 1. A imports three hosts, each with a domain and a certificate; everyone pulls.
    for (i, h) in ["web", "db", "mail"].iter().enumerate() {
        stores[0].apply(&host(i as i64 + 1, h))?;
    }
    sync_all(&stores)?;
    writeln!(
        out,
        "\n1. machine A imports 3 hosts with their domains and certificates; every machine syncs and pulls:"
    )?;
    for (s, name) in stores.iter().zip(&names) {
        status_line(out, *name, s)?;
    }
    // 2. At once, without syncing: B renews db's certificate and moves web to another OS; the
    //    last machine retires host db (its domain and certificate with it); A renames mail.
    let last = n - 1;
    stores[1].apply(
        &ChangeSet::new()
            .update("certificates", [("id", 2)], [("not_after", "2028-06-30")])
            .update("hosts", [("id", 1)], [("os", "rhel-9")]),
    )?;
    // The clocks move on: the last machine's edits are the later ones.
    std::thread::sleep(std::time::Duration::from_millis(2));
    stores[last].apply(
        &ChangeSet::new()
            .delete("certificates", [("id", 2)])
            .delete("domains", [("name", "db.example.org")])
            .delete("hosts", [("id", 2)])
            .update("hosts", [("id", 1)], [("os", "debian-13")]),
    )?;
    stores[0].apply(&ChangeSet::new().update("hosts", [("id", 3)], [("name", "mail-2")]))?;
    writeln!(
        out,
        "\n2. at once: B renews db's certificate and moves web to rhel-9; then {} retires host db and moves web to debian-13; A renames mail. {} syncs first, then B pulls before syncing:",
        names[last], names[last]
    )?;
    let r = stores[last].sync_now();
    if let Some(e) = r.error {
        return Err(e.into());
    }
    let p = stores[1].pull_now();
    if let Some(e) = p.error {
        return Err(e.into());
    }
    for (s, name) in stores.iter().zip(&names) {
        status_line(out, *name, s)?;
    }
    if let Some(h) = &p.held_back {
        writeln!(
            out,
            "  B holds back change {} ({} {}): B changed that row itself and the target does not have B's change yet",
            h.seq, h.table, h.key
        )?;
    }
    // 3. Everyone syncs and pulls until nothing moves.
    for _ in 0..3 {
        sync_all(&stores)?;
    }
    writeln!(out, "\n3. every machine syncs and pulls:")?;
    for (s, name) in stores.iter().zip(&names) {
        status_line(out, *name, s)?;
    }
    let first = rows(&stores[0])?;
    let mut same = true;
    for s in &stores[1..] {
        same &= rows(s)? == first;
    }
    for (s, name) in stores.iter().zip(&names) {
        for c in s.conflicts(20)?.iter().rev() {
            writeln!(
                out,
                "  {name}'s conflict #{}: {} on {} {} against machine change {}: {} ({})",
                c.id,
                c.kind,
                c.table,
                c.key
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                c.remote_seq,
                c.resolution,
                match c.resolution.as_str() {
                    "target" => "the local change was overridden",
                    "local" => "the local change won",
                    _ => "settled",
                }
            )?;
        }
    }
    writeln!(
        out,
        "\n{}: every cache {} the target ({} hosts: {})",
        if same { "IN AGREEMENT" } else { "DIVERGED" },
        if same { "equals" } else { "does not equal" },
        first["hosts"].len(),
        first["hosts"].join(", ")
    )?;
    writeln!(
        out,
        "Conflicts are settled last writer wins (by default): B's renewal met a deleted row (the deletion stands), \
         and B's OS change was older than {}'s; `syncjournal conflicts list` shows them on the target.",
        names[last]
    )?;
    for s in stores {
        s.close()?;
    }
    if same {
        Ok(OK)
    } else {
        Err(Failure::Msg("the caches diverged from the target".into()))
    }
}
