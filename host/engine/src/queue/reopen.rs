//! Reopening the queue's store after an I/O failure.
//!
//! sled 0.34 refuses every write after an I/O error — a full disk, a
//! directory that became unwritable — until the database is reopened. safd
//! does not stop for that: sources are held back with the batch they handed
//! over (event 2006), the failure is announced (2007), and once a probe
//! write to the data directory succeeds the store is reopened from disk
//! (2008). What was durable before the failure is read back; what was not
//! was never confirmed to its source, whose pump still holds it and writes
//! it again, with the seqs it would have had.

use super::{OpenReport, Queue, QueueError, load};
use crate::notice::{Notice, Notices};
use safd_connector::event_ids::{QUEUE_STORE_FAILED, QUEUE_STORE_REOPENED};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// Bytes a probe write must get onto the disk before a reopen is tried:
/// a few of sled's 512 KiB log segments.
const PROBE_BYTES: usize = 2 << 20;
const PROBE_FILE: &str = "write-probe.tmp";
const FIRST_WAIT: Duration = Duration::from_millis(500);
const MAX_WAIT: Duration = Duration::from_secs(30);

impl Queue {
    /// Drop the store and open it again from disk, with every stream's and
    /// group's state as it was last made durable. Waits for ingests in
    /// progress and for removal passes; nothing writes meanwhile.
    pub async fn reopen(&self) -> Result<OpenReport, QueueError> {
        let _no_writes = self.writes.write().await;
        let _no_removals = self.trim_lock.lock().await;
        let mut groups = self.groups.lock().await;
        // Our handle goes first: sled releases its file lock once the last
        // handle is dropped (the open below waits for that).
        drop(
            self.store
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        let path = self.path.clone();
        let notices = self.notices.clone();
        let (store, streams, report) = tokio::task::spawn_blocking(move || load(&path, &notices))
            .await
            .map_err(|e| QueueError::Open {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            })??;
        *self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = streams;
        groups.clone_from(&report.groups);
        let used: u64 = report.streams.iter().map(|s| s.bytes).sum();
        self.used_bytes.store(used, Ordering::Release);
        *self
            .store
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(store));
        if let Some(rebuilt) = &report.index_rebuilt {
            self.index_rebuilt(rebuilt);
        }
        self.failure.send_replace(None);
        self.room.notify_waiters();
        self.appended.send_modify(|n| *n += 1);
        Ok(report)
    }
}

/// Write and fsync a probe file in `dir`, then remove it.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    written
}

/// Watch the queue's store; when it fails, announce it and reopen it as
/// soon as the data directory takes writes again.
pub(crate) async fn recover_store(
    queue: Arc<Queue>,
    notices: Notices,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failure = queue.failure();
    loop {
        tokio::select! {
            changed = failure.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let Some(reason) = failure.borrow_and_update().clone() else {
            continue;
        };
        notices.emit(
            Notice::new(
                QUEUE_STORE_FAILED,
                format!(
                    "the queue's store failed: {reason}; sources are held back (nothing is \
                     lost) and the store is reopened from disk once {} accepts writes again",
                    queue.path.display()
                ),
            )
            .with("reason", &reason),
        );
        let mut wait = FIRST_WAIT;
        let mut attempts = 0u32;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            attempts += 1;
            wait = (wait * 2).min(MAX_WAIT);
            let dir = queue.path.clone();
            let probed = tokio::task::spawn_blocking(move || probe_writable(&dir)).await;
            if let Ok(Err(err)) | Err(err) = probed.map_err(std::io::Error::other) {
                tracing::warn!(
                    attempts,
                    "the data directory does not take writes yet: {err}"
                );
                continue;
            }
            match queue.reopen().await {
                Ok(_) => {
                    notices.emit(
                        Notice::new(
                            QUEUE_STORE_REOPENED,
                            "the queue's store was reopened; held-back sources write again",
                        )
                        .with("attempts", attempts),
                    );
                    break;
                }
                Err(err) => tracing::warn!(attempts, "cannot reopen the queue's store yet: {err}"),
            }
        }
    }
}
