//! The queue on a real tmpfs that fills up.
//!
//! - With the free-space reserve, ingest is refused before the disk is
//!   full (the store never meets ENOSPC), and once there is room what a
//!   source hands over again lands exactly once, with contiguous seqs, also
//!   after a reopen.
//! - Without it, the store meets ENOSPC: it is marked failed (event 2007),
//!   reopened once the data directory takes writes again (2008), and the
//!   source's events land exactly once.
//!
//! Mounting needs the right to mount (root in CI). Where that is missing
//! the tests say SKIPPED, unless SAFD_REQUIRE_ROOT_TESTS is set (CI's
//! `.ci/run` sets it), which makes the skip a failure.

use crate::common::fakes::{FakeSource, eventually};
use crate::common::seqs;
use safd_connector::EventBlock;
use safd_connector::event_ids::{QUEUE_STORE_FAILED, QUEUE_STORE_REOPENED};
use safd_connector::{Attribute, Event, Severity};
use safd_engine::{
    Engine, HeldBatch, Notices, PumpTuning, Queue, QueueError, QueueOptions, SAFD_STREAM,
};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn event(n: u64) -> Event {
    Event {
        id: format!("ev-{n}"),
        time: 1_710_119_830_000_000 + n as i64,
        severity: Severity::Info,
        attributes: vec![Attribute::new("subsystem", "TMF")],
        // Incompressible enough that the disk really fills.
        body: format!("event {n} {}", "x".repeat(200 + (n % 97) as usize)),
    }
}

const TOTAL: u64 = 160 * 256;

/// A tmpfs of `mib` MiB at `path`, unmounted when dropped (also when the
/// test fails); `None` where mounting is not permitted and not required.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(path: &'a Path, mib: u64) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Self(path)),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("SAFD_REQUIRE_ROOT_TESTS").is_none(),
                    "cannot mount a tmpfs, and SAFD_REQUIRE_ROOT_TESTS says this test must \
                     run: {why}"
                );
                eprintln!("SKIPPED: cannot mount a tmpfs: {why}");
                None
            }
        }
    }

    fn resize(&self, mib: u64) {
        let grown = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.0)
            .status()
            .unwrap();
        assert!(grown.success());
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

/// Every stored event of `stream` once, seqs 1..=`total` without a hole.
fn assert_exactly_once(queue: &Queue, stream: &str, total: u64) {
    let all = seqs(queue, stream);
    let holes: Vec<(u64, u64)> = all
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        holes.is_empty() && all.first() == Some(&1),
        "seqs jump (from, to): {holes:?}; first {:?}, {} stored",
        all.first(),
        all.len()
    );
    assert_eq!(all.len() as u64, total, "stored events");
    let stored = queue.read(stream, 1, usize::MAX, usize::MAX).unwrap();
    let mut ids: Vec<&str> = stored.iter().map(|e| e.event.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, total, "distinct ids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_and_a_reopen_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(disk) = Tmpfs::mount(&data, 12) else {
        return;
    };
    let options = QueueOptions {
        min_free_bytes: 4 << 20,
        ..QueueOptions::default()
    };
    let (queue, _) = Queue::open_with(&data, options, Notices::default(), Arc::default()).unwrap();
    let mut next = 0u64;
    let mut failures = 0;
    // Like a pump: a batch is handed over again until it is stored.
    while next < TOTAL {
        let batch: Vec<Event> = (next..next + 256).map(event).collect();
        let cursor = (next + 256).to_be_bytes().to_vec();
        match queue.ingest("s", &batch, Some(&cursor)).await {
            Ok(_) => next += 256,
            Err(err) => {
                assert!(matches!(err, QueueError::DiskFull { .. }), "{err}");
                failures += 1;
                if failures == 3 {
                    disk.resize(256);
                }
            }
        }
    }
    assert!(failures >= 3, "the disk never filled");
    assert_exactly_once(&queue, "s", TOTAL);
    // And so it is read back.
    drop(queue);
    let (queue, report) =
        Queue::open_with(&data, options, Notices::default(), Arc::default()).unwrap();
    assert_eq!(report.streams[0].next_seq, TOTAL + 1);
    assert_exactly_once(&queue, "s", TOTAL);
}

/// Without the reserve the store meets ENOSPC itself: 2007, then 2008 once
/// the disk has room, and the source's events are stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_met_a_full_disk_is_reopened_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(disk) = Tmpfs::mount(&data, 12) else {
        return;
    };
    // Twice what fills the disk.
    const EVENTS: u64 = 2 * TOTAL;
    let source = FakeSource::default();
    source.log.lock().unwrap().extend((0..EVENTS).map(event));
    let (engine, _) = crate::common::fakes::open_engine(
        data.clone(),
        QueueOptions {
            min_free_bytes: 0,
            ..QueueOptions::default()
        },
    );
    engine
        .add_source(
            "s",
            Arc::new(source.clone()),
            PumpTuning {
                idle_wait: Duration::from_millis(5),
                ..PumpTuning::default()
            },
        )
        .unwrap();
    let ids =
        |engine: &Engine| -> Vec<u32> { engine.notices().recent().iter().map(|n| n.id).collect() };
    eventually("the store failed (2007)", Duration::from_secs(60), || {
        ids(&engine).contains(&QUEUE_STORE_FAILED)
    })
    .await;
    let held_at = *source.committed.lock().unwrap();
    assert!(held_at < EVENTS, "the source was not held back");
    disk.resize(256);
    eventually("the store reopened (2008)", Duration::from_secs(60), || {
        ids(&engine).contains(&QUEUE_STORE_REOPENED)
    })
    .await;
    eventually(
        "every event committed to the source",
        Duration::from_secs(60),
        || *source.committed.lock().unwrap() == EVENTS,
    )
    .await;
    assert_exactly_once(engine.queue(), "s", EVENTS);
    engine.shutdown().await.unwrap();
}

/// A write that fails after its frames are durable (sled refusing the
/// index entries, as on a full disk): the store fails (2007) and is
/// reopened (2008), the pump still holds the batch and hands it over again,
/// and every event is stored exactly once. The fault is made on cue
/// (`fault-injection`), not by filling a disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_made_durable_by_a_failed_write_is_not_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    const EVENTS: u64 = 2_000;
    let source = FakeSource::default();
    source
        .log
        .lock()
        .unwrap()
        .extend((0..EVENTS / 2).map(event));
    let (engine, _) =
        crate::common::fakes::open_engine(dir.path().to_owned(), QueueOptions::default());
    engine
        .add_source(
            "s",
            Arc::new(source.clone()),
            PumpTuning {
                idle_wait: Duration::from_millis(5),
                limits: safd_connector::PollLimits {
                    max_events: 100,
                    max_bytes: 1 << 20,
                },
                ..PumpTuning::default()
            },
        )
        .unwrap();
    eventually("the first half stored", Duration::from_secs(30), || {
        *source.committed.lock().unwrap() == EVENTS / 2
    })
    .await;
    engine.queue().fail_next_index_write();
    source
        .log
        .lock()
        .unwrap()
        .extend((EVENTS / 2..EVENTS).map(event));
    let ids =
        |engine: &Engine| -> Vec<u32> { engine.notices().recent().iter().map(|n| n.id).collect() };
    eventually("the store reopened (2008)", Duration::from_secs(60), || {
        ids(&engine).contains(&QUEUE_STORE_REOPENED)
    })
    .await;
    eventually("every event committed", Duration::from_secs(60), || {
        *source.committed.lock().unwrap() == EVENTS
    })
    .await;
    assert!(ids(&engine).contains(&QUEUE_STORE_FAILED));
    assert_exactly_once(engine.queue(), "s", EVENTS);
    // "The store failed" is itself kept until the store takes it, and
    // reaches the `safd` stream like every step.
    eventually(
        "2007 and 2008 in the safd stream",
        Duration::from_secs(30),
        || {
            let stored = own_event_ids(engine.queue());
            stored.contains(&QUEUE_STORE_FAILED) && stored.contains(&QUEUE_STORE_REOPENED)
        },
    )
    .await;
    engine.shutdown().await.unwrap();
}

/// The numbered events stored in safd's own stream.
fn own_event_ids(queue: &Queue) -> Vec<u32> {
    queue
        .read(SAFD_STREAM, 1, usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .filter_map(|e| {
            e.event
                .attributes
                .iter()
                .find(|a| a.key == "event_id")
                .and_then(|a| a.value.parse().ok())
        })
        .collect()
}

fn batch(from: u64, count: u64) -> (EventBlock, Vec<u8>) {
    let events: Vec<Event> = (from..from + count).map(event).collect();
    (
        EventBlock::from_events(&events),
        (from + count).to_be_bytes().to_vec(),
    )
}

/// A queue in `dir` holding seqs 1–100, whose write of the next 100 (the
/// batch, its cursor and the attempt are returned) failed after its frames
/// were synced.
async fn a_write_failed_after_its_frames(dir: &Path) -> (Queue, EventBlock, Vec<u8>, HeldBatch) {
    let (queue, _) = Queue::open(dir).unwrap();
    let (first, cursor) = batch(0, 100);
    queue
        .ingest_block("s", &first, Some(&cursor))
        .await
        .unwrap();
    queue.fail_next_index_write();
    let (second, cursor) = batch(100, 100);
    let mut held = HeldBatch::default();
    let failed = queue
        .ingest_held("s", &second, Some(&cursor), &mut held)
        .await
        .unwrap_err();
    assert!(failed.is_store_failure(), "{failed}");
    (queue, second, cursor, held)
}

/// The queue alone, as a pump uses it: a write that fails after its frames
/// are durable fails the store, which then refuses writes (sled would, and
/// the reopen decides what counts); after the reopen the held batch is
/// answered with the seqs it got, and the next batch follows it.
#[tokio::test]
async fn a_held_batch_read_back_by_the_reopen_is_answered_not_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, second, cursor, mut held) = a_write_failed_after_its_frames(dir.path()).await;
    let refused = queue
        .ingest_held("s", &second, Some(&cursor), &mut held)
        .await
        .unwrap_err();
    assert!(matches!(refused, QueueError::StoreDown(_)), "{refused}");

    queue.reopen().await.unwrap();
    let receipt = queue
        .ingest_held("s", &second, Some(&cursor), &mut held)
        .await
        .unwrap();
    assert_eq!((receipt.first_seq, receipt.next_seq), (101, 201));
    let (third, cursor) = batch(200, 100);
    let receipt = queue
        .ingest_block("s", &third, Some(&cursor))
        .await
        .unwrap();
    assert_eq!((receipt.first_seq, receipt.next_seq), (201, 301));
    assert_exactly_once(&queue, "s", 300);
}

/// The other outcome: the failed write's last frame never reached the disk
/// whole (here torn by hand), so the reopen does not count it and the held
/// batch is written again, with the seqs it would have had.
#[tokio::test]
async fn a_held_batch_whose_write_was_torn_is_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, second, cursor, mut held) = a_write_failed_after_its_frames(dir.path()).await;
    let newest = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - 10).unwrap();

    queue.reopen().await.unwrap();
    let receipt = queue
        .ingest_held("s", &second, Some(&cursor), &mut held)
        .await
        .unwrap();
    assert_eq!((receipt.first_seq, receipt.next_seq), (101, 201));
    assert_exactly_once(&queue, "s", 200);
    drop(queue);
    let (queue, _) = Queue::open(dir.path()).unwrap();
    assert_exactly_once(&queue, "s", 200);
}
