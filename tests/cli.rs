//! The `syncjournal` command line, run as a real process (`CARGO_BIN_EXE_syncjournal`) against
//! journals and targets that each test builds in its own temporary directory: healthy, torn
//! tail, damage in the middle, foreign, empty, missing; held open by another process. Checks
//! stdout, the `syncjournal: <message>` line on stderr, and the documented exit codes
//! (0 ok, 1 damage, 2 error, 3 failing, 4 stalled; 5 and 6 are the target states of `status`).
//!
//! No assertion depends on timing: waits are polls with a hang guard (`cli_support::HANG_GUARD`).

mod cli_support;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use serde_json::Value as Json;
use syncjournal::{ChangeSet, Journal, Value};

use cli_support::*;

/// Runs `syncjournal` with the given arguments (anything `AsRef<OsStr>`).
macro_rules! sj {
    ($($a:expr),* $(,)?) => {
        cli_support::sj::<&OsStr>(&[$(OsStr::new(&$a)),*])
    };
}

/// The ignored test that the journal-owner child process runs (see `JournalOwner`).
const OWNER_CHILD: &str = "journal_owner_child";

#[test]
#[ignore = "child process of the CLI tests: runs only with SYNCJOURNAL_CLI_TEST_CHILD_DIR set"]
fn journal_owner_child() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_VAR) {
        child_main(Path::new(&dir));
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn json(s: &str) -> Json {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

// ---------------------------------------------------------------------------------------------
// Help, usage, global flags.

#[test]
fn help_lists_exit_codes_and_every_command_has_an_example() {
    let main = sj!("--help");
    main.code(0).stdout_has(&[
        "Exit codes:",
        "0  success",
        "1  damage: verify, dump or status found damage in the journal",
        "2  usage error",
        "3  status: the last sync attempt failed",
        "4  status: entries are pending",
    ]);
    for cmd in [
        "demo",
        "status",
        "dump",
        "verify",
        "recover",
        "sync",
        "check-target",
        "quarantine",
    ] {
        main.stdout_has(&[cmd]);
    }
    // `status` documents its exit codes too.
    sj!("status", "--help")
        .code(0)
        .stdout_has(&["Exit codes:", "--stalled-after"]);
    sj!("check-target", "--help")
        .code(0)
        .stdout_has(&["Exit codes:", "integrity", "WAL"]);

    let mut without_example = Vec::new();
    for cmd in [
        &["demo"][..],
        &["status"],
        &["dump"],
        &["verify"],
        &["recover"],
        &["sync"],
        &["check-target"],
        &["quarantine"],
        &["quarantine", "list"],
        &["quarantine", "retry"],
        &["quarantine", "discard"],
    ] {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("--help");
        let r = cli_support::sj(&args);
        r.code(0);
        if !r.stdout.contains("Example") {
            without_example.push(cmd.join(" "));
        }
    }
    assert!(
        without_example.is_empty(),
        "`--help` has no \"Example\" for: {without_example:?}"
    );
}

#[test]
fn the_readme_documents_every_command_and_exit_code_that_help_shows() {
    let help = sj!("--help");
    help.code(0);
    let section = |text: &str, title: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.starts_with(title))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .map(String::from)
            .collect()
    };
    // "  name  what it does" (continuation lines are indented further).
    let commands: Vec<String> = section(&help.stdout, "Commands:")
        .iter()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    let codes: Vec<String> = section(&help.stdout, "Exit codes:")
        .iter()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .map(String::from)
        .collect();
    assert!(commands.len() >= 8 && codes.len() >= 7, "{}", help.stdout);

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let cli_section: String = readme
        .split("## Command line")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Command line section")
        .to_string();
    let rows = |prefix: &str| -> Vec<String> {
        cli_section
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|l| {
                l.split([' ', '`', '|'])
                    .find(|w| !w.is_empty())
                    .map(String::from)
            })
            .collect()
    };
    let readme_commands = rows("| `");
    let readme_codes: Vec<String> = rows("| ")
        .into_iter()
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(readme_codes, codes, "exit codes: README vs --help");
    let mut a = commands.clone();
    let mut b = readme_commands.clone();
    a.sort();
    b.sort();
    assert_eq!(b, a, "commands: README vs --help");
}

#[test]
fn usage_errors_exit_2_and_verbosity_flags_are_accepted() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 5);

    let r = sj!("frobnicate");
    r.code(2).stderr_has(&["frobnicate"]);
    assert!(r.stdout.is_empty());
    sj!().code(2).stderr_has(&["Usage:"]);
    sj!("verify").code(2).stderr_has(&["<DIR>"]);
    sj!("status", dir, "--stalled-after", "soon").code(2);
    sj!("recover", dir, "--mode", "guess")
        .code(2)
        .stderr_has(&["torn-tail", "salvage"]);
    sj!("-v", "-q", "verify", dir).code(2);

    sj!("--version")
        .code(0)
        .stdout_has(&[concat!("syncjournal ", env!("CARGO_PKG_VERSION"))]);
    for flags in [
        &["-v"][..],
        &["-vv"],
        &["--verbose"],
        &["-q"],
        &["-qq"],
        &["--quiet"],
    ] {
        let mut args: Vec<&OsStr> = flags.iter().map(OsStr::new).collect();
        args.push(OsStr::new("verify"));
        args.push(dir.as_os_str());
        cli_support::sj(&args)
            .code(0)
            .stdout_has(&["OK: every record"]);
    }
    // Global flags go after the command too.
    sj!("verify", dir, "-v").code(0);
    sj!("dump", dir, "-qq").code(0).quiet_stderr();
}

// ---------------------------------------------------------------------------------------------
// demo

#[test]
fn demo_syncs_the_example_and_prints_its_files() {
    let tmp = tempdir();
    let root = tmp.path().join("demo");
    let r = sj!("demo", root, "--changes", "300");
    r.code(0).stdout_has(&[
        &format!("demo directory: {}", root.display()),
        "applied 300 change sets",
        "files:",
        &format!("journal  {}", root.join("journal").display()),
        &format!("cache    {}", root.join("cache.db").display()),
        &format!("share    {}", root.join("share.db").display()),
        "journal verified: 300 records",
        "no damage",
        "last error: none",
    ]);
    assert!(!has_terminal_codes(&r.stdout) && !has_terminal_codes(&r.stderr));
    for f in ["journal", "cache.db", "share.db"] {
        assert!(root.join(f).exists(), "{f} was not created");
    }
    // "<table>  <n> rows: share equals cache", and the share and the cache do hold n rows.
    for table in ["hosts", "domains", "certificates"] {
        let line = r
            .stdout
            .lines()
            .map(str::trim_start)
            .find(|l| l.starts_with(table) && l.ends_with(" rows: share equals cache"))
            .unwrap_or_else(|| panic!("no \"{table} … share equals cache\" line:\n{}", r.stdout));
        let n: i64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(n > 0, "{line}");
        assert_eq!(count_rows(&root.join("share.db"), table), n, "{line}");
        assert_eq!(count_rows(&root.join("cache.db"), table), n, "{line}");
    }
    let st = sj!(
        "status",
        root.join("journal"),
        "--target",
        root.join("share.db")
    );
    st.code(0).stdout_has(&["IN SYNC", "head LSN      300"]);
}

#[test]
fn demo_without_a_directory_uses_a_new_temporary_one() {
    let tmp = tempdir();
    let r = cli_support::sj_env(
        &["demo", "--changes", "20"],
        &[("TMPDIR", tmp.path().as_os_str())],
    );
    r.code(0);
    let line = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo directory: "))
        .expect("the demo prints its directory");
    let dir = Path::new(line);
    assert!(
        dir.starts_with(tmp.path()),
        "{line} is not under $TMPDIR {}",
        tmp.path().display()
    );
    assert!(dir.join("journal").is_dir() && dir.join("share.db").is_file());
    assert_eq!(
        r.stdout.matches("share equals cache").count(),
        3,
        "{}",
        r.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// status

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
    let before = snapshot(&dir);

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
    assert_same_files(&before, &snapshot(&dir), "status");
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

// ---------------------------------------------------------------------------------------------
// dump

#[test]
fn dump_prints_decoded_entries_within_bounds() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let segs = segments(&dir);
    assert!(segs.len() >= 3, "the fixture spans several segments");
    let second = first_lsn_of(&segs[1]);
    let before = snapshot(&dir);

    let r = sj!("dump", dir);
    r.code(0).quiet_stderr();
    let heads: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("LSN ")).collect();
    assert_eq!(heads.len(), 900);
    assert_eq!(
        heads[0], "LSN 1  2023-11-14T22:13:20.124Z  1 mutation",
        "LSN, creation time (UTC) and mutation count"
    );
    // Long text values are shortened in the text form (not in JSON).
    let short: String = item_name(2).chars().take(40).collect();
    assert!(
        r.stdout.contains(&format!(
            "LSN 2  2023-11-14T22:13:20.125Z  1 mutation\n  insert items [id=2] {{name={short:?}…}}\n"
        )),
        "{}",
        &r.stdout[..600]
    );
    assert!(heads[899].starts_with("LSN 900  "));

    // --from/--to: inclusive bounds, across a segment boundary.
    let (from, to) = (second - 2, second + 2);
    let r = sj!(
        "dump",
        dir,
        "--from",
        from.to_string(),
        "--to",
        to.to_string()
    );
    r.code(0);
    let lsns: Vec<u64> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("LSN "))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(lsns, (from..=to).collect::<Vec<_>>());
    let only = sj!("dump", dir, "--from", "7", "--to", "7");
    only.code(0).stdout_has(&["LSN 7  ", "insert items [id=7]"]);
    assert_eq!(only.stdout.lines().count(), 2);
    sj!("dump", dir, "--from", "899")
        .code(0)
        .stdout_has(&["LSN 899 ", "LSN 900 "]);
    let past = sj!("dump", dir, "--from", "5000");
    past.code(0).quiet_stderr();
    assert!(past.stdout.is_empty(), "{}", past.stdout);
    let reversed = sj!("dump", dir, "--from", "10", "--to", "9");
    reversed.code(0);
    assert!(reversed.stdout.is_empty());

    // --json: one object per line.
    let r = sj!("dump", dir, "--json", "--from", "3", "--to", "5");
    r.code(0).quiet_stderr();
    let lines: Vec<Json> = r.stdout.lines().map(json).collect();
    assert_eq!(lines.len(), 3);
    for (k, v) in lines.iter().enumerate() {
        let lsn = 3 + k as u64;
        assert_eq!(v["lsn"], lsn);
        assert_eq!(v["created_at_ms"], BASE_MS + lsn);
        assert_eq!(v["kind"], 0x10);
        let m = &v["mutations"][0];
        assert_eq!(m["op"], "insert");
        assert_eq!(m["table"], "items");
        assert_eq!(m["key"]["id"], lsn);
        assert_eq!(m["values"]["name"], item_name(lsn as i64));
    }
    let all = sj!("dump", dir, "--json");
    all.code(0);
    assert_eq!(all.stdout.lines().map(json).count(), 900);
    assert_same_files(&before, &snapshot(&dir), "dump");
}

#[test]
fn dump_shows_every_value_type_and_non_changeset_records() {
    let tmp = tempdir();
    let dir = tmp.path().join("j");
    let j = Journal::open(&dir, small_opts()).unwrap();
    append_changes(
        &j,
        &[ChangeSet::new()
            .upsert(
                "t",
                [("k", Value::from("a"))],
                [
                    ("i", Value::Integer(-7)),
                    ("r", Value::Real(1.5)),
                    ("b", Value::Blob(vec![0xde, 0xad])),
                    ("n", Value::Null),
                ],
            )
            .delete("u", [("id", 3)])],
    );
    j.append_kind(0x02, b"raw application bytes").unwrap();
    j.close().unwrap();

    let r = sj!("dump", dir);
    r.code(0).stdout_has(&[
        "LSN 1  2023-11-14T22:13:20.123Z  2 mutations",
        "upsert t [k=\"a\"]",
        "-7",
        "1.5",
        "delete u [id=3]",
        "LSN 2  kind 0x02, 21 bytes: ",
    ]);
    let r = sj!("dump", dir, "--json");
    r.code(0);
    let v: Vec<Json> = r.stdout.lines().map(json).collect();
    let vals = &v[0]["mutations"][0]["values"];
    assert_eq!(vals["i"], -7);
    assert_eq!(vals["r"], 1.5);
    assert_eq!(vals["b"]["blob_hex"], "dead");
    assert!(vals["n"].is_null());
    assert_eq!(v[0]["mutations"][1]["op"], "delete");
    assert_eq!(v[1]["kind"], 2);
    assert_eq!(v[1]["bytes"], 21);
    assert_eq!(
        v[1]["head_hex"],
        b"raw application bytes"
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
}

#[test]
fn dump_of_a_torn_last_record_prints_the_records_before_it_and_exits_1() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 40);
    let (seg, frame, _) = tear_last_frame(&dir);
    assert_eq!(frame.lsn, 40);
    let before = snapshot(&dir);
    for json_out in [false, true] {
        let r = if json_out {
            sj!("dump", dir, "--json")
        } else {
            sj!("dump", dir)
        };
        r.code(1);
        let lsns: Vec<u64> = if json_out {
            r.stdout
                .lines()
                .map(|l| json(l)["lsn"].as_u64().unwrap())
                .collect()
        } else {
            dumped_lsns(&r.stdout)
        };
        assert_eq!(lsns, (1..=39).collect::<Vec<_>>(), "{}", r.cmdline);
        r.error_line(&[
            "torn tail",
            seg.to_str().unwrap(),
            &format!("offset {}", frame.offset),
        ]);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
    // Within bounds that end before the damage, nothing is wrong.
    let r = sj!("dump", dir, "--from", "30", "--to", "39");
    r.code(0).quiet_stderr();
    assert_eq!(dumped_lsns(&r.stdout), (30..=39).collect::<Vec<_>>());
    assert_same_files(&before, &snapshot(&dir), "dump of a torn tail");
}

#[test]
fn dump_of_a_zeroed_record_in_the_middle_says_where_it_stopped_and_exits_1() {
    // Issue 9: "a zeroed record ends dump early, leaving out valid records 39–40 without a
    // word".
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 40);
    let (seg, frame) = zero_record(&dir, 38);
    for r in [sj!("dump", dir), sj!("dump", dir, "--to", "40")] {
        r.code(1);
        assert_eq!(
            dumped_lsns(&r.stdout),
            (1..=37).collect::<Vec<_>>(),
            "{}",
            r.cmdline
        );
        let line = r.error_line(&[seg.to_str().unwrap(), "offset "]);
        assert!(
            line.contains("damage in the middle") && !line.contains("torn tail"),
            "records 39 and 40 follow it: not a torn tail: {line}"
        );
        // The offset named is the zeroed record's, or where the records after it begin.
        let named: usize = line
            .split("offset ")
            .nth(1)
            .unwrap()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (frame.offset..=frame.offset + frame.len).contains(&named),
            "offset {named} is not that of LSN 38's frame ({} bytes at {}): {line}",
            frame.len,
            frame.offset
        );
    }
    // --to beyond the end of a healthy journal is no damage.
    let ok = build_journal(&tmp.path().join("ok"), 5);
    let r = sj!("dump", ok, "--to", "1000");
    r.code(0).quiet_stderr();
    assert_eq!(dumped_lsns(&r.stdout), (1..=5).collect::<Vec<_>>());
}

#[test]
fn dump_while_the_owner_publishes_no_head_stops_at_the_acknowledged_lsn_and_says_so() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 30);
    let t = target_with_schema(tmp.path());
    sj!("sync", dir, "--target", t).code(0); // acknowledged up to 30
    let mut owner = JournalOwner::start(OWNER_CHILD, &dir);
    assert_eq!(owner.append(31, 40), 40);
    let r = sj!("dump", dir);
    r.code(0).quiet_stderr();
    assert_eq!(dumped_lsns(&r.stdout), (1..=40).collect::<Vec<_>>());
    // HEAD becomes unreadable (damaged, or an owner that cannot publish it).
    write_at(&dir.join("HEAD"), 0, &[0u8; 64]);
    let r = sj!("dump", dir);
    r.code(0).stderr_has(&[
        "syncjournal: note: ",
        &format!("pid {}", owner.pid),
        "no valid HEAD",
        "acknowledged LSN 30",
    ]);
    assert_eq!(dumped_lsns(&r.stdout), (1..=30).collect::<Vec<_>>());
    owner.finish();
}

#[test]
fn dump_into_a_pipe_that_closes_early_exits_0_silently() {
    let tmp = tempdir();
    let dir = tmp.path().join("j");
    // Enough output to overflow any pipe buffer several times over.
    let j = Journal::open(&dir, syncjournal::JournalOptions::new()).unwrap();
    append_items(&j, 1, 6000);
    j.close().unwrap();

    for extra in [None, Some("--json")] {
        let mut args = vec![OsStr::new("dump"), dir.as_os_str()];
        args.extend(extra.map(OsStr::new));
        let mut child = command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = drain(child.stderr.take().unwrap());
        // `dump | head -1`: read one line, then close the pipe.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.contains('1'), "first line: {first:?}");
        let st = wait_guarded(&mut child, "dump | head -1");
        let stderr = err.join().unwrap();
        assert_eq!(
            st.code(),
            Some(0),
            "dump {extra:?} into a closed pipe: {st}; stderr: {stderr}"
        );
        assert!(
            stderr.is_empty(),
            "a broken pipe is not an error; stderr: {stderr}"
        );
    }
}

#[test]
fn dump_streams_a_large_journal_in_bounded_memory() {
    const N: u64 = 100_000;
    let tmp = tempdir();
    let dir = tmp.path().join("j");
    let j = Journal::open(&dir, syncjournal::JournalOptions::new()).unwrap();
    let filler = "y".repeat(400);
    for chunk in (1..=N).collect::<Vec<_>>().chunks(2000) {
        let payloads: Vec<Vec<u8>> = chunk
            .iter()
            .map(|&i| {
                payload(
                    BASE_MS + i,
                    &ChangeSet::new().insert(
                        "items",
                        [("id", i as i64)],
                        [("name", Value::from(format!("{i}-{filler}")))],
                    ),
                )
            })
            .collect();
        j.append_batch_kind(syncjournal::event::KIND_CHANGESET, payloads)
            .unwrap();
    }
    j.close().unwrap();
    let journal_bytes: u64 = frames(&segments(&dir)[0])
        .iter()
        .map(|f| f.len as u64)
        .sum();
    assert!(journal_bytes > 40 << 20, "{journal_bytes}");

    let mut child = command(&[OsStr::new("dump"), dir.as_os_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let err = drain(child.stderr.take().unwrap());
    let mut out = BufReader::with_capacity(1 << 16, child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("LSN 1  "), "{line:?}");
    // Output started while the dump is still running: it streams.
    assert!(
        child.try_wait().unwrap().is_none(),
        "dump finished before its first line was read: not streaming?"
    );
    let (mut entries, mut last, mut peak_kib) = (1u64, String::new(), 0u64);
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.starts_with("LSN ") {
            entries += 1;
            last.clone_from(&line);
            // Sample the peak RSS while the child is alive (it cannot finish before we read).
            if entries % 5000 == 0 && entries < N - 1000 {
                peak_kib = peak_kib.max(peak_rss_kib(pid).expect("VmHWM of the running dump"));
            }
        }
    }
    let st = wait_guarded(&mut child, "dump of 100k entries");
    assert!(st.success(), "dump: {st}; {}", err.join().unwrap());
    assert_eq!(entries, N);
    assert!(last.starts_with(&format!("LSN {N}  ")), "{last}");
    assert!(peak_kib > 0);
    eprintln!(
        "dump of {N} entries ({} MiB of records): peak RSS {} MiB",
        journal_bytes >> 20,
        peak_kib >> 10
    );
    assert!(
        peak_kib * 1024 < journal_bytes / 2,
        "dump's peak RSS {peak_kib} KiB is not well below the journal's {journal_bytes} bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// verify

#[test]
fn verify_a_healthy_journal() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let n = segments(&dir).len();
    let before = snapshot(&dir);
    let r = sj!("verify", dir);
    r.code(0).quiet_stderr().stdout_has(&[
        &format!("journal {} (id ", dir.display()),
        &format!("{n} segments, 900 records (LSNs 1 to 900)"),
        "acknowledged up to LSN 0",
        "OK: every record and the checksum chain verified",
    ]);
    assert!(!r.stdout.contains("DAMAGE"));
    assert_same_files(&before, &snapshot(&dir), "verify");
}

#[test]
fn verify_reports_a_torn_tail_and_modifies_nothing() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let (seg, frame, _) = tear_last_frame(&dir);
    assert_eq!(frame.lsn, 900);
    let before = snapshot(&dir);

    let r = sj!("verify", dir);
    r.code(1).quiet_stderr().stdout_has(&[
        "records (LSNs 1 to 899)",
        "DAMAGE: 1 region(s)",
        &format!("{} offset {} (", seg.display(), frame.offset),
        "torn tail (an incomplete last write)",
        &format!("run `syncjournal recover {}", dir.display()),
        &format!("kept in {}/forensics", dir.display()),
    ]);
    let damage = r
        .stdout
        .lines()
        .find(|l| l.contains(" offset "))
        .unwrap()
        .to_string();
    // The kind of damage is named: a checksum or malformed header.
    assert!(
        damage.contains("checksum") || damage.contains("malformed record header"),
        "{damage}"
    );
    assert!(
        !r.stdout.contains("--mode salvage"),
        "a torn tail needs no salvage: {}",
        r.stdout
    );
    assert_same_files(&before, &snapshot(&dir), "verify of a torn tail");
    // Twice: still the same report, still nothing modified.
    sj!("verify", dir).code(1);
    assert_same_files(&before, &snapshot(&dir), "verify of a torn tail, twice");
}

#[test]
fn verify_reports_damage_in_the_middle_and_modifies_nothing() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let (seg, frame) = flip_bit_in_record(&dir, 2);
    let before = snapshot(&dir);

    let r = sj!("verify", dir);
    r.code(1).quiet_stderr().stdout_has(&[
        "DAMAGE: 1 region(s)",
        &format!(
            "{} offset {} ({} bytes): record checksum mismatch (stored 0x",
            seg.display(),
            frame.offset,
            frame.len
        ),
        "damage in durable data; LSN 2 affected",
        &format!("run `syncjournal recover {} --mode salvage`", dir.display()),
    ]);
    assert_same_files(&before, &snapshot(&dir), "verify of damage in the middle");
}

// ---------------------------------------------------------------------------------------------
// Missing, foreign and empty directories.

/// Runs every command that takes a journal directory on `dir` (`t` is a real target with the
/// fixture schema), calling `check` after each one, before the next runs.
fn for_every_command(dir: &Path, t: &Path, mut check: impl FnMut(&str, &Run)) {
    let cmds: Vec<Vec<&OsStr>> = vec![
        vec!["verify".as_ref(), dir.as_ref()],
        vec!["dump".as_ref(), dir.as_ref()],
        vec!["status".as_ref(), dir.as_ref()],
        vec!["recover".as_ref(), dir.as_ref()],
        vec![
            "recover".as_ref(),
            dir.as_ref(),
            "--mode".as_ref(),
            "salvage".as_ref(),
        ],
        vec![
            "sync".as_ref(),
            dir.as_ref(),
            "--target".as_ref(),
            t.as_ref(),
        ],
        vec![
            "quarantine".as_ref(),
            "list".as_ref(),
            dir.as_ref(),
            "--target".as_ref(),
            t.as_ref(),
        ],
    ];
    for a in cmds {
        let r = cli_support::sj(&a);
        check(&r.cmdline, &r);
    }
}

fn target_with_schema(tmp: &Path) -> std::path::PathBuf {
    let t = tmp.join("target.db");
    create_target(&t, TARGET_SCHEMA);
    t
}

#[test]
fn a_missing_directory_is_refused_by_every_command() {
    let tmp = tempdir();
    let t = target_with_schema(tmp.path());
    let dir = tmp.path().join("no-such-journal");
    let target_before = std::fs::read(&t).unwrap();
    for_every_command(&dir, &t, |cmd, r| {
        r.code(2);
        let line = r.error_line(&[dir.to_str().unwrap()]);
        assert!(
            line.contains("does not exist") || line.contains("No such file or directory"),
            "{cmd}: {line}"
        );
        assert!(!dir.exists(), "{cmd} created the journal directory");
    });
    assert_eq!(std::fs::read(&t).unwrap(), target_before);
}

#[test]
fn a_foreign_directory_is_refused_by_every_command() {
    let tmp = tempdir();
    let t = target_with_schema(tmp.path());
    let dir = tmp.path().join("photos");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), b"not a journal").unwrap();
    let before = snapshot(&dir);
    let mut wrong = Vec::new();
    for_every_command(&dir, &t, |cmd, r| {
        r.code(2);
        let line = r.error_line(&[]);
        if !(line.contains("is not a syncjournal directory") && line.contains("notes.txt")) {
            wrong.push(format!("{cmd}: {line}"));
        }
        assert_same_files(&before, &snapshot(&dir), cmd);
    });
    assert!(
        wrong.is_empty(),
        "these commands do not say that the directory holds someone else's files:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_segment_of_another_journal_is_refused() {
    let tmp = tempdir();
    let t = target_with_schema(tmp.path());
    let a = build_journal(&tmp.path().join("a"), 10);
    let b = build_journal(&tmp.path().join("b"), 10);
    let seg = segments(&a)[0].clone();
    // Journal a's ACK with journal b's segment.
    std::fs::copy(b.join(seg.file_name().unwrap()), &seg).unwrap();
    let before = snapshot(&a);
    let mut wrong = Vec::new();
    for_every_command(&a, &t, |cmd, r| {
        let mut after = snapshot(&a);
        // Whoever takes the lock writes its pid into LOCK (informational); a failed sync is
        // recorded for `status`. Nothing else may change.
        after.insert(a.join("LOCK"), before[&a.join("LOCK")].clone());
        after.remove(&a.join("replay.json"));
        assert_same_files(&before, &after, cmd);
        if cmd.contains(" quarantine list ") && r.code == 0 {
            // Lists the target's quarantine for the journal id in ACK: needs no segment.
            return;
        }
        if r.code != 2 {
            wrong.push(format!(
                "{cmd}: exit {} instead of 2; stdout:\n{}",
                r.code, r.stdout
            ));
            return;
        }
        r.error_line(&[seg.to_str().unwrap(), "belongs to journal", "two journals"]);
    });
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn an_empty_directory_holds_no_journal_and_stays_empty() {
    let tmp = tempdir();
    let t = target_with_schema(tmp.path());
    let dir = tmp.path().join("empty");
    std::fs::create_dir(&dir).unwrap();
    let mut wrong = Vec::new();
    for_every_command(&dir, &t, |cmd, r| {
        let created: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if !created.is_empty() {
            wrong.push(format!(
                "{cmd}: exit {}, created {created:?} in the empty directory; stdout: {:?}",
                r.code,
                r.stdout.lines().next().unwrap_or_default()
            ));
            // Empty it again for the next command.
            std::fs::remove_dir_all(&dir).unwrap();
            std::fs::create_dir(&dir).unwrap();
            return;
        }
        if cmd.contains(" verify ") {
            // An empty directory has no damage: verify reports nothing to check, or refuses.
            assert!(r.code == 0 || r.code == 2, "{cmd}: exit {}", r.code);
            return;
        }
        if r.code != 2 {
            wrong.push(format!("{cmd}: exit {} instead of 2", r.code));
            return;
        }
        let line = r.error_line(&[dir.to_str().unwrap()]);
        if line.contains("does not exist") {
            wrong.push(format!(
                "{cmd}: says the existing directory does not exist: {line}"
            ));
        }
    });
    assert_eq!(
        count_rows(&t, "syncjournal_progress"),
        0,
        "the target was touched"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// recover

#[test]
fn recover_cuts_a_torn_tail_and_keeps_the_bytes() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let (seg, frame, torn) = tear_last_frame(&dir);

    let r = sj!("recover", dir);
    r.code(0).stdout_has(&[
        &format!(
            "cut torn tail in {} offset {}: ",
            seg.display(),
            frame.offset
        ),
        &format!("original bytes kept in {}/forensics/", dir.display()),
    ]);
    let kept = r
        .stdout
        .split("original bytes kept in ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    let kept = Path::new(kept.trim());
    assert!(
        kept.starts_with(dir.join("forensics")) && kept.extension().is_some_and(|e| e == "cut"),
        "{}",
        kept.display()
    );
    let saved = std::fs::read(kept).unwrap();
    assert!(
        saved.starts_with(&torn[..saved.len().min(torn.len())]) && saved.len() >= frame.len / 2,
        "the kept bytes are the torn frame's"
    );

    sj!("verify", dir)
        .code(0)
        .stdout_has(&["records (LSNs 1 to 899)", "OK: every record"]);
    let again = sj!("recover", dir, "--mode", "torn-tail");
    again.code(0).stdout_has(&["nothing to repair"]);
    let last = sj!("dump", dir, "--from", "899");
    last.code(0);
    assert!(last.stdout.contains("LSN 899 ") && !last.stdout.contains("LSN 900"));
}

#[test]
fn recover_of_damage_in_the_middle_refuses_then_salvages() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let (seg, frame) = flip_bit_in_record(&dir, 2);
    let segs_before: Vec<Vec<u8>> = segments(&dir)
        .iter()
        .map(|s| std::fs::read(s).unwrap())
        .collect();

    // The default mode only cuts torn tails: it explains the damage and what to run.
    let r = sj!("recover", dir);
    r.code(2);
    r.error_line(&[
        "damage in the middle",
        seg.to_str().unwrap(),
        &format!("offset {}", frame.offset),
        "record checksum mismatch",
        "--mode salvage",
    ]);
    let segs_after: Vec<Vec<u8>> = segments(&dir)
        .iter()
        .map(|s| std::fs::read(s).unwrap())
        .collect();
    assert!(
        segs_before == segs_after,
        "a refused recover changed a segment"
    );
    // dump reads up to the damage and then says where it is (exit 1: damage, as verify).
    let d = sj!("dump", dir);
    d.code(1).stdout_has(&["LSN 1  "]);
    d.error_line(&[seg.to_str().unwrap(), &format!("offset {}", frame.offset)]);

    let r = sj!("recover", dir, "--mode", "salvage");
    r.code(0).stdout_has(&[
        &format!(
            "replaced damaged region in {} offset {}: {} bytes",
            seg.display(),
            frame.offset,
            frame.len
        ),
        &format!("original bytes kept in {}/forensics/", dir.display()),
        "LSN 2 lost (now a gap record)",
    ]);
    assert_eq!(std::fs::read_dir(dir.join("forensics")).unwrap().count(), 1);
    sj!("verify", dir).code(0).stdout_has(&[
        "gap: LSN 2 was lost to damage earlier (salvaged)",
        "OK: every record",
    ]);
    let d = sj!("dump", dir, "--to", "3");
    d.code(0)
        .stdout_has(&["LSN 1  ", "LSN 2  LOST (a gap left by salvage)", "LSN 3  "]);
    let d = sj!("dump", dir, "--to", "3", "--json");
    let v: Vec<Json> = d.stdout.lines().map(json).collect();
    assert_eq!(v[1]["lsn"], 2);
    assert_eq!(v[1]["gap_to"], 3);
    assert_eq!(v[1]["lost"], true);
}

#[test]
fn verify_and_recover_a_truncated_last_segment() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let seg = segments(&dir).pop().unwrap();
    let last = *frames(&seg).last().unwrap();
    // Someone cut the file in the middle of its last frame.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len((last.offset + last.len / 2) as u64).unwrap();
    drop(f);
    let before = snapshot(&dir);

    // verify reports damage (exit 1), with the segment, what is wrong and what to run.
    let r = sj!("verify", dir);
    assert_same_files(&before, &snapshot(&dir), "verify of a truncated segment");
    let report = format!("{}{}", r.stdout, r.stderr);
    assert!(
        report.contains(seg.to_str().unwrap())
            && report.contains("truncated")
            && report.contains("--mode salvage"),
        "{report}"
    );
    let verify = r; // its exit code is checked last, so that recovery is checked regardless

    // The default recovery refuses it (a truncated segment is never a torn write) ...
    let r = sj!("recover", dir);
    r.code(2);
    r.error_line(&[seg.to_str().unwrap(), "truncated", "--mode salvage"]);
    // ... salvage re-extends it and marks what is missing: the owner had published LSN 900 as
    // durable (HEAD), so its LSN is never reused — a gap record stands for it.
    sj!("recover", dir, "--mode", "salvage")
        .code(0)
        .stdout_has(&[
            &format!("{} offset {}", seg.display(), last.offset),
            "LSN 900 lost",
        ]);
    sj!("verify", dir).code(0).stdout_has(&[
        "899 records (LSNs 1 to 900)",
        "gap: LSN 900 was lost to damage earlier (salvaged)",
    ]);
    // "Exit 1 on damage" (verify --help): a truncated segment is damage.
    verify.code(1);
}

#[test]
fn a_damaged_acknowledged_last_record_is_not_cut_as_a_torn_tail() {
    // The last record was durable, applied to the target and acknowledged; then its bytes
    // were damaged. The acknowledgement proves it was durable (journal-format.md §8: `ack`
    // requires durability; §7 invariant 6), so it is not a torn write: cutting it would make
    // the next append reuse its LSN, which the target already covers.
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 20);
    let t = target_with_schema(tmp.path());
    sj!("sync", dir, "--target", t).code(0);
    let (seg, frame, _) = tear_last_frame(&dir);
    assert_eq!(frame.lsn, 20);
    let before = snapshot(&dir);

    let r = sj!("verify", dir);
    r.code(1).stdout_has(&[
        &format!("{} offset {}", seg.display(), frame.offset),
        "--mode salvage",
    ]);
    assert!(
        !r.stdout.contains("torn tail"),
        "acknowledged LSN 20 reported as a torn tail:\n{}",
        r.stdout
    );
    let r = sj!("recover", dir);
    r.code(2);
    r.error_line(&[seg.to_str().unwrap(), &format!("offset {}", frame.offset)]);
    let mut after = snapshot(&dir);
    after.insert(dir.join("LOCK"), before[&dir.join("LOCK")].clone());
    assert_same_files(&before, &after, "a refused recover");
}

// ---------------------------------------------------------------------------------------------
// While another process holds the journal open.

#[test]
fn commands_while_another_process_holds_the_journal() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 30);
    let t = target_with_schema(tmp.path());
    let mut owner = JournalOwner::start(OWNER_CHILD, &dir);
    let pid = owner.pid.to_string();
    assert_eq!(owner.append(31, 40), 40);

    // status reads durable state without opening the journal.
    let r = sj!("status", dir, "--stalled-after", "100000000");
    r.code(0).stdout_has(&[
        &format!("owner         pid {pid} has the journal open"),
        "head LSN      40",
        "pending       40 entries",
    ]);
    let r = sj!("status", dir, "--json", "--target", t);
    let v = json(&r.stdout);
    assert_eq!(v["owner"], owner.pid);
    assert_eq!(v["status"]["head_lsn"], 40);
    assert_eq!(v["status"]["target_lsn"], 0);

    // dump and verify read it too.
    let d = sj!("dump", dir, "--from", "38");
    d.code(0).stdout_has(&["LSN 38 ", "LSN 40 "]);
    sj!("verify", dir).code(0).stdout_has(&[
        &format!("note: pid {pid} has the journal open"),
        "OK: every record",
    ]);

    // recover refuses: the application must be stopped.
    let before: Vec<Vec<u8>> = segments(&dir)
        .iter()
        .map(|s| std::fs::read(s).unwrap())
        .collect();
    let r = sj!("recover", dir);
    r.code(2);
    r.error_line(&["locked", &format!("pid {pid}")]);
    let after: Vec<Vec<u8>> = segments(&dir)
        .iter()
        .map(|s| std::fs::read(s).unwrap())
        .collect();
    assert!(before == after);

    // sync follows it read-only up to its durable head.
    let r = sj!("sync", dir, "--target", t);
    r.code(0).stdout_has(&["applied 40 entries"]);
    assert_eq!(count_rows(&t, "items"), 40);
    assert_eq!(target_watermark(&t), 40);
    sj!("status", dir, "--target", t).code(0).stdout_has(&[
        "target LSN    40",
        "pending       0 entries",
        "IN SYNC",
    ]);
    owner.finish();
}

// ---------------------------------------------------------------------------------------------
// sync

#[test]
fn sync_applies_pending_entries_in_batches_with_clean_output() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 250);
    let t = target_with_schema(tmp.path());

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
    assert_eq!(target_watermark(&t), 250);
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

#[test]
fn logs_on_stderr_have_no_escape_codes_when_it_is_not_a_terminal() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 5);
    let missing = tmp.path().join("unmounted").join("share.db");
    let mut dirty = Vec::new();
    for r in [
        sj!("sync", dir, "--target", missing),
        sj!("-vv", "verify", dir),
        sj!("-v", "sync", dir, "--target", missing),
    ] {
        if has_terminal_codes(&r.stdout) || has_terminal_codes(&r.stderr) {
            dirty.push(format!("{}: {:?}", r.cmdline, r.stderr));
        }
    }
    assert!(
        dirty.is_empty(),
        "escape codes written to a pipe:\n{}",
        dirty.join("\n")
    );
}

#[test]
fn a_failed_command_reports_one_line_on_stderr() {
    // README: "Errors are one line on stderr, `syncjournal: <message>`" (default log level).
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 5);
    let damaged = build_journal(&tmp.path().join("damaged"), 5);
    flip_bit_in_record(&damaged, 2);
    let missing = tmp.path().join("unmounted").join("share.db");
    let mut noisy = Vec::new();
    for (r, code) in [
        (sj!("verify", tmp.path().join("nope")), 2),
        (sj!("recover", damaged), 2),
        (sj!("dump", damaged), 1),
        (sj!("sync", dir, "--target", missing), 2),
    ] {
        r.code(code);
        r.error_line(&[]);
        if r.stderr.lines().count() != 1 {
            noisy.push(format!("{}:\n{}", r.cmdline, r.stderr));
        }
    }
    assert!(
        noisy.is_empty(),
        "more than the error line on stderr:\n{}",
        noisy.join("\n")
    );
}

#[test]
fn quarantine_list_retry_discard() {
    let tmp = tempdir();
    let dir = tmp.path().join("j");
    let t = target_with_schema(tmp.path());
    let j = Journal::open(&dir, small_opts()).unwrap();
    let lsns = append_changes(
        &j,
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
    j.close().unwrap();

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
    assert_eq!(target_watermark(&t), 7);
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
    let tmp = tempdir();
    let dir = tmp.path().join("j");
    let t = target_with_schema(tmp.path());
    let j = Journal::open(&dir, small_opts()).unwrap();
    append_changes(
        &j,
        &[
            item(1),
            ChangeSet::new().insert(EVIL_TABLE, [("id", 2)], [("name", Value::from(EVIL_TEXT))]),
            item(3),
        ],
    );
    j.close().unwrap();
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
    let tmp = tempdir();
    let dir = tmp.path().join("j");
    let t = target_with_schema(tmp.path());
    let j = Journal::open(&dir, small_opts()).unwrap();
    append_changes(
        &j,
        &[
            item(1),
            ChangeSet::new().insert("tags", [("id", 1)], [("label", "red")]),
            item(3),
        ],
    );
    j.close().unwrap();
    let r = sj!("sync", dir, "--target", t, "--quarantine");
    r.code(0);
    assert_eq!(count_rows(&t, "items"), 2);
    assert_eq!(target_watermark(&t), 3);
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
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 10);
    let t = target_with_schema(tmp.path());
    let mut owner = JournalOwner::start(OWNER_CHILD, &dir);

    let mut follow = command(&[
        OsStr::new("sync"),
        dir.as_os_str(),
        OsStr::new("--target"),
        t.as_os_str(),
        OsStr::new("--follow"),
        OsStr::new("--batch"),
        OsStr::new("7"),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let out = drain(follow.stdout.take().unwrap());
    let err = drain(follow.stderr.take().unwrap());
    let guard = KillOnDrop(Some(follow));

    wait_until("the first 10 entries reach the target", || {
        target_watermark(&t) == 10
    });
    // The application appends while sync --follow runs: the entries arrive.
    assert_eq!(owner.append(11, 40), 40);
    wait_until("entries 11..=40 reach the target", || {
        target_watermark(&t) == 40
    });
    assert_eq!(owner.append(41, 45), 45);
    wait_until("entries 41..=45 reach the target", || {
        target_watermark(&t) == 45
    });
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
    let before = snapshot(&share);
    for extra in [None, Some("--quarantine")] {
        let mut args = vec![
            OsStr::new("sync"),
            dir.as_os_str(),
            OsStr::new("--target"),
            t.as_os_str(),
        ];
        args.extend(extra.map(OsStr::new));
        let r = cli_support::sj(&args);
        r.code(2);
        r.error_line(&[
            "LSN 3 is of application kind 0x41",
            "replay it with the application's own Replayer",
        ]);
        assert_same_files(&before, &snapshot(&share), &r.cmdline);
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
    assert_eq!(target_watermark(&t2), 5);
    assert_eq!(count_rows(&t2, "syncjournal_rejected"), 0);

    // Gap records left by salvage are not another kind.
    let dir3 = build_journal(&tmp.path().join("j3"), 10);
    flip_bit_in_record(&dir3, 2);
    sj!("recover", dir3, "--mode", "salvage").code(0);
    let t3 = tmp.path().join("t3.db");
    create_target(&t3, TARGET_SCHEMA);
    sj!("sync", dir3, "--target", t3, "--quarantine").code(0);
    assert_eq!(target_watermark(&t3), 10);
}

#[test]
fn sync_follow_stops_at_an_application_kind_entry_with_the_entries_before_it_applied() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 10);
    let t = target_with_schema(tmp.path());
    let mut owner = JournalOwner::start(OWNER_CHILD, &dir);
    let mut follow = command(&[
        OsStr::new("sync"),
        dir.as_os_str(),
        OsStr::new("--target"),
        t.as_os_str(),
        OsStr::new("--follow"),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let out = drain(follow.stdout.take().unwrap());
    let err = drain(follow.stderr.take().unwrap());
    let guard = KillOnDrop(Some(follow));
    wait_until("the first 10 entries reach the target", || {
        target_watermark(&t) == 10
    });
    assert_eq!(owner.append(11, 20), 20);
    wait_until("entries 11..=20 reach the target", || {
        target_watermark(&t) == 20
    });
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
    assert_eq!(target_watermark(&t), 20);
    owner.finish();
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

// ---------------------------------------------------------------------------------------------
// check-target

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
    let j = Journal::open(&b, small_opts()).unwrap();
    append_changes(
        &j,
        &[
            item(1001),
            ChangeSet::new().insert("tags", [("id", 1)], [("label", "red")]),
            item(1003),
        ],
    );
    j.close().unwrap();
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
    let before = snapshot(&share);

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
    assert_same_files(&before, &snapshot(&share), "check-target");

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
    assert_same_files(&before, &snapshot(&share), "check-target --json");
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
    let before = snapshot(&share);

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
        &snapshot(&share),
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
    let before = snapshot(tmp.path());
    let r = sj!("check-target", t);
    r.code(2);
    r.error_line(&[
        t.to_str().unwrap(),
        "is not an SQLite database",
        "right file",
    ]);
    assert_same_files(
        &before,
        &snapshot(tmp.path()),
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
    let before = snapshot(&share);
    let r = sj!("check-target", t);
    r.code(2);
    r.error_line(&[
        "app.db-journal is a hot rollback journal",
        "cannot roll it back",
    ]);
    assert_same_files(&before, &snapshot(&share), "check-target of a crash image");
}
