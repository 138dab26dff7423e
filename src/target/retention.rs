//! Retention of the change log (`sync-protocol.md` §2.6): how long records are kept, the
//! cursors the caches report so that nothing a known cache has not pulled is dropped, and the
//! outcome of a pruning.

use serde::Serialize;
use uuid::Uuid;

/// The table of the cursors caches report: one row per journal.
pub const CURSORS_TABLE: &str = "syncjournal_cursors";

/// The columns syncjournal requires of [`CURSORS_TABLE`].
pub(crate) const CURSORS_COLUMNS: [&str; 3] = ["journal_id", "seq", "updated_at"];

/// Records examined per statement when looking for the first one young enough to keep.
pub(crate) const AGE_SCAN_ROWS: usize = 10_000;

/// How much of the change log a replayer keeps (`TargetOptions::change_log_retention`). Every
/// setter documents its default; with neither limit set nothing is pruned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeLogRetention {
    pub(crate) keep_age_ms: Option<u64>,
    pub(crate) keep_records_max: Option<u64>,
    pub(crate) cursor_stale_after_ms: Option<u64>,
    pub(crate) prune_interval_ms: u64,
}

impl ChangeLogRetention {
    /// Defaults: no limit (nothing pruned), every reported cursor honoured however old,
    /// pruning at most once a minute.
    pub fn new() -> Self {
        ChangeLogRetention {
            prune_interval_ms: 60_000,
            ..Default::default()
        }
    }

    /// Records committed longer ago than this may be pruned. Default: none (age keeps all).
    pub fn keep_age_ms(mut self, ms: u64) -> Self {
        self.keep_age_ms = Some(ms);
        self
    }

    /// At most this many of the newest records are kept; older ones may be pruned. Default:
    /// none (size keeps all).
    pub fn keep_records_max(mut self, n: u64) -> Self {
        self.keep_records_max = Some(n);
        self
    }

    /// A cache whose cursor was last reported longer ago than this no longer holds pruning
    /// back: records it has not pulled may be dropped, and it is told to reseed
    /// (`CacheError::NeedsReseed`, or a reseed by itself) when it comes back. Default: never
    /// (a known cache holds pruning back until it pulls).
    pub fn cursor_stale_after_ms(mut self, ms: u64) -> Self {
        self.cursor_stale_after_ms = Some(ms);
        self
    }

    /// The least time between two prunings by one replayer (each after a sync that applied
    /// something). Default: 60 000 ms.
    pub fn prune_interval_ms(mut self, ms: u64) -> Self {
        self.prune_interval_ms = ms;
        self
    }

    /// True if a limit is set.
    pub(crate) fn prunes(&self) -> bool {
        self.keep_age_ms.is_some() || self.keep_records_max.is_some()
    }

    /// The highest sequence number the size limit lets go, for a log whose head is `head`.
    pub(crate) fn size_floor(&self, head: u64) -> u64 {
        self.keep_records_max
            .map_or(head, |n| head.saturating_sub(n))
    }
}

/// What a pruning did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// The change log's floor afterwards: records at or below it are gone.
    pub floor_seq: u64,
    /// Records removed.
    pub removed: u64,
    /// The cache whose cursor held pruning back, and that cursor, if one did.
    pub held_by: Option<(Uuid, u64)>,
}

/// The highest sequence number the age limit lets go: records are read in order from `floor`
/// by `page` (`(seq, committed_at)` of at most [`AGE_SCAN_ROWS`] records after a sequence
/// number) up to the first one committed at or after `cutoff_ms`.
pub(crate) fn age_floor<E>(
    floor: u64,
    cutoff_ms: i64,
    mut page: impl FnMut(u64) -> Result<Vec<(i64, i64)>, E>,
) -> Result<u64, E> {
    let mut last_old = floor;
    loop {
        let rows = page(last_old)?;
        if rows.is_empty() {
            return Ok(last_old);
        }
        for (seq, at) in rows {
            if at >= cutoff_ms {
                return Ok(last_old);
            }
            last_old = seq.max(0) as u64;
        }
    }
}

/// The new floor: the highest sequence number both limits let go (`by_size`, `by_age`: each
/// `None` when its limit is not set), capped by the lowest honoured cursor, never below
/// `floor`.
pub(crate) fn new_floor(
    floor: u64,
    by_size: Option<u64>,
    by_age: Option<u64>,
    lowest_cursor: Option<(Uuid, u64)>,
) -> (u64, Option<(Uuid, u64)>) {
    let limits = [by_size, by_age];
    let Some(wanted) = limits.iter().flatten().copied().max() else {
        return (floor, None);
    };
    match lowest_cursor {
        Some((j, c)) if c < wanted => (floor.max(c), Some((j, c))),
        _ => (floor.max(wanted), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_either_limit_capped_by_the_lowest_cursor() {
        let j = Uuid::from_u128(7);
        assert_eq!(new_floor(0, None, None, None), (0, None));
        assert_eq!(new_floor(0, Some(40), None, None), (40, None));
        assert_eq!(new_floor(0, Some(40), Some(55), None), (55, None));
        assert_eq!(
            new_floor(0, Some(40), None, Some((j, 30))),
            (30, Some((j, 30)))
        );
        assert_eq!(new_floor(0, Some(40), None, Some((j, 90))), (40, None));
        assert_eq!(
            new_floor(50, Some(40), None, None),
            (50, None),
            "never back"
        );
        let r = ChangeLogRetention::new().keep_records_max(10);
        assert_eq!((r.size_floor(100), r.size_floor(3)), (90, 0));
        assert!(r.prunes() && !ChangeLogRetention::new().prunes());
    }

    #[test]
    fn the_age_floor_is_the_last_record_before_the_first_young_one() {
        // Records 1..=25 committed at 10 ms each (seq 7 at 70), two per page.
        let log: Vec<(i64, i64)> = (1..=25).map(|s| (s, s * 10)).collect();
        let page = |after: u64| -> Result<Vec<(i64, i64)>, ()> {
            Ok(log
                .iter()
                .copied()
                .filter(|(s, _)| *s as u64 > after)
                .take(2)
                .collect())
        };
        assert_eq!(age_floor(0, 75, page), Ok(7));
        assert_eq!(age_floor(0, 5, page), Ok(0), "nothing old enough");
        assert_eq!(age_floor(3, 1_000, page), Ok(25), "everything old");
        assert_eq!(age_floor(9, 75, page), Ok(9), "never below the floor");
    }

    #[test]
    fn the_constants_are_the_ones_sync_protocol_md_states() {
        let doc = include_str!("../../sync-protocol.md");
        assert_eq!(CURSORS_TABLE, "syncjournal_cursors");
        assert!(doc.contains("`syncjournal_cursors`"));
        for c in CURSORS_COLUMNS {
            assert!(doc.contains(&format!("`{c}`")));
        }
        assert!(doc.contains("10 000 records") && AGE_SCAN_ROWS == 10_000);
    }
}
