//! Torture: real child processes killed with SIGKILL at random moments (the journal's
//! appenders, a replayer, the whole store pipeline, a follower), and replay to a real network
//! share with real faults. Each child is this test binary re-executed to run one `#[ignore]`d
//! test of its module.

#[path = "../support/mod.rs"]
mod support;

mod follower_kill9;
mod kill9;
mod machines_kill9;
mod netshare;
mod netshare_lease;
mod pipeline_kill9;
mod pull_kill9;
mod replay_kill9;
