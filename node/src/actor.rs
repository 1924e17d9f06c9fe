//! The [`EventSourced`] trait users implement, and its type-erased form the
//! runtime drives.
//!
//! An actor's state is the fold of its events. `handle` decides (it never
//! writes); the runtime appends the events it returns through Raft and only
//! after the commit applies them and replies.

use std::any::Any;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// An event-sourced actor type.
///
/// Commands and events are serde types; the seed's wire shapes are
/// `{"type":"CREATE_USER", ...fields}` for commands (`#[serde(tag = "type")]`)
/// and `{"type":"USER_CREATED","data":{...}}` for events
/// (`#[serde(tag = "type", content = "data")]`).
pub trait EventSourced: Send + Sync + 'static {
    /// The state; `Default` is the state before the first event.
    type State: Default + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What callers send.
    type Command: DeserializeOwned;
    /// What the actor records.
    type Event: Serialize + DeserializeOwned;

    /// The type name callers address (`user`); the stream of actor `id` is `<name>-<id>`.
    fn name(&self) -> &'static str;

    /// Decides what a command does. Returns the events to record and the
    /// reply, or a rejection; never has side effects.
    fn handle(
        &self,
        id: &str,
        state: &Self::State,
        command: Self::Command,
    ) -> Result<Decision<Self::Event>, Rejected>;

    /// Applies one recorded event to the state. Must be deterministic.
    fn apply(&self, state: &mut Self::State, event: Self::Event);
}

/// What a command decided: events to record (possibly none) and a reply.
pub struct Decision<E> {
    pub events: Vec<E>,
    pub reply: Value,
}

impl<E> Decision<E> {
    /// Record `events`, then reply with `reply`.
    pub fn emit(events: Vec<E>, reply: Value) -> Decision<E> {
        Decision { events, reply }
    }
}

/// A command the actor refused; nothing is written. The message is shown to
/// the caller as is.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Why the runtime could not run a command or fold an event.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ActorError {
    /// The command is malformed: bad JSON, unknown type, missing field.
    #[error("invalid command for actor type `{actor_type}`: {message}")]
    InvalidCommand { actor_type: String, message: String },
    /// The actor refused the command.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// A stored event or snapshot does not decode into this type.
    #[error("cannot fold {what} into actor type `{actor_type}`: {message}")]
    Corrupt {
        actor_type: String,
        what: String,
        message: String,
    },
}

/// A recorded event split the way the store keeps it.
pub struct EncodedEvent {
    pub event_type: String,
    pub data: Vec<u8>,
}

/// Actor state behind the erasure.
pub type AnyState = Box<dyn Any + Send + Sync>;

/// An [`EventSourced`] type with its types erased, so the runtime can hold
/// many kinds of actors.
pub trait DynActor: Send + Sync {
    fn name(&self) -> &'static str;
    fn initial_state(&self) -> AnyState;
    fn decode_state(&self, bytes: &[u8]) -> Result<AnyState, ActorError>;
    fn encode_state(&self, state: &AnyState) -> Vec<u8>;
    fn handle(
        &self,
        id: &str,
        state: &AnyState,
        command: &[u8],
    ) -> Result<(Vec<EncodedEvent>, Value), ActorError>;
    fn apply(&self, state: &mut AnyState, event_type: &str, data: &[u8]) -> Result<(), ActorError>;
}

/// Wraps an [`EventSourced`] as a [`DynActor`].
pub struct Erased<A>(pub A);

impl<A: EventSourced> Erased<A> {
    fn state<'s>(&self, state: &'s AnyState) -> &'s A::State {
        state
            .downcast_ref()
            .expect("the runtime only passes this actor's own state")
    }

    fn invalid(&self, message: impl ToString) -> ActorError {
        ActorError::InvalidCommand {
            actor_type: self.0.name().into(),
            message: message.to_string(),
        }
    }

    fn corrupt(&self, what: &str, message: impl ToString) -> ActorError {
        ActorError::Corrupt {
            actor_type: self.0.name().into(),
            what: what.into(),
            message: message.to_string(),
        }
    }
}

impl<A: EventSourced> DynActor for Erased<A> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn initial_state(&self) -> AnyState {
        Box::new(A::State::default())
    }

    fn decode_state(&self, bytes: &[u8]) -> Result<AnyState, ActorError> {
        let state: A::State =
            serde_json::from_slice(bytes).map_err(|e| self.corrupt("snapshot", e))?;
        Ok(Box::new(state))
    }

    fn encode_state(&self, state: &AnyState) -> Vec<u8> {
        serde_json::to_vec(self.state(state)).expect("actor state serializes to JSON")
    }

    fn handle(
        &self,
        id: &str,
        state: &AnyState,
        command: &[u8],
    ) -> Result<(Vec<EncodedEvent>, Value), ActorError> {
        let command: A::Command = serde_json::from_slice(command).map_err(|e| self.invalid(e))?;
        let decision = self.0.handle(id, self.state(state), command)?;
        let events = decision
            .events
            .iter()
            .map(|event| split_event(event).map_err(|e| self.invalid(e)))
            .collect::<Result<_, _>>()?;
        Ok((events, decision.reply))
    }

    fn apply(&self, state: &mut AnyState, event_type: &str, data: &[u8]) -> Result<(), ActorError> {
        // `{"type": T, "data": D}` read straight from the stored type and
        // bytes, with no intermediate `Value` or document (replay folds
        // millions of these).
        let event: A::Event = crate::event_parts::from_parts(event_type, data)
            .map_err(|e| self.corrupt(event_type, e))?;
        let state = state
            .downcast_mut()
            .expect("the runtime only passes this actor's own state");
        self.0.apply(state, event);
        Ok(())
    }
}

/// `{"type": T, "data": D}` -> (T, bytes of D).
fn split_event<E: Serialize>(event: &E) -> Result<EncodedEvent, String> {
    match serde_json::to_value(event).map_err(|e| e.to_string())? {
        Value::Object(mut fields) => {
            let event_type = match fields.remove("type") {
                Some(Value::String(t)) => t,
                _ => return Err("events must serialize as {\"type\":..., \"data\":...}".into()),
            };
            let data = fields
                .remove("data")
                .unwrap_or(Value::Object(Default::default()));
            Ok(EncodedEvent {
                event_type,
                data: serde_json::to_vec(&data).map_err(|e| e.to_string())?,
            })
        }
        _ => Err("events must serialize as {\"type\":..., \"data\":...}".into()),
    }
}
