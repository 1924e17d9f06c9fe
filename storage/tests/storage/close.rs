//! `Store::close`: waiting for handles held elsewhere, then reopening.

use std::time::Duration;

use cairn_storage::{Error, Store};

/// `close` waits for clones held elsewhere (as openraft's tasks do right
/// after `Raft::shutdown`); once it returns the directory can be reopened
/// and holds what was written.
#[tokio::test]
async fn close_waits_for_other_handles_then_reopen_succeeds() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    store.put_node_meta("k", b"v")?;
    let straggler = store.reader();
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(straggler);
    });
    // Still held by the task: a reopen fails now.
    assert!(Store::open(dir.path()).is_err());
    store.close(Duration::from_secs(10)).await?;
    task.await?;
    let store = Store::open(dir.path())?;
    assert_eq!(store.node_meta("k")?.as_deref(), Some(&b"v"[..]));
    store.close(Duration::from_secs(10)).await?;
    Ok(())
}

/// A handle that outlives the wait makes `close` fail with `StillOpen`;
/// dropping it then closes the database.
#[tokio::test]
async fn close_reports_handles_still_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let held = store.log_store(0);
    let err = store
        .close(Duration::from_millis(100))
        .await
        .expect_err("a handle is still held");
    assert!(matches!(err, Error::StillOpen { handles: 1, .. }), "{err}");
    drop(held);
    drop(Store::open(dir.path())?);
    Ok(())
}
