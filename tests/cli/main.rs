//! The `syncjournal` command line, run as a real process (`CARGO_BIN_EXE_syncjournal`) against
//! journals and targets that each test builds in its own temporary directory: healthy, torn
//! tail, damage in the middle, foreign, empty, missing; held open by another process. Checks
//! stdout, the `syncjournal: <message>` line on stderr, and the documented exit codes
//! (0 ok, 1 damage, 2 error, 3 failing, 4 stalled; 5 and 6 are the target states of `status`).
//!
//! No assertion depends on timing: waits are polls with a hang guard
//! (`support::process::HANG_GUARD`).

use std::path::Path;

use serde_json::Value as Json;

use support::cli::{CHILD_DIR_VAR, child_main};

#[path = "../support/mod.rs"]
mod support;

/// Runs `syncjournal` with the given arguments (anything `AsRef<OsStr>`).
macro_rules! sj {
    ($($a:expr),* $(,)?) => {
        $crate::support::cli::sj::<&std::ffi::OsStr>(&[$(std::ffi::OsStr::new(&$a)),*])
    };
}

mod check_target;
mod demo;
mod directories;
mod dump;
mod held_open;
mod help;
mod recover;
mod reseed;
mod status;
mod sync;
mod verify;

/// The ignored test that the journal-owner child process runs (see `JournalOwner`).
const OWNER_CHILD: &str = "journal_owner_child";

#[test]
#[ignore = "child process of the CLI tests: runs only with SYNCJOURNAL_CLI_TEST_CHILD_DIR set"]
fn journal_owner_child() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_VAR) {
        child_main(Path::new(&dir));
    }
}

/// A temporary directory for one test.
fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// `s` parsed as JSON, or a panic showing it.
fn json(s: &str) -> Json {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}
