//! What the replayer learns of the target's watermark each time it reads or commits it, and
//! what it concludes: the observation statuses are measured by, and lost writes.

use std::sync::Arc;

use crate::format::Lsn;
use crate::journal::ack::now_ms;
use crate::replay::state::LostWrites;
use crate::replay::watch::Watch;
use crate::target::TargetSpec;

/// What the replayer learns of the target's watermark, and what it concludes.
pub(crate) struct Observer {
    /// What the replayer remembers (errors, the target's watermark as read), shared with
    /// watchers.
    pub(crate) watch: Arc<Watch>,
    /// The watermark this replayer last read or committed itself: a lower one read later
    /// means the target lost writes. `None` until the first read.
    pub(crate) expect: Option<Lsn>,
    /// The watermark read or committed during the current `sync_now`.
    pub(crate) seen_in_sync: Option<Lsn>,
}

impl Observer {
    /// Records a watermark read from (or committed to) the target now, and reports lost
    /// writes if it is lower than the last one this replayer itself read or committed.
    /// Returns true if writes were lost.
    pub(crate) fn observe(&mut self, wm: Lsn, target: &TargetSpec) -> bool {
        self.seen_in_sync = Some(wm);
        let lost = self.expect.filter(|&e| wm < e).map(|expected| LostWrites {
            expected_lsn: expected,
            found_lsn: wm,
            at_ms: now_ms(),
        });
        self.expect = Some(wm);
        let was_lost = lost.is_some();
        if let Some(l) = &lost {
            tracing::error!(target = %target, expected = l.expected_lsn, found = wm, "LOST WRITES on the target: {}", l.describe());
        }
        self.watch.update(|s| {
            s.observed(wm);
            if let Some(l) = lost {
                s.lost_writes += 1;
                s.last_lost_writes = Some(l);
            }
        });
        was_lost
    }
}
