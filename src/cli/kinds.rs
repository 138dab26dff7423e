//! `sync` applies change sets only: before a pass touches the target, the records it would
//! apply are checked, and a journal holding records of an application's own event kind is
//! refused (the replayer would otherwise take each of them for an entry the target refused —
//! and, with `--quarantine`, quarantine it and move the watermark past it).

use std::path::{Path, PathBuf};

use syncjournal::Lsn;
use syncjournal::TargetSpec;
use syncjournal::event::KIND_CHANGESET;
use syncjournal::journal::Until;
use syncjournal::journal::offline::{
    OfflineReader, first_retained, journal_id_of, owner_of, read_head,
};
use syncjournal::replay::read_target_watermark;

use crate::cli::outcome::Failure;

/// Checks the kinds of the records a `sync` pass is about to apply, remembering how far it
/// has checked (`sync --follow` checks each pass's new records).
#[derive(Debug)]
pub struct KindCheck {
    dir: PathBuf,
    target: TargetSpec,
    /// The next record to check; `None` before the first pass.
    next: Option<Lsn>,
}

impl KindCheck {
    /// A check of the journal in `dir` synced to `target`.
    pub fn new(dir: &Path, target: &TargetSpec) -> KindCheck {
        KindCheck {
            dir: dir.to_path_buf(),
            target: target.clone(),
            next: None,
        }
    }

    /// Checks the records not checked yet, up to what the next pass can apply: the durable
    /// head the owner publishes, or the end of a closed journal. The first pass starts after
    /// the target's watermark (read without changing the target), or at the first retained
    /// record if the target cannot be read yet.
    ///
    /// What this check cannot read (no journal, foreign files, damage) it leaves to the
    /// replayer, which reads the same records and reports it; it stops there and checks again
    /// from there at the next pass.
    ///
    /// # Errors
    ///
    /// [`Failure::Msg`] naming the first record of another kind than a change set (gap records
    /// left by salvage are fine).
    pub fn check(&mut self) -> Result<(), Failure> {
        let dir = self.dir.as_path();
        let Ok(id) = journal_id_of(dir) else {
            return Ok(());
        };
        let first = first_retained(dir, id).unwrap_or(1);
        let start = match self.next {
            Some(next) => next,
            None => read_target_watermark(&self.target, id).map_or(first, |wm| wm + 1),
        };
        let until = match owner_of(dir) {
            Ok(Some(_)) => match read_head(dir, id) {
                Some(h) => Until::Durable(h.durable_lsn),
                // Nothing can be followed: the replayer refuses (no HEAD).
                None => return Ok(()),
            },
            Ok(None) => Until::End,
            Err(_) => return Ok(()),
        };
        let Ok(mut reader) = OfflineReader::open(dir, start.max(first), until) else {
            return Ok(());
        };
        loop {
            match reader.next_ref() {
                Ok(Some(rec)) if rec.gap().is_none() && rec.kind != KIND_CHANGESET => {
                    return Err(Failure::Msg(format!(
                        "journal {}: LSN {} is of application kind {:#04x}: replay it with the application's own Replayer (`Replayer::<YourEvent>`); `syncjournal sync` applies change sets (kind {:#04x}) only, and it stopped before touching the target for this pass",
                        dir.display(),
                        rec.lsn,
                        rec.kind,
                        KIND_CHANGESET
                    )));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.next = Some(reader.next_lsn());
        Ok(())
    }
}
