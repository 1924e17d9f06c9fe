//! `cairn query <projection> ['<json>']` and `cairn projection status|reset`.

use clap::{Args, Subcommand};

use serde_json::Value;

use super::{ServerArgs, UsageError, output};

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The projection (read model) to ask, e.g. `user-analytics`, `users-by-email`.
    pub projection: String,
    /// The query's arguments as a JSON object, e.g. '{"email":"alice@example.com"}'.
    pub args: Option<String>,
}

pub async fn run_query(args: QueryArgs) -> anyhow::Result<()> {
    let query = match &args.args {
        Some(text) => query_arguments(text)?,
        None => serde_json::json!({}),
    };
    let result = args
        .server
        .client()
        .await?
        .query(&args.projection, &query)
        .await?;
    output::json(&result)
}

#[derive(Debug, Args)]
pub struct ProjectionArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: ProjectionCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Every projection's checkpoint and lag, per partition and node.
    Status,
    /// Rebuild a projection from the start of every partition log, on every node.
    Reset {
        /// The projection to rebuild.
        name: String,
    },
}

pub async fn run_projection(args: ProjectionArgs) -> anyhow::Result<()> {
    let client = args.server.client().await?;
    match args.command {
        ProjectionCommand::Status => output::json(&client.projection_status().await?),
        ProjectionCommand::Reset { name } => {
            let nodes = client.reset_projection(&name).await?;
            output::json(&serde_json::json!({ "projection": name, "reset": true, "nodes": nodes }))
        }
    }
}

/// The query's arguments: a JSON object.
fn query_arguments(text: &str) -> Result<Value, UsageError> {
    let example = r#"'{"email":"alice@example.com"}'"#;
    match serde_json::from_str::<Value>(text) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err(UsageError(format!(
            "the query arguments must be a JSON object, e.g. {example}"
        ))),
        Err(e) => Err(UsageError(format!(
            "the query arguments are not valid JSON: {e} (quote the whole argument for the shell, e.g. {example})"
        ))),
    }
}
