//! The one test-support tree of every test binary (`#[path]`-included as `support`), a module
//! per concern; each helper is defined once. A binary uses a subset, hence `dead_code`.
#![allow(dead_code)]

pub mod cli;
pub mod events;
pub mod faults;
pub mod inventory;
pub mod journal;
pub mod machines;
pub mod netshare;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod process;
pub mod replay;
pub mod rng;
pub mod store;
pub mod targets;
pub mod writers;
