//! The commands while another process holds the journal open.

use crate::support::cli::{JournalOwner, journal_and_target};
use crate::support::journal::segment_paths;
use crate::support::targets::{count_rows, max_watermark};
use crate::{OWNER_CHILD, json};

#[test]
fn commands_while_another_process_holds_the_journal() {
    let (_tmp, dir, t) = journal_and_target(30);
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
    let before: Vec<Vec<u8>> = segment_paths(&dir)
        .iter()
        .map(|s| std::fs::read(s).unwrap())
        .collect();
    let r = sj!("recover", dir);
    r.code(2);
    r.error_line(&["locked", &format!("pid {pid}")]);
    let after: Vec<Vec<u8>> = segment_paths(&dir)
        .iter()
        .map(|s| std::fs::read(s).unwrap())
        .collect();
    assert!(before == after);

    // sync follows it read-only up to its durable head.
    let r = sj!("sync", dir, "--target", t);
    r.code(0).stdout_has(&["applied 40 entries"]);
    assert_eq!(count_rows(&t, "items"), 40);
    assert_eq!(max_watermark(&t), 40);
    sj!("status", dir, "--target", t).code(0).stdout_has(&[
        "target LSN    40",
        "pending       0 entries",
        "IN SYNC",
    ]);
    owner.finish();
}
