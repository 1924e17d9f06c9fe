//! openraft's own storage conformance suite, run against [`LogStore`] and
//! [`StateMachine`] backed by a fresh RocksDB per case.

use cairn_storage::{LogStore, NodeId, StateMachine, Store, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use tempfile::TempDir;

struct FreshStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for FreshStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::IO {
            source: StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, AnyError::new(&e)),
        })?;
        let store = Store::open(dir.path())?;
        // A group id other than 0, so group prefixes are exercised.
        let group = 7;
        let log = store.log_store(group);
        let sm = store.state_machine(group)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() -> anyhow::Result<()> {
    Suite::test_all(FreshStore)?;
    Ok(())
}
