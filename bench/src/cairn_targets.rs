//! The Cairn workloads: [`CairnAppend`] (single events or batches to
//! distinct streams) and [`CairnAsk`] (`DEPOSIT` to `account` actors).

use anyhow::Context;
use cairn_client::{Client, EventData, ExpectedVersion};
use serde_json::{Value, json};

use crate::{Target, payload};

/// Workers sharing one client (one HTTP/2 connection per node).
pub const WORKERS_PER_CONNECTION: usize = 32;

/// `concurrency.div_ceil(32)` clients for `servers`, client `k` preferring
/// server `k mod n` (each client tries the list from its first entry), so
/// that the connections and the forwarding work are spread over the nodes.
async fn client_pool(servers: &[String], concurrency: usize) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::new();
    for k in 0..concurrency.div_ceil(WORKERS_PER_CONNECTION).max(1) {
        let mut rotated = servers.to_vec();
        rotated.rotate_left(k % servers.len());
        clients.push(Client::connect(&rotated.join(",")).await?);
    }
    Ok(clients)
}

/// Appends of `events_per_append` events of [`payload`] to a new stream
/// each time (`<prefix>-<worker>-<seq>`), with expected version `any`.
/// Acknowledged once committed by a majority and fsynced there.
pub struct CairnAppend {
    clients: Vec<Client>,
    prefix: String,
    events_per_append: usize,
    data: Value,
}

impl CairnAppend {
    /// Connections to `servers` for `concurrency` workers.
    pub async fn new(
        servers: &[String],
        concurrency: usize,
        events_per_append: usize,
        prefix: &str,
    ) -> anyhow::Result<CairnAppend> {
        Ok(CairnAppend {
            clients: client_pool(servers, concurrency).await?,
            prefix: prefix.to_string(),
            events_per_append,
            data: payload(),
        })
    }
}

impl Target for CairnAppend {
    fn items_per_op(&self) -> u64 {
        self.events_per_append as u64
    }

    async fn op(&self, worker: usize, seq: u64) -> anyhow::Result<()> {
        let client = &self.clients[worker % self.clients.len()];
        let stream = format!("{}-{worker}-{seq}", self.prefix);
        let events = (0..self.events_per_append)
            .map(|_| EventData::new("BenchEvent", self.data.clone()))
            .collect();
        client
            .append(&stream, events, ExpectedVersion::Any)
            .await
            .with_context(|| format!("appending to {stream}"))?;
        Ok(())
    }
}

/// `DEPOSIT {amount: 1}` asks, each worker to its own `account` actor
/// (`<prefix>-<worker>`, opened in [`Target::prepare`]). Every ask is a turn
/// that appends one event and replies once it is committed.
pub struct CairnAsk {
    clients: Vec<Client>,
    prefix: String,
    deposit: Value,
}

impl CairnAsk {
    /// Connections to `servers` for `concurrency` workers; pass one server to
    /// send every ask through one node.
    pub async fn new(
        servers: &[String],
        concurrency: usize,
        prefix: &str,
    ) -> anyhow::Result<CairnAsk> {
        Ok(CairnAsk {
            clients: client_pool(servers, concurrency).await?,
            prefix: prefix.to_string(),
            deposit: json!({ "type": "DEPOSIT", "amount": 1 }),
        })
    }

    fn account(&self, worker: usize) -> (&Client, String) {
        let client = &self.clients[worker % self.clients.len()];
        (client, format!("{}-{worker}", self.prefix))
    }
}

impl Target for CairnAsk {
    async fn prepare(&self, worker: usize) -> anyhow::Result<()> {
        let (client, id) = self.account(worker);
        client
            .ask("account", &id, &json!({ "type": "OPEN" }))
            .await
            .with_context(|| format!("opening account {id}"))?;
        Ok(())
    }

    async fn op(&self, worker: usize, _seq: u64) -> anyhow::Result<()> {
        let (client, id) = self.account(worker);
        client
            .ask("account", &id, &self.deposit)
            .await
            .with_context(|| format!("depositing to account {id}"))?;
        Ok(())
    }
}
