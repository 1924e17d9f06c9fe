//! The seed's `user` actor: create, update, delete, log in.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::actor::{Decision, EventSourced, Rejected};

/// The `user` actor type.
pub struct UserActor;

/// State of a user: `{userId,name,email,isActive,loginAttempts,lastLogin}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserState {
    pub user_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub is_active: bool,
    pub login_attempts: u64,
    /// Time of the last successful login, ms since the epoch.
    pub last_login: Option<i64>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum UserCommand {
    #[serde(rename_all = "camelCase")]
    CreateUser {
        user_id: String,
        name: String,
        email: String,
    },
    UpdateUser {
        changes: UserChanges,
    },
    DeleteUser,
    Login {
        credentials: Credentials,
    },
}

/// Fields `UPDATE_USER` may change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Deserialize)]
pub struct Credentials {
    pub email: String,
    #[allow(dead_code)]
    #[serde(default)]
    pub password: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserEvent {
    #[serde(rename_all = "camelCase")]
    UserCreated {
        user_id: String,
        name: String,
        email: String,
    },
    UserUpdated {
        changes: UserChanges,
    },
    UserDeleted {},
    LoginAttempted {
        success: bool,
        timestamp: i64,
    },
}

impl EventSourced for UserActor {
    type State = UserState;
    type Command = UserCommand;
    type Event = UserEvent;

    fn name(&self) -> &'static str {
        "user"
    }

    fn handle(
        &self,
        id: &str,
        state: &UserState,
        command: UserCommand,
    ) -> Result<Decision<UserEvent>, Rejected> {
        let exists = state.user_id.is_some();
        match command {
            UserCommand::CreateUser {
                user_id,
                name,
                email,
            } => {
                if exists {
                    return Err(Rejected(format!("user `{id}` already exists")));
                }
                if user_id != id {
                    return Err(Rejected(format!(
                        "userId `{user_id}` does not match the actor id `{id}`"
                    )));
                }
                require_email(&email)?;
                let event = UserEvent::UserCreated {
                    user_id,
                    name,
                    email,
                };
                Ok(after(state, vec![event], self))
            }
            UserCommand::UpdateUser { changes } => {
                require_active(id, state)?;
                if let Some(email) = &changes.email {
                    require_email(email)?;
                }
                if changes.name.is_none() && changes.email.is_none() {
                    return Err(Rejected(
                        "UPDATE_USER needs at least one of `changes.name`, `changes.email`".into(),
                    ));
                }
                Ok(after(state, vec![UserEvent::UserUpdated { changes }], self))
            }
            UserCommand::DeleteUser => {
                require_active(id, state)?;
                Ok(after(state, vec![UserEvent::UserDeleted {}], self))
            }
            UserCommand::Login { credentials } => {
                if !exists {
                    return Err(Rejected(format!("user `{id}` does not exist")));
                }
                let success =
                    state.is_active && state.email.as_deref() == Some(credentials.email.as_str());
                let timestamp = cairn_cluster::now_ms();
                let event = UserEvent::LoginAttempted { success, timestamp };
                Ok(Decision::emit(vec![event], json!({ "success": success })))
            }
        }
    }

    fn apply(&self, state: &mut UserState, event: UserEvent) {
        match event {
            UserEvent::UserCreated {
                user_id,
                name,
                email,
            } => {
                state.user_id = Some(user_id);
                state.name = Some(name);
                state.email = Some(email);
                state.is_active = true;
            }
            UserEvent::UserUpdated { changes } => {
                if let Some(name) = changes.name {
                    state.name = Some(name);
                }
                if let Some(email) = changes.email {
                    state.email = Some(email);
                }
            }
            UserEvent::UserDeleted {} => state.is_active = false,
            UserEvent::LoginAttempted { success, timestamp } => {
                state.login_attempts += 1;
                if success {
                    state.last_login = Some(timestamp);
                }
            }
        }
    }
}

/// Reply with the state the events lead to.
fn after(state: &UserState, events: Vec<UserEvent>, actor: &UserActor) -> Decision<UserEvent> {
    let mut next = state.clone();
    for event in events.iter().cloned() {
        actor.apply(&mut next, event);
    }
    let reply: Value = serde_json::to_value(&next).expect("user state serializes");
    Decision::emit(events, reply)
}

fn require_active(id: &str, state: &UserState) -> Result<(), Rejected> {
    match (&state.user_id, state.is_active) {
        (None, _) => Err(Rejected(format!("user `{id}` does not exist"))),
        (Some(_), false) => Err(Rejected(format!("user `{id}` is deleted"))),
        _ => Ok(()),
    }
}

fn require_email(email: &str) -> Result<(), Rejected> {
    if email.contains('@') {
        Ok(())
    } else {
        Err(Rejected(format!("`{email}` is not an email address")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::{DynActor, Erased};

    fn run(
        actor: &Erased<UserActor>,
        state: &mut crate::actor::AnyState,
        command: Value,
    ) -> Result<Value, String> {
        let (events, reply) = actor
            .handle("alice", state, &serde_json::to_vec(&command).unwrap())
            .map_err(|e| e.to_string())?;
        for e in events {
            actor.apply(state, &e.event_type, &e.data).unwrap();
        }
        Ok(reply)
    }

    #[test]
    fn the_seed_scenario() {
        let actor = Erased(UserActor);
        let mut state = actor.initial_state();
        run(&actor, &mut state, json!({"type":"CREATE_USER","userId":"alice","name":"Alice","email":"alice@example.com"})).unwrap();
        run(
            &actor,
            &mut state,
            json!({"type":"UPDATE_USER","changes":{"name":"Alice B"}}),
        )
        .unwrap();
        assert_eq!(
            run(
                &actor,
                &mut state,
                json!({"type":"LOGIN","credentials":{"email":"alice@example.com","password":"x"}})
            )
            .unwrap(),
            json!({"success": true})
        );
        assert_eq!(
            run(
                &actor,
                &mut state,
                json!({"type":"LOGIN","credentials":{"email":"bob@example.com","password":"x"}})
            )
            .unwrap(),
            json!({"success": false})
        );
        let reply = run(&actor, &mut state, json!({"type":"DELETE_USER"})).unwrap();
        assert_eq!(reply["name"], "Alice B");
        assert_eq!(reply["isActive"], false);
        assert_eq!(reply["loginAttempts"], 2);
        assert!(reply["lastLogin"].is_i64());
    }

    #[test]
    fn bad_commands_are_refused_with_a_reason() {
        let actor = Erased(UserActor);
        let mut state = actor.initial_state();
        let err = run(
            &actor,
            &mut state,
            json!({"type":"CREATE_USER","userId":"alice","name":"A"}),
        )
        .unwrap_err();
        assert!(err.contains("missing field `email`"), "{err}");
        let err = run(&actor, &mut state, json!({"type":"FLY"})).unwrap_err();
        assert!(err.contains("unknown variant `FLY`"), "{err}");
        let err = run(
            &actor,
            &mut state,
            json!({"type":"UPDATE_USER","changes":{"name":"B"}}),
        )
        .unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }
}
