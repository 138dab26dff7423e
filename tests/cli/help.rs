//! `--help` (exit codes, an example per command, the README in step with it), usage errors
//! and the global flags.

use std::ffi::OsStr;

use crate::support::cli::build_journal;
use crate::tempdir;

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
        let r = crate::support::cli::sj(&args);
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
        crate::support::cli::sj(&args)
            .code(0)
            .stdout_has(&["OK: every record"]);
    }
    // Global flags go after the command too.
    sj!("verify", dir, "-v").code(0);
    sj!("dump", dir, "-qq").code(0).quiet_stderr();
}
