//! `syncjournal reseed`: rebuilds a store's cache from the target, keeping the journal's
//! entries the target does not hold yet; a missing cache or journal is a clear error.

use syncjournal::ChangeSet;

use crate::support::cli::sj;
use crate::support::inventory::host;
use crate::support::machines::{Machines, cache_rows};
use crate::support::targets::TargetKind;

#[test]
fn reseed_rebuilds_the_cache_from_the_target() {
    let m = Machines::new(TargetKind::Sqlite, 1);
    m.target
        .execute("INSERT INTO hosts (id, name) VALUES (50, 'only-on-the-target')");
    let s = m.open(0);
    s.apply(&host(1)).unwrap();
    assert!(s.sync_now().error.is_none());
    s.apply(&ChangeSet::new().update("hosts", [("id", 1)], [("os", "local")]))
        .unwrap();
    s.close().unwrap();
    let journal = m.journal(0);
    let cache = m.cache(0);
    let target = m.target.path().to_str().unwrap().to_string();
    sj(&[
        "reseed",
        journal.to_str().unwrap(),
        cache.to_str().unwrap(),
        "--target",
        &target,
    ])
    .code(0)
    .stdout_has(&[
        "2 rows from the target",
        "1 local entries not on the target applied again",
    ]);
    let s = m.open(0);
    let names: Vec<String> = s
        .read(|c| {
            c.prepare("SELECT name || ':' || coalesce(os, '') FROM hosts ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .unwrap();
    assert_eq!(names, ["web-01:local", "only-on-the-target:"]);
    assert!(s.sync_now().error.is_none());
    assert_eq!(cache_rows(&s), m.target_rows());

    let missing = m.dir.path().join("no-cache.db");
    sj(&[
        "reseed",
        journal.to_str().unwrap(),
        missing.to_str().unwrap(),
        "--target",
        &target,
    ])
    .code(2)
    .stderr_has(&["does not exist"]);
}
