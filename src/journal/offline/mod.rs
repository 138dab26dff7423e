//! Reading a journal without owning it (from another process, or while it is closed):
//! segment files are read with `pread` through a bounded window — never mapped, because the
//! owner may be writing them — and every frame passes the same checks as recovery's (checksum,
//! LSN continuity, chain, zeros after the end of a complete segment, segment length), so a
//! record is returned only if it is the one that must come next.
//!
//! # Reading a live journal
//!
//! While an owner has the journal open, only records it has published as durable (`HEAD`)
//! are complete: bytes after them may be a write in progress. So the reader stops at that
//! LSN ([`Until::Durable`]), and it trusts a byte only if it read it *after* learning that
//! the record covering it was durable or that its segment was complete (a later segment
//! exists): a window read earlier is read again. A stale read can otherwise show zeros where
//! the owner has since written records and rotated, and a reader that took those zeros for
//! the end of the segment would skip the records (`journal-format.md` §6.1).
//!
//! # Files
//!
//! * `reader` — [`OfflineReader`] and [`Until`]: positioning by LSN over the listed segments,
//!   the checks of each frame, the move to the next segment, damage named as recovery names it;
//! * `window` — one segment read through a bounded, trust-stamped window;
//! * `facts` — what the directory says without opening the journal ([`journal_id_of`],
//!   [`first_retained`], [`owner_of`], [`read_head`]).

mod facts;
mod reader;
mod window;

pub use facts::{first_retained, journal_id_of, owner_of, read_head};
pub use reader::{OfflineReader, Until};
