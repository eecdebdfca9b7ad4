//! The dispatcher beyond the failover matrix: silent peers, broadcast,
//! dead letters, backpressure, operator and deep catch-up, fencing by
//! epoch, and restarts.

use crate::common::fakes::{
    FakeDestination, FakeServer, FakeSource, acked, active, catch_up_ems_from, event, eventually,
    fast_tuning, notice_ids,
};
use safd_connector::event_ids::{
    CATCH_UP_GAP, CATCH_UP_REFUSED, CATCH_UP_STARTED, DEAD_LETTERED, DEEP_CATCH_UP, FAILED_OVER,
    MEMBER_UNREACHABLE, POISON_EVENT, SOURCE_FAILED,
};
use safd_connector::{CatchUpFrom, ConnectorError, Notice, StreamPosition};
use safd_engine::{Engine, GroupConfig, GroupMode, PumpTuning, QueueOptions, Retention, Routes};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn open(dir: &Path, queue: QueueOptions) -> Engine {
    crate::common::fakes::open_engine(dir, queue).0
}

fn pump() -> PumpTuning {
    PumpTuning {
        idle_wait: Duration::from_millis(5),
        ..PumpTuning::default()
    }
}

fn group(
    name: &str,
    mode: GroupMode,
    members: &[&str],
    destination: &FakeDestination,
) -> GroupConfig {
    GroupConfig {
        name: name.into(),
        mode,
        members: crate::common::fakes::fake_members(members, destination),
        tuning: fast_tuning(),
        streams: Routes::all(),
        min_severity: None,
    }
}

/// An engine with source `ems` and failover group `mgmt` = primary, backup.
fn pair(dir: &Path, source: &FakeSource, destination: &FakeDestination) -> Engine {
    let engine = open(dir, QueueOptions::default());
    engine
        .add_source("ems", Arc::new(source.clone()), pump())
        .unwrap();
    engine
        .add_group(group(
            "mgmt",
            GroupMode::Failover,
            &["primary", "backup"],
            destination,
        ))
        .unwrap();
    engine
}

fn holds_all(servers: &[&FakeServer], stream: &str, through: u64) -> bool {
    (1..=through).all(|seq| {
        servers
            .iter()
            .any(|s| s.with(|s| s.events.contains_key(&(stream.to_owned(), seq))))
    })
}

fn count(engine: &Engine, id: u32) -> usize {
    notice_ids(engine).iter().filter(|n| **n == id).count()
}

/// The latest notice of catalog id `id` (there must be one).
fn latest(engine: &Engine, id: u32) -> Notice {
    engine
        .notices()
        .recent()
        .into_iter()
        .rfind(|n| n.id == id)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_primary_is_detected_and_failed_over() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let engine = pair(dir.path(), &source, &destination);
    let (primary, backup) = (destination.server("primary"), destination.server("backup"));
    source.append(10, "a");
    eventually("primary delivers", WAIT, || {
        active(&engine, "mgmt").as_deref() == Some("primary") && acked(&engine, "mgmt", "ems") == 10
    })
    .await;
    // SIGSTOP: accepts, never answers.
    primary.with(|s| s.silent = true);
    source.append(40, "b");
    eventually("failed over to the backup", WAIT, || {
        active(&engine, "mgmt").as_deref() == Some("backup") && acked(&engine, "mgmt", "ems") == 50
    })
    .await;
    assert!(holds_all(&[&primary, &backup], "ems", 50));
    assert!(notice_ids(&engine).contains(&MEMBER_UNREACHABLE));
    assert!(notice_ids(&engine).contains(&FAILED_OVER));
    // SIGCONT: failback after the damping probes.
    primary.with(|s| s.silent = false);
    source.append(5, "c");
    eventually("failed back", WAIT, || {
        active(&engine, "mgmt").as_deref() == Some("primary") && acked(&engine, "mgmt", "ems") == 55
    })
    .await;
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_members_each_keep_their_own_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let engine = open(dir.path(), QueueOptions::default());
    engine
        .add_source("ems", Arc::new(source.clone()), pump())
        .unwrap();
    engine
        .add_group(group(
            "siem",
            GroupMode::Broadcast,
            &["a", "b"],
            &destination,
        ))
        .unwrap();
    let (a, b) = (destination.server("a"), destination.server("b"));
    b.set(true, false);
    source.append(30, "x");
    // The server holds the events before the engine records its ack.
    eventually("a has everything, acknowledged", WAIT, || {
        holds_all(&[&a], "ems", 30) && engine.groups()[0].lanes[0].acked.get("ems") == Some(&30)
    })
    .await;
    let lanes = &engine.groups()[0].lanes;
    assert_eq!(lanes.len(), 2);
    assert_eq!(lanes[0].cursor, "siem/a");
    assert_eq!(lanes[0].acked.get("ems"), Some(&30));
    assert_eq!(lanes[1].acked.get("ems").copied().unwrap_or(0), 0);
    let lag = engine.lag().await;
    assert_eq!(lag[&("siem/b".to_owned(), "ems".to_owned())], 30);
    b.set(true, true);
    eventually("b catches up on its own cursor", WAIT, || {
        holds_all(&[&b], "ems", 30)
    })
    .await;
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_events_become_dead_letters_and_can_be_replayed() {
    for whole_batch in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (source, destination) = (FakeSource::default(), FakeDestination::default());
        let engine = pair(dir.path(), &source, &destination);
        let primary = destination.server("primary");
        primary.with(|s| {
            s.rejects.insert("a-7".into());
            s.rejects.insert("a-20".into());
            s.reject_whole_batch = whole_batch;
        });
        source.append(40, "a");
        eventually("everything settled", WAIT, || {
            acked(&engine, "mgmt", "ems") == 40
        })
        .await;
        let letters = engine.dead_letters("mgmt").unwrap();
        let ids: Vec<&str> = letters.iter().map(|l| l.event.event.id.as_str()).collect();
        assert_eq!(ids, ["a-7", "a-20"], "whole batch: {whole_batch}");
        assert_eq!(letters[0].event.seq, 8);
        assert_eq!(letters[0].member, "primary");
        assert!(letters[0].reason.contains("malformed"));
        assert_eq!(count(&engine, DEAD_LETTERED), 2);
        // Everything else arrived.
        let held = primary.with(|s| s.count("ems"));
        assert_eq!(held, 38);

        // The receiver is fixed; the operator replays. The first attempts
        // meet backpressure: the replay is retried, not dropped.
        primary.with(|s| {
            s.rejects.clear();
            s.backpressure = 2;
        });
        assert_eq!(engine.replay_dead_letters("mgmt").await.unwrap(), 2);
        eventually("replayed and removed", WAIT, || {
            engine.dead_letters("mgmt").unwrap().is_empty()
        })
        .await;
        assert!(holds_all(&[&primary], "ems", 40));
        engine.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_waits_on_the_same_member() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let engine = pair(dir.path(), &source, &destination);
    source.append(5, "a");
    eventually("first events", WAIT, || acked(&engine, "mgmt", "ems") == 5).await;
    destination.server("primary").with(|s| s.backpressure = 3);
    source.append(5, "b");
    eventually("delivered after the backpressure", WAIT, || {
        acked(&engine, "mgmt", "ems") == 10
    })
    .await;
    assert_eq!(active(&engine, "mgmt").as_deref(), Some("primary"));
    assert!(!notice_ids(&engine).contains(&FAILED_OVER));
    engine.shutdown().await.unwrap();
}

/// `Retry-After: 4294967` (49 days) does not stop the group: the wait is
/// capped, and a member that only answers "later" for longer than a call
/// may take is failed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_backpressure_fails_over() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let engine = pair(dir.path(), &source, &destination);
    source.append(5, "a");
    eventually("first events", WAIT, || acked(&engine, "mgmt", "ems") == 5).await;
    destination.server("primary").with(|s| {
        s.backpressure = u32::MAX;
        s.retry_after = Duration::from_secs(4_294_967);
    });
    source.append(5, "b");
    eventually("delivered by the backup", WAIT, || {
        acked(&engine, "mgmt", "ems") == 10
    })
    .await;
    assert_eq!(active(&engine, "mgmt").as_deref(), Some("backup"));
    assert!(notice_ids(&engine).contains(&FAILED_OVER));
    let backup = destination.server("backup");
    assert!((6..=10).all(|seq| backup.with(|s| s.events.contains_key(&("ems".to_owned(), seq)))));
    engine.shutdown().await.unwrap();
}

/// At start, a degraded primary answers first and a ready backup a moment
/// later: safd waits for the backup's answer instead of sending the first
/// events into the primary's inbox (the matrix row "primary down/up,
/// backup up/up": active = backup, events wait nowhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_start_a_ready_member_answering_late_beats_a_degraded_one() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    destination.server("primary").set(false, true);
    destination
        .server("backup")
        .with(|s| s.register_delay = Duration::from_millis(150));
    source.append(50, "a");
    let engine = pair(dir.path(), &source, &destination);
    eventually("everything at the backup", WAIT, || {
        acked(&engine, "mgmt", "ems") == 50
    })
    .await;
    assert_eq!(active(&engine, "mgmt").as_deref(), Some("backup"));
    let at_primary = destination.server("primary").with(|s| s.count("ems"));
    assert_eq!(at_primary, 0, "events went to the degraded primary's inbox");
    assert!(!notice_ids(&engine).contains(&FAILED_OVER));
    engine.shutdown().await.unwrap();
}

/// A destination that traps once mid-stream (a fault that does not
/// repeat): its instance is rebuilt, the batch goes again, and every event
/// is delivered once, with no dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_traps_once_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let engine = pair(dir.path(), &source, &destination);
    let primary = destination.server("primary");
    primary.with(|s| s.traps_once.insert("a-300".into()));
    source.append(1000, "a");
    eventually("everything delivered", Duration::from_secs(60), || {
        acked(&engine, "mgmt", "ems") == 1000
    })
    .await;
    assert_eq!(primary.with(|s| s.traps), 1, "the fault did not happen");
    assert!(engine.dead_letters("mgmt").unwrap().is_empty());
    assert_eq!(count(&engine, POISON_EVENT), 0);
    let backup = destination.server("backup");
    for seq in 1..=1000u64 {
        let key = ("ems".to_owned(), seq);
        let held = [&primary, &backup]
            .iter()
            .filter(|server| server.with(|s| s.events.contains_key(&key)))
            .count();
        assert!(held >= 1, "seq {seq} not delivered");
    }
    assert_eq!(
        primary.with(|s| s.duplicates) + backup.with(|s| s.duplicates),
        0,
        "events delivered twice"
    );
    engine.shutdown().await.unwrap();
}

/// An event that makes the destination trap whenever it is in a delivery:
/// the batch is split until it is alone, it becomes a dead letter with the
/// trap as its reason (event 1011), and everything else is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_delivery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let engine = pair(dir.path(), &source, &destination);
    for member in ["primary", "backup"] {
        destination
            .server(member)
            .with(|s| s.traps_on.insert("a-700".into()));
    }
    source.append(1000, "a");
    eventually("everything settled", Duration::from_secs(60), || {
        acked(&engine, "mgmt", "ems") == 1000
    })
    .await;
    let letters = engine.dead_letters("mgmt").unwrap();
    let ids: Vec<&str> = letters.iter().map(|l| l.event.event.id.as_str()).collect();
    assert_eq!(ids, ["a-700"]);
    assert!(
        letters[0].reason.contains("trapped"),
        "{}",
        letters[0].reason
    );
    assert_eq!(count(&engine, POISON_EVENT), 1);
    let servers = [destination.server("primary"), destination.server("backup")];
    for seq in (1..=1000).filter(|seq| *seq != 701) {
        assert!(
            servers
                .iter()
                .any(|server| server.with(|s| s.events.contains_key(&("ems".to_owned(), seq)))),
            "seq {seq} not delivered"
        );
    }
    engine.shutdown().await.unwrap();
}

/// A destination that only confirms writes (plain TCP): the receiver dies
/// with what it got in its last moments, then the backup does too. Events
/// count as delivered only after the linger, and a failure sends the
/// unconfirmed ones again: nothing is lost, at the price of duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_write_receiver_that_dies_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = FakeSource::default();
    let destination = FakeDestination {
        transport_write: true,
        ..FakeDestination::default()
    };
    let engine = pair(dir.path(), &source, &destination);
    let (primary, backup) = (destination.server("primary"), destination.server("backup"));
    // A syslog receiver never asks to catch up.
    for server in [&primary, &backup] {
        server.with(|s| s.asks_catch_up = false);
    }
    let feed = |rounds: u64| {
        let source = source.clone();
        async move {
            for _ in 0..rounds {
                source.append(20, "e");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    feed(30).await;
    // The primary dies with the last 150 ms of what it received.
    primary.with(|s| s.crash_losing(Duration::from_millis(150)));
    feed(30).await;
    eventually("the backup took over", WAIT, || {
        active(&engine, "mgmt").as_deref() == Some("backup")
    })
    .await;
    feed(20).await;
    backup.with(|s| s.crash_losing(Duration::from_millis(150)));
    feed(10).await;
    primary.with(|s| s.link_up = true);
    let total = source.len();
    eventually("every event delivered", WAIT, || {
        holds_all(&[&primary, &backup], "ems", total)
    })
    .await;
    assert!(acked(&engine, "mgmt", "ems") <= total);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_with_a_stale_epoch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let primary = destination.server("primary");
    primary.with(|s| s.epoch_skew = 1);
    destination.server("backup").set(true, false);
    source.append(10, "a");
    let engine = pair(dir.path(), &source, &destination);
    eventually("delivering", WAIT, || acked(&engine, "mgmt", "ems") == 10).await;
    // Make the primary lose its data and come back: it asks for catch-up,
    // but with a stale epoch.
    primary.set(true, false);
    eventually("all down", WAIT, || active(&engine, "mgmt").is_none()).await;
    primary.with(|s| {
        s.events.clear();
        s.link_up = true;
    });
    eventually("refused as stale", WAIT, || {
        engine
            .notices()
            .recent()
            .iter()
            .any(|n| n.id == CATCH_UP_REFUSED && n.message.contains("stale epoch"))
    })
    .await;
    assert_eq!(count(&engine, CATCH_UP_STARTED), 0);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lost_data_catches_up_from_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let primary = destination.server("primary");
    destination.server("backup").set(true, false);
    let engine = pair(dir.path(), &source, &destination);
    source.append(30, "a");
    eventually("delivered", WAIT, || acked(&engine, "mgmt", "ems") == 30).await;
    // The server restarts from an old backup: it lost seqs 11..30.
    primary.set(true, false);
    eventually("all down", WAIT, || active(&engine, "mgmt").is_none()).await;
    primary.with(|s| {
        s.events.retain(|(_, seq), _| *seq <= 10);
        s.link_up = true;
    });
    eventually("caught up", WAIT, || holds_all(&[&primary], "ems", 30)).await;
    let started = latest(&engine, CATCH_UP_STARTED);
    assert_eq!(started.field("events"), Some("20"));
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_catch_up_from_seq_and_from_time() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let primary = destination.server("primary");
    let engine = pair(dir.path(), &source, &destination);
    source.append(30, "a");
    eventually("delivered", WAIT, || acked(&engine, "mgmt", "ems") == 30).await;
    let duplicates = || primary.with(|s| s.duplicates_by_stream.get("ems").copied().unwrap_or(0));
    let before = duplicates();
    catch_up_ems_from(&engine, 21).await.unwrap();
    eventually("replayed 21..=30", WAIT, || duplicates() == before + 10).await;
    // From the time of the event at index 25 (seq 26).
    engine
        .catch_up("mgmt", None, CatchUpFrom::Time(event("a", 25).time))
        .await
        .unwrap();
    eventually("replayed 26..=30", WAIT, || duplicates() == before + 15).await;
    assert!(matches!(
        engine.catch_up("nope", None, CatchUpFrom::Time(0)).await,
        Err(safd_engine::EngineError::UnknownGroup(_))
    ));
    engine.shutdown().await.unwrap();
}

/// An engine whose stream `ems` (from `source`) delivered 30 events to
/// `destination`'s member `primary`, all of which then left the replay
/// window.
async fn thirty_events_beyond_the_window(
    dir: &Path,
    source: &FakeSource,
    destination: &FakeDestination,
) -> Engine {
    let engine = open(
        dir,
        QueueOptions {
            retention: Retention {
                max_bytes: 0,
                max_age: Duration::ZERO,
            },
            ..QueueOptions::default()
        },
    );
    engine
        .add_source("ems", Arc::new(source.clone()), pump())
        .unwrap();
    engine
        .add_group(group(
            "mgmt",
            GroupMode::Failover,
            &["primary"],
            destination,
        ))
        .unwrap();
    source.append(30, "a");
    eventually("delivered", WAIT, || acked(&engine, "mgmt", "ems") == 30).await;
    engine.queue().enforce_retention().await.unwrap();
    let streams = engine.streams().await;
    let ems = streams.iter().find(|s| s.name == "ems").unwrap();
    assert_eq!(ems.first_seq, 31, "acknowledged events left the window");
    engine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_replay_window_the_source_seeks_or_the_gap_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let engine = thirty_events_beyond_the_window(dir.path(), &source, &destination).await;
    // A stream without a running source.
    let orphan: Vec<_> = (0..5).map(|n| event("o", n)).collect();
    engine
        .queue()
        .ingest("orphan", &orphan, None)
        .await
        .unwrap();
    eventually("delivered", WAIT, || acked(&engine, "mgmt", "orphan") == 5).await;
    let trimmed = engine.queue().enforce_retention().await.unwrap();
    assert!(trimmed.events >= 5, "{trimmed:?}");

    engine
        .catch_up(
            "mgmt",
            None,
            CatchUpFrom::Positions(vec![
                StreamPosition {
                    stream: "ems".into(),
                    seq: 1,
                },
                StreamPosition {
                    stream: "orphan".into(),
                    seq: 1,
                },
            ]),
        )
        .await
        .unwrap();
    // The source re-reads from the first event's time: 30 events again,
    // with new seqs (receivers deduplicate them by id).
    eventually("re-read through the source", WAIT, || {
        acked(&engine, "mgmt", "ems") == 60
    })
    .await;
    assert_eq!(
        source.seeks.lock().unwrap().as_slice(),
        [event("a", 0).time]
    );
    assert_eq!(count(&engine, DEEP_CATCH_UP), 1);
    let gap = latest(&engine, CATCH_UP_GAP);
    assert_eq!(gap.field("stream"), Some("orphan"));
    assert_eq!(gap.field("last_seq"), Some("5"));
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_cannot_seek_gets_the_gap_announced_and_reads_on() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let engine = thirty_events_beyond_the_window(dir.path(), &source, &destination).await;
    // A passing failure is tried again; `rejected` (the source keeps no
    // history) is final.
    source.seek_errors.lock().unwrap().extend([
        ConnectorError::Transient("busy".into()),
        ConnectorError::Rejected("it keeps no history".into()),
    ]);
    catch_up_ems_from(&engine, 11).await.unwrap();
    eventually("the gap announced", WAIT, || {
        count(&engine, CATCH_UP_GAP) == 1
    })
    .await;
    let gap = latest(&engine, CATCH_UP_GAP);
    assert_eq!(gap.field("stream"), Some("ems"));
    assert_eq!(gap.field("first_seq"), Some("11"));
    assert_eq!(gap.field("last_seq"), Some("30"));
    assert!(
        gap.message.contains("it keeps no history"),
        "{}",
        gap.message
    );
    assert_eq!(
        source.seeks.lock().unwrap().len(),
        2,
        "tried twice, then given up"
    );
    // The source reads on, and is not asked to seek again.
    source.append(5, "b");
    eventually("new events delivered", WAIT, || {
        acked(&engine, "mgmt", "ems") == 35
    })
    .await;
    assert_eq!(source.seeks.lock().unwrap().len(), 2);
    assert_eq!(count(&engine, CATCH_UP_GAP), 1);
    // Only the passing failure counted as the source's: a source without
    // history that says so has not failed.
    assert_eq!(count(&engine, SOURCE_FAILED), 1);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_cursors_and_acks_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let primary = destination.server("primary");
    destination.server("backup").set(true, false);
    {
        let engine = pair(dir.path(), &source, &destination);
        source.append(25, "a");
        eventually("delivered", WAIT, || acked(&engine, "mgmt", "ems") == 25).await;
        primary.set(true, false);
        source.append(25, "b");
        eventually("stored while down", WAIT, || {
            *source.committed.lock().unwrap() == 50
        })
        .await;
        engine.shutdown().await.unwrap();
    }
    primary.set(true, true);
    let engine = pair(dir.path(), &source, &destination);
    source.append(10, "c");
    eventually("everything delivered", WAIT, || {
        acked(&engine, "mgmt", "ems") == 60
    })
    .await;
    // The source resumed from its durable cursor: nothing was stored twice.
    let streams = engine.streams().await;
    let ems = streams.iter().find(|s| s.name == "ems").unwrap();
    assert_eq!(ems.next_seq, 61);
    assert!(holds_all(&[&primary], "ems", 60));
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_and_groups_replaced_while_running_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let primary = destination.server("primary");
    let backup = destination.server("backup");
    let engine = Arc::new(pair(dir.path(), &source, &destination));
    // The source keeps writing while everything is swapped under it.
    let writer = {
        let source = source.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                source.append(3, "live");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    for round in 0..5 {
        eventually("some delivered", WAIT, || {
            acked(&engine, "mgmt", "ems") > round * 20
        })
        .await;
        engine.remove_source("ems").await.unwrap();
        engine
            .add_source("ems", Arc::new(source.clone()), pump())
            .unwrap();
        // Members swapped in order: the backup becomes the primary.
        let members: &[&str] = if round % 2 == 0 {
            &["backup", "primary"]
        } else {
            &["primary", "backup"]
        };
        engine
            .replace_group(group("mgmt", GroupMode::Failover, members, &destination))
            .await
            .unwrap();
    }
    writer.await.unwrap();
    eventually("everything delivered", WAIT, || {
        acked(&engine, "mgmt", "ems") == 300
    })
    .await;
    let streams = engine.streams().await;
    let ems = streams.iter().find(|s| s.name == "ems").unwrap();
    assert_eq!(ems.next_seq, 301, "the source resumed from its cursor");
    assert!(holds_all(&[&primary, &backup], "ems", 300));
    let repeated = primary.with(|s| s.duplicates) + backup.with(|s| s.duplicates);
    assert_eq!(
        repeated, 0,
        "a replaced group sent acknowledged events again"
    );

    engine.remove_group("mgmt").await.unwrap();
    assert!(engine.groups().is_empty());
    assert!(matches!(
        engine.remove_source("nope").await,
        Err(safd_engine::EngineError::UnknownSource(_))
    ));
    engine.shutdown().await.unwrap();
}

/// A source whose sessions cannot open is `failing` with its reason, and
/// `running` once it opens; the reason stays as its last error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_failing_to_open_says_why_and_recovers() {
    use safd_engine::SourceActivity;
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), QueueOptions::default());
    let source = FakeSource::default();
    *source.refuse_open.lock().unwrap() = Some("port 1514 in use".into());
    engine
        .add_source("ems", Arc::new(source.clone()), pump())
        .unwrap();
    let state = |engine: &Engine| engine.sources().into_iter().next().unwrap();
    eventually("failing", Duration::from_secs(5), || {
        let s = state(&engine);
        s.activity == SourceActivity::Failing && s.failures >= 2
    })
    .await;
    assert!(
        state(&engine)
            .last_error
            .unwrap()
            .contains("port 1514 in use")
    );
    *source.refuse_open.lock().unwrap() = None;
    source.append(3, "e");
    eventually("running", Duration::from_secs(15), || {
        state(&engine).activity == SourceActivity::Running && *source.committed.lock().unwrap() == 3
    })
    .await;
    let s = state(&engine);
    assert_eq!((s.stream.as_str(), s.failures), ("ems", 0));
    assert!(s.last_error.unwrap().contains("port 1514 in use"));
    engine.shutdown().await.unwrap();
}

/// `streams`: each group receives exactly the streams it routes, passes
/// over the others (acknowledged as nothing to deliver: no backlog, no
/// hold on retention), and a catch-up replays only what it routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_deliver_only_the_streams_they_route() {
    let dir = tempfile::tempdir().unwrap();
    let (ems, app) = (FakeSource::default(), FakeSource::default());
    let (to_mgmt, to_siem) = (FakeDestination::default(), FakeDestination::default());
    let engine = open(dir.path(), QueueOptions::default());
    engine
        .add_source("ems", Arc::new(ems.clone()), pump())
        .unwrap();
    engine
        .add_source("app-1", Arc::new(app.clone()), pump())
        .unwrap();
    let mut mgmt = group("mgmt", GroupMode::Failover, &["primary"], &to_mgmt);
    mgmt.streams = Routes::matching(&["ems".into(), "safd".into()]).unwrap();
    let mut siem = group("siem", GroupMode::Failover, &["collector"], &to_siem);
    siem.streams = Routes::matching(&["app-*".into()]).unwrap();
    engine.add_group(mgmt).unwrap();
    engine.add_group(siem).unwrap();
    ems.append(20, "e");
    app.append(30, "a");
    eventually(
        "each group has its share and passed over the rest",
        WAIT,
        || {
            acked(&engine, "mgmt", "ems") == 20
                && acked(&engine, "mgmt", "app-1") == 30
                && acked(&engine, "siem", "app-1") == 30
                && acked(&engine, "siem", "ems") == 20
        },
    )
    .await;
    let (primary, collector) = (to_mgmt.server("primary"), to_siem.server("collector"));
    assert!(holds_all(&[&primary], "ems", 20));
    assert!(holds_all(&[&collector], "app-1", 30));
    assert_eq!(primary.with(|s| s.count("app-1")), 0);
    assert_eq!(collector.with(|s| s.count("ems")), 0);
    assert_eq!(collector.with(|s| s.count("safd")), 0);
    // Nothing waits for a group that does not route it.
    let lag = engine.lag().await;
    assert!(lag.values().all(|n| *n == 0), "{lag:?}");

    // A catch-up from the start replays ems only.
    let replays =
        |stream: &str| primary.with(|s| s.duplicates_by_stream.get(stream).copied().unwrap_or(0));
    engine
        .catch_up(
            "mgmt",
            None,
            CatchUpFrom::Positions(vec![
                StreamPosition {
                    stream: "ems".into(),
                    seq: 1,
                },
                StreamPosition {
                    stream: "app-1".into(),
                    seq: 1,
                },
            ]),
        )
        .await
        .unwrap();
    eventually("ems replayed", WAIT, || replays("ems") == 20).await;
    assert_eq!(
        primary.with(|s| s.count("app-1")),
        0,
        "a catch-up replays only what is routed"
    );
    engine.shutdown().await.unwrap();
}

/// A group with `min_severity` is sent only the events of at least that
/// severity, with the seqs it left out as ranges: together they cover the
/// stream, and a run of nothing but left-out events (at the end here)
/// still moves the group on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_min_severity_gets_its_share_and_the_ranges_it_left_out() {
    use safd_connector::Severity;
    let dir = tempfile::tempdir().unwrap();
    let ems = FakeSource::default();
    let to_siem = FakeDestination::default();
    let engine = open(dir.path(), QueueOptions::default());
    engine
        .add_source("ems", Arc::new(ems.clone()), pump())
        .unwrap();
    let mut siem = group("siem", GroupMode::Failover, &["collector"], &to_siem);
    siem.streams = Routes::matching(&["ems".into()]).unwrap();
    siem.min_severity = Some(Severity::Major);
    engine.add_group(siem).unwrap();
    // Every fifth a major or a critical, then a long run of infos.
    let severities: Vec<Severity> = (1..=60u64)
        .map(|n| match n {
            _ if n > 40 => Severity::Info,
            _ if n % 10 == 0 => Severity::Critical,
            _ if n % 5 == 0 => Severity::Major,
            _ => Severity::Minor,
        })
        .collect();
    ems.append_severities(&severities, "e");
    eventually("every seq settled for the group", WAIT, || {
        acked(&engine, "siem", "ems") == 60
    })
    .await;
    let collector = to_siem.server("collector");
    let (delivered, left_out) = collector.with(|s| {
        let delivered: Vec<u64> = s
            .events
            .keys()
            .filter(|(stream, _)| stream == "ems")
            .map(|(_, seq)| *seq)
            .collect();
        (delivered, s.left_out.clone())
    });
    assert_eq!(delivered, (1..=8).map(|n| n * 5).collect::<Vec<u64>>());
    let mut covered: Vec<u64> = delivered.clone();
    for (stream, first, last) in &left_out {
        assert_eq!(stream, "ems");
        covered.extend(*first..=*last);
    }
    covered.sort_unstable();
    covered.dedup();
    assert_eq!(covered, (1..=60).collect::<Vec<u64>>(), "{left_out:?}");
    assert!(
        left_out.iter().any(|(_, _, last)| *last == 60),
        "{left_out:?}"
    );
    // Nothing left out of the stream waits: no lag.
    let lag = engine.lag().await;
    assert!(lag.values().all(|n| *n == 0), "{lag:?}");
}
