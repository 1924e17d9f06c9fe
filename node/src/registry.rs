//! The actor types a node knows, by name.

use std::collections::HashMap;
use std::sync::Arc;

use crate::actor::{DynActor, Erased, EventSourced};
use crate::actors::{AccountActor, UserActor};
use crate::upcast::Upcasters;

/// Actor types by name, each with its snapshot interval.
#[derive(Clone)]
pub struct Registry {
    types: HashMap<&'static str, RegisteredType>,
    default_snapshot_every: u64,
    upcasters: Arc<Upcasters>,
}

/// One registered actor type.
#[derive(Clone)]
pub struct RegisteredType {
    pub actor: Arc<dyn DynActor>,
    /// An actor snapshot is replicated every this many events.
    pub snapshot_every: u64,
}

impl Registry {
    /// The built-in types (`user`, `account`), snapshotting every
    /// `snapshot_every` events unless a type says otherwise.
    pub fn with_builtins(snapshot_every: u64) -> Registry {
        let mut registry = Registry {
            types: HashMap::new(),
            default_snapshot_every: snapshot_every,
            upcasters: Arc::new(Upcasters::builtin()),
        };
        registry.register(UserActor);
        registry.register(AccountActor);
        registry
    }

    /// Adds (or replaces) an actor type with the default snapshot interval.
    pub fn register<A: EventSourced>(&mut self, actor: A) {
        let every = self.default_snapshot_every;
        self.register_with_snapshots(actor, every);
    }

    /// Adds (or replaces) an actor type that snapshots every `snapshot_every` events.
    pub fn register_with_snapshots<A: EventSourced>(&mut self, actor: A, snapshot_every: u64) {
        let name = actor.name();
        let registered = RegisteredType {
            actor: Arc::new(Erased(actor)),
            snapshot_every: snapshot_every.max(1),
        };
        self.types.insert(name, registered);
    }

    /// Registers an upcaster turning `event_type` events of schema version
    /// `from` into version `from + 1` (see [`Upcasters`]).
    pub fn register_upcaster(
        &mut self,
        event_type: &str,
        from: u64,
        upcast: impl Fn(serde_json::Value) -> serde_json::Value + Send + Sync + 'static,
    ) {
        Arc::make_mut(&mut self.upcasters).register(event_type, from, upcast);
    }

    /// The upcasters every read of events goes through.
    pub fn upcasters(&self) -> &Arc<Upcasters> {
        &self.upcasters
    }

    /// The type called `name`.
    pub fn get(&self, name: &str) -> Option<&RegisteredType> {
        self.types.get(name)
    }

    /// Names of all registered types, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.types.keys().copied().collect();
        names.sort_unstable();
        names
    }
}
