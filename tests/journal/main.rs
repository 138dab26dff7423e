//! The journal's tests: the format pinned against `journal-format.md` and the v1 fixture,
//! damage (torn tails, bit flips, headers, recovery modes, salvage, power loss), and the live
//! journal (readers that follow, concurrent appends, a full disk, poisoning, the lock,
//! retention, API limits).

#[path = "../support/mod.rs"]
mod support;

mod api_limits;
mod bit_flips;
mod concurrent_appends;
mod disk_full;
mod fixture_v1;
mod format_constants;
mod locked;
mod poison;
mod power_loss;
mod reader_follow;
mod recovery_modes;
mod retention;
mod salvage;
mod segment_headers;
mod torn_tail;
