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

/// A data directory written in another storage layout is refused at open
/// with an error that names both formats, and is left as it was.
#[tokio::test]
async fn a_store_of_another_format_is_refused_at_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    store.put_node_meta("storage-format", &7u32.to_be_bytes())?;
    store.close(Duration::from_secs(10)).await?;

    let err = Store::open(dir.path()).expect_err("format 7 is not this build's");
    assert!(
        matches!(
            err,
            Error::Format {
                found: 7,
                expected: 3,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("format 7") && message.contains("format 3"),
        "{message}"
    );
    // Refusing wrote nothing: the stamp is still the one found.
    assert!(matches!(
        Store::open(dir.path()),
        Err(Error::Format { found: 7, .. })
    ));
    Ok(())
}

/// Format 1 had no stamp: an unstamped directory with state-machine data
/// is format 1 and refused; an empty one is stamped with this build's.
#[tokio::test]
async fn an_unstamped_store_with_data_is_format_1() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = rocksdb::DB::open_cf(&opts, dir.path(), ["sm", "node"])?;
        let sm = db.cf_handle("sm").expect("created");
        db.put_cf(sm, [0, 0, 0, 1, 0x10, 0, 0, 0, 0, 0, 0, 0, 1], b"old body")?;
    }
    let err = Store::open(dir.path()).expect_err("unstamped data is format 1");
    assert!(matches!(err, Error::Format { found: 1, .. }), "{err}");

    let empty = tempfile::tempdir()?;
    let store = Store::open(empty.path())?;
    assert_eq!(
        store.node_meta("storage-format")?.as_deref(),
        Some(&3u32.to_be_bytes()[..])
    );
    store.close(Duration::from_secs(10)).await?;
    Ok(())
}
