//! Only one opener at a time: a second `Journal::open` (same process or another one) fails with
//! `JournalError::Locked` naming the holder's pid, and succeeds once the holder is gone.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use syncjournal::error::JournalError;

use crate::support::journal::read_all;
use crate::support::process::{child_test_command, test_path, with_timeout};
use syncjournal::{Error, Journal, JournalOptions};

const ENV_DIR: &str = "SYNCJOURNAL_LOCKED_DIR";
const ENV_MODE: &str = "SYNCJOURNAL_LOCKED_MODE";
/// Prefix of the child's report lines (the test harness may print on the same line first).
const MARK: &str = "@@";

fn opts() -> JournalOptions {
    JournalOptions::new().segment_bytes_max(64 << 10)
}

/// The child. Mode `probe`: try to open, report `LOCKED <pid> <message>` or `OPENED`, and
/// when opened append `from child` and close. Mode `hold`: open, report `HOLDING`, keep the
/// journal open until stdin closes.
#[test]
#[ignore = "child process of the tests below"]
fn locked_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mode = std::env::var(ENV_MODE).expect("mode");
    // "probe-wait": the holder has closed; allow the hand-over of a lock inherited by a
    // sibling test's child that has not exec'd yet.
    let wait = if mode == "probe-wait" { 5_000 } else { 0 };
    let mode = if mode == "probe-wait" {
        "probe".to_owned()
    } else {
        mode
    };
    match (
        mode.as_str(),
        Journal::open(&dir, opts().lock_wait_ms(wait)),
    ) {
        ("probe", Err(e @ Error::Journal(JournalError::Locked { .. }))) => {
            let Error::Journal(JournalError::Locked { holder_pid, .. }) = &e else {
                unreachable!()
            };
            let pid = holder_pid.map_or("none".to_owned(), |p| p.to_string());
            println!("{MARK}LOCKED {pid} {e}");
        }
        ("probe", Ok(j)) => {
            j.append(b"from child").expect("child append");
            j.close().expect("child close");
            println!("{MARK}OPENED");
        }
        ("hold", Ok(j)) => {
            println!("{MARK}HOLDING");
            std::io::stdout().flush().unwrap();
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            drop(j);
        }
        (mode, Err(e)) => println!("{MARK}ERROR {mode}: {e}"),
        (mode, Ok(_)) => println!("{MARK}ERROR unknown mode {mode}"),
    }
}

fn spawn_child(dir: &Path, mode: &str) -> Child {
    child_test_command(&test_path(module_path!(), "locked_child"), ENV_DIR, dir)
        .env(ENV_MODE, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// Reads the child's stdout until its first report line, which it returns (without the mark).
fn first_report(child: &mut Child) -> String {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut r = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line).expect("read child stdout");
        assert!(n > 0, "child ended without a report");
        if let Some(at) = line.find(MARK) {
            return line[at + MARK.len()..].trim_end().to_owned();
        }
    }
}

/// Runs a `probe` child to completion and returns its report.
fn probe(dir: &Path) -> String {
    probe_mode(dir, "probe")
}

fn probe_mode(dir: &Path, mode: &str) -> String {
    let mut child = spawn_child(dir, mode);
    let report = first_report(&mut child);
    let status = child.wait().expect("wait child");
    assert!(
        status.success(),
        "probe child failed: {status:?} ({report})"
    );
    report
}

#[test]
fn second_open_in_the_same_process_is_locked() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let first = Journal::open(&jdir, opts()).unwrap();
        assert_eq!(first.append(b"one").unwrap(), 1);

        let me = std::process::id();
        for _ in 0..2 {
            match Journal::open(&jdir, opts()) {
                Err(e @ Error::Journal(JournalError::Locked { .. })) => {
                    let text = e.to_string();
                    let Error::Journal(JournalError::Locked { dir, holder_pid }) = e else {
                        unreachable!()
                    };
                    assert_eq!(dir, jdir);
                    assert_eq!(holder_pid, Some(me), "holder pid");
                    assert!(text.contains(&format!("pid {me}")), "message: {text}");
                }
                other => panic!("second open: expected Locked, got {other:?}"),
            }
        }
        // The refused opener changed nothing for the holder.
        assert_eq!(first.append(b"two").unwrap(), 2);
        assert_eq!(first.state().poisoned, None);

        // A reader keeps the journal (and its lock) alive after the handle is dropped.
        let mut reader = first.reader(1).unwrap();
        drop(first);
        assert!(
            matches!(
                Journal::open(&jdir, opts()),
                Err(Error::Journal(JournalError::Locked { .. }))
            ),
            "the lock must be held while a reader of the journal exists"
        );
        assert_eq!(reader.next_record().unwrap().unwrap().payload, b"one");
        drop(reader);

        // (Other tests of this binary spawn children: one forked while our journal was open
        // holds its lock until it execs, so allow a short wait for the hand-over.)
        let again =
            Journal::open(&jdir, opts().lock_wait_ms(5_000)).expect("open after the holder closed");
        let records = read_all(&again);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].payload, b"two");
    });
}

#[test]
fn second_process_is_locked_out_with_our_pid() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let journal = Journal::open(&jdir, opts()).unwrap();
        journal.append(b"parent").unwrap();

        let me = std::process::id();
        let report = probe(&jdir);
        let expected = format!("LOCKED {me} ");
        assert!(
            report.starts_with(&expected),
            "child: expected `{expected}...`, got `{report}`"
        );
        assert!(
            report.contains(&format!("pid {me}")) && report.contains(&jdir.display().to_string()),
            "the Locked message should name the holder pid and the directory: {report}"
        );
        // Still ours.
        assert_eq!(journal.append(b"parent again").unwrap(), 2);
        journal.close().unwrap();

        assert_eq!(
            probe_mode(&jdir, "probe-wait"),
            "OPENED",
            "open after the holder closed"
        );
        let journal = Journal::open(&jdir, opts()).unwrap();
        let payloads: Vec<Vec<u8>> = read_all(&journal).into_iter().map(|r| r.payload).collect();
        assert_eq!(
            payloads,
            [
                b"parent".to_vec(),
                b"parent again".to_vec(),
                b"from child".to_vec()
            ]
        );
    });
}

#[test]
fn another_process_holding_the_journal_locks_us_out_until_it_exits_or_dies() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        Journal::open(&jdir, opts().lock_wait_ms(5_000))
            .unwrap()
            .close()
            .unwrap();

        // Holder exits normally.
        let mut child = spawn_child(&jdir, "hold");
        assert_eq!(first_report(&mut child), "HOLDING");
        match Journal::open(&jdir, opts()) {
            Err(Error::Journal(JournalError::Locked { holder_pid, .. })) => {
                assert_eq!(holder_pid, Some(child.id()), "holder pid")
            }
            other => panic!("expected Locked while the child holds the journal, got {other:?}"),
        }
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        Journal::open(&jdir, opts())
            .expect("open after the holder exited")
            .close()
            .unwrap();

        // Holder is killed: the kernel releases the lock; the stale pid in LOCK is harmless.
        let mut child = spawn_child(&jdir, "hold");
        assert_eq!(first_report(&mut child), "HOLDING");
        assert!(matches!(
            Journal::open(&jdir, opts()),
            Err(Error::Journal(JournalError::Locked { holder_pid: Some(p), .. })) if p == child.id()
        ));
        child.kill().unwrap();
        child.wait().unwrap();
        let journal = Journal::open(&jdir, opts().lock_wait_ms(5_000))
            .expect("open after the holder was killed");
        assert_eq!(journal.append(b"after").unwrap(), 1);
    });
}
