//! The durable queue against real sled files.

use crate::common::{damage, seqs};
use safd_connector::{Attribute, Event, Severity};
use safd_engine::Queue;
use std::sync::Arc;

fn event(n: u64) -> Event {
    Event {
        id: format!("ev-{n}"),
        time: 1_710_119_830_000_000 + n as i64,
        severity: Severity::Info,
        attributes: vec![Attribute::new("subsystem", "TMF")],
        body: format!("event number {n}"),
    }
}

fn events(range: std::ops::Range<u64>) -> Vec<Event> {
    range.map(event).collect()
}

fn cursor(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

#[tokio::test]
async fn ingest_assigns_seqs_and_reads_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, report) = Queue::open(dir.path()).unwrap();
    assert!(report.streams.is_empty());
    let r1 = queue
        .ingest("a", &events(0..10), Some(&cursor(10)))
        .await
        .unwrap();
    let r2 = queue
        .ingest("a", &events(10..25), Some(&cursor(25)))
        .await
        .unwrap();
    let rb = queue.ingest("b", &events(100..103), None).await.unwrap();
    assert_eq!((r1.first_seq, r1.next_seq), (1, 11));
    assert_eq!((r2.first_seq, r2.next_seq), (11, 26));
    assert_eq!((rb.first_seq, rb.next_seq), (1, 4));

    let all = queue.read("a", 1, 1000, usize::MAX).unwrap();
    assert_eq!(all.len(), 25);
    assert!(all.iter().zip(1..).all(|(e, seq)| e.seq == seq));
    assert_eq!(all[24].event.id, "ev-24");
    // From the middle of a batch, across the batch boundary, with a limit.
    let mid = queue.read("a", 7, 6, usize::MAX).unwrap();
    let seqs: Vec<u64> = mid.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [7, 8, 9, 10, 11, 12]);
    // Byte limit: at least one event, then stop once reached.
    let one = queue.read("a", 1, 1000, 1).unwrap();
    assert_eq!(one.len(), 1);
    assert!(queue.read("a", 26, 10, usize::MAX).unwrap().is_empty());
    assert!(queue.read("nope", 1, 10, usize::MAX).unwrap().is_empty());
    assert_eq!(
        queue.read("b", 1, 10, usize::MAX).unwrap()[0].event.id,
        "ev-100"
    );
}

#[tokio::test]
async fn deliveries_read_the_stored_bytes_as_the_events_read_back() {
    // The dispatcher's read (events cut from their chunks and framed behind
    // their seqs, never decoded) must hold exactly what the decoding read
    // does, for every start and limit: across chunk boundaries, mid-chunk,
    // and under byte limits.
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = Queue::open(dir.path()).unwrap();
    queue.ingest("a", &events(0..10), None).await.unwrap();
    queue.ingest("a", &large(10..400), None).await.unwrap();
    queue.ingest("a", &events(400..410), None).await.unwrap();
    for from in [1, 5, 10, 11, 12, 200, 399, 400, 410, 411, 500] {
        for (max_events, max_bytes) in [(1, usize::MAX), (7, usize::MAX), (1000, 1), (1000, 50_000)]
        {
            let decoded = queue.read("a", from, max_events, max_bytes).unwrap();
            let block = queue.read_block("a", from, max_events, max_bytes).unwrap();
            assert_eq!(
                block.to_events(),
                decoded,
                "from {from}, {max_events} / {max_bytes}"
            );
            assert_eq!(block.len(), decoded.len());
            assert_eq!(
                block.text_bytes(),
                decoded.iter().map(|e| e.event.byte_size()).sum::<usize>()
            );
        }
    }
    assert!(
        queue
            .read_block("nope", 1, 10, usize::MAX)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn reopen_recovers_next_seq_and_cursor() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (queue, _) = Queue::open(dir.path()).unwrap();
        queue
            .ingest("ems", &events(0..5), Some(&cursor(5)))
            .await
            .unwrap();
        queue
            .ingest("ems", &events(5..8), Some(&cursor(8)))
            .await
            .unwrap();
        // A cursor-only update (the source skipped something).
        queue.ingest("ems", &[], Some(&cursor(9))).await.unwrap();
    }
    let (queue, report) = Queue::open(dir.path()).unwrap();
    assert!(report.quarantined.is_empty());
    assert_eq!(report.streams.len(), 1);
    assert_eq!(report.streams[0].name, "ems");
    assert_eq!(report.streams[0].next_seq, 9);
    assert_eq!(report.streams[0].cursor, Some(cursor(9)));
    let r = queue.ingest("ems", &events(9..10), None).await.unwrap();
    assert_eq!(r.first_seq, 9);
    assert_eq!(queue.read("ems", 1, 100, usize::MAX).unwrap().len(), 9);
    // A new stream after reopen gets a fresh id, not a recycled one.
    queue.ingest("other", &events(0..1), None).await.unwrap();
    assert_eq!(queue.read("ems", 1, 100, usize::MAX).unwrap().len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ingests_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = Queue::open(dir.path()).unwrap();
    let queue = Arc::new(queue);
    let writers = 64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..4u64 {
                let stream = format!("s{w}");
                queue
                    .ingest(
                        &stream,
                        &events(round * 8..round * 8 + 8),
                        Some(&cursor(round)),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let ingests = writers * 4;
    assert!(
        queue.fsyncs() < ingests as u64,
        "{} fsyncs for {ingests} ingests: no sharing",
        queue.fsyncs()
    );
    for w in 0..writers {
        assert_eq!(
            queue
                .read(&format!("s{w}"), 1, 100, usize::MAX)
                .unwrap()
                .len(),
            32
        );
    }
}

/// A queue directory holding one batch of three events on stream `ems`,
/// closed again so its records can be damaged.
async fn three_events_stored() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = Queue::open(dir.path()).unwrap();
    queue
        .ingest("ems", &events(0..3), Some(&cursor(3)))
        .await
        .unwrap();
    dir
}

#[tokio::test]
async fn a_damaged_batch_is_quarantined_not_crash_looped_on() {
    let dir = three_events_stored().await;
    damage(dir.path(), b'C');
    for round in 0..2 {
        let (queue, report) = Queue::open(dir.path()).unwrap();
        // Each round ingests one more event after the damaged batch.
        assert_eq!(report.streams[0].next_seq, 4 + round);
        // The damaged batch (seqs 1-3) is set aside; reading goes on past
        // it to what later rounds stored.
        assert_eq!(seqs(&queue, "ems"), (4..4 + round).collect::<Vec<_>>());
        queue.ingest("ems", &events(3..4), None).await.unwrap();
        drop(queue);
    }
    let (queue, _) = Queue::open(dir.path()).unwrap();
    assert_eq!(seqs(&queue, "ems"), [4, 5]);
}

/// A damaged stream record is reported and rebuilt from the segment
/// files: its events stay, its cursor too, and no seq is given twice, even
/// when a group had acknowledged part of it.
#[tokio::test]
async fn a_damaged_stream_record_is_rebuilt_and_no_seq_is_reused() {
    let dir = three_events_stored().await;
    {
        let (queue, _) = Queue::open(dir.path()).unwrap();
        queue.ack("g", "ems", 2).await.unwrap();
        queue.flush().await.unwrap();
    }
    damage(dir.path(), b'S');
    let (queue, report) = Queue::open(dir.path()).unwrap();
    assert_eq!(report.quarantined, ["state of stream #0"]);
    assert_eq!(report.streams.len(), 1);
    assert_eq!(report.streams[0].next_seq, 4);
    assert_eq!(report.streams[0].cursor.as_deref(), Some(&cursor(3)[..]));
    assert_eq!(seqs(&queue, "ems"), [1, 2, 3]);
    let next = queue.ingest("ems", &events(3..4), None).await.unwrap();
    assert_eq!(next.first_seq, 4);
    // Opening again does not find it again: it was moved aside.
    drop(queue);
    let (queue, report) = Queue::open(dir.path()).unwrap();
    assert!(report.quarantined.is_empty());
    assert_eq!(seqs(&queue, "ems"), [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_large_batch_is_stored_in_chunks_and_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<Event> = (0..1000u64)
        .map(|n| Event {
            body: "x".repeat(400),
            ..event(n)
        })
        .collect();
    {
        let (queue, _) = Queue::open(dir.path()).unwrap();
        let r = queue
            .ingest("big", &big, Some(&cursor(1000)))
            .await
            .unwrap();
        assert_eq!((r.first_seq, r.next_seq), (1, 1001));
    }
    let (queue, report) = Queue::open(dir.path()).unwrap();
    assert_eq!(report.streams[0].next_seq, 1001);
    let all = queue.read("big", 1, 5000, usize::MAX).unwrap();
    assert_eq!(all.len(), 1000);
    assert!(
        all.iter()
            .zip(1..)
            .all(|(e, seq)| e.seq == seq && e.event.id == format!("ev-{}", seq - 1))
    );
    // Reads that start inside a later chunk.
    for from in [2, 77, 500, 999, 1000] {
        let part = queue.read("big", from, 3, usize::MAX).unwrap();
        assert_eq!(part[0].seq, from);
    }
}

/// Many tiny concurrent ingests: every writer must get its answer. A writer
/// stranded by the group commit would hang, so the whole run has a deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_never_strands_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = Queue::open(dir.path()).unwrap();
    let queue = Arc::new(queue);
    let run = async {
        let tasks: Vec<_> = (0..8)
            .map(|w| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    for i in 0..150u64 {
                        queue
                            .ingest(&format!("w{w}"), &events(i..i + 1), None)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("a writer was never told its events are durable");
    for w in 0..8 {
        assert_eq!(seqs(&queue, &format!("w{w}")).len(), 150);
    }
    assert!(queue.fsyncs() < 8 * 150);
}

/// A reopen (what follows a failed store) reads back exactly the durable
/// state: streams, cursors, acks, epochs; writes continue after it, and
/// only one store is open at a time (sled's file lock would refuse two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_has_the_durable_state_and_takes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = Queue::open(dir.path()).unwrap();
    queue
        .ingest("a", &events(0..10), Some(&cursor(10)))
        .await
        .unwrap();
    queue.ingest("b", &events(0..3), None).await.unwrap();
    queue.set_cursor_owners(["g".to_owned()]);
    queue.ack("g", "a", 4).await.unwrap();
    let epoch = queue.change_active("g", Some("primary")).await.unwrap();
    let before = queue.streams().await;

    let report = queue.reopen().await.unwrap();
    assert_eq!(report.streams, before);
    assert_eq!(queue.streams().await, before);
    let group = queue.group("g").await;
    assert_eq!(group.epoch, epoch);
    assert_eq!(group.acked["a"], 4);
    assert_eq!(group.active.as_deref(), Some("primary"));
    assert!(queue.failure().borrow().is_none());

    let receipt = queue
        .ingest("a", &events(10..15), Some(&cursor(15)))
        .await
        .unwrap();
    assert_eq!((receipt.first_seq, receipt.next_seq), (11, 16));
    assert_eq!(seqs(&queue, "a"), (1..=15).collect::<Vec<_>>());
    drop(queue);
    let (_, report) = Queue::open(dir.path()).unwrap();
    let a = report.streams.iter().find(|s| s.name == "a").unwrap();
    assert_eq!(a.next_seq, 16);
    assert_eq!(a.cursor.as_deref(), Some(&cursor(15)[..]));
}

/// Forget sled's records of every stream (index entries and state), as a
/// crash before sled's lazy flush would.
fn lose_sled_stream_records(path: &std::path::Path) {
    let db = crate::common::raw_open(path);
    let tree = db.open_tree("saf").unwrap();
    for prefix in [b'C', b'S'] {
        for item in tree.scan_prefix([prefix]) {
            tree.remove(item.unwrap().0).unwrap();
        }
    }
    db.flush().unwrap();
}

fn large(range: std::ops::Range<u64>) -> Vec<Event> {
    range
        .map(|n| Event {
            body: "x".repeat(400),
            ..event(n)
        })
        .collect()
}

/// The segment files are the durable record of an ingest: what sled never
/// got to disk is rebuilt from them at open, events and cursors alike.
#[tokio::test]
async fn ingests_sled_never_flushed_are_replayed_from_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (queue, _) = Queue::open(dir.path()).unwrap();
        queue
            .ingest("a", &events(0..3), Some(&cursor(3)))
            .await
            .unwrap();
        queue.ingest("b", &events(0..2), None).await.unwrap();
        // Several frames (over 64 KiB), then a cursor alone.
        queue
            .ingest("a", &large(3..1003), Some(&cursor(1003)))
            .await
            .unwrap();
        queue.ingest("a", &[], Some(&cursor(2000))).await.unwrap();
    }
    lose_sled_stream_records(dir.path());
    let (queue, report) = Queue::open(dir.path()).unwrap();
    let a = report.streams.iter().find(|s| s.name == "a").unwrap();
    assert_eq!(a.next_seq, 1004);
    assert_eq!(a.cursor.as_deref(), Some(&cursor(2000)[..]));
    let b = report.streams.iter().find(|s| s.name == "b").unwrap();
    assert_eq!((b.next_seq, b.cursor.as_ref()), (3, None));
    let read = queue.read("a", 1, usize::MAX, usize::MAX).unwrap();
    assert_eq!(read.len(), 1003);
    assert!(
        read.iter()
            .zip(1..)
            .all(|(e, seq)| e.seq == seq && e.event.id == format!("ev-{}", seq - 1))
    );
    // Writes go on after the replayed seqs, and survive another loss.
    queue
        .ingest("b", &events(2..4), Some(&cursor(4)))
        .await
        .unwrap();
    drop(queue);
    lose_sled_stream_records(dir.path());
    let (queue, _) = Queue::open(dir.path()).unwrap();
    assert_eq!(seqs(&queue, "b"), [1, 2, 3, 4]);
    assert_eq!(seqs(&queue, "a").len(), 1003);
}

/// An ingest whose last frame never fully reached the disk was never
/// confirmed: none of it is replayed, and the cursor stays before it.
#[tokio::test]
async fn an_ingest_cut_short_is_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (queue, _) = Queue::open(dir.path()).unwrap();
        queue
            .ingest("a", &events(0..3), Some(&cursor(3)))
            .await
            .unwrap();
        queue
            .ingest("a", &large(3..1003), Some(&cursor(1003)))
            .await
            .unwrap();
    }
    lose_sled_stream_records(dir.path());
    let segment = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(file.metadata().unwrap().len() - 100).unwrap();
    let (queue, report) = Queue::open(dir.path()).unwrap();
    assert_eq!(report.streams[0].next_seq, 4);
    assert_eq!(report.streams[0].cursor.as_deref(), Some(&cursor(3)[..]));
    assert_eq!(seqs(&queue, "a"), [1, 2, 3]);
    // The seqs are given again, to what the source sends again.
    let again = queue
        .ingest("a", &events(3..5), Some(&cursor(5)))
        .await
        .unwrap();
    assert_eq!(again.first_seq, 4);
}

/// Queue options that keep nothing once it is acknowledged.
fn no_replay_window() -> safd_engine::QueueOptions {
    safd_engine::QueueOptions {
        retention: safd_engine::Retention {
            max_bytes: 0,
            max_age: std::time::Duration::ZERO,
        },
        ..Default::default()
    }
}

/// Segment files of removed events are deleted; the disk space comes back.
#[tokio::test]
async fn segments_of_removed_events_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let options = no_replay_window();
    let (queue, _) = Queue::open_with(
        dir.path(),
        options,
        safd_engine::Notices::default(),
        Arc::default(),
    )
    .unwrap();
    queue.set_cursor_owners(["g".to_owned()]);
    // About 160 MiB over three segments of 64 MiB.
    for round in 0..400u64 {
        queue
            .ingest("a", &large(round * 1000..round * 1000 + 1000), None)
            .await
            .unwrap();
    }
    let segments = || {
        std::fs::read_dir(dir.path().join("segments"))
            .unwrap()
            .count()
    };
    let before = segments();
    assert!(before >= 3, "{before} segments");
    queue.ack("g", "a", 400_000).await.unwrap();
    let trimmed = queue.enforce_retention().await.unwrap();
    assert_eq!(trimmed.events, 400_000);
    assert_eq!(segments(), 1, "only the active segment is left");
    drop(queue);
    let (queue, report) = Queue::open(dir.path()).unwrap();
    assert_eq!(report.streams[0].next_seq, 400_001);
    assert!(seqs(&queue, "a").is_empty());
}

/// Remove every file of sled's (index and state), as an operator does
/// with a damaged index; the segment files stay.
fn remove_index(path: &std::path::Path) {
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "segments" {
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            } else {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
}

fn segment_files(path: &std::path::Path) -> std::collections::BTreeSet<std::path::PathBuf> {
    std::fs::read_dir(path.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// The run from issue 18: a stream's start delivered and removed by
/// retention (its first segment deleted), 20 000 events queued while the
/// server is down, safd stopped and its whole index removed. The index is
/// rebuilt from the segments: the 20 000 are there under their seqs, the
/// cursor is the last one stored (nothing is read again from the source),
/// no segment is deleted, and new events get new seqs. A stream whose
/// events were all removed keeps its next seq and cursor too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_index_is_rebuilt_from_the_segments_without_reusing_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let options = no_replay_window();
    let open = || {
        Queue::open_with(
            dir.path(),
            options,
            safd_engine::Notices::default(),
            Arc::default(),
        )
        .unwrap()
    };
    let delivered = 170_000u64;
    let epoch;
    {
        let (queue, _) = open();
        queue.set_cursor_owners(["g".to_owned()]);
        queue
            .ingest("quiet", &events(0..5), Some(&cursor(5)))
            .await
            .unwrap();
        // About 70 MiB: more than one segment.
        for round in 0..delivered / 1000 {
            let end = (round + 1) * 1000;
            queue
                .ingest("file", &large(round * 1000..end), Some(&cursor(end)))
                .await
                .unwrap();
        }
        queue.ack("g", "quiet", 5).await.unwrap();
        queue.ack("g", "file", delivered).await.unwrap();
        epoch = queue.change_active("g", Some("primary")).await.unwrap();
        let trimmed = queue.enforce_retention().await.unwrap();
        assert_eq!(trimmed.events, delivered + 5);
        for round in 0..20u64 {
            let start = delivered + round * 1000;
            queue
                .ingest(
                    "file",
                    &events(start..start + 1000),
                    Some(&cursor(start + 1000)),
                )
                .await
                .unwrap();
        }
    }
    let queued = (delivered + 1..=delivered + 20_000).collect::<Vec<u64>>();
    let before = segment_files(dir.path());
    assert!(
        !before.iter().any(|p| p.ends_with("0000000000000001.seg")),
        "retention deleted the first segment: {before:?}"
    );
    remove_index(dir.path());

    let (queue, report) = open();
    let rebuilt = report
        .index_rebuilt
        .as_ref()
        .expect("the index was rebuilt");
    assert_eq!(rebuilt.set_aside, None);
    let file = report.streams.iter().find(|s| s.name == "file").unwrap();
    assert_eq!(file.next_seq, delivered + 20_001);
    assert_eq!(
        file.cursor.as_deref(),
        Some(&cursor(delivered + 20_000)[..])
    );
    let quiet = report.streams.iter().find(|s| s.name == "quiet").unwrap();
    assert_eq!(
        (quiet.next_seq, quiet.cursor.as_deref()),
        (6, Some(&cursor(5)[..]))
    );
    // What the rebuilt index holds: the queued events, each under its seq,
    // after whatever of the delivered ones the kept segment still holds.
    let read = queue
        .read("file", delivered + 1, usize::MAX, usize::MAX)
        .unwrap();
    assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), queued);
    assert!(
        read.iter()
            .all(|e| e.event.id == format!("ev-{}", e.seq - 1))
    );
    let after = segment_files(dir.path());
    assert!(before.is_subset(&after), "{before:?} -> {after:?}");
    // Groups start above every epoch issued before the loss.
    assert!(queue.group("g").await.epoch > epoch);
    let next = queue.ingest("file", &events(0..1), None).await.unwrap();
    assert_eq!(next.first_seq, delivered + 20_001);
    let next = queue.ingest("quiet", &events(5..6), None).await.unwrap();
    assert_eq!(next.first_seq, 6);
}

/// sled's `db` file removed with its snapshot left: sled cannot read what
/// is there. The index is moved aside (kept) and rebuilt; nothing is lost.
#[tokio::test]
async fn an_unreadable_index_is_set_aside_and_rebuilt() {
    let dir = three_events_stored().await;
    {
        // A snapshot, as sled writes one on every clean close.
        let db = crate::common::raw_open(dir.path());
        db.insert(b"x", &b"x"[..]).unwrap();
        db.flush().unwrap();
    }
    let snapshots = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("snap.")
        })
        .count();
    assert!(snapshots > 0);
    std::fs::remove_file(dir.path().join("db")).unwrap();
    let (queue, report) = Queue::open(dir.path()).unwrap();
    let rebuilt = report.index_rebuilt.expect("the index was rebuilt");
    let aside = rebuilt.set_aside.expect("the damaged index was kept");
    assert!(aside.join("conf").exists(), "{}", aside.display());
    assert_eq!(rebuilt.streams, ["ems"]);
    assert_eq!(report.streams[0].next_seq, 4);
    assert_eq!(seqs(&queue, "ems"), [1, 2, 3]);
}

/// Ingests abandoned by their caller at random moments (a source stopped
/// by a reload): an ingest whose frames were appended still completes, so
/// no later ingest is given its seqs. After the index is rebuilt from the
/// log, every confirmed event is there and no seq holds two events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_ingest_never_leaves_its_seqs_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let mut confirmed = Vec::new();
    {
        let (queue, _) = Queue::open(dir.path()).unwrap();
        let mut rng = 7u64;
        for round in 0..300u64 {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            // Every other ingest is waited for; the rest are given up on
            // after 0 to 300 µs.
            let patience = if round % 2 == 0 {
                std::time::Duration::from_secs(60)
            } else {
                std::time::Duration::from_micros((rng >> 33) % 300)
            };
            let batch = events(round * 10..round * 10 + 10);
            let position = cursor(round);
            let ingest = queue.ingest("s", &batch, Some(&position));
            if tokio::time::timeout(patience, ingest).await.is_ok() {
                confirmed.extend(batch.into_iter().map(|e| e.id));
            }
        }
        // Whatever was abandoned mid-write finishes before the close.
        queue.ingest("s", &[], None).await.unwrap();
    }
    assert!(confirmed.len() < 3000, "no ingest was abandoned");
    assert!(!confirmed.is_empty(), "no ingest was confirmed");
    remove_index(dir.path());
    let (queue, _) = Queue::open(dir.path()).unwrap();
    let read = queue.read("s", 1, usize::MAX, usize::MAX).unwrap();
    let seqs: Vec<u64> = read.iter().map(|e| e.seq).collect();
    let unique: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "a seq holds two events");
    let stored: std::collections::BTreeSet<&str> =
        read.iter().map(|e| e.event.id.as_str()).collect();
    for id in &confirmed {
        assert!(stored.contains(id.as_str()), "confirmed event {id} lost");
    }
}

/// A segment that cannot be read for a reason other than damage (here the
/// path has become a directory: EISDIR, as EMFILE or EIO would be) is
/// trouble, not damage: the read fails, the store is marked failed, the
/// chunk is not quarantined, and once the trouble is gone a reopen reads
/// it again.
#[tokio::test]
async fn a_read_error_is_retried_not_quarantined() {
    let dir = three_events_stored().await;
    // Opened again, so no handle to the first segment is cached.
    let (queue, _) = Queue::open(dir.path()).unwrap();
    let first = segment_files(dir.path()).into_iter().next().unwrap();
    let kept = dir.path().join("kept.seg");
    std::fs::rename(&first, &kept).unwrap();
    std::fs::create_dir(&first).unwrap();
    assert!(queue.read("ems", 1, 10, usize::MAX).is_err());
    assert!(
        queue.failure().borrow().is_some(),
        "the store is marked failed"
    );
    std::fs::remove_dir(&first).unwrap();
    std::fs::rename(&kept, &first).unwrap();
    let report = queue.reopen().await.unwrap();
    assert!(report.quarantined.is_empty());
    assert_eq!(seqs(&queue, "ems"), [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repro_cursor_after_repeated_index_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut next = 0u64;
    for round in 0..8u64 {
        let (queue, report) = Queue::open_with(
            dir.path(),
            no_replay_window(),
            safd_engine::Notices::default(),
            Arc::default(),
        )
        .unwrap();
        let s = report.streams.iter().find(|s| s.name == "ems");
        eprintln!(
            "round {round}: {:?}",
            s.map(|s| (s.next_seq, s.cursor.clone(), s.first_seq))
        );
        if round > 0 {
            let s = s.expect("stream known");
            assert_eq!(
                s.cursor.as_deref(),
                Some(&cursor(next)[..]),
                "round {round}"
            );
            assert_eq!(s.next_seq, next + 1, "round {round}");
        }
        queue.set_cursor_owners(["g".to_owned()]);
        for _ in 0..10 {
            queue
                .ingest("ems", &events(next..next + 50), Some(&cursor(next + 50)))
                .await
                .unwrap();
            next += 50;
        }
        if round % 2 == 0 {
            queue.ack("g", "ems", next).await.unwrap();
            queue.enforce_retention().await.unwrap();
        }
        drop(queue);
        if round % 3 != 2 {
            remove_index(dir.path());
        }
    }
}
