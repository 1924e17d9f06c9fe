//! A user-defined actor type registered with the node builder.
//!
//! Run a single node that knows `counter` besides the built-in types:
//!
//! ```text
//! cargo run -p cairn-node --example counter -- 127.0.0.1:7400 ./counter-data
//! cairn actor ask counter c1 '{"type":"ADD","by":5}'
//! cairn actor state counter c1
//! ```

use cairn_node::{Decision, EventSourced, NodeBuilder, Rejected, ServeConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Counts up, never past its limit.
struct Counter {
    limit: i64,
}

#[derive(Default, Serialize, Deserialize)]
struct CounterState {
    value: i64,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
enum CounterCommand {
    Add { by: i64 },
    Reset,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "SCREAMING_SNAKE_CASE")]
enum CounterEvent {
    Added { by: i64 },
    WasReset {},
}

impl EventSourced for Counter {
    type State = CounterState;
    type Command = CounterCommand;
    type Event = CounterEvent;

    fn name(&self) -> &'static str {
        "counter"
    }

    fn handle(
        &self,
        _id: &str,
        state: &CounterState,
        command: CounterCommand,
    ) -> Result<Decision<CounterEvent>, Rejected> {
        match command {
            CounterCommand::Add { by } if state.value + by > self.limit => Err(Rejected(format!(
                "adding {by} would pass the limit {}",
                self.limit
            ))),
            CounterCommand::Add { by } => Ok(Decision::emit(
                vec![CounterEvent::Added { by }],
                json!({ "value": state.value + by }),
            )),
            CounterCommand::Reset => Ok(Decision::emit(
                vec![CounterEvent::WasReset {}],
                json!({ "value": 0 }),
            )),
        }
    }

    fn apply(&self, state: &mut CounterState, event: CounterEvent) {
        match event {
            CounterEvent::Added { by } => state.value += by,
            CounterEvent::WasReset {} => state.value = 0,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:7400".into());
    let data_dir = args.next().unwrap_or_else(|| "./counter-data".into());

    let node = NodeBuilder::new(ServeConfig::single(&listen, data_dir))
        .register(Counter { limit: 1_000 })
        .start()
        .await?;
    println!(
        "serving on {} with actor types {:?}",
        node.addr(),
        node.runtime().registry().names()
    );
    tokio::signal::ctrl_c().await?;
    node.shutdown().await;
    Ok(())
}
