//! The PostgreSQL side of the workloads: [`PgAppend`] (single events or
//! batches to new streams) and [`PgHotStream`] (the hot stream), over the
//! `events` table of [`PostgresServer`].

use anyhow::Context;
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use crate::hot::HotStream;
use crate::postgres_server::MAX_CONNECTIONS;
use crate::{PostgresServer, Target, payload};

/// Inserts of the events `$3` at versions `$2` of stream `$1`, in one
/// statement (so one transaction).
const INSERT_MANY: &str = "INSERT INTO events (stream_id, version, data) \
     SELECT $1, v, d FROM unnest($2::int8[], $3::jsonb[]) AS t(v, d)";
/// Insert of one event `$3` at version `$2` of stream `$1`.
const INSERT_ONE: &str = "INSERT INTO events (stream_id, version, data) VALUES ($1, $2, $3)";
/// The version of stream `$1` (0 while it has no event).
const VERSION: &str = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1";

/// One connection per worker (as a connection pool sized to the load would
/// give), each with `statement` prepared on it: PostgreSQL runs one
/// statement at a time per connection, so sharing connections would cap its
/// concurrency below the workers'.
async fn connections(
    server: &PostgresServer,
    concurrency: usize,
    statements: &[&str],
) -> anyhow::Result<Vec<(Client, Vec<Statement>)>> {
    let mut pool = Vec::new();
    for _ in 0..concurrency.clamp(1, MAX_CONNECTIONS - 4) {
        let client = server.connect().await?;
        let mut prepared = Vec::new();
        for statement in statements {
            prepared.push(client.prepare(statement).await?);
        }
        pool.push((client, prepared));
    }
    Ok(pool)
}

/// Appends of `events_per_append` events of [`payload`] to a new stream
/// each time (`<prefix>-<worker>-<seq>`): one row per event, inserted in one
/// statement, acknowledged once the commit's WAL is flushed.
pub struct PgAppend {
    pool: Vec<(Client, Vec<Statement>)>,
    prefix: String,
    versions: Vec<i64>,
    data: Vec<Value>,
}

impl PgAppend {
    /// Connections to `server` for `concurrency` workers.
    pub async fn new(
        server: &PostgresServer,
        concurrency: usize,
        events_per_append: usize,
        prefix: &str,
    ) -> anyhow::Result<PgAppend> {
        Ok(PgAppend {
            pool: connections(server, concurrency, &[INSERT_MANY]).await?,
            prefix: prefix.to_string(),
            versions: (1..=i64::try_from(events_per_append)?).collect(),
            data: vec![payload(); events_per_append],
        })
    }
}

impl Target for PgAppend {
    fn items_per_op(&self) -> u64 {
        self.versions.len() as u64
    }

    async fn op(&self, worker: usize, seq: u64) -> anyhow::Result<()> {
        let (client, statements) = &self.pool[worker % self.pool.len()];
        let stream = format!("{}-{worker}-{seq}", self.prefix);
        client
            .execute(&statements[0], &[&stream, &self.versions, &self.data])
            .await
            .with_context(|| format!("inserting into {stream}"))?;
        Ok(())
    }
}

/// The hot workload on PostgreSQL: every worker inserts the row
/// `(stream, version + 1)` for the version it last saw; the primary key
/// refuses all but one insert per version (a unique violation is the
/// conflict), after which the worker reads `max(version)`.
pub struct PgHotStream {
    pool: Vec<(Client, Vec<Statement>)>,
    stream: String,
    data: Value,
}

impl PgHotStream {
    /// Connections to `server` for `concurrency` workers, all writing `stream`.
    pub async fn new(
        server: &PostgresServer,
        concurrency: usize,
        stream: &str,
    ) -> anyhow::Result<PgHotStream> {
        Ok(PgHotStream {
            pool: connections(server, concurrency, &[INSERT_ONE, VERSION]).await?,
            stream: stream.to_string(),
            data: payload(),
        })
    }
}

impl HotStream for PgHotStream {
    async fn try_append(&self, worker: usize, expected: u64) -> anyhow::Result<Option<u64>> {
        let (client, statements) = &self.pool[worker % self.pool.len()];
        let next = i64::try_from(expected)? + 1;
        match client
            .execute(&statements[0], &[&self.stream, &next, &self.data])
            .await
        {
            Ok(_) => Ok(Some(expected + 1)),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inserting into {}", self.stream)),
        }
    }

    async fn version(&self, worker: usize) -> anyhow::Result<u64> {
        let (client, statements) = &self.pool[worker % self.pool.len()];
        let row = client.query_one(&statements[1], &[&self.stream]).await?;
        Ok(u64::try_from(row.get::<_, i64>(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hot::Hot;
    use crate::postgres_server::ensure_postgres;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn appends_batches_and_hot_inserts_write_one_row_per_event() {
        let bin_dir = ensure_postgres(None).await.expect("PostgreSQL");
        let server = PostgresServer::start(&bin_dir).await.expect("a server");
        let spec = |concurrency| crate::LoadSpec {
            concurrency,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(300),
        };
        let batch = PgAppend::new(&server, 2, 100, "b")
            .await
            .expect("connections");
        let batches = crate::measure(Arc::new(batch), spec(2))
            .await
            .expect("runs");
        assert!(batches.ops > 0 && batches.errors == 0, "{batches:?}");
        let hot = PgHotStream::new(&server, 4, "h")
            .await
            .expect("connections");
        let m = crate::measure(Arc::new(Hot::new(hot, 4)), spec(4))
            .await
            .expect("runs");
        assert!(m.ops > 0 && m.errors == 0, "{m:?}");

        let client = server.connect().await.expect("a connection");
        let count = |sql: &'static str| {
            let client = &client;
            async move {
                client
                    .query_one(sql, &[])
                    .await
                    .expect("a count")
                    .get::<_, i64>(0)
            }
        };
        let batch_rows = count("SELECT count(*) FROM events WHERE stream_id LIKE 'b-%'").await;
        assert_eq!(batch_rows % 100, 0, "whole batches only");
        assert!(batch_rows >= 100 * i64::try_from(batches.ops).expect("small"));
        // The hot stream is gapless: its versions are 1..=count.
        let hot_rows = count("SELECT count(*) FROM events WHERE stream_id = 'h'").await;
        let hot_max = count("SELECT max(version) FROM events WHERE stream_id = 'h'").await;
        assert_eq!(hot_rows, hot_max);
        drop(client);
        server.stop().await.expect("stops");
    }
}
