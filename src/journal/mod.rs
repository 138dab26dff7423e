//! The journal: writer (append, group commit, rotation), reader (by LSN, follow), recovery,
//! acknowledgement and retention.

pub(crate) mod ack;
pub(crate) mod head;
pub(crate) mod index;
pub(crate) mod listing;
pub mod offline;
mod options;
mod reader;
pub(crate) mod recovery;
pub mod scan;
mod writer;

pub use index::{INDEX_STRIDE, SparseIndex};
pub use offline::Until;
pub use options::{JournalOptions, PersistMode, RecoveryMode};
pub use reader::{Reader, Record, RecordRef};
pub use recovery::{Cut, RecoveryReport};
pub use writer::{Journal, JournalState, KIND_DATA};
