//! The appends of one Raft entry, encoded once into one shared buffer.
//!
//! A group-committed entry carries the appends of many writers, up to
//! thousands of events. Held as owned values, every event was a handful of
//! allocations, made again by each clone of the entry (the log's cache
//! hands the state machine and each follower's replication a copy) and
//! freed again by each drop, and encoded field by field into the log and
//! onto the wire, then decoded field by field by every follower: under 64
//! writers of 100-event appends that was ~14% of the nodes' CPU
//! (bench/README.md, session 24). [`Appends`] is instead the postcard
//! encoding of the `[StreamAppend]` in one [`Bytes`]: cloning it shares the
//! buffer, the log and the wire copy it whole, and the state machine reads
//! the appends out of it in place ([`Appends::views`]), copying only what
//! its in-memory tail keeps.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::command::{ExpectedVersion, StreamAppend};
use crate::error::{Error, decode, encode_exact};

/// The appends of one [`Command::Append`](crate::Command::Append) entry,
/// in order, as one buffer: the postcard encoding of a `[StreamAppend]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appends {
    /// How many events the appends hold, all together.
    events: u64,
    encoded: Bytes,
}

impl Appends {
    /// Encodes `appends` (once; clones of the result share it).
    pub fn new(appends: &[StreamAppend]) -> Appends {
        let events = appends.iter().map(|a| a.events.len() as u64).sum();
        // Strings, bytes and numbers always encode: postcard fails only
        // when its output is full, and a `Vec` grows.
        let encoded = encode_exact(appends).expect("appends always encode into a Vec");
        Appends {
            events,
            encoded: Bytes::from(encoded),
        }
    }

    /// How many events the appends hold, all together (what sizes the
    /// apply's maps). Every event takes at least one byte per field of the
    /// buffer, so a count beyond its length is damaged, and is capped there
    /// rather than trusted.
    pub fn events(&self) -> usize {
        let most = self.encoded.len() as u64 / 6;
        usize::try_from(self.events.min(most)).unwrap_or(usize::MAX)
    }

    /// The size of the encoding, in bytes.
    pub fn encoded_len(&self) -> usize {
        self.encoded.len()
    }

    /// The appends, decoded into values of their own.
    pub fn decode(&self) -> Result<Vec<StreamAppend>, Error> {
        decode("appends", &self.encoded)
    }

    /// The appends, read in place: every string and payload of the views
    /// borrows from the buffer.
    pub(crate) fn views(&self) -> Result<Vec<AppendView<'_>>, Error> {
        decode("appends", &self.encoded)
    }

    /// The buffer the views of [`Appends::views`] borrow from.
    pub(crate) fn buffer(&self) -> &Bytes {
        &self.encoded
    }
}

impl std::fmt::Debug for Appends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.decode() {
            Ok(appends) => f.debug_list().entries(appends).finish(),
            Err(_) => write!(f, "Appends(undecodable, {} bytes)", self.encoded.len()),
        }
    }
}

/// A [`StreamAppend`] read in place from an [`Appends`] buffer.
#[derive(Debug, Deserialize)]
pub(crate) struct AppendView<'a> {
    pub(crate) stream: &'a str,
    pub(crate) expected: ExpectedVersion,
    #[serde(borrow)]
    pub(crate) events: Vec<EventView<'a>>,
}

/// A [`NewEvent`](crate::NewEvent) read in place; same fields, same encoding.
#[derive(Debug, Deserialize)]
pub(crate) struct EventView<'a> {
    pub(crate) id: &'a str,
    pub(crate) event_type: &'a str,
    pub(crate) data: &'a [u8],
    pub(crate) metadata: &'a [u8],
    pub(crate) correlation_id: &'a str,
    pub(crate) causation_id: &'a str,
}

#[cfg(test)]
impl<'a> EventView<'a> {
    /// A view of an owned event.
    pub(crate) fn of(event: &'a crate::NewEvent) -> EventView<'a> {
        EventView {
            id: &event.id,
            event_type: &event.event_type,
            data: &event.data,
            metadata: &event.metadata,
            correlation_id: &event.correlation_id,
            causation_id: &event.causation_id,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::command::NewEvent;

    fn event(id: &str, data: &'static [u8], metadata: &'static [u8]) -> NewEvent {
        NewEvent {
            id: id.to_owned(),
            event_type: "Happened".to_owned(),
            data: Bytes::from_static(data),
            metadata: Bytes::from_static(metadata),
            correlation_id: format!("corr-{id}"),
            causation_id: String::new(),
        }
    }

    fn sample() -> Vec<StreamAppend> {
        vec![
            StreamAppend {
                stream: "account-1".to_owned(),
                expected: ExpectedVersion::Exact(4),
                events: vec![
                    event("a", br#"{"amount":1}"#, br#"{"schema_version":2}"#),
                    event("b", b"{}", b""),
                ],
            },
            StreamAppend {
                stream: "empty".to_owned(),
                expected: ExpectedVersion::NoStream,
                events: Vec::new(),
            },
            StreamAppend {
                stream: "user-\u{e9}".to_owned(),
                expected: ExpectedVersion::Any,
                events: vec![event("c", b"[1,2]", b"{}")],
            },
        ]
    }

    #[test]
    fn appends_decode_to_what_was_encoded_and_count_their_events() {
        let appends = Appends::new(&sample());
        assert_eq!(appends.decode().unwrap(), sample());
        assert_eq!(appends.events(), 3);
        assert_eq!(Appends::new(&[]).events(), 0);
        assert!(Appends::new(&[]).decode().unwrap().is_empty());
    }

    #[test]
    fn views_read_every_field_in_place() {
        let appends = Appends::new(&sample());
        let views = appends.views().unwrap();
        let owned = sample();
        assert_eq!(views.len(), owned.len());
        for (view, append) in views.iter().zip(&owned) {
            assert_eq!(view.stream, append.stream);
            assert_eq!(view.expected, append.expected);
            assert_eq!(view.events.len(), append.events.len());
            for (v, e) in view.events.iter().zip(&append.events) {
                let of = EventView::of(e);
                assert_eq!(
                    (v.id, v.event_type, v.data, v.metadata),
                    (of.id, of.event_type, of.data, of.metadata)
                );
                assert_eq!(
                    (v.correlation_id, v.causation_id),
                    (of.correlation_id, of.causation_id)
                );
                // A payload shared out of the buffer is the payload.
                assert_eq!(appends.buffer().slice_ref(v.data), e.data);
            }
        }
    }

    #[test]
    fn clones_share_one_buffer_and_survive_a_round_trip() {
        let appends = Appends::new(&sample());
        let clone = appends.clone();
        assert_eq!(clone.encoded.as_ptr(), appends.encoded.as_ptr());
        let wire = postcard::to_allocvec(&appends).unwrap();
        let back: Appends = postcard::from_bytes(&wire).unwrap();
        assert_eq!(back, appends);
        assert_eq!(back.encoded_len(), appends.encoded_len());
    }

    #[test]
    fn a_damaged_buffer_is_reported_and_a_damaged_count_capped() {
        let appends = Appends::new(&sample());
        let cut = Appends {
            events: appends.events,
            encoded: appends.encoded.slice(..appends.encoded.len() - 3),
        };
        assert!(matches!(cut.views(), Err(Error::Corrupt(_))));
        assert!(matches!(cut.decode(), Err(Error::Corrupt(_))));
        assert!(format!("{cut:?}").contains("undecodable"));

        let inflated = Appends {
            events: u64::MAX,
            encoded: appends.encoded.clone(),
        };
        assert!(inflated.events() <= appends.encoded_len() / 6);
    }
}
