//! Capacity (block / drop_oldest), the high-water mark and the replay
//! window, on real sled files.

use crate::common::fakes::eventually;
use crate::common::seqs;
use safd_connector::Event;
use safd_connector::event_ids::{
    QUEUE_BELOW_HIGH_WATER, QUEUE_EVENTS_DROPPED, QUEUE_FULL, QUEUE_HIGH_WATER,
};
use safd_engine::{Metrics, Notices, Queue, QueueError, QueueOptions, Retention, WhenFull};
use std::sync::Arc;
use std::time::Duration;

fn events(from: u64, count: u64) -> Vec<Event> {
    crate::common::numbered_events(from, count, 1000)
}

/// Stored bytes of one batch of `events(_, 10)`, rounded up so that the
/// few bytes batches differ by (longer ids) never matter.
async fn batch_bytes() -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = Queue::open(dir.path()).unwrap();
    queue.ingest("s", &events(100, 10), None).await.unwrap();
    queue.used_bytes() + 50
}

fn open(dir: &std::path::Path, options: QueueOptions) -> (Arc<Queue>, Notices, Arc<Metrics>) {
    let notices = Notices::default();
    let metrics = Arc::new(Metrics::default());
    let (queue, _) = Queue::open_with(dir, options, notices.clone(), metrics.clone()).unwrap();
    (Arc::new(queue), notices, metrics)
}

fn ids(notices: &Notices) -> Vec<u32> {
    notices.recent().iter().map(|n| n.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_blocks_sources_until_acks_free_space() {
    let batch = batch_bytes().await;
    let dir = tempfile::tempdir().unwrap();
    let (queue, notices, _) = open(
        dir.path(),
        QueueOptions {
            capacity_bytes: batch * 3,
            retention: Retention {
                max_bytes: 0,
                max_age: Duration::ZERO,
            },
            ..QueueOptions::default()
        },
    );
    queue.set_cursor_owners(["mgmt".to_owned()]);
    for i in 0..3 {
        queue.ingest("s", &events(i * 10, 10), None).await.unwrap();
    }
    let blocked = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.ingest("s", &events(30, 10), None).await })
    };
    eventually("queue full announced", Duration::from_secs(5), || {
        ids(&notices).contains(&QUEUE_FULL)
    })
    .await;
    assert!(!blocked.is_finished(), "the source must wait");
    assert!(ids(&notices).contains(&QUEUE_HIGH_WATER));
    // Delivery acknowledges the first batch: its space is reclaimed.
    queue.ack("mgmt", "s", 10).await.unwrap();
    let receipt = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(receipt.first_seq, 31);
    assert_eq!(seqs(&queue, "s"), (11..=40).collect::<Vec<_>>());
    // Nothing was dropped.
    assert!(!ids(&notices).contains(&QUEUE_EVENTS_DROPPED));
}

#[tokio::test]
async fn drop_oldest_drops_counts_and_announces() {
    let batch = batch_bytes().await;
    let dir = tempfile::tempdir().unwrap();
    let (queue, notices, metrics) = open(
        dir.path(),
        QueueOptions {
            capacity_bytes: batch * 3,
            when_full: WhenFull::DropOldest,
            ..QueueOptions::default()
        },
    );
    for i in 0..5 {
        queue.ingest("s", &events(i * 10, 10), None).await.unwrap();
    }
    assert_eq!(seqs(&queue, "s"), (21..=50).collect::<Vec<_>>());
    assert_eq!(Metrics::get(&metrics.events_dropped), 20);
    let dropped: Vec<_> = notices
        .recent()
        .into_iter()
        .filter(|n| n.id == QUEUE_EVENTS_DROPPED)
        .collect();
    assert_eq!(dropped.len(), 2);
    assert_eq!(dropped[0].field("first_seq"), Some("1"));
    let used = queue.used_bytes();
    assert!(used <= batch * 3);
    // The state survives a restart.
    drop(queue);
    let (queue, report) = Queue::open(dir.path()).unwrap();
    assert_eq!(report.streams[0].first_seq, 21);
    assert_eq!(queue.used_bytes(), used);
}

#[tokio::test]
async fn a_batch_larger_than_the_queue_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _, _) = open(
        dir.path(),
        QueueOptions {
            capacity_bytes: 1000,
            ..QueueOptions::default()
        },
    );
    let err = queue.ingest("s", &events(0, 10), None).await.unwrap_err();
    assert!(matches!(err, QueueError::BatchTooLarge { .. }));
    assert!(err.to_string().contains("queue.capacity_bytes"), "{err}");
}

#[tokio::test]
async fn the_replay_window_keeps_acknowledged_events_by_bytes_and_age() {
    let batch = batch_bytes().await;
    let dir = tempfile::tempdir().unwrap();
    let (queue, notices, _) = open(
        dir.path(),
        QueueOptions {
            capacity_bytes: batch * 10,
            retention: Retention {
                max_bytes: batch * 2,
                max_age: Duration::from_secs(3600),
            },
            ..QueueOptions::default()
        },
    );
    queue.set_cursor_owners(["a".to_owned(), "b".to_owned()]);
    for i in 0..9 {
        queue.ingest("s", &events(i * 10, 10), None).await.unwrap();
    }
    assert!(ids(&notices).contains(&QUEUE_HIGH_WATER));
    // Only what every cursor acknowledged counts.
    queue.ack("a", "s", 90).await.unwrap();
    queue.ack("b", "s", 60).await.unwrap();
    let report = queue.enforce_retention().await.unwrap();
    // 60 acknowledged by both; the window keeps the newest two batches.
    assert_eq!(report.events, 40);
    assert_eq!(seqs(&queue, "s"), (41..=90).collect::<Vec<_>>());
    assert!(ids(&notices).contains(&QUEUE_BELOW_HIGH_WATER));
    // Unacknowledged events are never removed by retention.
    queue.ack("b", "s", 90).await.unwrap();
    let report = queue.enforce_retention().await.unwrap();
    assert_eq!(report.events, 30);
    assert_eq!(seqs(&queue, "s"), (71..=90).collect::<Vec<_>>());
}

#[tokio::test]
async fn acknowledged_events_older_than_max_age_leave_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _, _) = open(
        dir.path(),
        QueueOptions {
            retention: Retention {
                max_bytes: u64::MAX,
                max_age: Duration::ZERO,
            },
            ..QueueOptions::default()
        },
    );
    queue.set_cursor_owners(["a".to_owned()]);
    queue.ingest("s", &events(0, 10), None).await.unwrap();
    queue.ingest("s", &events(10, 10), None).await.unwrap();
    queue.ack("a", "s", 15).await.unwrap();
    let report = queue.enforce_retention().await.unwrap();
    // The second chunk is only partly acknowledged: it stays whole.
    assert_eq!(report.events, 10);
    assert_eq!(seqs(&queue, "s"), (11..=20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_up_by_a_source_waiting_for_room() {
    use crate::common::fakes::FakeSource;
    use safd_engine::PumpTuning;
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = crate::common::fakes::open_engine(
        dir.path().to_owned(),
        QueueOptions {
            capacity_bytes: 4_000,
            ..QueueOptions::default()
        },
    );
    let source = FakeSource::default();
    source.append(200, "e");
    engine
        .add_source(
            "s",
            Arc::new(source.clone()),
            PumpTuning {
                limits: safd_connector::PollLimits {
                    max_events: 5,
                    max_bytes: 1 << 20,
                },
                ..PumpTuning::default()
            },
        )
        .unwrap();
    // No group acknowledges anything: the source soon waits for room.
    eventually("queue full", Duration::from_secs(5), || {
        ids(engine.notices()).contains(&QUEUE_FULL)
    })
    .await;
    // And says so: held back, waiting for room.
    eventually("the source held back", Duration::from_secs(5), || {
        engine.sources().iter().any(|s| {
            s.activity == safd_engine::SourceActivity::HeldBack
                && s.last_error.as_deref().is_some_and(|e| e.contains("room"))
        })
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), engine.shutdown())
        .await
        .expect("shutdown hung on a blocked source")
        .unwrap();
    // Nothing the source was told is stored went missing.
    let committed = *source.committed.lock().unwrap();
    drop(engine);
    let (queue, _) = Queue::open(dir.path()).unwrap();
    assert_eq!(queue.stored_through("s").await, committed);
}
