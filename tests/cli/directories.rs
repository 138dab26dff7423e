//! Every command on a missing, a foreign and an empty directory, and on a segment of
//! another journal.

use std::ffi::OsStr;
use std::path::Path;

use crate::support::cli::{Run, build_journal, target_with_schema};
use crate::support::journal::{assert_same_files, segment_paths, snapshot};
use crate::support::targets::count_rows;
use crate::tempdir;

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
        let r = crate::support::cli::sj(&a);
        check(&r.cmdline, &r);
    }
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
    let before = snapshot(&dir, true);
    let mut wrong = Vec::new();
    for_every_command(&dir, &t, |cmd, r| {
        r.code(2);
        let line = r.error_line(&[]);
        if !(line.contains("is not a syncjournal directory") && line.contains("notes.txt")) {
            wrong.push(format!("{cmd}: {line}"));
        }
        assert_same_files(&before, &snapshot(&dir, true), cmd);
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
    let seg = segment_paths(&a)[0].clone();
    // Journal a's ACK with journal b's segment.
    std::fs::copy(b.join(seg.file_name().unwrap()), &seg).unwrap();
    let before = snapshot(&a, true);
    let mut wrong = Vec::new();
    for_every_command(&a, &t, |cmd, r| {
        let mut after = snapshot(&a, true);
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
