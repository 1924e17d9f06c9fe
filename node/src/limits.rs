//! Input limits and the checks that enforce them before anything is written.

/// Longest stream id, in bytes.
pub const MAX_STREAM_ID_BYTES: usize = 256;
/// Longest actor id, in bytes (its stream id `<type>-<id>` must fit too).
pub const MAX_ACTOR_ID_BYTES: usize = 200;
/// Largest event (data + metadata) or command, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Most events in one append.
pub const MAX_EVENTS_PER_APPEND: usize = 10_000;
/// Largest gRPC message a node accepts (a batch of events).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Why an input was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// A stream id is 1..=256 bytes of UTF-8 without control characters.
pub fn check_stream_id(stream: &str) -> Result<(), InvalidInput> {
    if stream.is_empty() {
        return Err(InvalidInput(
            "stream id is empty; give a stream name such as `orders-42`".into(),
        ));
    }
    if stream.len() > MAX_STREAM_ID_BYTES {
        return Err(InvalidInput(format!(
            "stream id is {} bytes; the limit is {MAX_STREAM_ID_BYTES}",
            stream.len()
        )));
    }
    if stream.chars().any(char::is_control) {
        return Err(InvalidInput("stream id contains control characters".into()));
    }
    Ok(())
}

/// An actor id is 1..=200 bytes without control characters.
pub fn check_actor_id(id: &str) -> Result<(), InvalidInput> {
    if id.is_empty() {
        return Err(InvalidInput("actor id is empty".into()));
    }
    if id.len() > MAX_ACTOR_ID_BYTES {
        return Err(InvalidInput(format!(
            "actor id is {} bytes; the limit is {MAX_ACTOR_ID_BYTES}",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(InvalidInput("actor id contains control characters".into()));
    }
    Ok(())
}

/// A payload (`what` names it in the error) within the size limit.
pub fn check_size(what: &str, bytes: &[u8]) -> Result<(), InvalidInput> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(InvalidInput(format!(
            "{what} is {} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes (1 MiB)",
            bytes.len()
        )));
    }
    Ok(())
}

/// A JSON payload within the size limit, parsed.
pub fn check_json(what: &str, bytes: &[u8]) -> Result<serde_json::Value, InvalidInput> {
    check_size(what, bytes)?;
    serde_json::from_slice(bytes).map_err(|e| not_json(what, e))
}

/// Longest command, correlation or causation id, in bytes.
pub const MAX_METADATA_ID_BYTES: usize = 256;

/// A command, correlation or causation id: empty (the server picks one) or
/// up to 256 bytes without control characters.
pub fn check_metadata_id(what: &str, id: &str) -> Result<(), InvalidInput> {
    if id.len() > MAX_METADATA_ID_BYTES {
        return Err(InvalidInput(format!(
            "{what} is {} bytes; the limit is {MAX_METADATA_ID_BYTES}",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(InvalidInput(format!("{what} contains control characters")));
    }
    Ok(())
}

/// A JSON payload within the size limit, checked without building it (for
/// data that is stored as given).
pub fn check_json_syntax(what: &str, bytes: &[u8]) -> Result<(), InvalidInput> {
    check_size(what, bytes)?;
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(drop)
        .map_err(|e| not_json(what, e))
}

fn not_json(what: &str, e: serde_json::Error) -> InvalidInput {
    InvalidInput(format!("{what} is not valid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced_with_reasons() {
        assert!(check_stream_id("a").is_ok());
        assert!(check_stream_id("").unwrap_err().0.contains("empty"));
        assert!(
            check_stream_id(&"x".repeat(257))
                .unwrap_err()
                .0
                .contains("limit is 256")
        );
        assert!(
            check_json("command", b"{")
                .unwrap_err()
                .0
                .contains("not valid JSON")
        );
        let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES));
        assert!(
            check_json("event data", big.as_bytes())
                .unwrap_err()
                .0
                .contains("1 MiB")
        );
    }
}
