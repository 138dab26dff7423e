//! The command line: running the `syncjournal` binary as a real process (with a hang guard),
//! fixture journals and targets built with the library, damage at known frames and pages, and
//! a child process that holds a journal open (the test binary re-executed).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use syncjournal::event::{KIND_CHANGESET, encode_event};
use syncjournal::{ChangeSet, Journal, JournalOptions, Lsn, Value};

use super::journal::{FrameLoc, SEG_BYTES, frames, rewind_head, segment_paths, write_at};
use super::process::{HANG_GUARD, child_test_command, drain, wait_guarded};
use super::targets::{create_target, open_target};

/// `created_at_ms` of the entries the fixtures write: 2023-11-14T22:13:20.123Z.
pub const BASE_MS: u64 = 1_700_000_000_123;

/// The target schema of the fixtures.
pub const TARGET_SCHEMA: &str = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);";

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_syncjournal")
}

/// A finished `syncjournal` run.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code (`-1` if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Panics (showing both streams) unless the exit code is `code`.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "`{}` exited with {} instead of {code}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.cmdline, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless stdout contains every one of `needles`.
    #[track_caller]
    pub fn stdout_has(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(
                self.stdout.contains(n),
                "`{}`: stdout lacks {n:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                self.cmdline,
                self.stdout,
                self.stderr
            );
        }
        self
    }

    /// Panics unless stderr contains every one of `needles`.
    #[track_caller]
    pub fn stderr_has(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "`{}`: stderr lacks {n:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                self.cmdline,
                self.stdout,
                self.stderr
            );
        }
        self
    }

    /// The `syncjournal: <message>` line of stderr (the error report of `main`); panics if
    /// there is none. Every needle must be in that one line.
    #[track_caller]
    pub fn error_line(&self, needles: &[&str]) -> String {
        let line = self
            .stderr
            .lines()
            .find(|l| l.starts_with("syncjournal: "))
            .unwrap_or_else(|| {
                panic!(
                    "`{}`: no `syncjournal: <message>` line on stderr\n--- stdout:\n{}\n--- stderr:\n{}",
                    self.cmdline, self.stdout, self.stderr
                )
            })
            .to_string();
        for n in needles {
            assert!(
                line.contains(n),
                "`{}`: the error line lacks {n:?}: {line}",
                self.cmdline
            );
        }
        line
    }

    /// Panics if stderr is not empty.
    #[track_caller]
    pub fn quiet_stderr(&self) -> &Self {
        assert!(
            self.stderr.is_empty(),
            "`{}`: unexpected stderr:\n{}",
            self.cmdline,
            self.stderr
        );
        self
    }
}

fn cmdline<S: AsRef<OsStr>>(args: &[S]) -> String {
    let mut s = String::from("syncjournal");
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// A `Command` for the binary with `args`; logs are not steered by the caller's `RUST_LOG`.
pub fn command<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    c
}

/// Runs `syncjournal args…` to completion (stdin closed, stdout and stderr captured, both
/// pipes: not terminals). Killed and failed after [`HANG_GUARD`].
pub fn sj<S: AsRef<OsStr>>(args: &[S]) -> Run {
    sj_env(args, &[])
}

/// [`sj`] with extra environment variables.
pub fn sj_env<S: AsRef<OsStr>>(args: &[S], envs: &[(&str, &OsStr)]) -> Run {
    let mut cmd = command(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn syncjournal");
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = wait_guarded(&mut child, &cmdline(args));
    Run {
        cmdline: cmdline(args),
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// True if `s` holds a terminal escape sequence or a carriage return (a progress bar, colours).
pub fn has_terminal_codes(s: &str) -> bool {
    s.contains('\x1b') || s.contains('\r')
}

// ---------------------------------------------------------------------------------------------
// Fixtures built with the library.

/// The `name` of fixture item `i` (long enough that 900 entries span several small segments).
pub fn item_name(i: i64) -> String {
    format!("item-{i}-{}", "x".repeat(150))
}

/// The change set of fixture entry `i`: an insert into `items`.
pub fn item(i: i64) -> ChangeSet {
    ChangeSet::new().insert("items", [("id", i)], [("name", Value::from(item_name(i)))])
}

/// The payload of a change set as the store journals it, created at `BASE_MS + lsn`.
pub fn payload(created_at_ms: u64, cs: &ChangeSet) -> Vec<u8> {
    encode_event(created_at_ms, cs).expect("encode change set")
}

/// Options of the fixture journals: small segments, the journal directory must exist or be
/// creatable.
pub fn small_opts() -> JournalOptions {
    JournalOptions::new().segment_bytes_max(SEG_BYTES)
}

/// Creates a journal in `dir` holding entries `1..=n`, each `item(i)` created at
/// `BASE_MS + i`, none acknowledged (all pending). Small segments.
pub fn build_journal(dir: &Path, n: i64) -> PathBuf {
    let j = Journal::open(dir, small_opts()).expect("open fixture journal");
    append_items(&j, 1, n);
    j.close().expect("close fixture journal");
    dir.to_path_buf()
}

/// Creates a journal in `dir` (small segments) holding `changes`, none acknowledged; returns
/// their LSNs.
pub fn build_journal_of(dir: &Path, changes: &[ChangeSet]) -> Vec<Lsn> {
    let j = Journal::open(dir, small_opts()).expect("open fixture journal");
    let lsns = append_changes(&j, changes);
    j.close().expect("close fixture journal");
    lsns
}

/// A temporary directory, the path of a journal `j` not created yet, and a target
/// `target.db` with the fixtures' schema: (directory, journal path, target).
pub fn no_journal_and_target() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("j");
    let t = target_with_schema(tmp.path());
    (tmp, dir, t)
}

/// A temporary directory holding a journal `j` of entries `1..=n` ([`build_journal`]) and a
/// target `target.db` with the fixtures' schema: (directory, journal, target).
pub fn journal_and_target(n: i64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (tmp, dir, t) = no_journal_and_target();
    build_journal(&dir, n);
    (tmp, dir, t)
}

/// Appends `item(i)` for `i` in `from..=to`; their LSNs must be `i` (a fresh journal).
pub fn append_items(j: &Journal, from: i64, to: i64) -> Lsn {
    let mut last = 0;
    for i in from..=to {
        last = j
            .append_kind(KIND_CHANGESET, &payload(BASE_MS + i as u64, &item(i)))
            .expect("append");
        assert_eq!(last, i as Lsn, "fixture LSNs follow the item ids");
    }
    last
}

/// Kind of the application events of the fixtures (an application's own `JournalEvent`).
pub const APP_KIND: u8 = 0x41;

/// The payload of an application event record: `len` bytes, `0x00, 0x01, …` (mod 256).
pub fn application_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

/// Appends arbitrary change sets, returning their LSNs.
pub fn append_changes(j: &Journal, changes: &[ChangeSet]) -> Vec<Lsn> {
    changes
        .iter()
        .map(|cs| {
            j.append_kind(KIND_CHANGESET, &payload(BASE_MS, cs))
                .expect("append")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Segment files and damage.

/// A torn last write: the second half of the last frame of the last segment replaced by
/// garbage, as if only its first pages reached the disk, and `HEAD` as the crash left it
/// (the record's sync never completed, so it was never published as durable). Returns the
/// segment, the frame, and the garbled bytes as they are now on disk (from the frame's start
/// to its end).
pub fn tear_last_frame(dir: &Path) -> (PathBuf, FrameLoc, Vec<u8>) {
    let seg = segment_paths(dir).pop().expect("a segment");
    let last = *frames(&seg).last().expect("a frame");
    let half = last.len / 2;
    let garbage: Vec<u8> = (0..last.len - half).map(|i| 0xA5 ^ (i as u8)).collect();
    write_at(&seg, last.offset + half, &garbage);
    rewind_head(dir, last.lsn - 1);
    let now = std::fs::read(&seg).unwrap()[last.offset..last.offset + last.len].to_vec();
    (seg, last, now)
}

/// Media damage in durable data: one bit flipped in the payload of the record `lsn` of the
/// first segment. Returns the segment and the frame.
pub fn flip_bit_in_record(dir: &Path, lsn: Lsn) -> (PathBuf, FrameLoc) {
    let seg = segment_paths(dir).into_iter().next().expect("a segment");
    let f = *frames(&seg)
        .iter()
        .find(|f| f.lsn == lsn)
        .expect("the record's frame");
    let at = f.offset + 40;
    let b = std::fs::read(&seg).unwrap();
    write_at(&seg, at, &[b[at] ^ 0x10]);
    (seg, f)
}

/// Peak resident memory (`VmHWM`, KiB) of a running process, from `/proc/<pid>/status`.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// A process that holds a journal open: the test binary, re-executed to run only an ignored
// test that opens the journal with the library and obeys commands on its stdin.

/// Environment variable naming the journal directory the child opens.
pub const CHILD_DIR_VAR: &str = "SYNCJOURNAL_CLI_TEST_CHILD_DIR";

/// The child's side: opens the journal in `dir`, prints `READY <pid>`, then for each line
/// `append FROM TO` on stdin appends `item(FROM..=TO)` (`kind KIND LEN`: one record of that
/// kind, [`application_payload`]) and prints `APPENDED <last lsn>`; closes the journal at end
/// of input and prints `CLOSED`.
pub fn child_main(dir: &Path) {
    let j = Journal::open(dir, JournalOptions::new().create_if_missing(false))
        .expect("child: open journal");
    // A line of its own: the test harness has printed "test … … " without a newline.
    println!("\nREADY {}", std::process::id());
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("child: stdin");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["append", from, to] => {
                let (from, to): (i64, i64) = (from.parse().unwrap(), to.parse().unwrap());
                let lsn = append_items(&j, from, to);
                println!("\nAPPENDED {lsn}");
            }
            ["kind", kind, len] => {
                let (kind, len): (u8, usize) = (kind.parse().unwrap(), len.parse().unwrap());
                let lsn = j
                    .append_kind(kind, &application_payload(len))
                    .expect("child: append_kind");
                println!("\nAPPENDED {lsn}");
            }
            _ => panic!("child: unknown command {line:?}"),
        }
    }
    j.close().expect("child: close");
    println!("\nCLOSED");
}

/// The parent's handle on a child that holds a journal open. Dropping it ends the child.
pub struct JournalOwner {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// The child's pid.
    pub pid: u32,
}

impl JournalOwner {
    /// Starts the child (running the ignored test `test_name` of this test binary) on `dir`
    /// and waits until it has the journal open.
    pub fn start(test_name: &str, dir: &Path) -> JournalOwner {
        let mut child = child_test_command(test_name, CHILD_DIR_VAR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the journal owner");
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut owner = JournalOwner {
            child,
            stdin,
            lines: rx,
            pid: 0,
        };
        let ready = owner.expect_line("READY");
        owner.pid = ready.trim_start_matches("READY ").trim().parse().unwrap();
        assert_eq!(owner.pid, owner.child.id(), "the child reports its own pid");
        owner
    }

    /// Waits for a line of the child holding `prefix` and returns it from `prefix` on (other
    /// lines — the test harness's — are skipped); panics after [`HANG_GUARD`] or if the child
    /// ends.
    pub fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(prefix) => return l[l.find(prefix).unwrap()..].to_string(),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("hang guard: the journal owner did not print {prefix:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the journal owner ended before printing {prefix:?}")
                }
            }
        }
    }

    /// Has the child append `item(from..=to)`; returns the last LSN once they are durable.
    pub fn append(&mut self, from: i64, to: i64) -> Lsn {
        let stdin = self.stdin.as_mut().expect("child stdin");
        writeln!(stdin, "append {from} {to}").expect("write to the child");
        stdin.flush().unwrap();
        let l = self.expect_line("APPENDED");
        l.trim_start_matches("APPENDED ").trim().parse().unwrap()
    }

    /// Has the child append one record of `kind` ([`application_payload`] of `len` bytes);
    /// returns its LSN once it is durable.
    pub fn append_kind(&mut self, kind: u8, len: usize) -> Lsn {
        let stdin = self.stdin.as_mut().expect("child stdin");
        writeln!(stdin, "kind {kind} {len}").expect("write to the child");
        stdin.flush().unwrap();
        let l = self.expect_line("APPENDED");
        l.trim_start_matches("APPENDED ").trim().parse().unwrap()
    }

    /// Closes the journal in the child and waits for it to exit successfully.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        self.expect_line("CLOSED");
        let st = wait_guarded(&mut self.child, "journal owner");
        assert!(st.success(), "the journal owner failed: {st}");
    }
}

impl Drop for JournalOwner {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.child.try_wait().ok().flatten().is_none() {
            // Give it a moment to close cleanly on end of input, then end it.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Target files: damage, WAL.

/// A target database at `path` whose table `items` holds `rows` rows (ids from 1 000 000 on,
/// clear of the fixture entries') and an index on its names (`items_name`), for damage tests:
/// many rows make the index several pages deep.
pub fn create_indexed_target(path: &Path, rows: i64) {
    create_target(path, TARGET_SCHEMA);
    let c = open_target(path);
    c.execute_batch("CREATE INDEX items_name ON items(name);")
        .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 1..=rows {
        tx.execute(
            "INSERT INTO items (id, name) VALUES (?1, ?2)",
            (1_000_000 + i, format!("target-row-{i}-{}", "z".repeat(40))),
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// A target `tmp/target.db` with the fixtures' schema.
pub fn target_with_schema(tmp: &Path) -> PathBuf {
    let t = tmp.join("target.db");
    create_target(&t, TARGET_SCHEMA);
    t
}

/// Overwrites 64 bytes in the middle of the cells of a leaf page of index `index` (found by
/// descending its b-tree from the root page along the right-most child pointers): they no
/// longer parse, so `PRAGMA integrity_check` fails. Returns the page number.
pub fn damage_index_page(path: &Path, index: &str) -> u32 {
    let (root, page_size): (u32, usize) = {
        let c = open_target(path);
        let root = c
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE type = 'index' AND name = ?1",
                [index],
                |r| r.get(0),
            )
            .expect("the index exists");
        let ps: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        (root, ps as usize)
    };
    let b = std::fs::read(path).unwrap();
    let mut page = root;
    loop {
        let at = (page as usize - 1) * page_size;
        match b[at] {
            0x0a => break, // index leaf
            0x02 => {
                // Interior index page: the right-most child pointer is at offset 8.
                page = u32::from_be_bytes(b[at + 8..at + 12].try_into().unwrap());
            }
            t => panic!("page {page} of index {index} has type {t:#04x}"),
        }
    }
    assert_ne!(page, root, "the index is more than one page deep");
    // The middle of the page's cells: from the start of its cell content area (header offset
    // 5) to the end of the page.
    let at = (page as usize - 1) * page_size;
    let content = u16::from_be_bytes([b[at + 5], b[at + 6]]) as usize;
    write_at(
        path,
        at + content + (page_size - content) / 2 - 32,
        &[0x5a; 64],
    );
    page
}

/// The files in `dir` (names only), sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Media damage in durable data: the whole frame of record `lsn` (in the first segment)
/// overwritten with zeros, the records after it intact. Returns the segment and the frame.
pub fn zero_record(dir: &Path, lsn: Lsn) -> (PathBuf, FrameLoc) {
    let seg = segment_paths(dir).into_iter().next().expect("a segment");
    let f = *frames(&seg)
        .iter()
        .find(|f| f.lsn == lsn)
        .expect("the record's frame");
    write_at(&seg, f.offset, &vec![0u8; f.len]);
    (seg, f)
}

/// The LSNs of the entries `dump` printed (its `LSN <n>  …` lines).
pub fn dumped_lsns(stdout: &str) -> Vec<Lsn> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("LSN "))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

/// The first control character of `s` other than the newlines that end its lines (a
/// newline forged inside a line is caught by the caller's line checks), if any.
pub fn control_char(s: &str) -> Option<char> {
    s.chars().find(|&c| c.is_control() && c != '\n')
}

/// A table name that forges a `dump` line and sets the terminal's title, and a text value with
/// a carriage return: what a crafted journal can carry (issue 10, finding 11).
pub const EVIL_TABLE: &str = "evil\nLSN 99  forged\u{1b}]0;pwned\u{7}";
/// See [`EVIL_TABLE`].
pub const EVIL_TEXT: &str = "over\rwrite";
