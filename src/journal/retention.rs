//! Retention: removing segments whose records are all acknowledged, once the policy lets them
//! go (how many, how long, how many bytes are kept).

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::fault::IoOp;
use crate::journal::shared::{Shared, lock};
use crate::segment::{inject, sync_dir};

impl Shared {
    /// Removes sealed segments whose records are all acknowledged: beyond the newest
    /// `retain_acked_segments` of them, those acknowledged for `retain_acked_ms` or more, and
    /// the oldest ones while the acknowledged segments kept exceed `retain_acked_bytes`.
    pub(crate) fn retire(&self) -> Result<()> {
        let _g = lock(&self.retire_lock);
        let acked = self.acked_lsn.load(Ordering::Acquire);
        let now = crate::journal::ack::now_ms();
        let doomed: Vec<(u64, PathBuf)> = {
            let mut segs = self.segments.write().unwrap_or_else(|e| e.into_inner());
            let eligible = segs
                .iter()
                .take_while(|e| {
                    e.sealed
                        .is_some_and(|(next, _)| next <= acked.saturating_add(1))
                })
                .count();
            for e in segs.iter_mut().take(eligible) {
                e.acked_since_ms.get_or_insert(now);
            }
            let candidates = eligible.saturating_sub(self.opts.retain_acked_segments);
            let keep_for = self.opts.retain_acked_ms;
            let mut kept_bytes: u64 = segs.iter().take(candidates).map(|e| e.bytes).sum();
            // Only a prefix can go (the retained segments stay consecutive); acknowledgement
            // times grow along it.
            let mut remove = 0;
            for e in segs.iter().take(candidates) {
                let old = e
                    .acked_since_ms
                    .is_some_and(|t| now.saturating_sub(t) >= keep_for);
                if !(old || kept_bytes > self.opts.retain_acked_bytes) {
                    break;
                }
                kept_bytes -= e.bytes;
                remove += 1;
            }
            segs.iter()
                .take(remove)
                .map(|e| (e.seq, e.path.clone()))
                .collect()
        };
        if doomed.is_empty() {
            return Ok(());
        }
        let faults = self.opts.faults.as_deref();
        let mut removed = 0;
        let mut result = Ok(());
        for (_, path) in &doomed {
            let r =
                inject(faults, IoOp::RemoveSegment, path).and_then(|()| std::fs::remove_file(path));
            match r {
                Ok(()) => removed += 1,
                Err(e) => {
                    result = Err(Error::io("remove retired segment", path, e));
                    break;
                }
            }
        }
        {
            let mut segs = self.segments.write().unwrap_or_else(|e| e.into_inner());
            segs.drain(..removed);
        }
        if removed > 0 {
            tracing::debug!(removed, acked, "retired acknowledged segments");
            sync_dir(&self.dir, faults)?;
        }
        result
    }
}
