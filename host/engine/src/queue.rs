//! The durable store-and-forward queue.
//!
//! One sled tree holds, per stream, batches of events (one value per batch,
//! not per event: sled tops out near 100 000 single-event inserts per second
//! but moves well over 500 000 events per second as batches) and the
//! stream's state: its name, next sequence number and the source cursor that
//! produced the last batch. Events and cursor commit in one atomic sled batch
//! and `ingest` returns only after an fsync (shared with concurrent ingests),
//! so a source is never told to move on before its events are on disk, and a
//! stored cursor is never ahead of the stored events.

use crate::codec::{self, RecordError};
use crate::flush::GroupCommit;
use crate::keys;
use safd_connector::event_ids::QUEUE_RECORD_QUARANTINED;
use safd_connector::{Cursor, Event, SequencedEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot open the queue at `{path}`: {reason}")]
    Open { path: String, reason: String },
    #[error("queue storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("{0}")]
    Record(#[from] RecordError),
    #[error("events were written but could not be made durable: {0}")]
    Fsync(String),
    #[error("too many streams (at most {max})")]
    TooManyStreams { max: u32 },
}

/// A stream's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StreamRecord {
    name: String,
    next_seq: u64,
    cursor: Option<Cursor>,
}

/// A destination group's persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Fencing epoch: bumped, and made durable, on every change of active
    /// member. A catch-up request carrying another epoch is refused.
    pub epoch: u64,
    /// The member events currently go to; `None` while nobody is reachable.
    pub active: Option<String>,
    /// Per stream, the highest seq the group has acknowledged (0 = none).
    pub acked: BTreeMap<String, u64>,
}

/// What the queue knows about one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    pub name: String,
    /// The seq the next ingested event will get (seqs start at 1).
    pub next_seq: u64,
    /// The source cursor stored with the last batch.
    pub cursor: Option<Cursor>,
}

/// What `Queue::open` found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub streams: Vec<StreamState>,
    pub groups: BTreeMap<String, GroupState>,
    /// Keys of records that failed their checks and were set aside.
    pub quarantined: Vec<String>,
}

/// Where an ingested batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestReceipt {
    /// Seq of the first event of the batch; `first_seq..next_seq` is the
    /// range assigned (empty when the batch had no events).
    pub first_seq: u64,
    pub next_seq: u64,
    /// How long the durable write (including the shared fsync) took.
    pub durable_after: Duration,
}

struct StreamEntry {
    id: u32,
    record: StreamRecord,
}

/// A stream's id never changes, so it lives outside the entry's lock and
/// readers never wait for a writer.
type SharedEntry = (u32, Arc<tokio::sync::Mutex<StreamEntry>>);

#[derive(Default)]
struct Streams {
    by_name: HashMap<String, SharedEntry>,
    next_id: u32,
}

/// The durable queue. Cheap to share behind an `Arc`.
pub struct Queue {
    tree: sled::Tree,
    commit: GroupCommit,
    streams: std::sync::Mutex<Streams>,
    groups: tokio::sync::Mutex<BTreeMap<String, GroupState>>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl Queue {
    /// Open (or create) the queue under `path`, recovering every stream's
    /// next seq and cursor. Damaged records are quarantined and reported.
    pub fn open(path: &Path) -> Result<(Self, OpenReport), QueueError> {
        let db = open_db(path)?;
        let tree = db.open_tree("saf")?;
        let mut report = OpenReport::default();
        let mut streams = Streams::default();
        for item in tree.scan_prefix([keys::STREAM]) {
            let (key, value) = item?;
            let Some(id) = keys::parse_stream(&key) else {
                continue;
            };
            streams.next_id = streams.next_id.max(id + 1);
            match codec::decode::<StreamRecord>(&value) {
                Ok(record) => {
                    report.streams.push(StreamState {
                        name: record.name.clone(),
                        next_seq: record.next_seq,
                        cursor: record.cursor.clone(),
                    });
                    streams.by_name.insert(
                        record.name.clone(),
                        (
                            id,
                            Arc::new(tokio::sync::Mutex::new(StreamEntry { id, record })),
                        ),
                    );
                }
                Err(err) => {
                    quarantine(&tree, &key, &value, &err)?;
                    report.quarantined.push(describe_key(&key));
                }
            }
        }
        report.streams.sort_by(|a, b| a.name.cmp(&b.name));
        for item in tree.scan_prefix([keys::GROUP]) {
            let (key, value) = item?;
            let name = String::from_utf8_lossy(&key[1..]).into_owned();
            let state = match codec::decode::<GroupState>(&value) {
                Ok(state) => state,
                Err(err) => {
                    quarantine(&tree, &key, &value, &err)?;
                    report.quarantined.push(describe_key(&key));
                    // The old epoch is unknown: jump above any epoch that
                    // can have been issued (they count up from 1), so a
                    // stale catch-up request can never match. Acks restart
                    // at 0: re-delivery is harmless, receivers deduplicate.
                    let epoch = unix_micros();
                    let state = GroupState {
                        epoch,
                        ..GroupState::default()
                    };
                    tree.insert(&key, codec::encode(&state)?)?;
                    state
                }
            };
            report.groups.insert(name, state);
        }
        db.flush()?;
        Ok((
            Self {
                commit: GroupCommit::new(db),
                tree,
                streams: std::sync::Mutex::new(streams),
                groups: tokio::sync::Mutex::new(report.groups.clone()),
            },
            report,
        ))
    }

    fn entry(&self, stream: &str) -> Result<Arc<tokio::sync::Mutex<StreamEntry>>, QueueError> {
        let mut streams = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, entry)) = streams.by_name.get(stream) {
            return Ok(entry.clone());
        }
        let id = streams.next_id;
        if id == u32::MAX {
            return Err(QueueError::TooManyStreams { max: u32::MAX });
        }
        streams.next_id += 1;
        let entry = Arc::new(tokio::sync::Mutex::new(StreamEntry {
            id,
            record: StreamRecord {
                name: stream.to_owned(),
                next_seq: 1,
                cursor: None,
            },
        }));
        streams
            .by_name
            .insert(stream.to_owned(), (id, entry.clone()));
        Ok(entry)
    }

    /// Store `events` of `stream` with the source `cursor` that follows
    /// them, in one atomic write, and return once it is durable. Only then
    /// may the source be told to commit. A `None` cursor keeps the stored
    /// one.
    pub async fn ingest(
        &self,
        stream: &str,
        events: &[Event],
        cursor: Option<&Cursor>,
    ) -> Result<IngestReceipt, QueueError> {
        let entry = self.entry(stream)?;
        let (first_seq, next_seq) = {
            // Per-stream order: seqs are assigned and written under the lock;
            // the fsync wait below is shared and happens outside it.
            let mut entry = entry.lock().await;
            let first_seq = entry.record.next_seq;
            let next_seq = first_seq + events.len() as u64;
            let mut record = entry.record.clone();
            record.next_seq = next_seq;
            if let Some(cursor) = cursor {
                record.cursor = Some(cursor.clone());
            }
            let mut batch = sled::Batch::default();
            let mut seq = first_seq;
            for chunk in chunks(events) {
                batch.insert(&keys::events(entry.id, seq)[..], codec::encode(&chunk)?);
                seq += chunk.len() as u64;
            }
            batch.insert(&keys::stream(entry.id)[..], codec::encode(&record)?);
            self.tree.apply_batch(batch)?;
            entry.record = record;
            (first_seq, next_seq)
        };
        let durable_after = self.commit.durable().await.map_err(QueueError::Fsync)?;
        Ok(IngestReceipt {
            first_seq,
            next_seq,
            durable_after,
        })
    }

    /// Up to `max_events` events of `stream` starting at `from_seq`, in seq
    /// order, stopping once `max_bytes` is reached (at least one event is
    /// returned if any is stored). Damaged batches are quarantined, announced
    /// and skipped.
    pub fn read(
        &self,
        stream: &str,
        from_seq: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<SequencedEvent>, QueueError> {
        let id = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_name
            .get(stream)
            .map(|(id, _)| *id);
        match id {
            Some(id) => self.read_id(id, from_seq, max_events, max_bytes),
            None => Ok(Vec::new()),
        }
    }

    fn read_id(
        &self,
        id: u32,
        from_seq: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<SequencedEvent>, QueueError> {
        // Start at the batch that contains `from_seq`: the last batch whose
        // first seq is not after it.
        let start = self
            .tree
            .range(keys::events(id, 0)..=keys::events(id, from_seq))
            .next_back()
            .transpose()?
            .map_or(keys::events(id, from_seq).to_vec(), |(key, _)| key.to_vec());
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in self.tree.range(start..=keys::events(id, u64::MAX).to_vec()) {
            let (key, value) = item?;
            let Some((_, first_seq)) = keys::parse_events(&key) else {
                continue;
            };
            let events: Vec<Event> = match codec::decode(&value) {
                Ok(events) => events,
                Err(err) => {
                    quarantine(&self.tree, &key, &value, &err)?;
                    continue;
                }
            };
            for (seq, event) in (first_seq..).zip(events) {
                if seq < from_seq {
                    continue;
                }
                if out.len() >= max_events || (bytes >= max_bytes && !out.is_empty()) {
                    return Ok(out);
                }
                bytes += event.byte_size();
                out.push(SequencedEvent { seq, event });
            }
        }
        Ok(out)
    }

    /// The state of every stream.
    pub async fn streams(&self) -> Vec<StreamState> {
        let entries: Vec<_> = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_name
            .values()
            .map(|(_, entry)| entry.clone())
            .collect();
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = entry.lock().await;
            out.push(StreamState {
                name: entry.record.name.clone(),
                next_seq: entry.record.next_seq,
                cursor: entry.record.cursor.clone(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The state of `group` (all zeros for a group never seen).
    pub async fn group(&self, group: &str) -> GroupState {
        self.groups
            .lock()
            .await
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Record that `group` has acknowledged `stream` through `seq`. Acks
    /// only move forward and never past what is stored (a receiver claiming
    /// more is clamped). Returns the group's acked seq for the stream.
    ///
    /// Not fsynced on its own: it becomes durable with the next group
    /// commit. Losing an ack in a crash only re-delivers events, which
    /// receivers deduplicate by (stream, seq).
    pub async fn ack(&self, group: &str, stream: &str, seq: u64) -> Result<u64, QueueError> {
        let stored = self.stored_through(stream).await;
        let mut groups = self.groups.lock().await;
        let state = groups.entry(group.to_owned()).or_default();
        let current = state.acked.get(stream).copied().unwrap_or(0);
        let target = seq.min(stored);
        if target <= current {
            return Ok(current);
        }
        let mut next = state.clone();
        next.acked.insert(stream.to_owned(), target);
        self.tree
            .insert(keys::group(group), codec::encode(&next)?)?;
        *state = next;
        Ok(target)
    }

    /// Make `active` the group's active member (`None`: nobody reachable),
    /// bump the epoch and return the new epoch once it is durable.
    pub async fn change_active(
        &self,
        group: &str,
        active: Option<&str>,
    ) -> Result<u64, QueueError> {
        let epoch = {
            let mut groups = self.groups.lock().await;
            let state = groups.entry(group.to_owned()).or_default();
            let mut next = state.clone();
            next.epoch += 1;
            next.active = active.map(str::to_owned);
            self.tree
                .insert(keys::group(group), codec::encode(&next)?)?;
            *state = next;
            state.epoch
        };
        self.commit.durable().await.map_err(QueueError::Fsync)?;
        Ok(epoch)
    }

    /// The highest seq stored for `stream` (0 when none).
    async fn stored_through(&self, stream: &str) -> u64 {
        let entry = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_name
            .get(stream)
            .map(|(_, entry)| entry.clone());
        match entry {
            Some(entry) => entry.lock().await.record.next_seq - 1,
            None => 0,
        }
    }

    /// Make everything applied so far durable (acks included).
    pub async fn flush(&self) -> Result<(), QueueError> {
        self.commit.durable().await.map_err(QueueError::Fsync)?;
        Ok(())
    }

    /// How many fsyncs have run so far (each may serve many ingests).
    pub fn fsyncs(&self) -> u64 {
        self.commit.flushes()
    }
}

/// Largest event payload stored under one key. sled 0.34 writes any page
/// over a quarter of its 512 KiB segment as a separate blob file, with its
/// own fsync; keeping values well under that keeps a durable write to one
/// log append. Measured: 256 realistic events per value (~84 KiB) ran at a
/// third of the rate of ~24 KiB values.
const CHUNK_BYTES: usize = 24 * 1024;

/// Split a batch into runs of consecutive events of about `CHUNK_BYTES`.
fn chunks(events: &[Event]) -> impl Iterator<Item = &[Event]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut len = 0;
        for event in rest {
            bytes += event.byte_size() + 32;
            len += 1;
            if bytes >= CHUNK_BYTES {
                break;
            }
        }
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        Some(chunk)
    })
}

/// How long `open` waits for sled's file lock. sled releases it from its own
/// I/O threads shortly after the previous handle is dropped (a restart in
/// the same process, or a previous safd still exiting).
const LOCK_WAIT: Duration = Duration::from_secs(5);

fn open_db(path: &Path) -> Result<sled::Db, QueueError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(path)
            // Durability comes from our own group-commit flushes.
            .flush_every_ms(None)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(err)) if err.to_string().contains("acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(QueueError::Open {
                        path: path.display().to_string(),
                        reason: "it is locked by another process; is another safd using \
                                 this data directory?"
                            .to_owned(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => {
                return Err(QueueError::Open {
                    path: path.display().to_string(),
                    reason: err.to_string(),
                });
            }
        }
    }
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(u64::MAX / 2, |d| d.as_micros() as u64)
}

fn describe_key(key: &[u8]) -> String {
    if key.first() == Some(&keys::GROUP) {
        return format!("state of group `{}`", String::from_utf8_lossy(&key[1..]));
    }
    if let Some((stream, seq)) = keys::parse_events(key) {
        format!("events of stream #{stream} from seq {seq}")
    } else if let Some(stream) = keys::parse_stream(key) {
        format!("state of stream #{stream}")
    } else {
        format!("key {key:02x?}")
    }
}

/// Move a damaged record aside (atomically) so it is kept for inspection
/// but never read again.
fn quarantine(
    tree: &sled::Tree,
    key: &[u8],
    value: &[u8],
    err: &RecordError,
) -> Result<(), QueueError> {
    tracing::error!(
        event_id = QUEUE_RECORD_QUARANTINED,
        record = %describe_key(key),
        "damaged queue record quarantined: {err}"
    );
    let mut batch = sled::Batch::default();
    batch.insert(keys::quarantine(key), value);
    batch.remove(key);
    tree.apply_batch(batch)?;
    Ok(())
}
