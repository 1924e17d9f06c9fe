//! The Cairn workloads: [`CairnAppend`] (single events or batches to
//! distinct streams), [`CairnHotStream`] (one stream, exact expected
//! versions), [`CairnAsk`] (`BALANCE` to `account` actors) and
//! [`CairnUserAsk`] (`LOGIN` and `UPDATE_USER` to `user` actors).

use anyhow::Context;
use cairn_client::{Client, Error, EventData, ExpectedVersion};
use serde_json::{Value, json};

use crate::hot::HotStream;
use crate::{Target, payload};

/// Workers sharing one client (one HTTP/2 connection per node).
pub const WORKERS_PER_CONNECTION: usize = 32;

/// `concurrency.div_ceil(32)` clients for `servers`, client `k` preferring
/// server `k mod n` (each client tries the list from its first entry), so
/// that the connections and the forwarding work are spread over the nodes.
async fn client_pool(servers: &[String], concurrency: usize) -> anyhow::Result<Vec<Client>> {
    pool_of(servers, concurrency.div_ceil(WORKERS_PER_CONNECTION).max(1)).await
}

/// `count` clients for `servers`, client `k` preferring server `k mod n`.
async fn pool_of(servers: &[String], count: usize) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::new();
    for k in 0..count {
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

/// `BALANCE` asks, each worker to its own active `account` actor
/// (`<prefix>-<worker>`, opened in [`Target::prepare`]): issue 4's "pure
/// routing + turn", a turn that records nothing. Through one node, the
/// clients do not route to partition leaders, so that node forwards what it
/// does not lead.
pub struct CairnAsk {
    clients: Vec<Client>,
    prefix: String,
    command: Value,
    spread: bool,
}

impl CairnAsk {
    /// Connections to `servers` for `concurrency` workers; pass one server to
    /// send every ask through one node.
    pub async fn new(
        servers: &[String],
        concurrency: usize,
        prefix: &str,
    ) -> anyhow::Result<CairnAsk> {
        let clients = client_pool(servers, concurrency).await?;
        Ok(CairnAsk {
            clients: clients
                .into_iter()
                .map(Client::without_leader_routing)
                .collect(),
            prefix: prefix.to_string(),
            command: json!({ "type": "BALANCE" }),
            spread: false,
        })
    }

    /// The same asks, every worker sending its successive calls to each of
    /// `servers` in turn (one connection per node and 32 workers).
    pub async fn spread(
        servers: &[String],
        concurrency: usize,
        prefix: &str,
    ) -> anyhow::Result<CairnAsk> {
        let connections = concurrency.div_ceil(WORKERS_PER_CONNECTION).max(1) * servers.len();
        Ok(CairnAsk {
            clients: pool_of(servers, connections).await?,
            prefix: prefix.to_string(),
            command: json!({ "type": "BALANCE" }),
            spread: true,
        })
    }

    /// The client for a worker's `seq`-th call, and the worker's account.
    fn account(&self, worker: usize, seq: u64) -> (&Client, String) {
        let k = if self.spread {
            worker + usize::try_from(seq).unwrap_or(0)
        } else {
            worker
        };
        let client = &self.clients[k % self.clients.len()];
        (client, format!("{}-{worker}", self.prefix))
    }
}

impl Target for CairnAsk {
    async fn prepare(&self, worker: usize) -> anyhow::Result<()> {
        let (client, id) = self.account(worker, 0);
        client
            .ask("account", &id, &json!({ "type": "OPEN" }))
            .await
            .with_context(|| format!("opening account {id}"))?;
        Ok(())
    }

    async fn op(&self, worker: usize, seq: u64) -> anyhow::Result<()> {
        let (client, id) = self.account(worker, seq);
        client
            .ask("account", &id, &self.command)
            .await
            .with_context(|| format!("asking account {id} for its balance"))?;
        Ok(())
    }
}

/// One stream that every worker of the hot workload appends one event of
/// [`payload`] to, with the version it last saw as the exact expected
/// version; a conflict is re-read with [`Client::info`].
pub struct CairnHotStream {
    clients: Vec<Client>,
    stream: String,
    data: Value,
}

impl CairnHotStream {
    /// Connections to `servers` for `concurrency` workers, all appending to
    /// stream `stream`.
    pub async fn new(
        servers: &[String],
        concurrency: usize,
        stream: &str,
    ) -> anyhow::Result<CairnHotStream> {
        Ok(CairnHotStream {
            clients: client_pool(servers, concurrency).await?,
            stream: stream.to_string(),
            data: payload(),
        })
    }
}

impl HotStream for CairnHotStream {
    async fn try_append(&self, worker: usize, expected: u64) -> anyhow::Result<Option<u64>> {
        let client = &self.clients[worker % self.clients.len()];
        let expected = match expected {
            0 => ExpectedVersion::NoStream,
            n => ExpectedVersion::Exact(n),
        };
        let event = EventData::new("BenchEvent", self.data.clone());
        match client.append(&self.stream, vec![event], expected).await {
            Ok(appended) => Ok(Some(appended.last_version)),
            Err(Error::WrongExpectedVersion { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("appending to {}", self.stream)),
        }
    }

    async fn version(&self, worker: usize) -> anyhow::Result<u64> {
        let client = &self.clients[worker % self.clients.len()];
        match client.info(&self.stream).await {
            Ok(info) => Ok(info.version),
            Err(Error::NotFound(_)) => Ok(0),
            Err(e) => Err(e).with_context(|| format!("reading the info of {}", self.stream)),
        }
    }
}

/// Asks to `user` actors, each worker to its own (`<prefix>-<worker>`,
/// created in [`Target::prepare`]): `LOGIN` and `UPDATE_USER` in turn, whose
/// events (`LOGIN_ATTEMPTED`, `USER_UPDATED`) the built-in projections
/// `user-analytics` and `users-by-email` fold.
pub struct CairnUserAsk {
    clients: Vec<Client>,
    prefix: String,
}

impl CairnUserAsk {
    /// Connections to `servers` for `concurrency` workers.
    pub async fn new(
        servers: &[String],
        concurrency: usize,
        prefix: &str,
    ) -> anyhow::Result<CairnUserAsk> {
        Ok(CairnUserAsk {
            clients: client_pool(servers, concurrency).await?,
            prefix: prefix.to_string(),
        })
    }

    fn user(&self, worker: usize) -> (&Client, String) {
        let client = &self.clients[worker % self.clients.len()];
        (client, format!("{}-{worker}", self.prefix))
    }
}

impl Target for CairnUserAsk {
    async fn prepare(&self, worker: usize) -> anyhow::Result<()> {
        let (client, id) = self.user(worker);
        let create = json!({
            "type": "CREATE_USER",
            "userId": id,
            "name": format!("User {worker}"),
            "email": format!("{id}@example.com"),
        });
        client
            .ask("user", &id, &create)
            .await
            .with_context(|| format!("creating user {id}"))?;
        Ok(())
    }

    async fn op(&self, worker: usize, seq: u64) -> anyhow::Result<()> {
        let (client, id) = self.user(worker);
        let command = if seq.is_multiple_of(2) {
            json!({
                "type": "LOGIN",
                "credentials": { "email": format!("{id}@example.com"), "password": "pw" },
            })
        } else {
            json!({ "type": "UPDATE_USER", "changes": { "name": format!("User {worker}.{seq}") } })
        };
        client
            .ask("user", &id, &command)
            .await
            .with_context(|| format!("asking user {id}"))?;
        Ok(())
    }
}
