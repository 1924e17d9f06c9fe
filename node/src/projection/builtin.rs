//! The built-in projections of the seed: `user-analytics` and `users-by-email`.

use cairn_storage::RecordedEvent;
use serde_json::{Value, json};

use super::{Projection, ProjectionError, ReadModel};

/// Counts users and logins: `{"totalUsers","activeUsers","totalLogins","failedLogins"}`.
/// `totalLogins` counts every login attempt, `failedLogins` the failed ones.
pub struct UserAnalytics;

/// Both built-in projections read the `user` actors' streams only.
fn is_user_stream(stream: &str) -> bool {
    stream.starts_with("user-")
}

const COUNTERS: [&str; 4] = ["totalUsers", "activeUsers", "totalLogins", "failedLogins"];

impl Projection for UserAnalytics {
    fn name(&self) -> &'static str {
        "user-analytics"
    }

    fn accepts(&self, event: &RecordedEvent) -> bool {
        is_user_stream(&event.stream)
    }

    fn accepts_stream(&self, stream: &str) -> bool {
        is_user_stream(stream)
    }

    fn apply(
        &self,
        event: &RecordedEvent,
        model: &mut ReadModel<'_>,
    ) -> Result<(), ProjectionError> {
        match event.event_type.as_str() {
            "USER_CREATED" => {
                model.add("totalUsers", 1)?;
                model.add("activeUsers", 1)
            }
            "USER_DELETED" => model.add("activeUsers", -1),
            "LOGIN_ATTEMPTED" => {
                model.add("totalLogins", 1)?;
                let data: Value = serde_json::from_slice(&event.data).unwrap_or(Value::Null);
                if data["success"] == Value::Bool(true) {
                    Ok(())
                } else {
                    model.add("failedLogins", 1)
                }
            }
            _ => Ok(()),
        }
    }

    fn query(&self, model: &ReadModel<'_>, _args: &Value) -> Result<Value, ProjectionError> {
        let mut counts = serde_json::Map::new();
        for counter in COUNTERS {
            counts.insert(
                counter.into(),
                model.get(counter)?.unwrap_or(Value::from(0)),
            );
        }
        Ok(Value::Object(counts))
    }

    fn combine(&self, parts: Vec<Value>, _args: &Value) -> Result<Value, ProjectionError> {
        let mut totals = serde_json::Map::new();
        for counter in COUNTERS {
            let sum: i64 = parts.iter().map(|p| p[counter].as_i64().unwrap_or(0)).sum();
            totals.insert(counter.into(), Value::from(sum));
        }
        Ok(Value::Object(totals))
    }
}

/// Finds a user by email: `{"email": ...}` -> `{"email","userId","name"}`.
pub struct UsersByEmail;

impl Projection for UsersByEmail {
    fn name(&self) -> &'static str {
        "users-by-email"
    }

    fn accepts(&self, event: &RecordedEvent) -> bool {
        is_user_stream(&event.stream)
    }

    fn accepts_stream(&self, stream: &str) -> bool {
        is_user_stream(stream)
    }

    fn apply(
        &self,
        event: &RecordedEvent,
        model: &mut ReadModel<'_>,
    ) -> Result<(), ProjectionError> {
        let data: Value = serde_json::from_slice(&event.data).unwrap_or(Value::Null);
        let user_key = format!("user/{}", event.stream);
        match event.event_type.as_str() {
            "USER_CREATED" => {
                let (Some(email), Some(user_id)) =
                    (data["email"].as_str(), data["userId"].as_str())
                else {
                    return Ok(());
                };
                let entry = json!({"userId": user_id, "name": data["name"], "email": email});
                model.put(format!("email/{email}"), entry.clone());
                model.put(user_key, entry);
            }
            "USER_UPDATED" => {
                let Some(mut entry) = model.get(&user_key)? else {
                    return Ok(());
                };
                if let Some(name) = data["changes"]["name"].as_str() {
                    entry["name"] = Value::from(name);
                }
                if let Some(email) = data["changes"]["email"].as_str() {
                    if let Some(old) = entry["email"].as_str() {
                        model.delete(format!("email/{old}"));
                    }
                    entry["email"] = Value::from(email);
                }
                if let Some(email) = entry["email"].as_str() {
                    model.put(format!("email/{email}"), entry.clone());
                }
                model.put(user_key, entry);
            }
            "USER_DELETED" => {
                if let Some(entry) = model.get(&user_key)? {
                    if let Some(email) = entry["email"].as_str() {
                        model.delete(format!("email/{email}"));
                    }
                    model.delete(user_key);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn query(&self, model: &ReadModel<'_>, args: &Value) -> Result<Value, ProjectionError> {
        let email = args["email"].as_str().ok_or_else(|| {
            ProjectionError::BadQuery(r#"users-by-email needs {"email": "<address>"}"#.into())
        })?;
        Ok(model.get(&format!("email/{email}"))?.unwrap_or(Value::Null))
    }

    fn combine(&self, parts: Vec<Value>, args: &Value) -> Result<Value, ProjectionError> {
        parts.into_iter().find(|p| !p.is_null()).ok_or_else(|| {
            ProjectionError::NotFound(format!("no active user has email {}", args["email"]))
        })
    }
}
