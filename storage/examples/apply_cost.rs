//! What the state machine's apply costs per event, on one `Store`, with no
//! network, no Raft and no other node: appends of `--events` events of 200
//! bytes of JSON (UUID v7 ids, like the client's) to a new stream each, in
//! entries of `--appends` appends, applied one entry per `apply` call, as
//! the harness's append workload has a partition leader do.
//!
//! The entries are built before the clock starts, so a run under callgrind
//! counts the apply alone with `--toggle-collect='*apply_entries*'`
//! (bench/README.md, "Profiling the apply"):
//!
//! ```text
//! cargo run --release -p cairn-storage --example apply_cost -- --events 100 --appends 64 --entries 50
//! valgrind --tool=callgrind --toggle-collect='*apply_entries*' \
//!     target/release/examples/apply_cost --events 100 --appends 64 --entries 50
//! ```

use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use cairn_storage::{Command, ExpectedVersion, NewEvent, Store, StreamAppend, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

/// The partition the entries are applied to.
const GROUP: u32 = 1;

struct Shape {
    events: usize,
    appends: usize,
    entries: usize,
}

fn parse_args() -> Result<Shape> {
    let mut shape = Shape {
        events: 100,
        appends: 64,
        entries: 50,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value: usize = args
            .next()
            .with_context(|| format!("{flag} needs a number"))?
            .parse()
            .with_context(|| format!("{flag} needs a whole number"))?;
        match flag.as_str() {
            "--events" => shape.events = value,
            "--appends" => shape.appends = value,
            "--entries" => shape.entries = value,
            other => bail!("unknown flag {other}: use --events, --appends or --entries"),
        }
    }
    if shape.events == 0 || shape.appends == 0 || shape.entries == 0 {
        bail!("--events, --appends and --entries must each be at least 1");
    }
    Ok(shape)
}

/// The harness's payload: `{"p":"xxx…"}`, 200 bytes.
fn payload() -> Bytes {
    Bytes::from(format!(r#"{{"p":"{}"}}"#, "x".repeat(192)))
}

fn entries(shape: &Shape) -> Vec<Entry<TypeConfig>> {
    let data = payload();
    (0..shape.entries)
        .map(|n| {
            let appends: Vec<StreamAppend> = (0..shape.appends)
                .map(|a| StreamAppend {
                    stream: format!("bench-{a}-{n}"),
                    expected: ExpectedVersion::Any,
                    events: (0..shape.events)
                        .map(|_| NewEvent {
                            id: uuid::Uuid::now_v7().to_string(),
                            event_type: "BenchEvent".to_owned(),
                            data: data.clone(),
                            metadata: Bytes::new(),
                            correlation_id: String::new(),
                            causation_id: String::new(),
                        })
                        .collect(),
                })
                .collect();
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), n as u64 + 1),
                payload: EntryPayload::Normal(Command::append(1_000 + n as i64, &appends)),
            }
        })
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let shape = parse_args()?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let mut sm = store.state_machine(GROUP)?;
    let entries = entries(&shape);
    let events = shape.entries * shape.appends * shape.events;

    let start = Instant::now();
    for entry in entries {
        sm.apply([entry]).await?;
    }
    let took = start.elapsed();
    println!(
        "{events} events in {} entries of {} appends of {}: {:.1} ms, {:.2} µs per event",
        shape.entries,
        shape.appends,
        shape.events,
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e6 / events as f64,
    );
    drop(sm);
    store.close(std::time::Duration::from_secs(10)).await?;
    Ok(())
}
