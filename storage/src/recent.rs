//! The newest applied events of each group, kept in memory.
//!
//! Projections, event handlers, subscriptions and read-all follow the tail
//! of the partition logs: nearly every read of theirs asks for events the
//! state machine applied moments ago. [`Recent`] keeps each group's newest
//! events as applied, so those reads are served without going back to
//! RocksDB (a scan of the partition log, then a lookup of every event).
//!
//! **The invariant:** a group's tail holds every stored event of the group
//! from its first position up to the newest applied one. Applying appends
//! to it, purges (hard deletes, retention) remove from it, it drops its
//! oldest events beyond [`MAX_EVENTS`] / [`MAX_BYTES`], and installing a
//! Raft snapshot empties it. A read from a position at or after the tail's
//! first is answered from memory; any other read goes to RocksDB.
//!
//! **Consistency:** a state-machine write and the tail's update happen under
//! the group's tail lock, which readers of the tail take too. A reader that saw an
//! applied write in RocksDB (say, the partition's last position) and then
//! reads the tail therefore sees its events as well.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use crate::appends::EventView;
use crate::command::GroupId;
use crate::error::Error;
use crate::event::RecordedEvent;
use crate::reader::LogPage;

/// Most events kept per group.
pub(crate) const MAX_EVENTS: usize = 4096;
/// Most bytes (payloads and ids, roughly) kept per group.
const MAX_BYTES: usize = 4 << 20;

/// The events one state-machine write appends, as the tail will keep them:
/// only the newest [`MAX_EVENTS`], so that a big write (a follower catching
/// up) does not hold on to all of its events until it is done.
#[derive(Default)]
pub(crate) struct Appended {
    events: VecDeque<KeptEvent>,
    /// Older events of the write were not kept.
    dropped: bool,
    /// How many of the write's next events will not be kept.
    skip: usize,
}

impl Appended {
    /// For a write of `events` events: keeps only the newest
    /// [`MAX_EVENTS`], so none of the first `events - MAX_EVENTS` need even
    /// be built, and holds room for those it keeps from the start (growing
    /// one event at a time moved every kept event again at each doubling:
    /// ~1.3% of the nodes' CPU under 100-event appends).
    pub(crate) fn for_write(events: usize) -> Appended {
        Appended {
            events: VecDeque::with_capacity(events.min(MAX_EVENTS)),
            skip: events.saturating_sub(MAX_EVENTS),
            dropped: false,
        }
    }

    /// Whether the write's next event is kept ([`Appended::push`] it then).
    pub(crate) fn keeps_next(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        self.dropped = true;
        false
    }

    pub(crate) fn push(&mut self, event: KeptEvent) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
            self.dropped = true;
        }
        self.events.push_back(event);
    }
}

#[cfg(test)]
impl FromIterator<RecordedEvent> for Appended {
    fn from_iter<I: IntoIterator<Item = RecordedEvent>>(events: I) -> Appended {
        let mut appended = Appended::default();
        for event in events {
            appended.push(KeptEvent::from(&event));
        }
        appended
    }
}

/// An applied event as the tail keeps it: its strings and payloads are
/// ranges of one shared buffer, that of the entry's appends it came from
/// ([`Appends`](crate::Appends)). Kept as a [`RecordedEvent`] of its own,
/// every event cost three to five allocations to keep and as many frees to
/// let go (~6% of the nodes' CPU under 100-event appends, bench/README.md
/// session 24); this way it is one reference count. A read makes the
/// [`RecordedEvent`] it hands out, as its clone of one did before.
///
/// The tail thereby holds whole entry buffers. Beyond what [`MAX_BYTES`]
/// counts, that is the rest of the buffer of its oldest event's entry (the
/// tail is a run of the newest events, so it spans whole entries but that
/// one; an entry holds up to ~1 MiB of appends, or one bigger append) and,
/// in the entries it spans, the appends they rejected and the events
/// purged since.
pub(crate) struct KeptEvent {
    buffer: Bytes,
    id: Range<usize>,
    stream: Range<usize>,
    event_type: Range<usize>,
    data: Range<usize>,
    metadata: Range<usize>,
    correlation_id: Range<usize>,
    causation_id: Range<usize>,
    timestamp_ms: i64,
    version: u64,
    position: u64,
}

impl KeptEvent {
    /// The event `event` of `stream` (both read in place from `buffer`),
    /// as written at `timestamp_ms`, `version` and `position`.
    pub(crate) fn in_buffer(
        buffer: &Bytes,
        stream: &str,
        event: &EventView<'_>,
        timestamp_ms: i64,
        version: u64,
        position: u64,
    ) -> KeptEvent {
        let range = |part: &[u8]| range_in(buffer, part);
        KeptEvent {
            buffer: buffer.clone(),
            id: range(event.id.as_bytes()),
            stream: range(stream.as_bytes()),
            event_type: range(event.event_type.as_bytes()),
            data: range(event.data),
            metadata: range(event.metadata),
            correlation_id: range(event.correlation_id.as_bytes()),
            causation_id: range(event.causation_id.as_bytes()),
            timestamp_ms,
            version,
            position,
        }
    }

    fn text(&self, range: &Range<usize>) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.buffer[range.clone()])
    }

    fn stream(&self) -> Cow<'_, str> {
        self.text(&self.stream)
    }

    /// The event, with strings of its own (its payloads share the buffer).
    fn to_recorded(&self) -> RecordedEvent {
        RecordedEvent {
            id: self.text(&self.id).into_owned(),
            stream: self.stream().into_owned(),
            event_type: self.text(&self.event_type).into_owned(),
            data: self.buffer.slice(self.data.clone()),
            metadata: self.buffer.slice(self.metadata.clone()),
            correlation_id: self.text(&self.correlation_id).into_owned(),
            causation_id: self.text(&self.causation_id).into_owned(),
            timestamp_ms: self.timestamp_ms,
            version: self.version,
            position: self.position,
        }
    }

    /// Roughly the memory the event takes (its payloads and ids).
    fn size(&self) -> usize {
        [
            &self.data,
            &self.metadata,
            &self.id,
            &self.stream,
            &self.event_type,
        ]
        .iter()
        .map(|range| range.len())
        .sum::<usize>()
            + 64
    }
}

/// Where `part`, a slice of `buffer`, lies in it.
fn range_in(buffer: &[u8], part: &[u8]) -> Range<usize> {
    if part.is_empty() {
        return 0..0;
    }
    let start = (part.as_ptr() as usize).wrapping_sub(buffer.as_ptr() as usize);
    assert!(
        start <= buffer.len() && part.len() <= buffer.len() - start,
        "a kept event's parts lie in its entry's buffer"
    );
    start..start + part.len()
}

#[cfg(test)]
impl From<&RecordedEvent> for KeptEvent {
    /// The event, in a buffer of its own (as an entry of one append).
    fn from(event: &RecordedEvent) -> KeptEvent {
        let appends = crate::Appends::new(&[crate::StreamAppend {
            stream: event.stream.clone(),
            expected: crate::ExpectedVersion::Any,
            events: vec![event.to_new()],
        }]);
        let views = appends.views().expect("appends just encoded decode");
        let (append, e) = (&views[0], &views[0].events[0]);
        let (at, version, position) = (event.timestamp_ms, event.version, event.position);
        KeptEvent::in_buffer(appends.buffer(), append.stream, e, at, version, position)
    }
}

/// The in-memory tails of every group of a store. Each group's tail has
/// its own lock, so the state-machine writes of different groups never
/// wait for each other.
#[derive(Default)]
pub(crate) struct Recent {
    tails: Mutex<HashMap<GroupId, Arc<Mutex<Tail>>>>,
}

#[derive(Default)]
struct Tail {
    /// In position order, complete from the first (see the module docs).
    events: VecDeque<KeptEvent>,
    bytes: usize,
}

fn lock(tail: &Mutex<Tail>) -> MutexGuard<'_, Tail> {
    tail.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recent {
    /// The tail of `group`, created empty if it has none yet.
    fn tail(&self, group: GroupId) -> Arc<Mutex<Tail>> {
        let mut tails = self.tails.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(tails.entry(group).or_default())
    }

    /// Runs `write` (a state-machine write of `group` that appended
    /// `appended` and purged the events at `purged`) and, if it succeeds,
    /// records its effect on the group's tail, atomically for readers.
    pub(crate) fn write_applied(
        &self,
        group: GroupId,
        appended: Appended,
        purged: &[u64],
        write: impl FnOnce() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let tail = self.tail(group);
        let mut tail = lock(&tail);
        write()?;
        if appended.dropped {
            // The tail would miss the events between its newest and the
            // first one kept: start it over from those kept.
            *tail = Tail::default();
        }
        for event in appended.events {
            tail.bytes += event.size();
            tail.events.push_back(event);
        }
        // After the appends: a write may purge events it appended itself
        // (an append longer than its stream's max-count).
        for position in purged {
            if let Ok(i) = tail.events.binary_search_by_key(position, |e| e.position)
                && let Some(gone) = tail.events.remove(i)
            {
                tail.bytes -= gone.size();
            }
        }
        while tail.events.len() > MAX_EVENTS || tail.bytes > MAX_BYTES {
            let Some(gone) = tail.events.pop_front() else {
                break;
            };
            tail.bytes -= gone.size();
        }
        Ok(())
    }

    /// Runs `write`, which replaces the whole state of `group` (a snapshot
    /// install), and forgets the group's tail.
    pub(crate) fn write_replacing(
        &self,
        group: GroupId,
        write: impl FnOnce() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let tail = self.tail(group);
        let mut tail = lock(&tail);
        let result = write();
        *tail = Tail::default();
        result
    }

    /// The events of `group` at the next `limit` positions from `from` of
    /// the streams `keep` names, if the tail holds those positions (`from` is
    /// at or after its first position); `None` when RocksDB must be read.
    pub(crate) fn read_where(
        &self,
        group: GroupId,
        from: u64,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Option<LogPage> {
        let tail = self.tail(group);
        let tail = lock(&tail);
        let events = &tail.events;
        if from < events.front()?.position {
            return None;
        }
        let start = events.partition_point(|e| e.position < from);
        let mut page = LogPage::default();
        for event in events.range(start..).take(limit) {
            page.last_position = Some(event.position);
            if keep(&event.stream()) {
                page.events.push(event.to_recorded());
            }
        }
        Some(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: u64) -> RecordedEvent {
        RecordedEvent {
            id: format!("e{position}"),
            stream: "s".into(),
            event_type: "T".into(),
            data: bytes::Bytes::from_static(b"{}"),
            metadata: bytes::Bytes::from_static(b"{}"),
            correlation_id: String::new(),
            causation_id: String::new(),
            timestamp_ms: 0,
            version: position,
            position,
        }
    }

    fn positions(page: Option<LogPage>) -> Option<Vec<u64>> {
        page.map(|page| page.events.iter().map(|e| e.position).collect())
    }

    #[test]
    fn reads_from_the_tail_only_what_it_holds_completely() {
        let recent = Recent::default();
        assert_eq!(positions(recent.read_where(1, 1, 10, |_| true)), None);
        let ok = || Ok(());
        recent
            .write_applied(1, (5..=9).map(event).collect(), &[], ok)
            .expect("writes");
        assert_eq!(
            positions(recent.read_where(1, 4, 10, |_| true)),
            None,
            "before the tail"
        );
        assert_eq!(
            positions(recent.read_where(1, 5, 2, |_| true)),
            Some(vec![5, 6])
        );
        assert_eq!(
            positions(recent.read_where(1, 8, 10, |_| true)),
            Some(vec![8, 9])
        );
        assert_eq!(
            positions(recent.read_where(1, 10, 10, |_| true)),
            Some(vec![])
        );
        assert_eq!(
            positions(recent.read_where(2, 5, 10, |_| true)),
            None,
            "another group"
        );

        recent
            .write_applied(1, [event(10)].into_iter().collect(), &[6, 7, 3], ok)
            .expect("writes");
        assert_eq!(
            positions(recent.read_where(1, 5, 10, |_| true)),
            Some(vec![5, 8, 9, 10])
        );

        // A write that purges some of what it appends itself.
        recent
            .write_applied(1, (11..=13).map(event).collect(), &[9, 11, 12], ok)
            .expect("writes");
        assert_eq!(
            positions(recent.read_where(1, 5, 10, |_| true)),
            Some(vec![5, 8, 10, 13])
        );
    }

    #[test]
    fn a_kept_event_reads_back_as_the_event_written() {
        use crate::{Appends, ExpectedVersion, StreamAppend};

        let new = |id: &str, correlation_id: &str| crate::NewEvent {
            id: id.to_owned(),
            event_type: "Deposited".to_owned(),
            data: bytes::Bytes::from(format!(r#"{{"id":"{id}"}}"#)),
            metadata: bytes::Bytes::new(),
            correlation_id: correlation_id.to_owned(),
            causation_id: "cause".to_owned(),
        };
        let appends = Appends::new(&[StreamAppend {
            stream: "konto-\u{e5}".to_owned(),
            expected: ExpectedVersion::Any,
            events: vec![new("a", ""), new("b", "corr")],
        }]);
        let views = appends.views().expect("decodes");
        let kept: Vec<KeptEvent> = views[0]
            .events
            .iter()
            .zip(7..)
            .map(|(e, v)| KeptEvent::in_buffer(appends.buffer(), views[0].stream, e, 5, v, v + 10))
            .collect();
        let recorded = |id: &str, correlation_id: &str, version: u64| RecordedEvent {
            id: id.to_owned(),
            stream: "konto-\u{e5}".to_owned(),
            event_type: "Deposited".to_owned(),
            data: bytes::Bytes::from(format!(r#"{{"id":"{id}"}}"#)),
            metadata: bytes::Bytes::new(),
            correlation_id: correlation_id.to_owned(),
            causation_id: "cause".to_owned(),
            timestamp_ms: 5,
            version,
            position: version + 10,
        };
        assert_eq!(kept[0].to_recorded(), recorded("a", "", 7));
        assert_eq!(kept[1].to_recorded(), recorded("b", "corr", 8));
        let own = KeptEvent::from(&recorded("b", "corr", 8));
        assert_eq!(own.to_recorded(), recorded("b", "corr", 8));
        assert_eq!(own.size(), kept[1].size());
    }

    #[test]
    fn a_failed_write_changes_nothing_and_a_snapshot_install_forgets() {
        let recent = Recent::default();
        recent
            .write_applied(1, [event(1)].into_iter().collect(), &[], || Ok(()))
            .expect("writes");
        let failed = recent.write_applied(1, [event(2)].into_iter().collect(), &[1], || {
            Err(Error::ShutDown)
        });
        assert!(failed.is_err());
        assert_eq!(
            positions(recent.read_where(1, 1, 10, |_| true)),
            Some(vec![1])
        );
        recent.write_replacing(1, || Ok(())).expect("writes");
        assert_eq!(positions(recent.read_where(1, 1, 10, |_| true)), None);
    }

    #[test]
    fn the_oldest_events_go_beyond_the_limit() {
        let recent = Recent::default();
        let mut skipping = Appended::for_write(MAX_EVENTS + 2);
        assert!(!skipping.keeps_next() && !skipping.keeps_next() && skipping.keeps_next());
        assert!(skipping.dropped);
        let first = (1..=3).map(event).collect();
        recent
            .write_applied(1, first, &[], || Ok(()))
            .expect("writes");
        // One write of more than the tail keeps: the tail starts over.
        let big = (4..=MAX_EVENTS as u64 + 13).map(event).collect();
        recent
            .write_applied(1, big, &[], || Ok(()))
            .expect("writes");
        assert_eq!(positions(recent.read_where(1, 3, 1, |_| true)), None);
        assert_eq!(positions(recent.read_where(1, 13, 1, |_| true)), None);
        assert_eq!(
            positions(recent.read_where(1, 14, 1, |_| true)),
            Some(vec![14])
        );
        // Small writes after it keep the oldest going.
        recent
            .write_applied(
                1,
                [event(MAX_EVENTS as u64 + 14)].into_iter().collect(),
                &[],
                || Ok(()),
            )
            .expect("writes");
        assert_eq!(positions(recent.read_where(1, 14, 1, |_| true)), None);
        assert_eq!(
            positions(recent.read_where(1, 15, 1, |_| true)),
            Some(vec![15])
        );
    }
}
