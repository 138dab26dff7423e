//! Opening a journal directory: list and verify every segment, classify each damaged region as
//! a torn tail or damage in the middle, act on it according to the [`RecoveryMode`], and report.
//!
//! The same examination, without repairs, serves `verify` ([`crate::inspect`]).
//!
//! [`recover()`] is a short orchestrator over the steps of `journal-format.md` section 9, each in
//! its own file:
//!
//! * the listing — the directory is listed once ([`crate::journal::listing`]); leftover `.tmp`
//!   files of interrupted creations are removed and `ACK` is read (`recover`);
//! * [`examine`] — each segment's header verified, its bytes mapped and scanned (salvage
//!   re-extends a truncated segment first);
//! * [`classify`](mod@classify) — the segments checked against each other, the evidence of durability
//!   gathered, each damaged region named a torn tail or damage in the middle;
//! * [`repair`] — the mode's decision (refuse, cut, or replace by a gap record), the bytes
//!   saved to `forensics/`, the repairs written and examined again;
//! * [`report`] — what was found and done, which `Journal::open` logs.
//!
//! Crash cases: a crash during recovery leaves what the next open recovers again (a cut or a
//! gap record half written is still a damaged region; a side file without its repair is
//! harmless), and recovery never hands LSNs the evidence has seen to new appends.
//!
//! [`RecoveryMode`]: crate::journal::RecoveryMode

mod classify;
mod examine;
mod recover;
mod repair;
mod report;

pub(crate) use classify::{Evidence, classify};
pub(crate) use examine::{Examined, SegmentBytes, examine_into};
pub(crate) use recover::recover;
pub use report::{Cut, RecoveryReport};
