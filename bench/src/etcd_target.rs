//! The etcd side of the workloads: [`EtcdPut`] (single appends) and
//! [`EtcdHotKey`] (the hot stream).

use anyhow::Context;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, KvClient, Txn, TxnOp};

use crate::cairn_targets::WORKERS_PER_CONNECTION;
use crate::hot::HotStream;
use crate::{PAYLOAD_BYTES, Target, payload};

/// Puts of the same 200-byte [`payload`] Cairn appends, each to a new key
/// (`<prefix>/<worker>/<seq>`). Acknowledged by etcd once committed by a
/// majority, each of which fsynced its WAL.
pub struct EtcdPut {
    clients: Vec<KvClient>,
    prefix: String,
    value: Vec<u8>,
}

impl EtcdPut {
    /// Connections to `endpoints` for `concurrency` workers: one client per
    /// 32 workers, as for Cairn, each balancing over all members.
    pub async fn new(
        endpoints: &[String],
        concurrency: usize,
        prefix: &str,
    ) -> anyhow::Result<EtcdPut> {
        let mut clients = Vec::new();
        for _ in 0..concurrency.div_ceil(WORKERS_PER_CONNECTION).max(1) {
            let options = ConnectOptions::new().with_timeout(std::time::Duration::from_secs(10));
            clients.push(Client::connect(endpoints, Some(options)).await?.kv_client());
        }
        let value = serde_json::to_vec(&payload())?;
        debug_assert_eq!(value.len(), PAYLOAD_BYTES);
        Ok(EtcdPut {
            clients,
            prefix: prefix.to_string(),
            value,
        })
    }
}

impl Target for EtcdPut {
    async fn op(&self, worker: usize, seq: u64) -> anyhow::Result<()> {
        let mut kv = self.clients[worker % self.clients.len()].clone();
        let key = format!("{}/{worker}/{seq}", self.prefix);
        kv.put(key, self.value.clone(), None).await?;
        Ok(())
    }
}

/// The hot workload on etcd: one key, written with a transaction that puts
/// the payload only if the key's mod revision is the one the worker last
/// saw; a failed compare is re-read with a get.
pub struct EtcdHotKey {
    clients: Vec<KvClient>,
    key: String,
    value: Vec<u8>,
}

impl EtcdHotKey {
    /// Connections to `endpoints` for `concurrency` workers, all writing `key`.
    pub async fn new(
        endpoints: &[String],
        concurrency: usize,
        key: &str,
    ) -> anyhow::Result<EtcdHotKey> {
        let put = EtcdPut::new(endpoints, concurrency, key).await?;
        Ok(EtcdHotKey {
            clients: put.clients,
            key: put.prefix,
            value: put.value,
        })
    }

    fn kv(&self, worker: usize) -> KvClient {
        self.clients[worker % self.clients.len()].clone()
    }
}

impl HotStream for EtcdHotKey {
    async fn try_append(&self, worker: usize, expected: u64) -> anyhow::Result<Option<u64>> {
        let revision = i64::try_from(expected)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.key.as_str(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(self.key.as_str(), self.value.clone(), None)]);
        let response = self.kv(worker).txn(txn).await?;
        if !response.succeeded() {
            return Ok(None);
        }
        let header = response.header().context("a txn response has a header")?;
        Ok(Some(u64::try_from(header.revision())?))
    }

    async fn version(&self, worker: usize) -> anyhow::Result<u64> {
        let response = self.kv(worker).get(self.key.as_str(), None).await?;
        let revision = response.kvs().first().map_or(0, |kv| kv.mod_revision());
        Ok(u64::try_from(revision)?)
    }
}
