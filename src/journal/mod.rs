//! The journal: writer (append, group commit, rotation), reader (by LSN, follow), recovery,
//! acknowledgement and retention.

pub(crate) mod ack;
mod append;
mod group_commit;
mod handle;
pub(crate) mod head;
pub(crate) mod index;
pub(crate) mod listing;
pub mod offline;
mod options;
mod reader;
pub(crate) mod recovery;
mod retention;
mod rotation;
pub mod scan;
pub(crate) mod shared;

pub use handle::{Journal, JournalState, KIND_DATA};
pub use index::{INDEX_STRIDE, SparseIndex};
pub use offline::Until;
pub use options::{JournalOptions, PersistMode, RecoveryMode};
pub use reader::{Reader, Record, RecordRef};
pub use recovery::{Cut, RecoveryReport};
