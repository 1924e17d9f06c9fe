//! The ids a command carries into the events it produces, and event ids
//! derived from command ids (so a command sent twice writes once).

/// The ids a command carries into the events it produces.
#[derive(Clone, Debug, Default)]
pub struct CommandIds {
    /// The command's id; the event ids derive from it, so sending the same
    /// id again never applies the command twice. New (a UUIDv7) if empty.
    pub command_id: String,
    /// The events' correlation id; the command id if empty.
    pub correlation_id: String,
    /// The events' causation id; the command id if empty (an event handler
    /// sets the id of the event it reacts to).
    pub causation_id: String,
}

impl CommandIds {
    /// Fills in what was left empty: a new command id, and the command id as
    /// correlation and causation.
    pub(crate) fn complete(mut self) -> CommandIds {
        if self.command_id.is_empty() {
            self.command_id = uuid::Uuid::now_v7().to_string();
        }
        for id in [&mut self.correlation_id, &mut self.causation_id] {
            if id.is_empty() {
                id.clone_from(&self.command_id);
            }
        }
        self
    }

    /// The id of the `index`-th event the command produces: the same on every
    /// node and every retry. A UUIDv7 carrying the command id's time when the
    /// command id is a UUIDv7 (as generated ones are), else the epoch.
    pub(crate) fn event_id(&self, index: usize) -> String {
        let millis = uuid::Uuid::parse_str(&self.command_id)
            .ok()
            .and_then(|id| id.get_timestamp())
            .map_or(0, |t| {
                let (secs, nanos) = t.to_unix();
                secs * 1000 + u64::from(nanos / 1_000_000)
            });
        derived_v7(millis, &format!("{}/{index}", self.command_id)).to_string()
    }
}

/// A UUIDv7 with time `millis` whose other bits are a hash of `name`:
/// deterministic, and still ordered by time like a generated one.
pub(crate) fn derived_v7(millis: u64, name: &str) -> uuid::Uuid {
    let hash = uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes());
    let mut bits = [0u8; 10];
    bits.copy_from_slice(&hash.as_bytes()[..10]);
    uuid::Builder::from_unix_timestamp_millis(millis, &bits).into_uuid()
}

/// The UUIDv5 namespace hashed into derived ids.
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6361_6972_6e2d_6576_656e_742d_6964_7331);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_v7_stable_and_distinct() {
        let ids = CommandIds::default().complete();
        let (a, b) = (ids.event_id(0), ids.event_id(1));
        assert_ne!(a, b);
        assert_eq!(a, ids.clone().event_id(0));
        let parsed = uuid::Uuid::parse_str(&a).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 7);
        let command = uuid::Uuid::parse_str(&ids.command_id).expect("a UUID");
        assert_eq!(
            parsed.get_timestamp().map(|t| t.to_unix().0),
            command.get_timestamp().map(|t| t.to_unix().0)
        );
    }

    #[test]
    fn empty_ids_default_to_the_command_id() {
        let ids = CommandIds {
            correlation_id: "corr".into(),
            ..CommandIds::default()
        }
        .complete();
        assert_eq!(ids.correlation_id, "corr");
        assert_eq!(ids.causation_id, ids.command_id);
    }
}
