//! `syncjournal check-target`: healthy, never written, damaged, missing, not a database, WAL,
//! a hot rollback journal.

use syncjournal::ChangeSet;

use crate::support::cli::{
    BASE_MS, TARGET_SCHEMA, build_journal, build_journal_of, create_indexed_target,
    damage_index_page, file_names, item, target_with_schema,
};
use crate::support::journal::{assert_same_files, snapshot};
use crate::support::targets::open_target;
use crate::{json, tempdir};

/// The line of `stdout` that holds `needle`; panics if none does.
#[track_caller]
fn line_with<'a>(stdout: &'a str, needle: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line holds {needle:?}:\n{stdout}"))
}

#[test]
fn check_target_reports_a_healthy_target_and_every_journal_it_has_seen() {
    let tmp = tempdir();
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let t = target_with_schema(&share);
    let a = build_journal(&tmp.path().join("a"), 40);
    let b = tmp.path().join("b");
    build_journal_of(
        &b,
        &[
            item(1001),
            ChangeSet::new().insert("tags", [("id", 1)], [("label", "red")]),
            item(1003),
        ],
    );
    sj!("sync", a, "--target", t).code(0);
    sj!("sync", b, "--target", t, "--quarantine").code(0);
    let id_a = syncjournal::journal::offline::journal_id_of(&a).unwrap();
    let id_b = syncjournal::journal::offline::journal_id_of(&b).unwrap();
    // A known time for journal a's last watermark move.
    open_target(&t)
        .execute(
            "UPDATE syncjournal_progress SET updated_at = ?1 WHERE journal_id = ?2",
            (BASE_MS as i64, id_a.to_string()),
        )
        .unwrap();
    let before = snapshot(&share, true);

    let r = sj!("check-target", t);
    r.code(0).quiet_stderr().stdout_has(&[
        &format!("target        {} (", t.display()),
        "integrity     ok (PRAGMA integrity_check)",
        "journal mode  rollback journal",
        "progress      syncjournal_progress: ok",
        "quarantine    syncjournal_rejected: ok",
        "journals      2 seen",
        "state         OK",
    ]);
    let la = line_with(&r.stdout, &id_a.to_string());
    assert!(
        la.contains("watermark 40  updated 2023-11-14T22:13:20.123Z, ")
            && la.ends_with("quarantined 0"),
        "{la}"
    );
    let lb = line_with(&r.stdout, &id_b.to_string());
    assert!(
        lb.contains("watermark 3  updated 20") && lb.ends_with("quarantined 1"),
        "{lb}"
    );
    assert_same_files(&before, &snapshot(&share, true), "check-target");

    let r = sj!("check-target", t, "--json");
    r.code(0).quiet_stderr();
    let v = json(&r.stdout);
    assert_eq!(v["verdict"], "OK");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["integrity"]["ok"], true);
    assert_eq!(v["journal_mode"], "rollback");
    assert_eq!(v["wal"], false);
    assert_eq!(v["progress_table"]["exists"], true);
    assert_eq!(v["rejected_table"]["missing_columns"], json("[]"));
    assert_eq!(v["journals_total"], 2);
    let journals = v["journals"].as_array().unwrap();
    let find = |id: &uuid::Uuid| {
        journals
            .iter()
            .find(|j| j["journal_id"] == id.to_string())
            .unwrap_or_else(|| panic!("journal {id} not listed: {v}"))
    };
    assert_eq!(find(&id_a)["watermark"], 40);
    assert_eq!(find(&id_a)["updated_at_ms"], BASE_MS);
    assert_eq!(find(&id_b)["watermark"], 3);
    assert_eq!(find(&id_b)["quarantined"], 1);
    assert_same_files(&before, &snapshot(&share, true), "check-target --json");
}

#[test]
fn check_target_of_a_target_no_journal_has_written_yet_is_ok() {
    let tmp = tempdir();
    let t = target_with_schema(tmp.path());
    let r = sj!("check-target", t);
    r.code(0).quiet_stderr().stdout_has(&[
        "progress      syncjournal_progress: not created yet (the first sync creates it)",
        "journals      none seen",
        "state         OK",
    ]);
    assert_eq!(
        file_names(tmp.path()),
        ["target.db"],
        "check-target created files"
    );
}

#[test]
fn check_target_of_a_damaged_target_exits_1_and_changes_nothing() {
    let tmp = tempdir();
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let t = share.join("app.db");
    create_indexed_target(&t, 3000);
    let dir = build_journal(&tmp.path().join("j"), 20);
    sj!("sync", dir, "--target", t).code(0);
    sj!("check-target", t).code(0);
    let page = damage_index_page(&t, "items_name");
    let before = snapshot(&share, true);

    let r = sj!("check-target", t);
    r.code(1).quiet_stderr().stdout_has(&[
        "integrity     FAILED: PRAGMA integrity_check reports",
        "state         DAMAGED: syncjournal does not write into it; restore it from a backup",
    ]);
    assert!(
        r.stdout.contains(&format!("page {page}")) || r.stdout.contains("items_name"),
        "the integrity check's lines are shown:\n{}",
        r.stdout
    );
    let r = sj!("check-target", t, "--json");
    r.code(1);
    let v = json(&r.stdout);
    assert_eq!(v["verdict"], "DAMAGED");
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["integrity"]["ok"], false);
    assert!(!v["integrity"]["lines"].as_array().unwrap().is_empty());
    assert_same_files(
        &before,
        &snapshot(&share, true),
        "check-target of a damaged target",
    );
}

#[test]
fn check_target_of_a_missing_target_says_an_unmounted_share_looks_like_that() {
    let tmp = tempdir();
    let mount_point = tmp.path().join("mnt");
    std::fs::create_dir(&mount_point).unwrap();
    for t in [
        mount_point.join("share.db"),
        tmp.path().join("absent").join("share.db"),
    ] {
        let r = sj!("check-target", t);
        r.code(2);
        assert!(r.stdout.is_empty(), "{}", r.stdout);
        r.error_line(&[t.to_str().unwrap(), "does not exist", "unmounted share"]);
        assert!(!t.exists(), "check-target created {}", t.display());
    }
    assert!(file_names(&mount_point).is_empty());
    assert!(!tmp.path().join("absent").exists());
}

#[test]
fn check_target_of_a_file_that_is_not_a_database_says_so() {
    let tmp = tempdir();
    let t = tmp.path().join("notes.db");
    std::fs::write(&t, b"these are my notes, not a database\n").unwrap();
    let before = snapshot(tmp.path(), true);
    let r = sj!("check-target", t);
    r.code(2);
    r.error_line(&[
        t.to_str().unwrap(),
        "is not an SQLite database",
        "right file",
    ]);
    assert_same_files(
        &before,
        &snapshot(tmp.path(), true),
        "check-target of a text file",
    );
    // A directory is not a database file either.
    let r = sj!("check-target", tmp.path());
    r.code(2);
    r.error_line(&["is not a regular file"]);
}

#[test]
fn check_target_of_a_wal_target_says_wal_is_refused_and_creates_no_side_files() {
    let tmp = tempdir();
    let t = tmp.path().join("wal.db");
    {
        let c = rusqlite::Connection::open(&t).unwrap();
        let mode: String = c
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        c.execute_batch(TARGET_SCHEMA).unwrap();
    }
    assert_eq!(file_names(tmp.path()), ["wal.db"], "closed cleanly");
    let r = sj!("check-target", t);
    r.code(2).stdout_has(&[
        "integrity     ok",
        "journal mode  WAL: refused for a target on a share",
        "problem       the target is in WAL mode",
        "state         UNUSABLE",
    ]);
    r.error_line(&[t.to_str().unwrap(), "WAL mode", "journal_mode=TRUNCATE"]);
    assert_eq!(
        file_names(tmp.path()),
        ["wal.db"],
        "check-target created files beside a WAL target"
    );
    let v = json(&sj!("check-target", t, "--json").stdout);
    assert_eq!(v["wal"], true);
    assert_eq!(v["journal_mode"], "wal");
    assert_eq!(v["verdict"], "UNUSABLE");

    // In use: its last transactions are in the -wal file; they are read (the journal that
    // only the -wal file holds is listed), and no file is added.
    let c = rusqlite::Connection::open(&t).unwrap();
    c.execute_batch(
        "CREATE TABLE syncjournal_progress (journal_id TEXT PRIMARY KEY, lsn INTEGER NOT NULL, updated_at INTEGER NOT NULL);
         INSERT INTO syncjournal_progress VALUES ('only-in-the-wal', 7, 1700000000123);",
    )
    .unwrap();
    let files = file_names(tmp.path());
    assert_eq!(files, ["wal.db", "wal.db-shm", "wal.db-wal"]);
    let r = sj!("check-target", t);
    r.code(2)
        .stdout_has(&["integrity     ok", "only-in-the-wal  watermark 7"]);
    assert_eq!(file_names(tmp.path()), files);
    drop(c);
}

#[test]
fn check_target_with_a_hot_rollback_journal_says_so_and_rolls_nothing_back() {
    // A writer stopped mid-transaction: the crash image is a copy of the database and its
    // rollback journal taken while the transaction, larger than the page cache, is open.
    let tmp = tempdir();
    let live = tmp.path().join("live.db");
    let c = rusqlite::Connection::open(&live).unwrap();
    c.execute_batch(&format!(
        "{TARGET_SCHEMA} PRAGMA cache_size = 1; BEGIN; \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
         INSERT INTO items SELECT i, printf('%.500c', 'x') FROM n;"
    ))
    .unwrap();
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let t = share.join("app.db");
    std::fs::copy(&live, &t).unwrap();
    std::fs::copy(
        tmp.path().join("live.db-journal"),
        share.join("app.db-journal"),
    )
    .unwrap();
    drop(c);
    let before = snapshot(&share, true);
    let r = sj!("check-target", t);
    r.code(2);
    r.error_line(&[
        "app.db-journal is a hot rollback journal",
        "cannot roll it back",
    ]);
    assert_same_files(
        &before,
        &snapshot(&share, true),
        "check-target of a crash image",
    );
}
