//! `cairn actor ask|state`.

use cairn_client::{AskIds, StateAt};
use clap::{Args, Subcommand};

use super::{ServerArgs, output, parse};

#[derive(Debug, Args)]
pub struct ActorArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: ActorCommand,
}

#[derive(Debug, Subcommand)]
pub enum ActorCommand {
    /// Send a command to an actor; prints {"reply":...,"version":N} once its
    /// events are committed.
    Ask {
        /// The actor type, e.g. `account` or `user`.
        #[arg(value_name = "TYPE")]
        actor_type: String,
        /// The actor id.
        id: String,
        /// The command: a JSON object with a "type", e.g. '{"type":"DEPOSIT","amount":10}'.
        #[arg(value_name = "JSON_COMMAND")]
        command: String,
        /// Correlation id for the events the command produces [default: the command id].
        #[arg(long, value_name = "ID")]
        correlation_id: Option<String>,
        /// The command's id: sending it again with the same id does not apply
        /// it twice (the reply then says "duplicate": true) [default: a new UUIDv7].
        #[arg(long, value_name = "ID")]
        command_id: Option<String>,
    },
    /// Print an actor's state: the current one, or as of a time or version.
    State {
        /// The actor type.
        #[arg(value_name = "TYPE")]
        actor_type: String,
        /// The actor id.
        id: String,
        /// The state from the events up to this time (ms since the Unix epoch).
        #[arg(long, value_name = "UNIX_MS", conflicts_with = "version")]
        at: Option<i64>,
        /// The state after the actor's first N events.
        #[arg(long, value_name = "N")]
        version: Option<u64>,
    },
}

pub async fn run(args: ActorArgs) -> anyhow::Result<()> {
    match args.command {
        ActorCommand::Ask {
            actor_type,
            id,
            command,
            correlation_id,
            command_id,
        } => {
            let command = parse::command(&command)?;
            let client = args.server.client().await?;
            let ids = AskIds {
                command_id: command_id.unwrap_or_default(),
                correlation_id: correlation_id.unwrap_or_default(),
            };
            let result = client.ask_with(&actor_type, &id, &command, ids).await?;
            output::json(&result)
        }
        ActorCommand::State {
            actor_type,
            id,
            at,
            version,
        } => {
            let at = match (at, version) {
                (Some(ms), _) => StateAt::Timestamp(ms),
                (None, Some(v)) => StateAt::Version(v),
                (None, None) => StateAt::Latest,
            };
            let client = args.server.client().await?;
            let result = client.state(&actor_type, &id, at).await?;
            output::json(&result.state)
        }
    }
}
