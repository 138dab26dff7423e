//! `syncjournal sync` (batches, `--follow`, quarantine, application kinds), its logs and
//! error line, `quarantine list|retry|discard`, and escaping of crafted names and values.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;

use serde_json::Value as Json;
use syncjournal::{ChangeSet, Journal, Lsn, Value};

use crate::support::cli::{
    APP_KIND, EVIL_TABLE, EVIL_TEXT, JournalOwner, Run, TARGET_SCHEMA, append_changes,
    append_items, application_payload, build_journal, build_journal_of, command, control_char,
    flip_bit_in_record, has_terminal_codes, item, item_name, journal_and_target,
    no_journal_and_target, small_opts, target_with_schema,
};
use crate::support::journal::{assert_same_files, snapshot};
use crate::support::process::{drain, wait_guarded, wait_until};
use crate::support::targets::{count_rows, create_target, max_watermark, open_target};
use crate::{OWNER_CHILD, json, tempdir};

#[test]
fn sync_applies_pending_entries_in_batches_with_clean_output() {
    let (_tmp, dir, t) = journal_and_target(250);

    let r = sj!("sync", dir, "--target", t, "--batch", "100");
    r.code(0)
        .quiet_stderr()
        .stdout_has(&["applied 250 entries in 3 transactions in ", "; 0 pending"]);
    assert!(
        !has_terminal_codes(&r.stdout),
        "progress or colours on a pipe: {:?}",
        r.stdout
    );
    assert_eq!(
        r.stdout.lines().count(),
        1,
        "one summary line: {:?}",
        r.stdout
    );
    assert_eq!(count_rows(&t, "items"), 250);
    assert_eq!(max_watermark(&t), 250);
    let name: String = open_target(&t)
        .query_row("SELECT name FROM items WHERE id = 250", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, item_name(250));

    let st = sj!("status", dir, "--target", t, "--json");
    st.code(0);
    let v = json(&st.stdout);
    assert_eq!(v["status"]["acked_lsn"], 250);
    assert_eq!(v["status"]["target_lsn"], 250);
    assert_eq!(v["status"]["pending_entries"], 0);
    assert_eq!(v["verdict"], "IN SYNC");

    // Exactly once: nothing left to apply.
    sj!("sync", dir, "--target", t)
        .code(0)
        .stdout_has(&["applied 0 entries in 0 transactions"]);
    assert_eq!(count_rows(&t, "items"), 250);
}

/// A temporary directory, a journal of 5 entries in it, and a target on a share that is not
/// mounted.
fn journal_and_unmounted_target() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 5);
    let missing = tmp.path().join("unmounted").join("share.db");
    (tmp, dir, missing)
}

/// Panics with `what`, listing the command line and stderr of every run that is not `ok`.
fn assert_every_run(runs: &[Run], what: &str, ok: impl Fn(&Run) -> bool) {
    let bad: Vec<String> = runs
        .iter()
        .filter(|r| !ok(r))
        .map(|r| format!("{}:\n{}", r.cmdline, r.stderr))
        .collect();
    assert!(bad.is_empty(), "{what}:\n{}", bad.join("\n"));
}

#[test]
fn logs_on_stderr_have_no_escape_codes_when_it_is_not_a_terminal() {
    let (_tmp, dir, missing) = journal_and_unmounted_target();
    let runs = [
        sj!("sync", dir, "--target", missing),
        sj!("-vv", "verify", dir),
        sj!("-v", "sync", dir, "--target", missing),
    ];
    assert_every_run(&runs, "escape codes written to a pipe", |r| {
        !has_terminal_codes(&r.stdout) && !has_terminal_codes(&r.stderr)
    });
}

#[test]
fn a_failed_command_reports_one_line_on_stderr() {
    // README: "Errors are one line on stderr, `syncjournal: <message>`" (default log level).
    let (tmp, dir, missing) = journal_and_unmounted_target();
    let damaged = build_journal(&tmp.path().join("damaged"), 5);
    flip_bit_in_record(&damaged, 2);
    let runs = [
        (sj!("verify", tmp.path().join("nope")), 2),
        (sj!("recover", damaged), 2),
        (sj!("dump", damaged), 1),
        (sj!("sync", dir, "--target", missing), 2),
    ]
    .map(|(r, code)| {
        r.code(code);
        r.error_line(&[]);
        r
    });
    assert_every_run(&runs, "more than the error line on stderr", |r| {
        r.stderr.lines().count() == 1
    });
}

#[test]
fn quarantine_list_retry_discard() {
    let (_tmp, dir, t) = no_journal_and_target();
    let lsns = build_journal_of(
        &dir,
        &[
            item(1),
            item(2),
            item(3),
            ChangeSet::new().insert("tags", [("id", 1)], [("label", "red")]),
            item(5),
            ChangeSet::new().insert("tags", [("id", 2)], [("label", "blue")]),
            item(7),
        ],
    );
    assert_eq!(lsns, (1..=7).collect::<Vec<_>>());

    // Default policy: stop at the refused entry, with what to do.
    let r = sj!("sync", dir, "--target", t);
    r.code(2).stdout_has(&["applied 3 entries"]);
    r.error_line(&[
        "entry at LSN 4",
        "tags",
        "rejected by the target",
        "Quarantine",
    ]);
    assert_eq!(count_rows(&t, "items"), 3);
    sj!("status", dir, "--target", t)
        .code(3)
        .stdout_has(&["FAILING", "  at entry    LSN 4: insert tags"]);

    // --quarantine: refused entries are set aside, the rest applied.
    let r = sj!("sync", dir, "--target", t, "--quarantine");
    r.code(0).stdout_has(&["applied ", "0 pending"]);
    assert_eq!(count_rows(&t, "items"), 5);
    assert_eq!(max_watermark(&t), 7);
    sj!("status", dir, "--target", t)
        .code(0)
        .stdout_has(&["quarantined   2", "IN SYNC"]);

    let l = sj!("quarantine", "list", dir, "--target", t);
    l.code(0).stdout_has(&[
        "LSN 4  ",
        "insert tags [id=1]",
        "LSN 6  ",
        "insert tags [id=2]",
        "    refused: insert tags [id=1] {label=\"red\"}: ",
        "    refused: insert tags [id=2] {label=\"blue\"}: ",
        "2 quarantined entries",
    ]);
    let l = sj!("quarantine", "list", dir, "--target", t, "--json");
    l.code(0);
    let v = json(&l.stdout);
    let listed: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["lsn"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![4, 6]);
    assert_eq!(v[0]["kind"], 0x10);
    assert!(v[0]["error"].as_str().unwrap().contains("tags"));
    assert!(v[0]["summary"].as_str().unwrap().contains("insert tags"));
    assert!(v[0]["rejected_at_ms"].is_u64());

    // Retry fails while the cause is there, then succeeds.
    let r = sj!("quarantine", "retry", dir, "--target", t, "4");
    r.code(2);
    r.error_line(&["tags"]);
    open_target(&t)
        .execute_batch("CREATE TABLE tags (id INTEGER PRIMARY KEY, label TEXT);")
        .unwrap();
    sj!("quarantine", "retry", dir, "--target", t, "4")
        .code(0)
        .stdout_has(&["LSN 4 applied and removed from quarantine"]);
    let label: String = open_target(&t)
        .query_row("SELECT label FROM tags WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(label, "red");
    let l = sj!("quarantine", "list", dir, "--target", t);
    l.code(0).stdout_has(&["LSN 6  ", "1 quarantined entries"]);
    assert!(!l.stdout.contains("LSN 4 "));

    // Discard removes one for good.
    sj!("quarantine", "discard", dir, "--target", t, "6")
        .code(0)
        .stdout_has(&["LSN 6 discarded from quarantine"]);
    assert_eq!(count_rows(&t, "tags"), 1);
    sj!("quarantine", "list", dir, "--target", t)
        .code(0)
        .stdout_has(&["no quarantined entries"]);
    let r = sj!("quarantine", "discard", dir, "--target", t, "6");
    r.code(2);
    r.error_line(&["no quarantined entry has LSN 6"]);
    let r = sj!("quarantine", "retry", dir, "--target", t, "6");
    r.code(2);
    r.error_line(&["6"]);
    sj!("status", dir, "--target", t)
        .code(0)
        .stdout_has(&["quarantined   0", "IN SYNC"]);
}

#[test]
fn names_and_values_from_a_crafted_journal_are_escaped_in_every_human_readable_output() {
    // Issue 10, finding 11: names printed raw forge lines and drive the terminal.
    let (_tmp, dir, t) = no_journal_and_target();
    build_journal_of(
        &dir,
        &[
            item(1),
            ChangeSet::new().insert(EVIL_TABLE, [("id", 2)], [("name", Value::from(EVIL_TEXT))]),
            item(3),
        ],
    );
    // The escaped forms: still recognisable.
    let table = "evil\\nLSN 99  forged\\u{1b}]0;pwned\\u{7}";
    let text = "over\\rwrite";
    let mut dirty = Vec::new();
    let mut check = |r: &Run| {
        for (stream, s) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
            if let Some(c) = control_char(s) {
                dirty.push(format!("{}: {stream} holds {c:?}:\n{s}", r.cmdline));
            }
            if s.lines()
                .any(|l| l.starts_with("LSN 99") || l.contains("forged") && !l.contains("evil"))
            {
                dirty.push(format!("{}: {stream} holds a forged line:\n{s}", r.cmdline));
            }
        }
    };

    let r = sj!("dump", dir);
    r.code(0)
        .stdout_has(&[&format!("insert {table} [id=2]"), text]);
    check(&r);
    let r = sj!("dump", dir, "--json");
    r.code(0);
    check(&r);
    let v: Vec<Json> = r.stdout.lines().map(json).collect();
    assert_eq!(
        v[1]["mutations"][0]["table"], EVIL_TABLE,
        "JSON keeps the text exact"
    );

    // Refused by the target: the error line, then the status's last error, carry the entry.
    let r = sj!("sync", dir, "--target", t);
    r.code(2);
    r.error_line(&["entry at LSN 2", table]);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    check(&r);
    let r = sj!("status", dir, "--target", t);
    r.code(3)
        .stdout_has(&["  at entry    LSN 2: insert ", table]);
    check(&r);
    let r = sj!("-v", "sync", dir, "--target", t, "--quarantine");
    r.code(0);
    check(&r);
    let r = sj!("quarantine", "list", dir, "--target", t);
    r.code(0)
        .stdout_has(&["LSN 2  ", table, "    refused: ", "1 quarantined entries"]);
    check(&r);
    let r = sj!("quarantine", "list", dir, "--target", t, "--json");
    r.code(0);
    check(&r);
    assert!(
        json(&r.stdout)[0]["summary"]
            .as_str()
            .unwrap()
            .contains(EVIL_TABLE)
    );
    let r = sj!("quarantine", "retry", dir, "--target", t, "2");
    r.code(2);
    r.error_line(&[table]);
    check(&r);
    assert!(dirty.is_empty(), "{}", dirty.join("\n---\n"));
}

#[test]
fn sync_with_quarantine_reports_how_many_entries_it_quarantined() {
    let (_tmp, dir, t) = no_journal_and_target();
    build_journal_of(
        &dir,
        &[
            item(1),
            ChangeSet::new().insert("tags", [("id", 1)], [("label", "red")]),
            item(3),
        ],
    );
    let r = sj!("sync", dir, "--target", t, "--quarantine");
    r.code(0);
    assert_eq!(count_rows(&t, "items"), 2);
    assert_eq!(max_watermark(&t), 3);
    assert!(
        r.stdout.contains("1 quarantined") || r.stdout.contains("quarantined 1"),
        "sync --quarantine set an entry aside without saying so:\n{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("applied 2 entries"),
        "2 entries were applied (and 1 quarantined):\n{}",
        r.stdout
    );
}

#[test]
fn sync_follow_applies_while_the_application_appends_and_stops_on_sigint() {
    let (_tmp, dir, t) = journal_and_target(10);
    let mut owner = JournalOwner::start(OWNER_CHILD, &dir);

    let (guard, out, err) = start_follow(&dir, &t, &["--batch", "7"]);

    wait_for_watermark("the first 10 entries reach the target", &t, 10);
    // The application appends while sync --follow runs: the entries arrive.
    assert_eq!(owner.append(11, 40), 40);
    wait_for_watermark("entries 11..=40 reach the target", &t, 40);
    assert_eq!(owner.append(41, 45), 45);
    wait_for_watermark("entries 41..=45 reach the target", &t, 45);
    assert_eq!(count_rows(&t, "items"), 45);

    // Ctrl-C: a clean stop.
    let mut follow = guard.take();
    let pid = follow.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let st = wait_guarded(&mut follow, "sync --follow after SIGINT");
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert_eq!(
        st.code(),
        Some(0),
        "sync --follow after SIGINT: {st}\n{stdout}\n{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("stopped: applied 45 entries")),
        "no \"stopped\" line:\n{stdout}"
    );
    assert!(
        !stderr.contains("syncjournal:"),
        "errors while following:\n{stderr}"
    );
    assert!(!has_terminal_codes(&stdout));
    owner.finish();
    // Nothing applied twice.
    assert_eq!(count_rows(&t, "items"), 45);
    sj!("status", dir, "--target", t)
        .code(0)
        .stdout_has(&["target LSN    45", "IN SYNC"]);
}

#[test]
fn sync_refuses_a_journal_of_an_application_kind_before_touching_the_target() {
    // Issue 10, finding 12: `sync` applies change sets only; with --quarantine, every
    // application event was quarantined and the watermark moved past it.
    let tmp = tempdir();
    let dir = tmp.path().join("j");
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let t = target_with_schema(&share);
    let j = Journal::open(&dir, small_opts()).unwrap();
    append_items(&j, 1, 2);
    assert_eq!(
        j.append_kind(APP_KIND, &application_payload(50)).unwrap(),
        3
    );
    append_changes(&j, &[item(4)]);
    j.close().unwrap();
    let before = snapshot(&share, true);
    for extra in [None, Some("--quarantine")] {
        let mut args = vec![
            OsStr::new("sync"),
            dir.as_os_str(),
            OsStr::new("--target"),
            t.as_os_str(),
        ];
        args.extend(extra.map(OsStr::new));
        let r = crate::support::cli::sj(&args);
        r.code(2);
        r.error_line(&[
            "LSN 3 is of application kind 0x41",
            "replay it with the application's own Replayer",
        ]);
        assert_same_files(&before, &snapshot(&share, true), &r.cmdline);
    }
    // dump shows it as kind, size and bytes.
    let r = sj!("dump", dir);
    r.code(0).stdout_has(&[
        "LSN 3  kind 0x41, 50 bytes: 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f…",
        "LSN 4  ",
    ]);
    let v: Vec<Json> = sj!("dump", dir, "--json")
        .stdout
        .lines()
        .map(json)
        .collect();
    assert_eq!(v[2]["kind"], APP_KIND);
    assert_eq!(v[2]["bytes"], 50);

    // Only after the target's watermark: entries already applied are not checked again, and
    // a record of another kind that arrives later is refused then.
    let dir2 = build_journal(&tmp.path().join("j2"), 5);
    let t2 = tmp.path().join("t2.db");
    create_target(&t2, TARGET_SCHEMA);
    sj!("sync", dir2, "--target", t2).code(0);
    let j = Journal::open(&dir2, small_opts()).unwrap();
    assert_eq!(j.append_kind(APP_KIND, &application_payload(8)).unwrap(), 6);
    j.close().unwrap();
    let r = sj!("sync", dir2, "--target", t2, "--quarantine");
    r.code(2);
    r.error_line(&["LSN 6 is of application kind 0x41"]);
    assert_eq!(max_watermark(&t2), 5);
    assert_eq!(count_rows(&t2, "syncjournal_rejected"), 0);

    // Gap records left by salvage are not another kind.
    let dir3 = build_journal(&tmp.path().join("j3"), 10);
    flip_bit_in_record(&dir3, 2);
    sj!("recover", dir3, "--mode", "salvage").code(0);
    let t3 = tmp.path().join("t3.db");
    create_target(&t3, TARGET_SCHEMA);
    sj!("sync", dir3, "--target", t3, "--quarantine").code(0);
    assert_eq!(max_watermark(&t3), 10);
}

#[test]
fn sync_follow_stops_at_an_application_kind_entry_with_the_entries_before_it_applied() {
    let (_tmp, dir, t) = journal_and_target(10);
    let mut owner = JournalOwner::start(OWNER_CHILD, &dir);
    let (guard, out, err) = start_follow(&dir, &t, &[]);
    wait_for_watermark("the first 10 entries reach the target", &t, 10);
    assert_eq!(owner.append(11, 20), 20);
    wait_for_watermark("entries 11..=20 reach the target", &t, 20);
    assert_eq!(owner.append_kind(APP_KIND, 16), 21);
    assert_eq!(owner.append(22, 25), 25);
    let mut follow = guard.take();
    let st = wait_guarded(&mut follow, "sync --follow at an application event");
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert_eq!(st.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("LSN 21 is of application kind 0x41"),
        "{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("stopped: applied 20 entries")),
        "{stdout}"
    );
    assert_eq!(max_watermark(&t), 20);
    owner.finish();
}

/// `syncjournal sync DIR --target T --follow EXTRA…`, started with stdout and stderr read on
/// threads: the process (killed if the test fails first) and its two streams.
fn start_follow(
    dir: &Path,
    t: &Path,
    extra: &[&str],
) -> (
    KillOnDrop,
    std::thread::JoinHandle<String>,
    std::thread::JoinHandle<String>,
) {
    let mut args = vec![
        OsStr::new("sync"),
        dir.as_os_str(),
        OsStr::new("--target"),
        t.as_os_str(),
        OsStr::new("--follow"),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let mut follow = command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = drain(follow.stdout.take().unwrap());
    let err = drain(follow.stderr.take().unwrap());
    (KillOnDrop(Some(follow)), out, err)
}

/// Waits (with the hang guard) until the watermark on the target `t` is `lsn`.
fn wait_for_watermark(what: &str, t: &Path, lsn: Lsn) {
    wait_until(what, || max_watermark(t) == lsn);
}

/// Kills a child process we started if the test fails before it ends.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn take(mut self) -> std::process::Child {
        self.0.take().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
