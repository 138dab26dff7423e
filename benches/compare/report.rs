//! The results of a run and the report: every series measured per rep, the table of cases
//! with their references (median of the per-rep paired ratios, `[min..max]`), targets and
//! verdicts, the backlog lines and the notes.

use std::collections::BTreeMap;

use crate::cases::backlog::Backlog;
use crate::cases::durable::{CEILING_8T, CEILING_8T_WAKE};
use crate::harness::{THREADS, Tally, fmt_num};

#[derive(Default)]
pub struct Results {
    pub series: BTreeMap<String, Vec<f64>>,
    pub backlog: BTreeMap<&'static str, Backlog>,
    pub notes: Vec<String>,
}

impl Results {
    pub fn push(&mut self, name: &str, v: f64) {
        self.series.entry(name.to_string()).or_default().push(v);
    }

    /// The rate of a measurement and the CPU cores it kept busy.
    pub fn push_tally(&mut self, name: &str, t: &Tally) {
        self.push(name, t.rate());
        self.push(&format!("{name}@cpu"), t.cores());
    }

    pub fn note(&mut self, s: String) {
        self.notes.push(s);
    }

    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.series
            .get(name)
            .map(|v| v.as_slice())
            .filter(|v| !v.is_empty())
    }

    pub fn last(&self, name: &str) -> String {
        self.get(name)
            .and_then(|v| v.last())
            .map_or_else(|| "-".into(), |&v| fmt_num(v))
    }

    /// Prints the line of rep `rep`: each of `names` with its last value.
    pub fn print_rep(&self, rep: usize, names: &[&str]) {
        let mut line = format!("  rep {rep}:");
        for nm in names {
            line.push_str(&format!(" {nm}={}", self.last(nm)));
        }
        println!("{line}");
    }

    /// Paired ratios num/den per rep (both measured in the same reps), else None.
    pub fn paired(&self, num: &str, den: &str) -> Option<Vec<f64>> {
        let (n, d) = (self.get(num)?, self.get(den)?);
        (n.len() == d.len()).then(|| n.iter().zip(d).map(|(a, b)| a / b).collect())
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub fn min_max(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// A claim: `case` against `reference` (ratio), or an absolute bound.
pub enum Target {
    /// Ratio case/reference (reference, target `>= x` or information only, why).
    Ratio(&'static str, Option<f64>, &'static str),
    /// Absolute value `>= x`.
    AtLeast(f64),
}

pub struct Row {
    pub case: &'static str,
    pub metric: &'static str,
    pub targets: Vec<Target>,
}

pub fn row(case: &'static str, metric: &'static str, targets: Vec<Target>) -> Row {
    Row {
        case,
        metric,
        targets,
    }
}

/// The field application's approach: the like-for-like reference of a change set through
/// the store (both write the cache row and make the change durable for sync).
const FIELD_APP_1T: &str = "field_app_full_1t";
const FIELD_APP_8T: &str = "field_app_full_8t";
const LIKE_FOR_LIKE: &str = "like-for-like";

fn report_rows() -> Vec<Row> {
    use Target::*;
    vec![
        row("raw_fdatasync_4KiB_append", "op/s", vec![]),
        row("raw_fdatasync_4KiB_overwrite", "op/s", vec![]),
        row("raw_mmap_msync_each_128B", "rec/s", vec![]),
        row("raw_mmap_msync_each_1KiB", "rec/s", vec![]),
        row(CEILING_8T, "rec/s", vec![]),
        row("raw_wakeup_rounds_8t", "rec/s", vec![]),
        row(CEILING_8T_WAKE, "rec/s", vec![]),
        row("raw_mmap_msync_1000_128B", "rec/s", vec![]),
        row("raw_mmap_msync_1000_1KiB", "rec/s", vec![]),
        row("raw_mmap_crc_128B_cold", "rec/s", vec![]),
        row("raw_mmap_crc_128B_warm", "rec/s", vec![]),
        row("raw_mmap_crc_1KiB_cold", "rec/s", vec![]),
        row("raw_mmap_crc_1KiB_warm", "rec/s", vec![]),
        row("outbox_full_1t", "rows/s", vec![]),
        row("outbox_normal_1t", "rows/s", vec![]),
        row(
            "outbox_full_8t",
            "rows/s",
            vec![Ratio("outbox_full_1t", None, "")],
        ),
        row(
            "field_app_full_1t",
            "chg/s",
            vec![Ratio("outbox_full_1t", None, "")],
        ),
        row(
            "field_app_full_8t",
            "chg/s",
            vec![
                Ratio("field_app_full_1t", None, ""),
                Ratio("outbox_full_8t", None, ""),
            ],
        ),
        row("okaywal_1t_128B", "rec/s", vec![]),
        row(
            "okaywal_8t_128B",
            "rec/s",
            vec![
                Ratio("okaywal_1t_128B", None, ""),
                Ratio(CEILING_8T, None, ""),
                Ratio(CEILING_8T_WAKE, None, ""),
            ],
        ),
        row(
            "sj_append_sync_1t_128B",
            "rec/s",
            vec![
                Ratio("raw_mmap_msync_each_128B", Some(0.9), ""),
                Ratio("okaywal_1t_128B", None, ""),
                Ratio("outbox_full_1t", None, ""),
            ],
        ),
        row(
            "sj_append_sync_8t_128B",
            "rec/s",
            vec![
                Ratio("outbox_full_1t", Some(10.0), ""),
                Ratio("okaywal_8t_128B", Some(3.0), ""),
                Ratio("sj_append_sync_1t_128B", Some(5.0), "group commit"),
                Ratio(CEILING_8T, None, ""),
                Ratio(CEILING_8T_WAKE, None, ""),
            ],
        ),
        row(
            "sj_append_batch_1000x128B",
            "rec/s",
            vec![Ratio("raw_mmap_msync_1000_128B", Some(0.5), "")],
        ),
        row(
            "sj_append_buffered_1t_128B",
            "rec/s",
            vec![
                Ratio(
                    "raw_mmap_crc_128B_cold",
                    Some(0.3),
                    "like-for-like: fresh pages",
                ),
                Ratio("raw_mmap_crc_128B_warm", Some(0.3), "pages already mapped"),
            ],
        ),
        row(
            "sj_append_buffered_8t_128B",
            "rec/s",
            vec![Ratio("raw_mmap_crc_128B_cold", None, "")],
        ),
        row("sj_append_batched_1t_128B", "rec/s", vec![]),
        row("sj_append_batched_8t_128B", "rec/s", vec![]),
        row(
            "sj_store_1t",
            "chg/s",
            vec![
                Ratio("outbox_full_1t", Some(1.0), ""),
                Ratio(FIELD_APP_1T, None, LIKE_FOR_LIKE),
            ],
        ),
        row(
            "sj_store_8t",
            "chg/s",
            vec![
                Ratio("outbox_full_1t", Some(5.0), ""),
                Ratio("outbox_full_8t", None, ""),
                Ratio("sj_append_sync_8t_128B", None, ""),
                Ratio(FIELD_APP_8T, None, LIKE_FOR_LIKE),
            ],
        ),
        row(
            "sj_replay_batch1000",
            "entries/s",
            vec![
                Ratio("raw_sqlite_upsert_batch1000_wm", Some(0.8), ""),
                Ratio("naive_replay_1_per_txn", Some(40.0), ""),
            ],
        ),
        row(
            "sj_replay_batch1000_nolog",
            "entries/s",
            vec![Ratio(
                "raw_sqlite_upsert_batch1000_wm",
                Some(0.8),
                "one machine: change log off",
            )],
        ),
        row("raw_sqlite_upsert_batch1000_wm", "entries/s", vec![]),
        row(
            "sj_replay_log_on",
            "entries/s",
            vec![Ratio(
                "sj_replay_log_off",
                None,
                "what the change log costs at replay",
            )],
        ),
        row("sj_replay_log_off", "entries/s", vec![]),
        row(
            "sj_pull_page1000",
            "changes/s",
            vec![Ratio("raw_pull_upsert_page1000", Some(0.8), "")],
        ),
        row("raw_pull_upsert_page1000", "changes/s", vec![]),
        row(
            "sj_replay_detect_on",
            "entries/s",
            vec![Ratio(
                "sj_replay_detect_off",
                Some(0.7),
                "conflict detection, no conflicts",
            )],
        ),
        row("sj_replay_detect_off", "entries/s", vec![]),
        row(
            "pg_sj_replay_detect_on",
            "entries/s",
            vec![Ratio(
                "pg_sj_replay_detect_off",
                Some(0.7),
                "conflict detection, no conflicts",
            )],
        ),
        row("pg_sj_replay_detect_off", "entries/s", vec![]),
        row("naive_replay_1_per_txn", "entries/s", vec![]),
        row(
            "pg_sj_replay_batch1000",
            "entries/s",
            vec![
                Ratio("pg_raw_upsert_multirow1000_wm", Some(0.8), ""),
                Ratio("pg_naive_replay_1_per_txn", Some(50.0), ""),
                Ratio("sj_replay_batch1000", None, "SQLite target"),
            ],
        ),
        row(
            "pg_raw_upsert_multirow1000_wm",
            "entries/s",
            vec![Ratio(
                "pg_naive_replay_1_per_txn",
                None,
                "what batching itself gains",
            )],
        ),
        row("pg_naive_replay_1_per_txn", "entries/s", vec![]),
        row(
            "pg_sj_replay_batch1000_fsync",
            "entries/s",
            vec![
                Ratio("pg_raw_upsert_multirow1000_wm_fsync", Some(0.8), ""),
                Ratio("pg_naive_replay_1_per_txn_fsync", Some(50.0), ""),
            ],
        ),
        row(
            "pg_raw_upsert_multirow1000_wm_fsync",
            "entries/s",
            vec![Ratio(
                "pg_naive_replay_1_per_txn_fsync",
                None,
                "what batching itself gains",
            )],
        ),
        row("pg_naive_replay_1_per_txn_fsync", "entries/s", vec![]),
        row("sj_verify_inspect", "GB/s", vec![AtLeast(2.0)]),
        row("sj_recovery_open", "GB/s", vec![AtLeast(2.0)]),
        row("sj_recovery_open_report", "GB/s", vec![]),
    ]
}

pub fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// One line of the table: case, metric, value, spread, cpu, reference, ratio, ratio spread,
/// target, verdict.
pub fn print_line(cols: [&str; 10]) {
    let [c, m, v, s, cpu, r, q, qs, t, verd] = cols;
    println!("{c:<30} {m:<9} {v:>9} {s:<21} {cpu:>4}  {r:<34} {q:>6} {qs:<15} {t:<6} {verd}");
}

pub fn spread(v: &[f64]) -> String {
    let (a, b) = min_max(v);
    format!("[{}..{}]", fmt_num(a), fmt_num(b))
}

pub fn print_report(res: &Results) {
    println!();
    println!(
        "== results: value = median over reps [min..max]; cpu = cores busy (process); \
         ratio = median of the per-rep (paired) ratios [min..max] =="
    );
    print_line([
        "case",
        "metric",
        "value",
        "[min..max]",
        "cpu",
        "reference",
        "ratio",
        "[min..max]",
        "target",
        "verdict",
    ]);
    let mut fails = Vec::new();
    for r in report_rows() {
        let Some(v) = res.get(r.case) else { continue };
        let (value, sp) = (fmt_num(median(v)), spread(v));
        let cpu = res
            .get(&format!("{}@cpu", r.case))
            .map_or_else(|| "-".to_string(), |c| format!("{:.2}", median(c)));
        let mut first = true;
        let mut emit = |reference: &str, ratio: &str, rs: &str, target: &str, verd: &str| {
            let (c, m, val, s, u) = if first {
                (r.case, r.metric, value.as_str(), sp.as_str(), cpu.as_str())
            } else {
                ("  \"", "", "", "", "")
            };
            print_line([c, m, val, s, u, reference, ratio, rs, target, verd]);
            first = false;
        };
        if r.targets.is_empty() {
            emit("-", "-", "", "-", "-");
        }
        for t in &r.targets {
            match t {
                Target::Ratio(den, x, why) => {
                    let den: &str = den;
                    let target = x.map_or_else(|| "info".to_string(), |x| format!(">={x}"));
                    let refname = if why.is_empty() {
                        den.to_string()
                    } else {
                        format!("{den} ({why})")
                    };
                    match res.paired(r.case, den) {
                        Some(p) => {
                            let q = median(&p);
                            let verd = match x {
                                Some(x) => {
                                    if q < *x {
                                        fails.push(format!("{} vs {den}", r.case));
                                    }
                                    verdict(q >= *x)
                                }
                                None => "-",
                            };
                            emit(&refname, &format!("{q:.2}"), &spread(&p), &target, verd);
                        }
                        None => emit(&refname, "n/a", "(not measured)", &target, "-"),
                    }
                }
                Target::AtLeast(x) => {
                    let q = median(v);
                    let (ok, target) = (q >= *x, format!(">={x}"));
                    if !ok {
                        fails.push(r.case.to_string());
                    }
                    emit("(absolute)", "-", "", &target, verdict(ok));
                }
            }
        }
    }
    // Backlog: one child run per size, no reps.
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    for (prefix, small_tag, big_tag) in [
        ("sj_backlog", "small", "big"),
        ("pg_sj_backlog", "pg_small", "pg_big"),
    ] {
        for (tag, b) in [small_tag, big_tag]
            .into_iter()
            .filter_map(|t| res.backlog.get(t).map(|b| (t, b)))
        {
            let n = short(b.entries);
            let rate = b.applied as f64 / b.replay_secs;
            print_line([
                &format!("{prefix}_replay_{n}"),
                "entries/s",
                &fmt_num(rate),
                "(1 run, child)",
                "-",
                "-",
                "-",
                "",
                "-",
                "-",
            ]);
            let peak = b.peak_mib();
            let ok = peak <= 64.0;
            if !ok && tag == big_tag {
                fails.push(format!("{prefix}_peak_rss_{n}"));
            }
            print_line([
                &format!("{prefix}_peak_rss_{n}"),
                "MiB",
                &format!("{peak:.1}"),
                "(VmHWM, whole child)",
                "-",
                "(absolute)",
                "-",
                "",
                "<=64",
                verdict(ok),
            ]);
            print_line([
                "  \" open phase",
                "MiB",
                &mib(b.open_hwm_kib),
                "(Journal::open)",
                "-",
                "-",
                "-",
                "",
                "info",
                "-",
            ]);
            print_line([
                "  \" replay phase",
                "MiB",
                &mib(b.replay_hwm_kib),
                if b.reset {
                    "(VmHWM reset after open)"
                } else {
                    "(reset refused: incl. open)"
                },
                "-",
                "-",
                "-",
                "",
                "info",
                "-",
            ]);
        }
        if let (Some(big), Some(small)) = (res.backlog.get(big_tag), res.backlog.get(small_tag)) {
            let (nb, ns) = (short(big.entries), short(small.entries));
            for (what, b, s) in [
                ("peak", big.peak_mib(), small.peak_mib()),
                (
                    "replay",
                    big.replay_hwm_kib as f64,
                    small.replay_hwm_kib as f64,
                ),
            ] {
                print_line([
                    &format!("{prefix}_rss_{nb}/{ns}"),
                    &format!("x {what}"),
                    &format!("{:.2}", b / s),
                    "(flat = 1.0)",
                    "-",
                    "-",
                    "-",
                    "",
                    "info",
                    "-",
                ]);
            }
        }
    }
    println!();
    for n in &res.notes {
        println!("note: {n}");
    }
    println!(
        "note: buffered vs raw: the journal always writes fresh (just fallocated) pages, so the \
         like-for-like reference is raw_mmap_crc_128B_cold; _warm rewrites already-mapped pages."
    );
    println!(
        "note: {FIELD_APP_1T} / {FIELD_APP_8T} = the field application's approach: the cache row \
         upsert and its sync_tracking row in one transaction (BEGIN IMMEDIATE, WAL, \
         synchronous=FULL), the same certificate rows as sj_store_*; the store replaces both, \
         so sj_store_* vs {FIELD_APP_1T} / {FIELD_APP_8T} is the like-for-like ratio."
    );
    println!(
        "note: raw durable regions are 64 MiB like journal segments; region rotation \
         (fallocate+fsync+mmap) is timed, as segment rotation is for the journal."
    );
    println!(
        "note: {CEILING_8T} = {THREADS} x raw_mmap_msync_each_128B per rep: {THREADS} closed-loop \
         threads have at most {THREADS} records per flush, so no group commit exceeds it."
    );
    println!(
        "note: {CEILING_8T_WAKE} = {THREADS} / (1 / raw_mmap_msync_each_128B + {THREADS} / \
         raw_wakeup_rounds_8t) per rep: each group also pays one round of waking its {THREADS} \
         threads (a mutex + condvar barrier with nothing else to do) on this machine's cores."
    );
    if fails.is_empty() {
        println!("all targets measured: PASS");
    } else {
        println!("FAIL: {}", fails.join("; "));
    }
}

pub fn short(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}
