//! The command line: argument parsing (`args`) apart from the work (`journal_cmds`,
//! `sync_cmds`, `conflicts`, `status`, `check`, `demo`, `demo_machines`), which goes through
//! the library.

pub mod args;
pub mod check;
pub mod conflicts;
pub mod demo;
pub mod demo_machines;
pub mod fmt;
pub mod journal_cmds;
pub mod kinds;
pub mod outcome;
pub mod status;
pub mod sync_cmds;
