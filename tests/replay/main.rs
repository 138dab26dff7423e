//! The store and the replayer: exactly once under faults, the fault matrix, followers, a
//! status that tells the truth, quarantine, what the replayer refuses about its target, a
//! target that is unavailable for a while, the seed application's field failures, the cache
//! and its guards, hostile inputs to the store, operator mistakes, and model checks of the
//! store and of the status against a reference. The suites that concern the target run once
//! per kind of `support::targets::TargetKind::all()`.

#[path = "../support/mod.rs"]
mod support;

mod cache;
mod conflicts;
mod exactly_once_faults;
mod fault_matrix;
mod follower;
mod hostile_store;
mod model_machines;
mod model_store;
mod operator_footguns;
mod pull;
mod retention;
mod seed_failures;
mod status_quarantine;
mod sync_truth;
mod target_guards;
mod target_unavailable;
mod truth_model;
mod writer_lease;
