//! `cairn stream append|read|info|delete|set-metadata|read-all|subscribe`.

use cairn_client::{
    Checkpoint, Client, DeleteResult, EventFilter, ReadAll, ReadAllResult, ReadResult,
    StreamMetadataResult, SubscribeTo,
};
use clap::{Args, Subcommand};
use tokio_stream::StreamExt;

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
    /// Print a stream's version, last event, deleted flags and retention
    /// (maxCount, maxAgeMs; null = no limit).
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
    /// Set a stream's retention, replacing what was set before (a limit not
    /// given is removed): older events stop being readable and are purged.
    /// An actor stream keeps every event after its newest snapshot.
    SetMetadata {
        /// The stream id.
        stream: String,
        /// Keep only the newest N events.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max_count: Option<u64>,
        /// Keep only events at most this many seconds old (e.g. 86400 or 0.5).
        #[arg(long, value_name = "SECONDS", value_parser = parse::seconds)]
        max_age: Option<std::time::Duration>,
    },
    /// Print every stream's events in (timestamp, partition, position) order,
    /// with the checkpoint to continue from: {"events":[...],"checkpoint":"...","end":...}.
    ReadAll {
        /// Continue after this checkpoint, as printed by an earlier read-all
        /// (e.g. p0:12,p1:7; `start` = the beginning).
        #[arg(long, value_name = "CHECKPOINT", value_parser = parse::checkpoint)]
        from: Option<Checkpoint>,
        /// Skip events older than this time (ms since the Unix epoch).
        #[arg(long, value_name = "MS", allow_hyphen_values = true)]
        from_timestamp: Option<i64>,
        /// Print at most this many events [default: 1000]; "end": true says
        /// there were no more.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Print a stream's events (or every stream's, with --all) as they are
    /// written, one JSON object per line, after those already there; runs
    /// until interrupted (Ctrl-C) or --count events.
    Subscribe {
        /// The stream id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        stream: Option<String>,
        /// Every stream; each line then carries the checkpoint to resume from.
        #[arg(long)]
        all: bool,
        /// Where to start: a stream version (default 1), or with --all a
        /// checkpoint printed earlier (default: the beginning).
        #[arg(long, value_name = "VERSION|CHECKPOINT")]
        from: Option<String>,
        /// With --all: skip events older than this time (ms since the Unix epoch).
        #[arg(
            long,
            value_name = "MS",
            conflicts_with = "stream",
            allow_hyphen_values = true
        )]
        from_timestamp: Option<i64>,
        /// Exit after printing this many events.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

/// Which events `read-all` and `subscribe` print.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only events of this type (repeat for several).
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Only events of streams whose id starts with this, e.g. user- (repeat for several).
    #[arg(long = "prefix", value_name = "PREFIX")]
    prefixes: Vec<String>,
}

impl FilterArgs {
    fn filter(self) -> EventFilter {
        EventFilter {
            types: self.types,
            stream_prefixes: self.prefixes,
        }
    }
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
        StreamCommand::SetMetadata {
            stream,
            max_count,
            max_age,
        } => {
            let max_age_ms = max_age.map(parse::millis);
            let client = args.server.client().await?;
            let version = client
                .set_stream_metadata(&stream, max_count, max_age_ms)
                .await?;
            output::json(&StreamMetadataResult {
                stream,
                version,
                max_count,
                max_age_ms,
            })
        }
        StreamCommand::ReadAll {
            from,
            from_timestamp,
            limit,
            filter,
        } => {
            let read = ReadAll {
                from: from.unwrap_or_default(),
                from_timestamp,
                limit: limit.unwrap_or(DEFAULT_READ_ALL_LIMIT),
                filter: filter.filter(),
            };
            let client = args.server.client().await?;
            output::json(&read_all(&client, read).await?)
        }
        StreamCommand::Subscribe {
            stream,
            all,
            from,
            from_timestamp,
            count,
            filter,
        } => {
            let to = match (stream, all) {
                (Some(stream), false) => SubscribeTo::stream(
                    stream,
                    parse::version(from.as_deref().unwrap_or("1"), "--from")?,
                ),
                _ => SubscribeTo::All {
                    from: match from.as_deref() {
                        Some(text) => parse::checkpoint(text)
                            .map_err(|why| parse::UsageError(format!("invalid --from: {why}")))?,
                        None => Checkpoint::start(),
                    },
                    from_timestamp,
                },
            };
            let client = args.server.client().await?;
            let mut subscription = client.subscribe(to, filter.filter()).await?;
            let mut printed = 0;
            while count.is_none_or(|n| printed < n) {
                let Some(event) = subscription.next().await else {
                    break;
                };
                output::json_line(&event?)?;
                printed += 1;
            }
            Ok(())
        }
    }
}

/// Events `read-all` prints when no --limit is given.
const DEFAULT_READ_ALL_LIMIT: u32 = 1000;

/// Up to `read.limit` events of every stream after `read.from`, reading page
/// after page (a page may come back short of the limit before the end).
async fn read_all(client: &Client, mut read: ReadAll) -> anyhow::Result<ReadAllResult> {
    let limit = read.limit as usize;
    let mut result = client.read_all(&read).await?;
    while !result.end && result.events.len() < limit {
        read.from = result.checkpoint.clone();
        read.limit = u32::try_from(limit - result.events.len()).unwrap_or(u32::MAX);
        let page = client.read_all(&read).await?;
        if page.events.is_empty() && page.checkpoint == result.checkpoint {
            break; // no progress; print what there is
        }
        result.events.extend(page.events);
        result.checkpoint = page.checkpoint;
        result.end = page.end;
    }
    Ok(result)
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
