//! Validating command-line arguments before anything is sent, with messages
//! that say what is wrong and how to fix it.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_client::{Checkpoint, EventData, ExpectedVersion};
use serde_json::Value;

/// A bad argument: `main` prints it and exits with status 2, as clap does.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `--expected-version`: a number >= 0, `any` or `no-stream`; absent means `any`.
pub fn expected_version(arg: Option<&str>) -> Result<ExpectedVersion, UsageError> {
    match arg {
        None => Ok(ExpectedVersion::Any),
        Some(text) => text
            .parse()
            .map_err(|why| UsageError(format!("invalid --expected-version `{text}`: {why}"))),
    }
}

/// A read-all checkpoint as `read-all` prints it: `p0:12,p1:7,...` or `start`.
pub fn checkpoint(text: &str) -> Result<Checkpoint, String> {
    text.parse()
}

/// A stream version (`flag` names the argument in the error).
pub fn version(text: &str, flag: &str) -> Result<u64, UsageError> {
    text.trim().parse().map_err(|_| {
        UsageError(format!(
            "invalid {flag} `{text}`: use a stream version number >= 0"
        ))
    })
}

/// The command argument of `cairn actor ask`: a JSON object with a string `type`.
pub fn command(text: &str) -> Result<Value, UsageError> {
    json_object(
        text,
        "the command argument",
        r#"'{"type":"DEPOSIT","amount":10}'"#,
    )
}

/// Event argument number `number` (from 1) of `cairn stream append`:
/// `{"type":"X","data":{...},"metadata":{...}?,"id":"..."?}`.
pub fn event(text: &str, number: usize) -> Result<EventData, UsageError> {
    let what = format!("event argument {number}");
    let value = json_object(
        text,
        &what,
        r#"'{"type":"ITEM_ADDED","data":{"sku":"a1"}}'"#,
    )?;
    if value.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(UsageError(format!(
            "{what}: \"metadata\" must be a JSON object, e.g. {{\"schema_version\":1}}"
        )));
    }
    serde_json::from_value(value).map_err(|e| UsageError(format!("{what}: {e}")))
}

/// `text` parsed as a JSON object with a non-empty string `type`; `what` names
/// the argument and `example` shows a good one in the error.
fn json_object(text: &str, what: &str, example: &str) -> Result<Value, UsageError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        UsageError(format!(
            "{what} is not valid JSON: {e} (quote the whole argument for the shell, e.g. {example})"
        ))
    })?;
    if !value.is_object() {
        return Err(UsageError(format!(
            "{what} must be a JSON object with a \"type\", e.g. {example}"
        )));
    }
    match value.get("type") {
        Some(Value::String(t)) if !t.is_empty() => Ok(value),
        Some(_) => Err(UsageError(format!(
            "{what}: \"type\" must be a non-empty string, e.g. {example}"
        ))),
        None => Err(UsageError(format!(
            "{what} has no \"type\" field, e.g. {example}"
        ))),
    }
}

/// A `host:port` address, as `--listen`, `--advertise` and `--peers` take.
pub fn host_port(text: &str) -> Result<String, String> {
    let valid = text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok()
    });
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!("`{text}` is not host:port, e.g. 127.0.0.1:7400"))
    }
}

/// `--peers 1=host:port,2=host:port,...`: every member of the initial cluster.
pub fn peers(text: &str) -> Result<BTreeMap<u64, String>, UsageError> {
    let mut peers = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || {
            UsageError(format!(
                "invalid --peers entry `{entry}`: expected id=host:port, e.g. 1=127.0.0.1:7401"
            ))
        };
        let (id, address) = entry.split_once('=').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        let address = host_port(address.trim()).map_err(|_| bad())?;
        if id == 0 {
            return Err(UsageError(format!(
                "invalid --peers entry `{entry}`: node ids start at 1"
            )));
        }
        if let Some((other, _)) = peers.iter().find(|(_, a)| **a == address) {
            return Err(UsageError(format!(
                "--peers gives address {address} to both node {other} and node {id}; each node needs its own"
            )));
        }
        if peers.insert(id, address).is_some() {
            return Err(UsageError(format!("node id {id} appears twice in --peers")));
        }
    }
    if peers.is_empty() {
        return Err(UsageError(
            "--peers is empty: expected id=host:port[,id=host:port...], e.g. 1=127.0.0.1:7401,2=127.0.0.1:7402".into(),
        ));
    }
    Ok(peers)
}

/// A positive number of seconds, e.g. `10` or `0.5`.
pub fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 => Duration::try_from_secs_f64(s).map_err(|e| e.to_string()),
        _ => Err(format!("`{text}` is not a positive number of seconds")),
    }
}

/// A duration in whole milliseconds, at least 1 (a positive duration never
/// becomes "no time at all").
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn max_age_in_millis() {
        assert_eq!(millis(seconds("86400").unwrap()), 86_400_000);
        assert_eq!(millis(seconds("0.0001").unwrap()), 1);
        assert!(seconds("0").is_err());
    }

    #[test]
    fn expected_versions() {
        assert_eq!(expected_version(None).unwrap(), ExpectedVersion::Any);
        assert_eq!(
            expected_version(Some("0")).unwrap(),
            ExpectedVersion::Exact(0)
        );
        assert_eq!(
            expected_version(Some("17")).unwrap(),
            ExpectedVersion::Exact(17)
        );
        assert_eq!(expected_version(Some("any")).unwrap(), ExpectedVersion::Any);
        assert_eq!(
            expected_version(Some("no-stream")).unwrap(),
            ExpectedVersion::NoStream
        );
        assert_eq!(
            expected_version(Some("-1")).unwrap_err().to_string(),
            "invalid --expected-version `-1`: use a version number >= 0, `any` or `no-stream`"
        );
        assert!(expected_version(Some("latest")).is_err());
    }

    #[test]
    fn commands() {
        assert_eq!(
            command(r#"{"type":"OPEN"}"#).unwrap(),
            json!({"type": "OPEN"})
        );
        let err = command("{type:OPEN}").unwrap_err().to_string();
        assert!(
            err.starts_with(
                "the command argument is not valid JSON: key must be a string at line 1 column 2"
            ),
            "{err}"
        );
        let err = command(r#"["OPEN"]"#).unwrap_err().to_string();
        assert!(err.contains("must be a JSON object"), "{err}");
        let err = command(r#"{"amount":1}"#).unwrap_err().to_string();
        assert!(err.contains("has no \"type\""), "{err}");
        let err = command(r#"{"type":3}"#).unwrap_err().to_string();
        assert!(err.contains("\"type\" must be a non-empty string"), "{err}");
    }

    #[test]
    fn events() {
        let e = event(
            r#"{"type":"X","data":{"a":1},"metadata":{"schema_version":2},"id":"e-1"}"#,
            1,
        )
        .unwrap();
        assert_eq!(e.event_type, "X");
        assert_eq!(e.data, json!({"a": 1}));
        assert_eq!(e.metadata, Some(json!({"schema_version": 2})));
        assert_eq!(e.id.as_deref(), Some("e-1"));
        assert_eq!(event(r#"{"type":"X"}"#, 1).unwrap().id, None);

        let err = event(r#"{"type":"X","data":{"a":1}"#, 2)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("event argument 2 is not valid JSON: EOF while parsing an object at line 1 column 26"), "{err}");
        let err = event(r#"{"data":{}}"#, 1).unwrap_err().to_string();
        assert!(err.starts_with("event argument 1 has no \"type\""), "{err}");
        let err = event(r#"{"type":"X","metadata":[1]}"#, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"metadata\" must be a JSON object"), "{err}");
        let err = event(r#"{"type":"X","dat":{}}"#, 3)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("event argument 3: unknown field `dat`"),
            "{err}"
        );
        let err = event(r#"{"type":"X","id":5}"#, 1).unwrap_err().to_string();
        assert!(
            err.starts_with("event argument 1: invalid type: integer `5`, expected a string"),
            "{err}"
        );
    }

    #[test]
    fn checkpoints_and_versions() {
        assert_eq!(checkpoint("p0:3,p2:1").unwrap().positions(), [3, 0, 1]);
        assert!(checkpoint("start").unwrap().is_start());
        assert!(
            checkpoint("p0=3")
                .unwrap_err()
                .contains("p<partition>:<position>")
        );
        assert_eq!(version("7", "--from").unwrap(), 7);
        assert_eq!(
            version("x", "--from").unwrap_err().to_string(),
            "invalid --from `x`: use a stream version number >= 0"
        );
    }

    #[test]
    fn peer_lists() {
        let p = peers("1=127.0.0.1:7401, 2=127.0.0.1:7402,3=h:7403").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[&2], "127.0.0.1:7402");
        for (bad, want) in [
            (
                "1=a:1,2",
                "invalid --peers entry `2`: expected id=host:port",
            ),
            (
                "x=a:1",
                "invalid --peers entry `x=a:1`: expected id=host:port",
            ),
            ("1=a", "invalid --peers entry `1=a`: expected id=host:port"),
            ("1=a:99999", "expected id=host:port"),
            ("0=a:1", "node ids start at 1"),
            ("1=a:1,1=b:2", "node id 1 appears twice in --peers"),
            ("1=a:1,2=a:1", "gives address a:1 to both node 1 and node 2"),
            (",", "--peers is empty"),
        ] {
            let err = peers(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn addresses_and_seconds() {
        assert!(host_port("0.0.0.0:7400").is_ok());
        assert!(host_port("[::1]:7400").is_ok());
        assert!(host_port("7400").is_err());
        assert!(host_port("http://a:1").is_err());
        assert_eq!(seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert!(seconds("0").is_err() && seconds("-2").is_err() && seconds("x").is_err());
    }
}
