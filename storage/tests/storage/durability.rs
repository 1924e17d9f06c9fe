//! Durability: a Raft snapshot installed elsewhere reads identically, and
//! a restart keeps everything.

use std::io::SeekFrom;

use cairn_storage::SnapshotBytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::*;

/// Populates a node with a bit of everything.
async fn populate(n: &mut Node) -> Result<()> {
    n.append("a", NoStream, &["1", "2", "3"]).await??;
    n.append("b", NoStream, &["4"]).await??;
    n.delete("b", Any, false).await??;
    n.append("c", NoStream, &["5"]).await??;
    n.delete("c", Any, true).await??;
    n.apply(Command::SaveActorSnapshot {
        stream: "a".into(),
        version: 2,
        state: Bytes::from("state@2"),
    })
    .await?;
    n.apply(Command::MetaPut {
        key: "k".into(),
        value: Bytes::from("v"),
    })
    .await?;
    let m = n.entry(EntryPayload::Membership(Membership::new(
        vec![BTreeSet::from([1, 2, 3])],
        None,
    )));
    n.sm.apply(vec![m]).await?;
    n.append_at(3_000, "a", Exact(3), &["6"]).await??;
    Ok(())
}

const STREAMS: &[&str] = &["a", "b", "c", "d"];

/// A populated node, and the Raft snapshot built on it.
async fn populated_with_snapshot() -> Result<(Node, openraft::Snapshot<TypeConfig>)> {
    let mut n = Node::new()?;
    populate(&mut n).await?;
    let snap = n.sm.get_snapshot_builder().await.build_snapshot().await?;
    Ok((n, snap))
}

#[tokio::test]
async fn raft_snapshot_installed_elsewhere_reads_identically() -> Result<()> {
    let (mut leader, snap) = populated_with_snapshot().await?;
    assert_eq!(snap.meta.last_log_id, leader.sm.applied_state().await?.0);

    // A follower with state of its own in the same group, and in another group.
    let mut follower = Node::new()?;
    follower.append("d", NoStream, &["stale"]).await??;
    let mut other = follower.store.state_machine(G + 1)?;
    let e = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
        payload: EntryPayload::Normal(append_cmd(TS, "elsewhere", Any, &["z"])),
    };
    other.apply(vec![e]).await?;

    let bytes = snap.snapshot.into_bytes().await?;
    let mut data = follower.sm.begin_receiving_snapshot().await?;
    data.write_all(&bytes).await?;
    follower.sm.install_snapshot(&snap.meta, data).await?;

    assert_eq!(follower.observable(STREAMS)?, leader.observable(STREAMS)?);
    assert_eq!(
        follower.sm.applied_state().await?,
        leader.sm.applied_state().await?
    );
    assert_eq!(
        follower
            .reader
            .read_stream(G + 1, "elsewhere", 0, 10)?
            .len(),
        1,
        "other groups untouched"
    );
    let current = follower
        .sm
        .get_current_snapshot()
        .await?
        .context("current snapshot")?;
    assert_eq!(current.meta, snap.meta);

    // The follower carries on where the leader was.
    follower.next_index = leader.next_index;
    let r = follower.append("a", Exact(4), &["7"]).await??;
    assert_eq!((r.first_version, r.first_position), (5, 7));
    assert_eq!(r.timestamp_ms, 3_000);

    // A damaged snapshot is refused and changes nothing.
    let before = follower.observable(STREAMS)?;
    let bad = Box::new(SnapshotBytes::from_bytes(bytes[..bytes.len() - 3].to_vec()));
    assert!(follower.sm.install_snapshot(&snap.meta, bad).await.is_err());
    assert_eq!(follower.observable(STREAMS)?, before);
    Ok(())
}

/// A snapshot's bytes are serialized when sent, so they can hold entries
/// applied after its meta was built. Installed, they read like the leader,
/// and the entries openraft then re-sends (after the meta) change nothing.
#[tokio::test]
async fn a_snapshot_newer_than_its_meta_installs_and_skips_resent_entries() -> Result<()> {
    let (mut leader, snap) = populated_with_snapshot().await?;
    // Applied after the build, before the bytes are read.
    let later = vec![
        leader.entry(EntryPayload::Normal(append_cmd(TS, "a", Exact(4), &["7"]))),
        leader.entry(EntryPayload::Normal(append_cmd(TS, "d", NoStream, &["8"]))),
    ];
    leader.sm.apply(later.clone()).await?;
    let bytes = snap.snapshot.into_bytes().await?;

    let mut follower = Node::new()?;
    let data = Box::new(SnapshotBytes::from_bytes(bytes.clone()));
    follower.sm.install_snapshot(&snap.meta, data).await?;
    assert_eq!(follower.observable(STREAMS)?, leader.observable(STREAMS)?);
    assert_eq!(
        follower.sm.applied_state().await?,
        leader.sm.applied_state().await?,
        "applied up to the state's own log id, not the meta's"
    );
    let results = follower.sm.apply(later).await?;
    assert!(results.iter().all(|r| matches!(r, CommandResult::None)));
    assert_eq!(follower.observable(STREAMS)?, leader.observable(STREAMS)?);

    // Bytes older than the meta they come with are refused.
    let mut newer_meta = snap.meta.clone();
    newer_meta.last_log_id = leader.sm.applied_state().await?.0.map(|mut id| {
        id.index += 1;
        id
    });
    let stale = Box::new(SnapshotBytes::from_bytes(bytes));
    let mut other = Node::new()?;
    assert!(other.sm.install_snapshot(&newer_meta, stale).await.is_err());
    assert_eq!(
        other.observable(STREAMS)?,
        Node::new()?.observable(STREAMS)?
    );
    Ok(())
}

#[tokio::test]
async fn restart_keeps_everything() -> Result<()> {
    let mut n = Node::new()?;
    populate(&mut n).await?;
    let snap = n.sm.get_snapshot_builder().await.build_snapshot().await?;
    let snap_bytes = snap.snapshot.into_bytes().await?;
    let mut log = n.store.log_store(G);
    log.save_vote(&Vote::new(4, 2)).await?;
    n.store.put_node_meta("node_id", b"2")?;

    let before = n.observable(STREAMS)?;
    let applied = n.sm.applied_state().await?;
    assert!(applied.0.is_some());
    assert_eq!(
        applied.1.membership(),
        &Membership::new(vec![BTreeSet::from([1, 2, 3])], None)
    );
    drop(log);

    let mut n = n.restart()?;
    assert_eq!(n.observable(STREAMS)?, before);
    assert_eq!(n.sm.applied_state().await?, applied);
    assert_eq!(n.reader.applied_log_id(G)?, applied.0);
    let current =
        n.sm.get_current_snapshot()
            .await?
            .context("snapshot survives restart")?;
    assert_eq!(current.meta, snap.meta);
    assert_eq!(current.snapshot.into_bytes().await?, snap_bytes);
    assert_eq!(
        n.store.log_store(G).read_vote().await?,
        Some(Vote::new(4, 2))
    );
    assert_eq!(n.store.node_meta("node_id")?, Some(b"2".to_vec()));
    assert_eq!(n.store.node_meta("cluster_id")?, None);

    // And it keeps going from where it was.
    let r = n.append("a", Exact(4), &["7"]).await??;
    assert_eq!(r.first_position, 7);
    Ok(())
}

/// Files in the store's directory of snapshot files, where a snapshot on
/// its way out or in is kept (never the whole partition in memory).
fn snapshot_files(n: &Node) -> Result<usize> {
    Ok(std::fs::read_dir(n.dir.path().join("snapshot-files"))?.count())
}

/// A snapshot sent the way openraft sends it (its size, then chunks read
/// and written at their offsets) is a file on each side only while it
/// travels: none once installed and dropped, and one a crash left behind is
/// gone when the store next opens.
#[tokio::test]
async fn snapshot_files_last_only_while_a_snapshot_travels() -> Result<()> {
    let (leader, snap) = populated_with_snapshot().await?;
    assert_eq!(snapshot_files(&leader)?, 0, "nothing serialized unread");
    let mut sent = snap.snapshot;
    let size = sent.seek(SeekFrom::End(0)).await?;
    assert_eq!(snapshot_files(&leader)?, 1);

    let mut follower = Node::new()?;
    let mut received = follower.sm.begin_receiving_snapshot().await?;
    assert_eq!(snapshot_files(&follower)?, 1);
    let mut chunk = vec![0; 64];
    let mut offset = 0;
    while offset < size {
        sent.seek(SeekFrom::Start(offset)).await?;
        let n = sent.read(&mut chunk).await?;
        received.seek(SeekFrom::Start(offset)).await?;
        received.write_all(&chunk[..n]).await?;
        offset += n as u64;
    }
    received.shutdown().await?;
    follower.sm.install_snapshot(&snap.meta, received).await?;
    assert_eq!(follower.observable(STREAMS)?, leader.observable(STREAMS)?);
    assert_eq!(snapshot_files(&follower)?, 0, "the received file is gone");
    drop(sent);
    assert_eq!(snapshot_files(&leader)?, 0, "the sent file is gone");

    // Installed by ingesting an SST file: the state survives a restart.
    let before = follower.observable(STREAMS)?;
    std::fs::write(follower.dir.path().join("snapshot-files/left.snap"), b"x")?;
    let follower = follower.restart()?;
    assert_eq!(follower.observable(STREAMS)?, before);
    assert_eq!(snapshot_files(&follower)?, 0, "a crash's leftovers cleared");
    Ok(())
}
