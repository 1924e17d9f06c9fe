//! Printing results on stdout. A closed pipe (`cairn ... | head`) is not an error.

use std::io::{ErrorKind, Write};

use serde::Serialize;

/// Prints `value` as one pretty-printed JSON document.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    line(&serde_json::to_string_pretty(value)?)
}

/// Prints `value` as one compact JSON line.
pub fn json_line<T: Serialize>(value: &T) -> anyhow::Result<()> {
    line(&serde_json::to_string(value)?)
}

/// Prints one line and flushes it, so progress shows while a command runs.
pub fn line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
