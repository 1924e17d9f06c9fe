//! Stream retention: which events `max-count`, `max-age` and actor snapshots
//! leave readable. One rule, used both by reads (against the read time) and by
//! the state machine when it purges (against the entry's leader timestamp), so
//! a purge never removes an event a read could still return.

use crate::error::Error;
use crate::event::StreamInfo;

/// The first version of the stream that retention keeps: every stored event
/// below it is beyond `max-count` or `max-age` at `now_ms`.
///
/// - `max-count n` keeps versions `> version - n`.
/// - `max-age a` keeps events with `now_ms - timestamp_ms <= a`; timestamps
///   never decrease along a stream, so this is a binary search over versions
///   with `timestamp_of` (which returns `None` for a version not stored).
/// - `newest_snapshot`: for an actor stream, the version of its newest actor
///   snapshot; nothing above it is ever dropped, so the actor stays
///   rebuildable from that snapshot plus the tail.
///
/// Never below `purged_through + 1` (those are gone already).
pub(crate) fn retained_from(
    info: &StreamInfo,
    newest_snapshot: Option<u64>,
    now_ms: i64,
    mut timestamp_of: impl FnMut(u64) -> Result<Option<i64>, Error>,
) -> Result<u64, Error> {
    let stored_from = info.purged_through.saturating_add(1);
    let mut from = stored_from;
    if let Some(n) = info.max_count {
        from = from.max(info.version.saturating_sub(n).saturating_add(1));
    }
    if let Some(age) = info.max_age_ms {
        let cutoff = now_ms.saturating_sub(i64::try_from(age).unwrap_or(i64::MAX));
        // Smallest version in [from, version + 1) whose event is not expired.
        let (mut lo, mut hi) = (from, info.version.saturating_add(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match timestamp_of(mid)? {
                Some(ts) if ts < cutoff => lo = mid + 1,
                _ => hi = mid,
            }
        }
        from = lo;
    }
    if let Some(snapshot) = newest_snapshot {
        from = from.min(snapshot.saturating_add(1)).max(stored_from);
    }
    Ok(from)
}

/// Whether `info` asks for any trimming at all.
pub(crate) fn has_limits(info: &StreamInfo) -> bool {
    info.max_count.is_some() || info.max_age_ms.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: u64, max_count: Option<u64>, max_age_ms: Option<u64>) -> StreamInfo {
        StreamInfo {
            version,
            max_count,
            max_age_ms,
            ..StreamInfo::default()
        }
    }

    /// Event `v` was written at `10 * v` ms.
    fn ts(v: u64) -> Result<Option<i64>, Error> {
        Ok(Some(10 * v as i64))
    }

    #[test]
    fn max_count_keeps_the_newest() {
        assert_eq!(
            retained_from(&info(10, Some(3), None), None, 0, ts).ok(),
            Some(8)
        );
        assert_eq!(
            retained_from(&info(2, Some(3), None), None, 0, ts).ok(),
            Some(1)
        );
        assert_eq!(
            retained_from(&info(2, Some(0), None), None, 0, ts).ok(),
            Some(3)
        );
    }

    #[test]
    fn max_age_is_measured_from_now() {
        // now 100, age 25: events at >= 75 ms (versions 8..=10) stay.
        assert_eq!(
            retained_from(&info(10, None, Some(25)), None, 100, ts).ok(),
            Some(8)
        );
        // everything expired
        assert_eq!(
            retained_from(&info(10, None, Some(5)), None, 1000, ts).ok(),
            Some(11)
        );
        // both limits: the stricter wins
        assert_eq!(
            retained_from(&info(10, Some(1), Some(25)), None, 100, ts).ok(),
            Some(10)
        );
    }

    #[test]
    fn nothing_above_the_newest_snapshot_is_dropped() {
        assert_eq!(
            retained_from(&info(30, Some(5), None), Some(20), 0, ts).ok(),
            Some(21)
        );
        assert_eq!(
            retained_from(&info(30, Some(5), None), Some(28), 0, ts).ok(),
            Some(26)
        );
        let mut purged = info(30, Some(5), None);
        purged.purged_through = 25;
        assert_eq!(retained_from(&purged, Some(10), 0, ts).ok(), Some(26));
    }
}
