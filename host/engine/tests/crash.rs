//! A real crash: a child process ingests and aborts at a chosen moment; the
//! parent reopens the queue and checks that everything the child was told
//! is durable is there, and that the stored cursor is never ahead of the
//! stored events.
#![allow(clippy::unwrap_used)]

use safd_connector::{Event, Severity};
use safd_engine::Queue;
use std::io::Write;
use std::process::Command;

const CHILD_DIR: &str = "SAFD_CRASH_DIR";
const CHILD_ABORT_AFTER: &str = "SAFD_CRASH_AFTER";

fn batch(start: u64, len: u64) -> Vec<Event> {
    (start..start + len)
        .map(|n| Event {
            id: format!("ev-{n}"),
            time: n as i64,
            severity: Severity::Info,
            attributes: Vec::new(),
            body: "x".repeat(150),
        })
        .collect()
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
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
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
