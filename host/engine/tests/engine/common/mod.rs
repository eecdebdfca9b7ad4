//! Helpers shared by the engine's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use safd_connector::{Event, Severity};
use safd_engine::Queue;
use std::path::Path;
use std::time::{Duration, Instant};

/// Open the queue's sled files directly, waiting (with a deadline) for the
/// lock a just-dropped queue releases from sled's own threads.
pub fn raw_open(path: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(err) if Instant::now() < deadline => {
                assert!(err.to_string().contains("acquire lock"), "{err}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => panic!("{err}"),
        }
    }
}

/// Flip one byte in every record whose key starts with `prefix`.
pub fn damage(path: &Path, prefix: u8) {
    let db = raw_open(path);
    let tree = db.open_tree("saf").unwrap();
    for item in tree.scan_prefix([prefix]) {
        let (key, value) = item.unwrap();
        let mut bad = value.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        tree.insert(key, bad).unwrap();
    }
    db.flush().unwrap();
}

/// The seqs of every stored event of `stream`, in order.
pub fn seqs(queue: &Queue, stream: &str) -> Vec<u64> {
    queue
        .read(stream, 1, usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

/// Events `ev-N` for N in `from..from + count`, time N, with bodies of
/// `body_bytes` bytes.
pub fn numbered_events(from: u64, count: u64, body_bytes: usize) -> Vec<Event> {
    (from..from + count)
        .map(|n| Event {
            id: format!("ev-{n}"),
            time: n as i64,
            severity: Severity::Info,
            attributes: Vec::new(),
            body: "x".repeat(body_bytes),
        })
        .collect()
}

pub mod fakes;
