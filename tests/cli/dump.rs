//! `syncjournal dump`: decoded entries within bounds, damage, a closing pipe, bounded memory.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::Value as Json;
use syncjournal::{ChangeSet, Journal, Value};

use crate::support::cli::{
    BASE_MS, JournalOwner, append_changes, append_items, build_journal, command, dumped_lsns,
    item_name, journal_and_target, payload, peak_rss_kib, small_opts, tear_last_frame, zero_record,
};
use crate::support::journal::{
    assert_same_files, first_lsn_of, frames, segment_paths, snapshot, write_at,
};
use crate::support::process::{drain, wait_guarded};
use crate::{OWNER_CHILD, json, tempdir};

#[test]
fn dump_prints_decoded_entries_within_bounds() {
    let tmp = tempdir();
    let dir = build_journal(&tmp.path().join("j"), 900);
    let segs = segment_paths(&dir);
    assert!(segs.len() >= 3, "the fixture spans several segments");
    let second = first_lsn_of(&segs[1]);
    let before = snapshot(&dir, true);

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
    assert_same_files(&before, &snapshot(&dir, true), "dump");
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
    let before = snapshot(&dir, true);
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
    assert_same_files(&before, &snapshot(&dir, true), "dump of a torn tail");
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
    let (_tmp, dir, t) = journal_and_target(30);
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
    let journal_bytes: u64 = frames(&segment_paths(&dir)[0])
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
