//! The version of a stream at a time: `Reader::version_at` against the
//! answer read off the whole stream, across the stream's time index.

use super::*;

/// Checks `Reader::version_at` at every time in `times` against the answer
/// read off the whole stream: its last readable event written by then.
pub(super) fn assert_versions_at(
    n: &Node,
    stream: &str,
    times: std::ops::RangeInclusive<i64>,
) -> Result<()> {
    let events = n.reader.read_stream(G, stream, 0, usize::MAX)?;
    for t in times {
        let expected = events
            .iter()
            .take_while(|e| e.timestamp_ms <= t)
            .last()
            .map(|e| e.version);
        assert_eq!(
            n.reader.version_at(G, stream, t)?,
            expected,
            "`{stream}` at {t}"
        );
    }
    Ok(())
}

/// Appends `count` events to `stream` (at its version `from`), with ids
/// `<stream><version>`.
pub(super) async fn append_many(
    n: &mut Node,
    ts: i64,
    stream: &str,
    from: u64,
    count: u64,
) -> Result<()> {
    let ids: Vec<String> = (from + 1..=from + count)
        .map(|v| format!("{stream}{v}"))
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    n.append_at(ts, stream, Exact(from), &ids).await??;
    Ok(())
}

#[tokio::test]
async fn version_at_a_time_is_the_last_event_written_by_then() -> Result<()> {
    let mut n = Node::new()?;
    // 300 events at one time (time-index entries sharing it), then appends
    // of 1 to 9 events, a third of them at the time of the one before,
    // interleaved with another stream's.
    append_many(&mut n, 1_000, "s", 0, 300).await?;
    let (mut version, mut ts) = (300, 1_000);
    for i in 0..150 {
        if i % 3 != 0 {
            ts += 10;
        }
        let size = 1 + i % 9;
        append_many(&mut n, ts, "s", version, size).await?;
        n.append_at(ts, "t", Any, &[&format!("t{i}")]).await??;
        version += size;
    }
    assert!(version > 5 * cairn_storage::TIME_INDEX_EVERY);
    assert_versions_at(&n, "s", 990..=ts + 10)?;
    assert_versions_at(&n, "t", 990..=1_100)?;
    assert_eq!(n.reader.version_at(G, "never-written", ts)?, None);

    // Soft-deleted: refused; written again: nothing before the delete.
    n.delete("s", Any, false).await??;
    assert!(matches!(
        n.reader.version_at(G, "s", ts),
        Err(Error::StreamDeleted { .. })
    ));
    n.append_at(ts + 100, "s", Any, &["again"]).await??;
    let mut n = n.restart()?;
    assert_versions_at(&n, "s", ts..=ts + 200)?;
    assert_eq!(n.reader.version_at(G, "s", ts + 100)?, Some(version + 1));

    // Tombstoned: refused, its index gone with its events.
    n.delete("s", Any, true).await??;
    assert!(matches!(
        n.reader.version_at(G, "s", ts),
        Err(Error::StreamDeleted {
            tombstoned: true,
            ..
        })
    ));
    Ok(())
}
