//! `syncjournal status`: in sync, syncing, stalled, failing; its exit codes.

use crate::support::cli::{BASE_MS, TARGET_SCHEMA, build_journal, target_with_schema};
use crate::support::journal::{assert_same_files, snapshot};
use crate::support::targets::create_target;
use crate::{json, tempdir};

#[test]
fn status_of_a_journal_in_sync() {
    let tmp = tempdir();
    let root = tmp.path().join("demo");
    sj!("demo", root, "--changes", "300").code(0);
    let (journal, share) = (root.join("journal"), root.join("share.db"));

    let r = sj!("status", journal, "--target", share);
    r.code(0).quiet_stderr().stdout_has(&[
        &format!("journal       {}", journal.display()),
        "owner         none (the journal is closed)",
        "head LSN      300",
        "acked LSN     300",
        "target LSN    300",
        "pending       0 entries",
        "quarantined   0",
        "last error    none",
        "state         IN SYNC",
    ]);
    // Without --target the target's watermark is the last one seen by the replayer.
    sj!("status", journal).code(0).stdout_has(&["IN SYNC"]);

    let r = sj!("status", journal, "--target", share, "--json");
    r.code(0).quiet_stderr();
    let v = json(&r.stdout);
    assert_eq!(v["verdict"], "IN SYNC");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["dir"], journal.to_str().unwrap());
    assert!(v["owner"].is_null(), "{v}");
    assert!(v["journal_error"].is_null() && v["target_error"].is_null());
    let s = &v["status"];
    for field in [
        "journal_id",
        "head_lsn",
        "acked_lsn",
        "target_lsn",
        "pending_entries",
        "pending_bytes",
        "oldest_pending_ms",
        "last_success_ms",
        "last_error",
        "quarantined",
        "stalled_since_ms",
        "failing_since_ms",
    ] {
        assert!(s.get(field).is_some(), "status JSON lacks {field}: {v}");
    }
    assert_eq!(s["head_lsn"], 300);
    assert_eq!(s["acked_lsn"], 300);
    assert_eq!(s["target_lsn"], 300);
    assert_eq!(s["pending_entries"], 0);
    assert_eq!(s["quarantined"], 0);
    assert!(s["last_error"].is_null() && s["last_success_ms"].is_u64());
    assert!(uuid_like(s["journal_id"].as_str().unwrap()));
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|&c| c == '-').count() == 4
}

#[test]
fn status_pending_is_syncing_then_stalled_with_exit_4() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 25);
    let before = snapshot(&dir, true);

    // Pending entries, no error: syncing while the queue has moved recently (the journal was
    // just created) ...
    let r = sj!("status", dir);
    r.code(0).quiet_stderr().stdout_has(&[
        "head LSN      25",
        "acked LSN     0",
        "target LSN    unknown (pass --target to read it)",
        "pending       25 entries, ",
        "last error    none",
        "head waiting  since ",
        "state         SYNCING",
    ]);
    sj!("status", dir, "--stalled-after", "100000")
        .code(0)
        .stdout_has(&["SYNCING"]);
    // ... and stalled (exit 4) once it has not moved for longer than --stalled-after.
    sj!("status", dir, "--stalled-after", "0")
        .code(4)
        .stdout_has(&["pending       25 entries", "state         STALLED"]);
    let r = sj!("status", dir, "--stalled-after", "0", "--json");
    r.code(4);
    let v = json(&r.stdout);
    assert_eq!(v["verdict"], "STALLED");
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["status"]["head_lsn"], 25);
    assert_eq!(v["status"]["pending_entries"], 25);
    assert!(v["status"]["pending_bytes"].as_u64().unwrap() > 25 * 150);
    assert_eq!(v["status"]["oldest_pending_ms"], BASE_MS + 1);
    assert!(v["status"]["stalled_since_ms"].as_u64().unwrap() > BASE_MS);
    assert!(v["status"]["last_error"].is_null());
    assert_same_files(&before, &snapshot(&dir, true), "status");
    // An empty queue is never stalled.
    let t = target_with_schema(tmp.path());
    sj!("sync", dir, "--target", t).code(0);
    sj!("status", dir, "--stalled-after", "0")
        .code(0)
        .stdout_has(&["IN SYNC"]);
}

#[test]
fn failed_sync_is_persisted_and_status_exits_3_until_a_sync_succeeds() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 40);
    let share = tmp.path().join("mnt").join("share.db");

    // The share is not mounted: the target is missing. Not created, exit 2, and a message
    // that names the target and the mount.
    let r = sj!("sync", dir, "--target", share);
    r.code(2);
    r.error_line(&[
        share.to_str().unwrap(),
        "does not exist",
        "share",
        "mounted",
    ]);
    assert!(!share.exists(), "sync created the missing target");
    assert!(!share.parent().unwrap().exists());
    assert!(
        dir.join("replay.json").is_file(),
        "the failure is persisted"
    );

    let r = sj!("status", dir);
    r.code(3).stdout_has(&[
        "state         FAILING",
        "last error    target ",
        "does not exist",
        "pending       40 entries",
    ]);
    let r = sj!("status", dir, "--json", "--stalled-after", "0");
    r.code(3);
    let v = json(&r.stdout);
    assert_eq!(v["verdict"], "FAILING");
    assert_eq!(v["exit_code"], 3);
    let e = &v["status"]["last_error"];
    assert!(
        e["message"].as_str().unwrap().contains("does not exist"),
        "{v}"
    );
    assert_eq!(e["transient"], true);
    assert!(e["at_ms"].is_u64() && v["status"]["failing_since_ms"].is_u64());
    // With --target, the target's state is read now and reported as unreadable.
    sj!("status", dir, "--target", share)
        .code(3)
        .stdout_has(&["target LSN    unreadable: target ", "does not exist"]);

    // The share comes back: sync succeeds and the error is cleared.
    std::fs::create_dir_all(share.parent().unwrap()).unwrap();
    create_target(&share, TARGET_SCHEMA);
    sj!("sync", dir, "--target", share)
        .code(0)
        .stdout_has(&["applied 40 entries"]);
    let r = sj!("status", dir, "--target", share, "--json");
    r.code(0);
    let v = json(&r.stdout);
    assert_eq!(v["verdict"], "IN SYNC");
    assert!(v["status"]["last_error"].is_null() && v["status"]["failing_since_ms"].is_null());
    assert_eq!(v["status"]["acked_lsn"], 40);
}
