//! `syncjournal demo`: syncs the example and prints its files.

use std::path::Path;

use crate::support::cli::has_terminal_codes;
use crate::support::targets::count_rows;
use crate::tempdir;

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
    let r = crate::support::cli::sj_env(
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

#[test]
fn demo_on_three_machines_holds_back_settles_conflicts_and_ends_in_agreement() {
    let tmp = tempdir();
    let root = tmp.path().join("demo3");
    let r = sj!("demo", root, "--machines", "3");
    r.code(0).stdout_has(&[
        "3 machines",
        "holding back change",
        "quarantined 0",
        "conflicts resolved 2, pending 0",
        "update/delete on certificates id=2",
        "update/update on hosts id=1",
        "the local change was overridden",
        "IN AGREEMENT: every cache equals the target",
    ]);
    // Every machine's cache holds what the share holds.
    let share = count_rows(&root.join("share.db"), "hosts");
    for m in ["A", "B", "C"] {
        let cache = root.join(format!("machine-{m}")).join("cache.db");
        assert_eq!(count_rows(&cache, "hosts"), share, "machine {m}");
    }
    assert_eq!(share, 2);
    sj!("demo", tmp.path().join("bad"), "--machines", "9")
        .code(2)
        .stderr_has(&["--machines takes 2 to 8"]);
}
