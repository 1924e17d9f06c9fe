//! Deletion and retention: hard deletes purge, `max-count` and `max-age`
//! hide at read time and purge deterministically at apply time, and actor
//! streams stay rebuildable from their newest snapshot.

use super::time_travel::{append_many, assert_versions_at};
use super::*;

impl Node {
    async fn set_metadata(
        &mut self,
        stream: &str,
        max_count: Option<u64>,
        max_age_ms: Option<u64>,
        ts: i64,
    ) -> Result<Result<u64, Rejection>> {
        match self
            .apply(Command::SetStreamMetadata {
                stream: stream.to_owned(),
                max_count,
                max_age_ms,
                timestamp_ms: ts,
            })
            .await?
        {
            CommandResult::StreamMetadataSet(r) => Ok(r),
            other => bail!("expected a metadata result, got {other:?}"),
        }
    }

    async fn snapshot(&mut self, stream: &str, version: u64) -> Result<()> {
        let r = self
            .apply(Command::SaveActorSnapshot {
                stream: stream.into(),
                version,
                state: Bytes::from(format!("{stream}@{version}")),
            })
            .await?;
        assert_eq!(r, CommandResult::SnapshotSaved);
        Ok(())
    }

    /// `(stream, version)` of every event still in the partition log.
    fn log(&self) -> Result<Vec<(String, u64)>> {
        Ok(self
            .reader
            .read_partition_log(G, 0, usize::MAX)?
            .into_iter()
            .map(|e| (e.stream, e.version))
            .collect())
    }

    fn versions_at(&self, stream: &str, now_ms: i64) -> Result<Vec<u64>> {
        Ok(self
            .reader
            .read_stream_at(G, stream, 0, usize::MAX, now_ms)?
            .iter()
            .map(|e| e.version)
            .collect())
    }
}

fn in_log(stream: &str, versions: impl IntoIterator<Item = u64>) -> Vec<(String, u64)> {
    versions
        .into_iter()
        .map(|v| (stream.to_owned(), v))
        .collect()
}

#[tokio::test]
async fn hard_delete_purges_the_events_and_keeps_the_tombstone() -> Result<()> {
    let mut n = Node::new()?;
    n.append("s", NoStream, &["a", "b", "c"]).await??;
    n.append("t", NoStream, &["x"]).await??;
    assert_eq!(n.delete("s", Exact(3), true).await?, Ok(3));
    let n = n.restart()?;

    assert_eq!(n.log()?, in_log("t", [1]), "the bodies of `s` are gone");
    let mut n = n;
    assert_eq!(
        n.append("s", Any, &["a"]).await?,
        Err(Rejection::StreamTombstoned { stream: "s".into() }),
        "a purged event id is no retry: the tombstone still refuses"
    );
    let info = n
        .reader
        .stream_info(G, "s")?
        .context("the tombstone stays")?;
    assert!(info.tombstoned && info.deleted);
    assert_eq!((info.version, info.purged_through), (3, 3));
    assert!(matches!(
        n.reader.read_stream(G, "s", 0, 10),
        Err(Error::StreamDeleted {
            tombstoned: true,
            ..
        })
    ));
    assert_eq!(
        n.set_metadata("s", Some(1), None, TS).await?,
        Err(Rejection::StreamTombstoned { stream: "s".into() })
    );
    // The partition goes on after the gap.
    assert_eq!(n.append("t", Exact(1), &["y"]).await??.first_position, 5);
    Ok(())
}

#[tokio::test]
async fn soft_delete_purges_nothing() -> Result<()> {
    let mut n = Node::new()?;
    n.append("s", NoStream, &["a", "b"]).await??;
    n.delete("s", Any, false).await??;
    assert_eq!(n.log()?, in_log("s", [1, 2]));
    n.append("s", NoStream, &["c"]).await??;
    assert_eq!(n.versions("s")?, vec![3]);
    Ok(())
}

#[tokio::test]
async fn max_count_hides_and_purges_all_but_the_newest() -> Result<()> {
    let mut n = Node::new()?;
    assert_eq!(n.set_metadata("s", Some(3), None, TS).await?, Ok(0));
    for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        n.append("s", Exact(i as u64), &[id]).await??;
    }
    n.append("t", NoStream, &["x"]).await??;
    assert_eq!(n.versions("s")?, vec![3, 4, 5]);
    assert_eq!(n.log()?[..3], in_log("s", [3, 4, 5])[..]);
    let info = n.reader.stream_info(G, "s")?.context("info")?;
    assert_eq!(
        (info.version, info.max_count, info.purged_through),
        (5, Some(3), 2)
    );
    let from_start: Vec<u64> = n
        .reader
        .read_stream(G, "s", 1, 2)?
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(
        from_start,
        vec![3, 4],
        "a read from 1 starts at the oldest kept"
    );

    // Lowering the limit purges at once; lifting it brings nothing back.
    assert_eq!(n.set_metadata("s", Some(1), None, TS).await?, Ok(5));
    assert_eq!(n.versions("s")?, vec![5]);
    assert_eq!(n.set_metadata("s", None, None, TS).await?, Ok(5));
    let mut n = n.restart()?;
    assert_eq!(n.versions("s")?, vec![5]);
    assert_eq!(n.log()?, [in_log("s", [5]), in_log("t", [1])].concat());
    n.append("s", Exact(5), &["f"]).await??;
    assert_eq!(n.versions("s")?, vec![5, 6]);
    Ok(())
}

#[tokio::test]
async fn version_at_a_time_skips_what_max_count_purged() -> Result<()> {
    let mut n = Node::new()?;
    n.set_metadata("s", Some(300), None, TS).await??;
    for version in 0..700 {
        append_many(&mut n, 1_000 + version as i64, "s", version, 1).await?;
    }
    assert_eq!(n.versions("s")?.first(), Some(&401));
    assert_versions_at(&n, "s", 990..=1_710)?;
    // Purged at once down to the newest 50: the time index with them.
    n.set_metadata("s", Some(50), None, TS).await??;
    let n = n.restart()?;
    assert_eq!(n.reader.version_at(G, "s", 1_600)?, None);
    assert_versions_at(&n, "s", 1_600..=1_710)?;
    Ok(())
}

#[tokio::test]
async fn max_age_uses_the_entry_timestamp_to_purge_and_the_read_time_to_hide() -> Result<()> {
    let mut n = Node::new()?;
    n.append_at(1_000, "s", NoStream, &["a"]).await??;
    n.append_at(2_000, "s", Exact(1), &["b"]).await??;
    n.append_at(3_000, "s", Exact(2), &["c"]).await??;
    // "now" is the entry's 3000: only `a` (2000 ms old) is beyond 1500 ms.
    n.set_metadata("s", None, Some(1_500), 3_000).await??;
    assert_eq!(n.log()?, in_log("s", [2, 3]));
    assert_eq!(n.versions_at("s", 3_000)?, vec![2, 3]);
    // Reads hide by the read time at once; the purge waits for an entry.
    assert_eq!(n.versions_at("s", 3_600)?, vec![3]);
    assert_eq!(n.log()?, in_log("s", [2, 3]));
    assert_eq!(n.versions_at("s", 10_000)?, Vec::<u64>::new());
    // The next append (at 4000) purges `b` (2000 ms old), whatever this
    // machine's clock says.
    n.append_at(4_000, "s", Exact(3), &["d"]).await??;
    assert_eq!(n.log()?, in_log("s", [3, 4]));
    assert_eq!(n.versions_at("s", 4_000)?, vec![3, 4]);
    Ok(())
}

#[tokio::test]
async fn actor_stream_keeps_every_event_above_its_newest_snapshot() -> Result<()> {
    let mut n = Node::new()?;
    let s = "account-1";
    n.append(s, NoStream, &["1", "2", "3"]).await??;
    n.snapshot(s, 3).await?;
    n.set_metadata(s, Some(1), Some(1), TS).await??;
    // Only what the snapshot at 3 covers and the limits exceed may go.
    assert_eq!(n.log()?, in_log(s, [3]));
    for v in 4..=10u64 {
        n.append(s, Exact(v - 1), &[&v.to_string()]).await??;
    }
    assert_eq!(n.versions(s)?, (4..=10).collect::<Vec<_>>());
    assert_eq!(n.log()?, in_log(s, 4..=10));

    // A newer snapshot lets the events it covers go (and no others).
    n.snapshot(s, 8).await?;
    assert_eq!(n.versions(s)?, vec![9, 10]);
    assert_eq!(n.log()?, in_log(s, [9, 10]));
    let snapshot = n
        .reader
        .actor_snapshot(G, s, u64::MAX)?
        .context("snapshot")?;
    assert_eq!(snapshot.version, 8);
    let tail: Vec<u64> = n
        .reader
        .read_stream(G, s, snapshot.version + 1, usize::MAX)?
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(tail, vec![9, 10], "snapshot + tail rebuilds the actor");
    Ok(())
}

#[tokio::test]
async fn replicas_purge_identically_and_snapshots_carry_the_purge() -> Result<()> {
    let mut a = Node::new()?;
    let mut b = Node::new()?;
    for n in [&mut a, &mut b] {
        n.append_at(1_000, "s", NoStream, &["a", "b"]).await??;
        n.set_metadata("s", Some(5), Some(500), 2_000).await??;
        n.append_at(2_100, "s", Exact(2), &["c"]).await??;
    }
    assert_eq!(a.log()?, in_log("s", [3]));
    assert_eq!(a.observable(&["s"])?, b.observable(&["s"])?);

    let snap = a.sm.get_snapshot_builder().await.build_snapshot().await?;
    let mut c = Node::new()?;
    c.sm.install_snapshot(&snap.meta, snap.snapshot).await?;
    assert_eq!(c.observable(&["s"])?, a.observable(&["s"])?);
    let info = c.reader.stream_info(G, "s")?.context("info")?;
    assert_eq!((info.max_count, info.max_age_ms), (Some(5), Some(500)));
    Ok(())
}

/// An append longer than its stream's `max-count` purges part of itself in
/// the same write: the partition log, read from memory right away and from
/// disk after a restart, holds only what the limit keeps.
#[tokio::test]
async fn an_append_longer_than_max_count_purges_part_of_itself() -> Result<()> {
    let mut n = Node::new()?;
    assert_eq!(n.set_metadata("s", Some(2), None, TS).await?, Ok(0));
    n.append("s", NoStream, &["a", "b", "c", "d", "e"])
        .await??;
    assert_eq!(n.versions("s")?, vec![4, 5]);
    assert_eq!(n.log()?, in_log("s", [4, 5]));
    let n = n.restart()?;
    assert_eq!(n.log()?, in_log("s", [4, 5]));
    Ok(())
}
