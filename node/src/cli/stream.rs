//! `cairn stream append|read|info|delete`.

use cairn_client::{Client, DeleteResult, ReadResult};
use clap::{Args, Subcommand};

use super::{ServerArgs, output, parse};

#[derive(Debug, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: StreamCommand,
}

#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Append events to a stream, all or nothing; prints where they landed.
    Append {
        /// The stream id.
        stream: String,
        /// Events as JSON: '{"type":"X","data":{...},"metadata":{...},"id":"..."}'
        /// (all but "type" optional; an id is generated when absent).
        #[arg(required = true, value_name = "JSON_EVENT")]
        events: Vec<String>,
        /// Append only if the stream is at this version: a number, `any` or `no-stream`.
        #[arg(long, value_name = "N|any|no-stream", allow_hyphen_values = true)]
        expected_version: Option<String>,
    },
    /// Print a stream's events.
    Read {
        /// The stream id.
        stream: String,
        /// The first version to print (1 = the start).
        #[arg(long, default_value_t = 1, value_name = "VERSION")]
        from: u64,
        /// Print at most this many events [default: all].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Print a stream's version, last event and deleted flags.
    Info {
        /// The stream id.
        stream: String,
    },
    /// Delete a stream: soft (it may be written again) or --hard (for good).
    Delete {
        /// The stream id.
        stream: String,
        /// Tombstone the stream: it can never be written again.
        #[arg(long)]
        hard: bool,
        /// Delete only if the stream is at this version: a number, `any` or `no-stream`.
        #[arg(long, value_name = "N|any|no-stream", allow_hyphen_values = true)]
        expected_version: Option<String>,
    },
}

pub async fn run(args: StreamArgs) -> anyhow::Result<()> {
    match args.command {
        StreamCommand::Append {
            stream,
            events,
            expected_version,
        } => {
            let expected = parse::expected_version(expected_version.as_deref())?;
            let events = events
                .iter()
                .enumerate()
                .map(|(i, text)| parse::event(text, i + 1))
                .collect::<Result<Vec<_>, _>>()?;
            let client = args.server.client().await?;
            output::json(&client.append(&stream, events, expected).await?)
        }
        StreamCommand::Read {
            stream,
            from,
            limit,
        } => {
            let client = args.server.client().await?;
            output::json(&read(&client, &stream, from, limit).await?)
        }
        StreamCommand::Info { stream } => {
            let client = args.server.client().await?;
            output::json(&client.info(&stream).await?)
        }
        StreamCommand::Delete {
            stream,
            hard,
            expected_version,
        } => {
            let expected = parse::expected_version(expected_version.as_deref())?;
            let client = args.server.client().await?;
            let version = client.delete(&stream, hard, expected).await?;
            output::json(&DeleteResult {
                stream,
                version,
                hard,
            })
        }
    }
}

/// Up to `limit` events (all when `None`) from version `from` on, reading
/// page after page.
async fn read(
    client: &Client,
    stream: &str,
    from: u64,
    limit: Option<u32>,
) -> anyhow::Result<ReadResult> {
    let mut result = client.read(stream, from, limit.unwrap_or(0)).await?;
    loop {
        let wanted = limit.map(|l| (l as usize).saturating_sub(result.events.len()));
        let next = match result.events.last() {
            Some(last) if last.version < result.stream_version && wanted != Some(0) => {
                last.version + 1
            }
            _ => break,
        };
        let page_limit = wanted.map_or(0, |w| u32::try_from(w).unwrap_or(u32::MAX));
        let page = client.read(stream, next, page_limit).await?;
        // Stop on an empty page or one that does not move forward.
        if page.events.first().is_none_or(|e| e.version < next) {
            break;
        }
        result.stream_version = page.stream_version;
        result.events.extend(page.events);
    }
    if let Some(limit) = limit {
        result.events.truncate(limit as usize);
    }
    Ok(result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn negative_expected_version_reaches_our_validation() {
        let cli = Cli::try_parse_from([
            "cairn",
            "stream",
            "append",
            "s",
            r#"{"type":"X"}"#,
            "--expected-version",
            "-1",
        ])
        .unwrap();
        let Command::Stream(StreamArgs {
            command:
                StreamCommand::Append {
                    expected_version,
                    events,
                    ..
                },
            ..
        }) = cli.command
        else {
            panic!("not stream append");
        };
        assert_eq!(events.len(), 1);
        let err = parse::expected_version(expected_version.as_deref()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --expected-version `-1`: use a version number >= 0, `any` or `no-stream`"
        );
    }
}
