//! [`EtcdPut`]: the etcd side of the single-append workload.

use etcd_client::{Client, ConnectOptions, KvClient};

use crate::cairn_targets::WORKERS_PER_CONNECTION;
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
