//! The command line: argument parsing (`args`) apart from the work (`commands`, `demo`),
//! which goes through the library.

pub mod args;
pub mod check;
pub mod commands;
pub mod demo;
pub mod fmt;
pub mod kinds;
pub mod status;
