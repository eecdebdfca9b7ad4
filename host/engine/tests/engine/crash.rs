//! A real crash: a child process ingests and aborts at a chosen moment; the
//! parent reopens the queue and checks that everything the child was told
//! is durable is there, and that the stored cursor is never ahead of the
//! stored events.

use safd_connector::Event;
use safd_engine::Queue;
use std::io::Write;
use std::process::Command;

const CHILD_DIR: &str = "SAFD_CRASH_DIR";
const CHILD_ABORT_AFTER: &str = "SAFD_CRASH_AFTER";

fn batch(start: u64, len: u64) -> Vec<Event> {
    crate::common::numbered_events(start, len, 150)
}

/// The child: ingest batches of 50 with cursor = events so far, print each
/// acknowledged total, and abort right after the chosen acknowledgement
/// (while two other streams keep writing, so the abort lands mid-flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return; // Only runs as the child of `abort_mid_ingest_loses_nothing`.
    };
    let abort_after: u64 = std::env::var(CHILD_ABORT_AFTER).unwrap().parse().unwrap();
    let (queue, report) = Queue::open(std::path::Path::new(&dir)).unwrap();
    let queue = std::sync::Arc::new(queue);
    let mut done = report
        .streams
        .iter()
        .find(|s| s.name == "main")
        .map_or(0, |s| s.next_seq - 1);
    for noise in ["noise-a", "noise-b"] {
        let queue = queue.clone();
        tokio::spawn(async move {
            for i in 0.. {
                queue.ingest(noise, &batch(i * 10, 10), None).await.unwrap();
            }
        });
    }
    let mut out = std::io::stdout();
    for round in 0.. {
        queue
            .ingest(
                "main",
                &batch(done, 50),
                Some(&(done + 50).to_be_bytes().to_vec()),
            )
            .await
            .unwrap();
        done += 50;
        writeln!(out, "acked {done}").unwrap();
        out.flush().unwrap();
        if round == abort_after {
            std::process::abort();
        }
    }
}

#[test]
fn abort_mid_ingest_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked_total = 0u64;
    for (run, abort_after) in [3u64, 0, 17, 1, 40, 5].into_iter().enumerate() {
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ABORT_AFTER, abort_after.to_string())
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "run {run}: the child should have aborted"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let acked: u64 = stdout
            .lines()
            // libtest may print "test crash_child ... " on the same line.
            .filter_map(|l| l.find("acked ").map(|at| &l[at + "acked ".len()..]))
            .filter_map(|n| n.trim().parse().ok())
            .max()
            .unwrap_or_else(|| panic!("run {run}: no acknowledgement printed:\n{stdout}"));
        assert!(acked > acked_total);
        acked_total = acked;

        let (queue, report) = Queue::open(dir.path()).unwrap();
        assert!(report.quarantined.is_empty(), "{:?}", report.quarantined);
        let main = report.streams.iter().find(|s| s.name == "main").unwrap();
        let stored = main.next_seq - 1;
        assert!(
            stored >= acked,
            "run {run}: acked {acked} but only {stored} stored"
        );
        // The cursor matches the stored events exactly: never ahead.
        let cursor = u64::from_be_bytes(main.cursor.clone().unwrap().try_into().unwrap());
        assert_eq!(cursor, stored, "run {run}");
        let events = queue.read("main", 1, usize::MAX, usize::MAX).unwrap();
        assert_eq!(events.len() as u64, stored);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(e.event.id, format!("ev-{i}"));
        }
        drop(queue);
    }
}

/// A power loss, simulated: what survives is exactly what was fsynced.
/// The source asks for every batch to be written by the engine's pump; at
/// each commit it is told of, the plug is pulled — the segment files are
/// copied cut at the lengths this process has fsynced
/// (`Queue::synced_segment_lengths`), without sled's index, which is
/// rebuilt from them. Reopened, each copy must hold every event up to the
/// committed cursor, once, in order, with that cursor. A pump that
/// committed before the sync of its batch returned (or an ingest that did
/// not wait for it) leaves a copy without the committed events.
mod power_loss {
    use async_trait::async_trait;
    use safd_connector::{
        Cursor, Event, PollLimits, SessionError, Severity, SourceBatch, SourceConnector,
        SourceSession, Timestamp,
    };
    use safd_engine::{PumpTuning, Queue, QueueOptions};
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    const EVENTS: u64 = 3_000;

    fn event(n: u64) -> Event {
        Event {
            id: format!("p-{n}"),
            time: 1_700_000_000_000_000 + n as i64,
            severity: Severity::Info,
            attributes: Vec::new(),
            body: format!("event {n} {}", "y".repeat((n % 50) as usize)),
        }
    }

    /// Copies of the data directory at each commit: (committed cursor,
    /// directory).
    type Snapshots = Arc<Mutex<Vec<(u64, PathBuf)>>>;

    #[derive(Clone)]
    struct PluggedSource {
        queue: Arc<OnceLock<Arc<Queue>>>,
        data: PathBuf,
        copies: PathBuf,
        snapshots: Snapshots,
    }

    #[async_trait]
    impl SourceConnector for PluggedSource {
        async fn open(
            &self,
            resume_from: Option<Cursor>,
        ) -> Result<Box<dyn SourceSession>, SessionError> {
            let position = resume_from.map_or(0, |c| u64::from_be_bytes(c.try_into().unwrap()));
            Ok(Box::new(Session {
                source: self.clone(),
                position,
            }))
        }
    }

    struct Session {
        source: PluggedSource,
        position: u64,
    }

    #[async_trait]
    impl SourceSession for Session {
        async fn poll(&mut self, limits: PollLimits) -> Result<SourceBatch, SessionError> {
            let end = (self.position + u64::from(limits.max_events)).min(EVENTS);
            let events: Vec<Event> = (self.position..end).map(event).collect();
            self.position = end;
            Ok(SourceBatch {
                cursor: (!events.is_empty()).then(|| end.to_be_bytes().to_vec()),
                more: end < EVENTS,
                events: events.into(),
            })
        }

        async fn commit(&mut self, cursor: &Cursor) -> Result<(), SessionError> {
            let committed = u64::from_be_bytes(cursor.clone().try_into().unwrap());
            let queue = self
                .source
                .queue
                .get()
                .expect("the queue is set before ingest");
            let mut snapshots = self.source.snapshots.lock().unwrap();
            let copy = self.source.copies.join(format!("{}", snapshots.len()));
            pull_the_plug(queue, &self.source.data, &copy);
            snapshots.push((committed, copy));
            Ok(())
        }

        async fn seek(&mut self, _from: Timestamp) -> Result<(), SessionError> {
            Ok(())
        }
    }

    /// What a power loss now would leave of `data`, in `to`: every segment
    /// file cut at its fsynced length (a file never synced is empty: its
    /// directory entry was synced when it was created), and no index.
    fn pull_the_plug(queue: &Queue, data: &Path, to: &Path) {
        let synced = queue.synced_segment_lengths();
        let segments = to.join("segments");
        std::fs::create_dir_all(&segments).unwrap();
        for entry in std::fs::read_dir(data.join("segments")).unwrap() {
            let path = entry.unwrap().path();
            let durable = synced
                .iter()
                .find(|(p, _)| *p == path)
                .map_or(0, |(_, len)| *len);
            let mut bytes = Vec::new();
            std::fs::File::open(&path)
                .unwrap()
                .take(durable)
                .read_to_end(&mut bytes)
                .unwrap();
            assert_eq!(
                bytes.len() as u64,
                durable,
                "{} is shorter than synced",
                path.display()
            );
            std::fs::File::create(segments.join(path.file_name().unwrap()))
                .unwrap()
                .write_all(&bytes)
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_power_loss_at_any_commit_keeps_everything_committed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let source = PluggedSource {
            queue: Arc::default(),
            data: data.clone(),
            copies: dir.path().join("copies"),
            snapshots: Snapshots::default(),
        };
        let (engine, _) = crate::common::fakes::open_engine(data.clone(), QueueOptions::default());
        source.queue.set(engine.queue().clone()).ok().unwrap();
        engine
            .add_source(
                "s",
                Arc::new(source.clone()),
                PumpTuning {
                    limits: PollLimits {
                        max_events: 37,
                        max_bytes: 1 << 20,
                    },
                    idle_wait: Duration::from_millis(5),
                    ..PumpTuning::default()
                },
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while source.snapshots.lock().unwrap().last().map(|(c, _)| *c) != Some(EVENTS) {
            assert!(
                Instant::now() < deadline,
                "the source was not read to its end"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        engine.shutdown().await.unwrap();

        let snapshots = source.snapshots.lock().unwrap().clone();
        assert!(
            snapshots.len() as u64 >= EVENTS / 37,
            "{} commits",
            snapshots.len()
        );
        for (committed, copy) in snapshots {
            let (queue, report) = Queue::open(&copy).unwrap();
            let stream = report
                .streams
                .iter()
                .find(|s| s.name == "s")
                .unwrap_or_else(|| panic!("commit {committed}: the stream is gone"));
            let cursor = stream
                .cursor
                .clone()
                .map_or(0, |c| u64::from_be_bytes(c.try_into().unwrap()));
            assert!(
                cursor >= committed,
                "commit {committed}: the power loss took the cursor back to {cursor}"
            );
            // Events 0..cursor with seqs 1..=cursor: none lost, none twice,
            // and the cursor never ahead of the events.
            assert_eq!(stream.next_seq, cursor + 1, "commit {committed}");
            let stored = queue.read("s", 1, usize::MAX, usize::MAX).unwrap();
            let ids: Vec<&str> = stored.iter().map(|e| e.event.id.as_str()).collect();
            let expected: Vec<String> = (0..cursor).map(|n| format!("p-{n}")).collect();
            assert_eq!(ids, expected, "commit {committed}");
        }
    }
}
