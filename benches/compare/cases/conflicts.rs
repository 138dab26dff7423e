//! The `conflicts` group: what conflict detection costs at replay when there are no conflicts.
//! The `replay` group's certificate upserts, each stamped as a store stamps it (base 0, its
//! HLC), replayed by the `Replayer` into fresh targets with detection on
//! (`sj_replay_detect_on`) and off (`sj_replay_detect_off`): the same entries, the change log on
//! in both. The same pair on PostgreSQL (`pg_sj_replay_detect_on|off`) where its server
//! binaries are installed.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use syncjournal::event::{Stamp, encode_event_within};
use syncjournal::target::HLC_LOGICAL_BITS;
use syncjournal::{
    ChangeSet, ConflictPolicies, Journal, ReplayOptions, Replayer, TargetOptions, TargetSpec,
};

use crate::cases::replay::rep_journal;
use crate::harness::{Clock, Config, REPLAY_BATCH, Tally, settle};
use crate::pg_workload::{drop_pg_target, make_pg_target, start_server};
use crate::report::Results;
use crate::workload::{cert_changeset, make_target};

pub const CONFLICT_CASES: &[&str] = &[
    "sj_replay_detect_on",
    "sj_replay_detect_off",
    "pg_sj_replay_detect_on",
    "pg_sj_replay_detect_off",
];

/// Entry `i` as a store journals it: the change set, and a stamp.
fn stamped_payload(i: u64) -> Vec<u8> {
    let at = 1_700_000_000_000 + i;
    let stamp = Stamp {
        base_seq: 0,
        hlc: (at << HLC_LOGICAL_BITS) + i,
    };
    encode_event_within(at, &cert_changeset(i), Some(stamp), usize::MAX).expect("encode")
}

fn replay(j: &Arc<Journal>, target: TargetSpec, n: u64, detect: bool) -> Tally {
    let mut r: Replayer<ChangeSet> = Replayer::new(
        Arc::clone(j),
        target,
        TargetOptions::new(),
        ReplayOptions::new()
            .batch_entries_max(REPLAY_BATCH)
            .conflicts(ConflictPolicies::new().detect(detect)),
    );
    assert_eq!(r.target_watermark().expect("connect target"), 0);
    let start = Clock::start();
    let report = r.sync_now();
    let t = start.tally(report.applied);
    assert!(report.error.is_none(), "replay failed: {:?}", report.error);
    assert_eq!(report.applied, n);
    assert_eq!(
        r.state().conflicts.resolved,
        0,
        "one journal meets no conflicts"
    );
    t
}

pub fn group_conflicts(cfg: &Config, dir: &Path, res: &mut Results) {
    let names: Vec<&str> = cfg.wanted("conflicts", CONFLICT_CASES);
    if names.is_empty() {
        return;
    }
    let n = cfg.replay_entries;
    let t = Instant::now();
    let payloads: Vec<Vec<u8>> = (0..n).map(stamped_payload).collect();
    println!(
        "[conflicts] {n} stamped entries per rep, {} reps; payloads encoded in {:.1?}",
        cfg.reps,
        t.elapsed()
    );
    let pg = names.iter().any(|n| n.starts_with("pg_"));
    let cluster = if pg {
        start_server("conflicts", false, res)
    } else {
        None
    };
    for rep in 0..cfg.reps {
        let (rep_dir, j) = rep_journal(dir, &format!("conflicts-{rep}"), &payloads);
        let k = names.len();
        for o in 0..k {
            // Rotate which case goes first.
            let name = names[(rep + o) % k];
            let detect = name.ends_with("_on");
            let t = if let Some(pg_name) = name.strip_prefix("pg_") {
                let Some(cluster) = &cluster else { continue };
                let db = format!("c{rep}_{pg_name}");
                let url = make_pg_target(cluster, &db);
                let t = replay(&j, TargetSpec::parse(&url), n, detect);
                drop_pg_target(cluster, &db);
                t
            } else {
                let target = rep_dir.join(format!("{name}.db"));
                make_target(&target);
                rustix::fs::sync();
                replay(&j, TargetSpec::Sqlite(target), n, detect)
            };
            res.push_tally(name, &t);
        }
        drop(j);
        settle(&rep_dir);
        res.print_rep(rep, &names);
    }
}
