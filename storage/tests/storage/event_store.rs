//! Event-store conformance: commands go through `StateMachine::apply` as real
//! Raft entries; what a user would observe is checked through `Reader`.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use cairn_storage::{
    AppendOutcome, Command, CommandResult, Error, ExpectedVersion, GroupId, META_GROUP, NewEvent,
    Reader, RecordedEvent, Rejection, StateMachine, Store, StreamAppend, TypeConfig,
};
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use tempfile::TempDir;

use ExpectedVersion::{Any, Exact, NoStream};

const G: GroupId = 3;
const TS: i64 = 1_000;

/// One node's storage for group `G`, fed with entries at increasing indexes.
struct Node {
    store: Store,
    sm: StateMachine,
    reader: Reader,
    next_index: u64,
    // Last, so the database closes before the directory is removed.
    dir: TempDir,
}

fn ev(id: &str) -> NewEvent {
    NewEvent {
        id: id.to_owned(),
        event_type: "Happened".to_owned(),
        data: Bytes::from(format!(r#"{{"id":"{id}"}}"#)),
        metadata: Bytes::from_static(br#"{"schema_version":1}"#),
        correlation_id: format!("corr-{id}"),
        causation_id: String::new(),
    }
}

pub(crate) fn append_cmd(
    ts: i64,
    stream: &str,
    expected: ExpectedVersion,
    ids: &[&str],
) -> Command {
    Command::append(
        ts,
        &[StreamAppend {
            stream: stream.to_owned(),
            expected,
            events: ids.iter().map(|id| ev(id)).collect(),
        }],
    )
}

fn single_append(result: CommandResult) -> Result<Result<AppendOutcome, Rejection>> {
    match result {
        CommandResult::Appended(mut v) if v.len() == 1 => Ok(v.remove(0)),
        other => bail!("expected one append result, got {other:?}"),
    }
}

impl Node {
    fn new() -> Result<Node> {
        Node::open(tempfile::tempdir()?, 1)
    }

    fn open(dir: TempDir, next_index: u64) -> Result<Node> {
        let store = Store::open(dir.path())?;
        let sm = store.state_machine(G)?;
        let reader = store.reader();
        Ok(Node {
            store,
            sm,
            reader,
            next_index,
            dir,
        })
    }

    /// Drops every handle (closing RocksDB) and opens the directory again.
    fn restart(self) -> Result<Node> {
        let Node {
            store,
            sm,
            reader,
            next_index,
            dir,
        } = self;
        drop((sm, reader, store));
        Node::open(dir, next_index)
    }

    fn entry(&mut self, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), self.next_index);
        self.next_index += 1;
        Entry { log_id, payload }
    }

    async fn apply_all(&mut self, cmds: Vec<Command>) -> Result<Vec<CommandResult>> {
        let entries: Vec<_> = cmds
            .into_iter()
            .map(|c| self.entry(EntryPayload::Normal(c)))
            .collect();
        Ok(self.sm.apply(entries).await?)
    }

    async fn apply(&mut self, cmd: Command) -> Result<CommandResult> {
        let mut r = self.apply_all(vec![cmd]).await?;
        r.pop().context("one result per entry")
    }

    async fn append_at(
        &mut self,
        ts: i64,
        stream: &str,
        expected: ExpectedVersion,
        ids: &[&str],
    ) -> Result<Result<AppendOutcome, Rejection>> {
        single_append(self.apply(append_cmd(ts, stream, expected, ids)).await?)
    }

    async fn append(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        ids: &[&str],
    ) -> Result<Result<AppendOutcome, Rejection>> {
        self.append_at(TS, stream, expected, ids).await
    }

    async fn delete(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        hard: bool,
    ) -> Result<Result<u64, Rejection>> {
        match self
            .apply(Command::Delete {
                stream: stream.to_owned(),
                expected,
                hard,
            })
            .await?
        {
            CommandResult::Deleted(r) => Ok(r),
            other => bail!("expected a delete result, got {other:?}"),
        }
    }

    fn versions(&self, stream: &str) -> Result<Vec<u64>> {
        Ok(self
            .reader
            .read_stream(G, stream, 0, usize::MAX)?
            .iter()
            .map(|e| e.version)
            .collect())
    }

    fn ids(&self, stream: &str) -> Result<Vec<String>> {
        Ok(self
            .reader
            .read_stream(G, stream, 0, usize::MAX)?
            .into_iter()
            .map(|e| e.id)
            .collect())
    }

    /// Everything a reader can see of group `G` (for before/after comparisons).
    fn observable(&self, streams: &[&str]) -> Result<String> {
        let mut out = String::new();
        for s in streams {
            out += &format!("{s}: info={:?}\n", self.reader.stream_info(G, s)?);
            out += &format!(
                "{s}: read={:?}\n",
                self.reader
                    .read_stream(G, s, 0, usize::MAX)
                    .map_err(|e| e.to_string())
            );
            out += &format!(
                "{s}: snap={:?}\n",
                self.reader.actor_snapshot(G, s, u64::MAX)?
            );
        }
        out += &format!(
            "log={:?}\n",
            self.reader.read_partition_log(G, 0, usize::MAX)?
        );
        out += &format!("last_position={}\n", self.reader.last_position(G)?);
        out += &format!("meta={:?}\n", self.reader.meta_scan(G, "")?);
        Ok(out)
    }
}

#[tokio::test]
async fn expected_version_checks_and_mismatch_writes_nothing() -> Result<()> {
    let mut n = Node::new()?;

    let first = n.append("order-1", NoStream, &["a", "b"]).await??;
    assert_eq!((first.first_version, first.last_version), (1, 2));
    assert_eq!((first.first_position, first.last_position), (1, 2));
    assert!(!first.duplicate);

    let before = n.observable(&["order-1"])?;
    for (expected, actual) in [(NoStream, 2), (Exact(1), 2), (Exact(3), 2), (Exact(0), 2)] {
        let r = n.append("order-1", expected, &["x"]).await?;
        let Err(rej) = r else {
            bail!("{expected:?} must be refused at version 2")
        };
        assert_eq!(
            rej,
            Rejection::WrongExpectedVersion {
                stream: "order-1".into(),
                expected,
                actual
            }
        );
        let msg = rej.to_string();
        assert!(
            msg.contains(&format!("expected {expected}")) && msg.contains("version 2"),
            "{msg}"
        );
    }
    assert_eq!(
        n.observable(&["order-1"])?,
        before,
        "refused appends wrote nothing"
    );

    let exact = n.append("order-1", Exact(2), &["c"]).await??;
    assert_eq!(
        (
            exact.first_version,
            exact.last_version,
            exact.first_position
        ),
        (3, 3, 3)
    );
    let any = n.append("order-1", Any, &["d", "e"]).await??;
    assert_eq!((any.first_version, any.last_version), (4, 5));
    assert_eq!(n.ids("order-1")?, ["a", "b", "c", "d", "e"]);

    // Exact(0) and Any both work on a new stream.
    assert_eq!(
        n.append("order-2", Exact(0), &["f"]).await??.first_version,
        1
    );
    assert_eq!(n.append("order-3", Any, &["g"]).await??.first_version, 1);
    Ok(())
}

#[tokio::test]
async fn idempotent_reappend_returns_the_first_result_and_writes_nothing() -> Result<()> {
    let mut n = Node::new()?;
    n.append("other", Any, &["z"]).await??;
    let first = n
        .append_at(5_000, "s", NoStream, &["a", "b", "c"])
        .await??;
    let before = n.observable(&["s", "other"])?;

    // The same append retried, with its original expected version and a later clock.
    let again = n
        .append_at(9_000, "s", NoStream, &["a", "b", "c"])
        .await??;
    assert!(again.duplicate);
    assert_eq!(
        AppendOutcome {
            duplicate: false,
            ..again.clone()
        },
        first
    );
    assert_eq!(
        again.timestamp_ms, 5_000,
        "the timestamp as originally written"
    );

    // A retry of part of it, even with a now-wrong expected version.
    let tail = n.append("s", Exact(0), &["b", "c"]).await??;
    assert!(tail.duplicate);
    assert_eq!((tail.first_version, tail.last_version), (2, 3));
    assert_eq!((tail.first_position, tail.last_position), (3, 4));

    assert_eq!(
        n.observable(&["s", "other"])?,
        before,
        "duplicates wrote nothing"
    );
    Ok(())
}

/// A log written before appends were one shared buffer holds them as
/// `Command::FormerAppend`: such entries apply as they did, and the appends
/// after them see their effects.
#[tokio::test]
async fn appends_in_the_former_encoding_apply_alike() -> Result<()> {
    let mut n = Node::new()?;
    let Command::Append { appends, .. } = append_cmd(TS, "s", NoStream, &["a", "b"]) else {
        bail!("append_cmd makes an append");
    };
    let former = Command::FormerAppend {
        timestamp_ms: TS,
        appends: appends.decode()?,
    };
    let first = single_append(n.apply(former.clone()).await?)??;
    assert_eq!((first.first_version, first.last_version), (1, 2));
    // Retried in the former encoding: the earlier result.
    assert!(single_append(n.apply(former).await?)??.duplicate);
    let next = n.append("s", Exact(2), &["c"]).await??;
    assert_eq!(next.first_version, 3);
    assert_eq!(n.ids("s")?, ["a", "b", "c"]);
    let recent = n
        .reader
        .read_recent_partition_log_where(G, 1, 10, |_| true)
        .context("the in-memory tail holds the partition's events")?;
    assert_eq!(recent.events, n.reader.read_partition_log(G, 1, 10)?);
    assert_eq!(recent.events.len(), 3);
    Ok(())
}

#[tokio::test]
async fn idempotency_conflict_is_refused() -> Result<()> {
    let mut n = Node::new()?;
    n.append("s", NoStream, &["a", "b"]).await??;
    let before = n.observable(&["s"])?;

    for ids in [&["a", "x"][..], &["a", "b", "c"][..], &["b", "a"][..]] {
        let r = n.append("s", Any, ids).await?;
        let Err(Rejection::IdempotencyConflict {
            stream,
            event_id,
            version,
        }) = r
        else {
            bail!("{ids:?} must conflict, got {r:?}");
        };
        assert_eq!((stream.as_str(), event_id.as_str()), ("s", ids[0]));
        assert_eq!(version, if ids[0] == "a" { 1 } else { 2 });
    }
    assert_eq!(n.observable(&["s"])?, before);
    Ok(())
}

#[tokio::test]
async fn read_from_version_with_limit() -> Result<()> {
    let mut n = Node::new()?;
    let ids: Vec<String> = (1..=10).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    n.append("s", NoStream, &refs).await??;

    let read = |from, limit| -> Result<Vec<u64>> {
        Ok(n.reader
            .read_stream(G, "s", from, limit)?
            .iter()
            .map(|e| e.version)
            .collect())
    };
    assert_eq!(read(4, 3)?, [4, 5, 6]);
    assert_eq!(read(0, 2)?, [1, 2], "from 0 means from 1");
    assert_eq!(read(9, 100)?, [9, 10]);
    assert!(read(11, 5)?.is_empty());
    assert!(read(1, 0)?.is_empty());
    assert!(
        n.reader.read_stream(G, "nope", 0, 10)?.is_empty(),
        "a missing stream reads as empty"
    );
    assert!(
        n.reader.read_stream(G + 1, "s", 0, 10)?.is_empty(),
        "groups are separate"
    );

    let e = &n.reader.read_stream(G, "s", 2, 1)?[0];
    assert_eq!(
        e,
        &RecordedEvent {
            id: "e2".into(),
            stream: "s".into(),
            event_type: "Happened".into(),
            data: Bytes::from(r#"{"id":"e2"}"#),
            metadata: Bytes::from_static(br#"{"schema_version":1}"#),
            correlation_id: "corr-e2".into(),
            causation_id: String::new(),
            timestamp_ms: TS,
            version: 2,
            position: 2,
        }
    );
    Ok(())
}

#[tokio::test]
async fn soft_delete_hides_old_events_and_a_new_append_continues() -> Result<()> {
    let mut n = Node::new()?;
    n.append("s", NoStream, &["a", "b", "c"]).await??;

    let r = n.delete("s", Exact(2), false).await?;
    assert!(
        matches!(r, Err(Rejection::WrongExpectedVersion { actual: 3, .. })),
        "{r:?}"
    );
    assert_eq!(
        n.versions("s")?,
        [1, 2, 3],
        "a refused delete deletes nothing"
    );

    assert_eq!(n.delete("s", Exact(3), false).await?, Ok(3));
    let Err(err) = n.reader.read_stream(G, "s", 0, 10) else {
        bail!("a deleted stream must not read")
    };
    assert!(
        matches!(&err, Error::StreamDeleted { stream, tombstoned: false } if stream == "s"),
        "{err}"
    );
    let info = n.reader.stream_info(G, "s")?.context("info kept")?;
    assert!(info.deleted && !info.tombstoned);
    assert_eq!((info.version, info.first_readable_version), (3, 4));

    // Append with no-stream re-creates it at the next version; old events stay hidden.
    let r = n.append("s", NoStream, &["d"]).await??;
    assert_eq!((r.first_version, r.last_version), (4, 4));
    assert_eq!(n.ids("s")?, ["d"]);
    assert_eq!(n.reader.read_stream(G, "s", 1, 10)?.len(), 1);
    let info = n.reader.stream_info(G, "s")?.context("info")?;
    assert!(!info.deleted);
    assert_eq!(
        (
            info.version,
            info.first_readable_version,
            info.last_event_id.as_str()
        ),
        (4, 4, "d")
    );
    // The partition log still holds every event.
    assert_eq!(n.reader.read_partition_log(G, 1, 100)?.len(), 4);
    Ok(())
}

#[tokio::test]
async fn hard_delete_refuses_writes_forever() -> Result<()> {
    let mut n = Node::new()?;
    n.append("s", NoStream, &["a"]).await??;
    assert_eq!(n.delete("s", Any, true).await?, Ok(1));
    let mut n = n.restart()?;

    let tomb = Rejection::StreamTombstoned { stream: "s".into() };
    for expected in [Any, NoStream, Exact(1), Exact(0)] {
        assert_eq!(n.append("s", expected, &["b"]).await?, Err(tomb.clone()));
    }
    assert_eq!(
        n.append("s", Any, &["a"]).await?,
        Err(tomb.clone()),
        "even a retry"
    );
    assert_eq!(n.delete("s", Any, false).await?, Err(tomb.clone()));
    assert_eq!(n.delete("s", Any, true).await?, Err(tomb));
    let Err(err) = n.reader.read_stream(G, "s", 0, 10) else {
        bail!("a tombstoned stream must not read")
    };
    assert!(
        matches!(
            err,
            Error::StreamDeleted {
                tombstoned: true,
                ..
            }
        ),
        "{err}"
    );
    let info = n.reader.stream_info(G, "s")?.context("info")?;
    assert!(info.deleted && info.tombstoned);
    assert_eq!(n.reader.last_position(G)?, 1);
    Ok(())
}

#[tokio::test]
async fn stream_info_tracks_the_last_event() -> Result<()> {
    let mut n = Node::new()?;
    assert_eq!(n.reader.stream_info(G, "s")?, None);
    n.append_at(1_234, "s", Any, &["a", "b"]).await??;
    let info = n.reader.stream_info(G, "s")?.context("info")?;
    assert_eq!(info.version, 2);
    assert_eq!(info.last_event_id, "b");
    assert_eq!(info.last_event_timestamp_ms, 1_234);
    assert!(!info.deleted && !info.tombstoned);
    assert!(info.first_readable_version <= 1);
    Ok(())
}

#[tokio::test]
async fn positions_are_gapless_and_timestamps_never_go_back() -> Result<()> {
    let mut n = Node::new()?;
    n.append_at(1_000, "a", Any, &["1", "2"]).await??;
    let back = n.append_at(500, "b", Any, &["3"]).await??;
    assert_eq!(
        back.timestamp_ms, 1_000,
        "the clock went back; the partition did not"
    );
    n.append_at(400, "a", Any, &["4"]).await??;
    n.append("c", NoStream, &["x"]).await??;
    assert!(
        n.append("c", NoStream, &["y"]).await?.is_err(),
        "refused: takes no position"
    );
    n.append_at(2_000, "c", Any, &["5", "6"]).await??;

    let log = n.reader.read_partition_log(G, 0, 100)?;
    let positions: Vec<u64> = log.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=7).collect::<Vec<_>>());
    let ts: Vec<i64> = log.iter().map(|e| e.timestamp_ms).collect();
    assert_eq!(ts, [1_000, 1_000, 1_000, 1_000, 1_000, 2_000, 2_000]);
    assert_eq!(n.reader.last_position(G)?, 7);

    let page: Vec<u64> = n
        .reader
        .read_partition_log(G, 3, 2)?
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(page, [3, 4]);
    assert!(n.reader.read_partition_log(G, 8, 10)?.is_empty());
    assert_eq!(n.reader.last_position(G + 1)?, 0);
    Ok(())
}

#[tokio::test]
async fn many_stream_appends_in_one_entry_see_each_other() -> Result<()> {
    let mut n = Node::new()?;
    let sa = |stream: &str, expected, ids: &[&str]| StreamAppend {
        stream: stream.into(),
        expected,
        events: ids.iter().map(|i| ev(i)).collect(),
    };
    let r = n
        .apply(Command::append(
            TS,
            &[
                sa("s1", NoStream, &["a", "b"]),
                sa("s2", Any, &["c"]),
                sa("s1", Exact(2), &["d"]),
                sa("s3", Exact(5), &["e"]),
                sa("s1", NoStream, &["f"]),
                sa("s1", Any, &["a", "b"]),
                sa("s2", Any, &[]),
            ],
        ))
        .await?;
    let CommandResult::Appended(r) = r else {
        bail!("{r:?}")
    };
    let ok = |i: usize| {
        r[i].clone().map(|o| {
            (
                o.first_version,
                o.last_version,
                o.first_position,
                o.last_position,
            )
        })
    };
    assert_eq!(ok(0), Ok((1, 2, 1, 2)));
    assert_eq!(ok(1), Ok((1, 1, 3, 3)));
    assert_eq!(ok(2), Ok((3, 3, 4, 4)), "sees the first append to s1");
    assert!(matches!(
        r[3],
        Err(Rejection::WrongExpectedVersion { actual: 0, .. })
    ));
    assert!(matches!(
        r[4],
        Err(Rejection::WrongExpectedVersion { actual: 3, .. })
    ));
    assert!(
        matches!(&r[5], Ok(o) if o.duplicate && o.first_version == 1),
        "{:?}",
        r[5]
    );
    assert_eq!(ok(6), Ok((1, 1, 4, 4)), "an empty append writes nothing");

    assert_eq!(n.ids("s1")?, ["a", "b", "d"]);
    assert_eq!(n.ids("s2")?, ["c"]);
    assert_eq!(n.reader.stream_info(G, "s3")?, None);
    assert_eq!(n.reader.last_position(G)?, 4);

    // Entries of one apply() call see the ones before them too.
    let r = n
        .apply_all(vec![
            append_cmd(TS, "s4", NoStream, &["g"]),
            append_cmd(TS, "s4", Exact(1), &["h"]),
            append_cmd(TS, "s4", NoStream, &["g"]),
            append_cmd(TS, "s4", NoStream, &["i"]),
        ])
        .await?;
    let r: Vec<_> = r.into_iter().map(single_append).collect::<Result<_>>()?;
    assert_eq!(r[0].as_ref().map(|o| o.last_position), Ok(5));
    assert_eq!(
        r[1].as_ref().map(|o| (o.first_version, o.last_position)),
        Ok((2, 6))
    );
    assert!(matches!(&r[2], Ok(o) if o.duplicate && o.first_position == 5));
    assert!(matches!(
        r[3],
        Err(Rejection::WrongExpectedVersion { actual: 2, .. })
    ));
    assert_eq!(n.ids("s4")?, ["g", "h"]);
    Ok(())
}

#[tokio::test]
async fn empty_append_checks_the_expected_version_and_writes_nothing() -> Result<()> {
    let mut n = Node::new()?;
    n.append("s", Any, &["a"]).await??;
    let before = n.observable(&["s"])?;
    let r = n.append("s", Exact(1), &[]).await??;
    assert_eq!(
        (r.first_version, r.last_version, r.duplicate),
        (1, 1, false)
    );
    assert!(n.append("s", Exact(7), &[]).await?.is_err());
    assert_eq!(n.observable(&["s"])?, before);
    Ok(())
}

#[tokio::test]
async fn actor_snapshots_newest_at_or_below_a_version() -> Result<()> {
    let mut n = Node::new()?;
    for (stream, v) in [
        ("actor-1", 5),
        ("actor-1", 20),
        ("actor-1", 10),
        ("actor-10", 7),
    ] {
        let r = n
            .apply(Command::SaveActorSnapshot {
                stream: stream.into(),
                version: v,
                state: Bytes::from(format!("{stream}@{v}")),
            })
            .await?;
        assert_eq!(r, CommandResult::SnapshotSaved);
    }
    let at = |s: &str, max| -> Result<Option<(u64, Bytes)>> {
        Ok(n.reader
            .actor_snapshot(G, s, max)?
            .map(|a| (a.version, a.state)))
    };
    assert_eq!(
        at("actor-1", u64::MAX)?,
        Some((20, Bytes::from("actor-1@20")))
    );
    assert_eq!(at("actor-1", 19)?.map(|a| a.0), Some(10));
    assert_eq!(at("actor-1", 10)?.map(|a| a.0), Some(10));
    assert_eq!(at("actor-1", 5)?.map(|a| a.0), Some(5));
    assert_eq!(at("actor-1", 4)?, None);
    assert_eq!(
        at("actor-10", u64::MAX)?,
        Some((7, Bytes::from("actor-10@7")))
    );
    assert_eq!(
        at("actor-", u64::MAX)?,
        None,
        "stream ids never collide by prefix"
    );
    assert_eq!(at("actor-100", u64::MAX)?, None);
    Ok(())
}

#[tokio::test]
async fn metadata_map_put_get_scan() -> Result<()> {
    let mut n = Node::new()?;
    for (k, v) in [
        ("node/1", "a"),
        ("node/2", "b"),
        ("nodes", "c"),
        ("partition/0", "d"),
        ("node/1", "A"),
    ] {
        let r = n
            .apply(Command::MetaPut {
                key: k.into(),
                value: Bytes::from(v),
            })
            .await?;
        assert_eq!(r, CommandResult::MetaPut);
    }
    assert_eq!(n.reader.meta_get(G, "node/1")?, Some(Bytes::from("A")));
    assert_eq!(n.reader.meta_get(G, "node/3")?, None);
    assert_eq!(
        n.reader.meta_get(META_GROUP, "node/1")?,
        None,
        "another group's map"
    );
    let scan = n.reader.meta_scan(G, "node/")?;
    assert_eq!(
        scan,
        [
            ("node/1".to_string(), Bytes::from("A")),
            ("node/2".to_string(), Bytes::from("b"))
        ]
    );
    assert_eq!(n.reader.meta_scan(G, "")?.len(), 4);
    Ok(())
}

#[tokio::test]
async fn over_long_stream_ids_are_refused() -> Result<()> {
    let mut n = Node::new()?;
    let long = "x".repeat(cairn_storage::MAX_STREAM_ID_LEN + 1);
    assert!(matches!(
        n.append(&long, Any, &["a"]).await?,
        Err(Rejection::StreamTombstoned { .. })
    ));
    assert!(matches!(
        n.reader.read_stream(G, &long, 0, 1),
        Err(Error::StreamIdTooLong { .. })
    ));
    let max = "y".repeat(cairn_storage::MAX_STREAM_ID_LEN);
    n.append(&max, Any, &["a"]).await??;
    assert_eq!(n.versions(&max)?, [1]);
    assert_eq!(n.reader.last_position(G)?, 1);
    Ok(())
}

/// Raft snapshots and restarts keep everything.
#[path = "durability.rs"]
mod durability;

/// Deletion purges and stream retention (`max-count`, `max-age`).
#[path = "retention.rs"]
mod retention;

/// The version of a stream at a time (`Reader::version_at`).
#[path = "time_travel.rs"]
mod time_travel;

/// A node whose partition log holds, by position: a1 1, a2 2, b1 3 (purged
/// by a hard delete of `b`), c1..c3 4-6, a3 7, d1 8.
async fn node_with_a_gap_in_its_log() -> Result<Node> {
    let mut n = Node::new()?;
    n.append("a", NoStream, &["a1", "a2"]).await??;
    n.append("b", NoStream, &["b1"]).await??;
    n.append("c", NoStream, &["c1", "c2", "c3"]).await??;
    n.delete("b", Any, true).await??;
    n.apply_all(vec![
        append_cmd(TS, "a", Exact(2), &["a3"]),
        append_cmd(TS, "d", NoStream, &["d1"]),
    ])
    .await?;
    Ok(n)
}

/// Reads that follow the tail of the partition log are answered from the
/// events kept in memory as they are applied; after a restart the same
/// reads come from RocksDB. Both give the same events, with the gaps that
/// a hard delete left, from any position.
#[tokio::test]
async fn the_partition_log_reads_the_same_from_memory_and_from_disk() -> Result<()> {
    let n = node_with_a_gap_in_its_log().await?;
    let read_all = |reader: &Reader| -> Result<Vec<Vec<RecordedEvent>>> {
        (0..=9)
            .map(|from| Ok(reader.read_partition_log(G, from, 4)?))
            .collect()
    };
    let from_memory = read_all(&n.reader)?;
    let ids: Vec<&str> = from_memory[0].iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2", "c1", "c2"], "b1 (position 3) was purged");
    let n = n.restart()?;
    assert_eq!(read_all(&n.reader)?, from_memory);
    Ok(())
}

/// A read of the partition log through a stream filter keeps only those
/// streams' events but moves past every position it read, kept or not, the
/// same from memory and, after a restart, from RocksDB.
#[tokio::test]
async fn a_filtered_partition_log_read_passes_over_other_streams() -> Result<()> {
    let n = node_with_a_gap_in_its_log().await?;
    let pages = |reader: &Reader| -> Result<Vec<(Vec<String>, Option<u64>)>> {
        (0..=9)
            .map(|from| {
                let page = reader.read_partition_log_where(G, from, 3, |s| s == "a" || s == "d")?;
                let ids = page.events.into_iter().map(|e| e.id).collect();
                Ok((ids, page.last_position))
            })
            .collect()
    };
    let from_memory = pages(&n.reader)?;
    assert_eq!(from_memory[0], (vec!["a1".into(), "a2".into()], Some(4)));
    assert_eq!(from_memory[4], (vec![], Some(6)), "only c's events");
    assert_eq!(from_memory[6], (vec!["a3".into(), "d1".into()], Some(8)));
    assert_eq!(from_memory[9], (vec![], None), "past the end");
    let n = n.restart()?;
    assert_eq!(pages(&n.reader)?, from_memory);
    Ok(())
}
