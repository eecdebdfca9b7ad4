//! The queue on a real tmpfs that fills up: ingest is refused before the
//! disk is full (sled never meets ENOSPC), and once there is room what a
//! source hands over again lands exactly once, with contiguous seqs. Needs
//! the right to mount (root in CI); skipped with a message elsewhere.
#![allow(clippy::unwrap_used)]

mod common;

use common::seqs;
use safd_connector::{Attribute, Event, Severity};
use safd_engine::{Notices, Queue, QueueError, QueueOptions};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

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

/// Unmounts when dropped, also when the test fails.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

fn mount(path: &Path, mib: u64) -> bool {
    std::fs::create_dir_all(path).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(path)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_and_a_reopen_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    if !mount(&data, 12) {
        return;
    }
    let _mounted = Mounted(&data);
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
                    let grown = Command::new("mount")
                        .args(["-o", "remount,size=256m"])
                        .arg(&data)
                        .status()
                        .unwrap();
                    assert!(grown.success());
                }
            }
        }
    }
    assert!(failures >= 3, "the disk never filled");
    let stored = queue.read("s", 1, usize::MAX, usize::MAX).unwrap();
    let ids: Vec<&str> = stored.iter().map(|e| e.event.id.as_str()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    let all = seqs(&queue, "s");
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
    assert_eq!(unique.len() as u64, TOTAL, "events lost");
    eprintln!("{} stored for {TOTAL} events", all.len());
}
