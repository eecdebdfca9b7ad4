//! The durable store-and-forward queue.
//!
//! Events are stored in chunks (runs of consecutive events of a stream) in
//! append-only segment files ([`segments`]). One sled tree holds,
//! per stream, where each chunk is, and the stream's state: its name, next
//! sequence number and the source cursor that produced the last batch. An
//! ingest appends its chunks and syncs them, then writes their index
//! entries and the stream's cursor in one atomic sled batch, and returns
//! only after sled's flush (both fsyncs shared with concurrent ingests). So
//! a source is never told to move on before its events are on disk, and a
//! stored cursor is never ahead of the stored events.

pub(crate) mod codec;
pub(crate) mod dead_letter;
pub(crate) mod flush;
mod held;
pub(crate) mod index_damage;
mod ingest;
pub(crate) mod keys;
pub(crate) mod migrate;
mod open;
mod read;
pub(crate) mod reopen;
pub(crate) mod replay;
pub(crate) mod retention;
pub(crate) mod segments;

pub use held::HeldBatch;
use open::index_rebuilt_notice;
pub(crate) use open::{load, unmatchable_epoch};

use crate::metrics::Metrics;
use crate::notice::{Notice, Notices};
use codec::RecordError;
use flush::GroupCommit;
use safd_connector::event_ids::{
    QUEUE_BELOW_HIGH_WATER, QUEUE_FULL, QUEUE_HIGH_WATER, QUEUE_INDEX_REBUILT,
    QUEUE_RECORD_QUARANTINED,
};
use safd_connector::{
    Cursor, Event, EventBlock, SequencedBlock, SequencedEvent, Timestamp, event_block,
};
use segments::{Checkpoint, ChunkIndex, FrameHeader, SegmentLog};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot open the queue at `{path}`: {reason}")]
    Open { path: String, reason: String },
    #[error("queue storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("the queue's index cannot be read: {0}")]
    IndexDamaged(String),
    #[error("{0}")]
    Record(#[from] RecordError),
    #[error("events were written but could not be made durable: {0}")]
    Fsync(String),
    #[error("cannot use the queue's segment files: {0}")]
    Segments(#[from] std::io::Error),
    #[error(
        "the queue's store failed ({0}) and is being reopened from disk; writes resume \
         once the data directory accepts them again"
    )]
    StoreDown(String),
    #[error(
        "the data directory has {free} bytes free, less than the {reserve} bytes safd keeps \
         free there (queue.min_free_mib); free space and ingest resumes by itself"
    )]
    DiskFull { free: u64, reserve: u64 },
    #[error("too many streams (at most {max})")]
    TooManyStreams { max: u32 },
    #[error(
        "a batch of {batch} bytes can never fit in a queue of {capacity} bytes; \
         raise `queue.capacity_bytes` or lower the source's batch limits"
    )]
    BatchTooLarge { batch: u64, capacity: u64 },
}

/// What the queue does when a new batch does not fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Sources wait until delivery frees space (no event is ever dropped).
    #[default]
    Block,
    /// The oldest undelivered events are dropped to make room (opt-in;
    /// counted and announced with event 2003).
    DropOldest,
}

/// How long acknowledged events stay for catch-up replays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Acknowledged events kept, in stored bytes, across all streams.
    pub max_bytes: u64,
    /// Acknowledged events older than this (since ingest) are removed.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Sizing of the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueOptions {
    /// Stored bytes (acknowledged or not) the queue may hold.
    pub capacity_bytes: u64,
    pub when_full: WhenFull,
    /// Percentage of capacity at which event 2001 is announced.
    pub high_water_percent: u8,
    pub retention: Retention,
    /// Free space kept on the data directory's file system: an ingest that
    /// would leave less is refused (the source waits). sled 0.34 can wedge
    /// for good when a write meets a full disk, so it must never get there.
    pub min_free_bytes: u64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            capacity_bytes: 1 << 30,
            when_full: WhenFull::Block,
            high_water_percent: 80,
            retention: Retention::default(),
            min_free_bytes: 64 << 20,
        }
    }
}

/// A stream's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StreamRecord {
    name: String,
    next_seq: u64,
    /// The oldest seq still stored (`next_seq` when nothing is).
    first_seq: u64,
    /// Stored bytes of this stream's event chunks.
    bytes: u64,
    cursor: Option<Cursor>,
    /// For removed events: (first seq of a removed run, earliest event
    /// time in it), so a catch-up from a removed seq knows where to ask the
    /// source to seek. Bounded: old marks are merged.
    trim_marks: Vec<(u64, Timestamp)>,
}

impl StreamRecord {
    /// A stream nothing was ingested into yet.
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            next_seq: 1,
            first_seq: 1,
            bytes: 0,
            cursor: None,
            trim_marks: Vec::new(),
        }
    }
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
    /// The oldest seq still stored (equal to `next_seq` when none is).
    pub first_seq: u64,
    /// Stored bytes of the stream's events.
    pub bytes: u64,
    /// The source cursor stored with the last batch.
    pub cursor: Option<Cursor>,
}

impl From<&StreamRecord> for StreamState {
    fn from(record: &StreamRecord) -> Self {
        Self {
            name: record.name.clone(),
            next_seq: record.next_seq,
            first_seq: record.first_seq,
            bytes: record.bytes,
            cursor: record.cursor.clone(),
        }
    }
}

/// What `Queue::open` found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub streams: Vec<StreamState>,
    pub groups: BTreeMap<String, GroupState>,
    /// Keys of records that failed their checks and were set aside.
    pub quarantined: Vec<String>,
    /// Set when the index was rebuilt from the segment files.
    pub index_rebuilt: Option<IndexRebuilt>,
}

/// The queue's index was missing or unreadable and was rebuilt from the
/// segment files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRebuilt {
    /// Where the damaged index was moved, if it was there but unreadable.
    pub set_aside: Option<PathBuf>,
    /// The streams found in the segment files.
    pub streams: Vec<String>,
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

pub(crate) struct StreamEntry {
    id: u32,
    record: StreamRecord,
}

/// A stream's id never changes, so it lives outside the entry's lock and
/// readers never wait for a writer.
pub(crate) type SharedEntry = (u32, Arc<tokio::sync::Mutex<StreamEntry>>);

#[derive(Default)]
pub(crate) struct Streams {
    by_name: HashMap<String, SharedEntry>,
    next_id: u32,
}

/// The open sled database. sled 0.34 refuses every write after an I/O
/// error (a full disk, say) until it is reopened, so it is replaced as a
/// whole (`reopen`).
pub(crate) struct Store {
    tree: sled::Tree,
    commit: GroupCommit,
    log: SegmentLog,
    /// Where a record quarantined while reading is announced (2005).
    notices: Notices,
}

/// The durable queue. Cheap to share behind an `Arc`.
pub struct Queue {
    path: PathBuf,
    /// `None` while it is being reopened.
    store: std::sync::RwLock<Option<Arc<Store>>>,
    /// Why the store failed, while it is failed.
    failure: tokio::sync::watch::Sender<Option<String>>,
    /// Held (shared) by every ingest from its seq assignment to its fsync,
    /// and exclusively by a reopen, so a reopen never sees half an ingest.
    writes: Arc<tokio::sync::RwLock<()>>,
    streams: std::sync::Mutex<Streams>,
    groups: tokio::sync::Mutex<BTreeMap<String, GroupState>>,
    options: QueueOptions,
    /// Stored bytes of all event chunks.
    used_bytes: Arc<AtomicU64>,
    /// Signalled whenever space may have been freed (acks, trimming).
    room: tokio::sync::Notify,
    /// Counts ingests, so dispatchers can wait for new events.
    appended: tokio::sync::watch::Sender<u64>,
    /// Cursor owners whose acks decide what may be trimmed.
    cursors: std::sync::Mutex<BTreeSet<String>>,
    above_high_water: AtomicBool,
    full_announced: AtomicBool,
    /// sled was written (index entries, stream state, acks) since its last
    /// flush.
    unflushed: Arc<AtomicBool>,
    /// One removal pass at a time (retention, reclaim, drop).
    trim_lock: tokio::sync::Mutex<()>,
    /// The epoch a group the index has no state for starts from: 0, or,
    /// once the index was rebuilt (group states lost with it), one above
    /// any epoch issued before, so a stale catch-up request cannot match.
    fresh_group_epoch: AtomicU64,
    /// Fault injection for tests (`fault-injection` feature): the next
    /// ingest fails after its frames are durable, before its index write.
    fail_index_write: AtomicBool,
    notices: Notices,
    metrics: Arc<Metrics>,
}

#[cfg(feature = "fault-injection")]
impl Queue {
    /// Make the next ingest fail as a full disk fails sled: after its
    /// frames were synced (so they are durable and a reopen reads them
    /// back), before its index entries were written.
    pub fn fail_next_index_write(&self) {
        self.fail_index_write.store(true, Ordering::Release);
    }
}

impl QueueError {
    /// Why the store failed, if this is an I/O error after which it must
    /// be reopened.
    fn io_failure(&self) -> Option<String> {
        match self {
            QueueError::Storage(sled::Error::Io(e)) => Some(e.to_string()),
            QueueError::Fsync(reason) => Some(reason.clone()),
            QueueError::Segments(e) => Some(e.to_string()),
            _ => None,
        }
    }

    /// The store failed or awaits its reopen: the same write may succeed
    /// once it is reopened.
    pub fn is_store_failure(&self) -> bool {
        matches!(self, QueueError::StoreDown(_)) || self.io_failure().is_some()
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl Queue {
    /// Open (or create) the queue under `path` with default sizing and
    /// notices that are only logged.
    pub fn open(path: &Path) -> Result<(Self, OpenReport), QueueError> {
        Self::open_with(
            path,
            QueueOptions::default(),
            Notices::default(),
            Arc::default(),
        )
    }

    /// Open (or create) the queue under `path`, recovering every stream's
    /// next seq and cursor. Damaged records are quarantined and reported.
    pub fn open_with(
        path: &Path,
        options: QueueOptions,
        notices: Notices,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, OpenReport), QueueError> {
        let (store, streams, report) = load(path, &notices)?;
        let used: u64 = report.streams.iter().map(|s| s.bytes).sum();
        let fresh_group_epoch = AtomicU64::new(0);
        if let Some(rebuilt) = &report.index_rebuilt {
            fresh_group_epoch.store(unmatchable_epoch(), Ordering::Release);
            notices.emit(index_rebuilt_notice(rebuilt));
        }
        Ok((
            Self {
                path: path.to_owned(),
                store: std::sync::RwLock::new(Some(Arc::new(store))),
                failure: tokio::sync::watch::Sender::new(None),
                writes: Arc::new(tokio::sync::RwLock::new(())),
                streams: std::sync::Mutex::new(streams),
                groups: tokio::sync::Mutex::new(report.groups.clone()),
                options,
                used_bytes: Arc::new(AtomicU64::new(used)),
                room: tokio::sync::Notify::new(),
                appended: tokio::sync::watch::Sender::new(0),
                cursors: std::sync::Mutex::default(),
                above_high_water: AtomicBool::new(false),
                full_announced: AtomicBool::new(false),
                unflushed: Arc::new(AtomicBool::new(false)),
                trim_lock: tokio::sync::Mutex::new(()),
                fresh_group_epoch,
                fail_index_write: AtomicBool::new(false),
                notices,
                metrics,
            },
            report,
        ))
    }

    /// The open store, or why there is none.
    pub(crate) fn store(&self) -> Result<Arc<Store>, QueueError> {
        self.store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                QueueError::StoreDown(
                    self.failure
                        .borrow()
                        .clone()
                        .unwrap_or_else(|| "closed".to_owned()),
                )
            })
    }

    /// Pass `err` on, first marking the store failed if it is an I/O error
    /// (after which sled refuses all writes until reopened).
    pub(crate) fn failed(&self, err: QueueError) -> QueueError {
        if let Some(reason) = err.io_failure() {
            self.failure.send_if_modified(|failure| {
                let first = failure.is_none();
                if first {
                    *failure = Some(reason);
                }
                first
            });
        }
        err
    }

    /// A receiver that holds why the store failed, while it is failed.
    pub fn failure(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.failure.subscribe()
    }

    /// A receiver that changes whenever events were ingested.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
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
            out.push(StreamState::from(&entry.lock().await.record));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The state of `group` (nothing acknowledged, no active member, for a
    /// group never seen).
    pub async fn group(&self, group: &str) -> GroupState {
        self.groups
            .lock()
            .await
            .get(group)
            .cloned()
            .unwrap_or_else(|| self.fresh_group_state())
    }

    /// The state a group the index knows nothing of starts with.
    fn fresh_group_state(&self) -> GroupState {
        GroupState {
            epoch: self.fresh_group_epoch.load(Ordering::Acquire),
            ..GroupState::default()
        }
    }

    /// After a reopen that rebuilt the index: groups start above every
    /// epoch issued before.
    pub(crate) fn index_rebuilt(&self, rebuilt: &IndexRebuilt) {
        self.fresh_group_epoch
            .store(unmatchable_epoch(), Ordering::Release);
        self.notices.emit(index_rebuilt_notice(rebuilt));
    }

    /// Record that `group` has acknowledged `stream` through `seq`. Acks
    /// only move forward and never past what is stored (a receiver claiming
    /// more is clamped). Returns the group's acked seq for the stream.
    ///
    /// Not fsynced on its own: it becomes durable with the next flush of
    /// sled ([`Queue::flush_if_written`]). Losing an ack in a crash only
    /// re-delivers events, which receivers deduplicate by (stream, seq).
    pub async fn ack(&self, group: &str, stream: &str, seq: u64) -> Result<u64, QueueError> {
        let stored = self.stored_through(stream).await;
        let mut groups = self.groups.lock().await;
        let state = groups
            .entry(group.to_owned())
            .or_insert_with(|| self.fresh_group_state());
        let current = state.acked.get(stream).copied().unwrap_or(0);
        let target = seq.min(stored);
        if target <= current {
            return Ok(current);
        }
        let mut next = state.clone();
        next.acked.insert(stream.to_owned(), target);
        self.store()?
            .tree
            .insert(keys::group(group), codec::encode(&next)?)
            .map_err(|e| self.failed(e.into()))?;
        *state = next;
        drop(groups);
        self.unflushed.store(true, Ordering::Release);
        self.room.notify_waiters();
        Ok(target)
    }

    /// Declare the cursor owners (groups, or group members in broadcast
    /// mode) whose acknowledgements decide what retention may remove.
    /// Until one is declared, nothing counts as acknowledged.
    pub fn set_cursor_owners(&self, owners: impl IntoIterator<Item = String>) {
        *self
            .cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = owners.into_iter().collect();
        self.room.notify_waiters();
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
            let state = groups
                .entry(group.to_owned())
                .or_insert_with(|| self.fresh_group_state());
            let mut next = state.clone();
            next.epoch += 1;
            next.active = active.map(str::to_owned);
            self.store()?
                .tree
                .insert(keys::group(group), codec::encode(&next)?)
                .map_err(|e| self.failed(e.into()))?;
            *state = next;
            state.epoch
        };
        self.flush().await?;
        Ok(epoch)
    }

    /// The highest seq stored for `stream` (0 when none).
    pub async fn stored_through(&self, stream: &str) -> u64 {
        match self.stream_entry(stream) {
            Some((_, entry)) => entry.lock().await.record.next_seq - 1,
            None => 0,
        }
    }

    /// Make everything applied so far durable (acks included).
    pub async fn flush(&self) -> Result<(), QueueError> {
        let took = self
            .store()?
            .commit
            .durable()
            .await
            .map_err(|e| self.failed(QueueError::Fsync(e)))?;
        self.metrics.fsync.observe(took);
        Ok(())
    }

    /// Flush sled if it was written since the last call: index entries and
    /// stream state (whose ingests are already durable in the segment
    /// files; flushing bounds what the next open replays from them) and
    /// acks (bounding what a crash re-delivers). The engine calls this
    /// every half second.
    pub async fn flush_if_written(&self) -> Result<(), QueueError> {
        if self.unflushed.swap(false, Ordering::AcqRel) {
            self.flush().await?;
        }
        Ok(())
    }

    /// The entry of `stream`, if it has ever been ingested into.
    pub(crate) fn stream_entry(&self, stream: &str) -> Option<SharedEntry> {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_name
            .get(stream)
            .cloned()
    }

    /// The id of `stream`, if it has ever been ingested into.
    pub(crate) fn stream_id(&self, stream: &str) -> Option<u32> {
        self.stream_entry(stream).map(|(id, _)| id)
    }

    /// How many fsyncs have run so far (each may serve many ingests).
    pub fn fsyncs(&self) -> u64 {
        self.store().map_or(0, |store| store.log.syncs())
    }

    /// Per segment file of the open store, how many of its bytes this
    /// process has fsynced. For crash tests: cutting the files at these
    /// lengths is what a power loss at this moment would leave.
    pub fn synced_segment_lengths(&self) -> Vec<(PathBuf, u64)> {
        self.store()
            .map_or_else(|_| Vec::new(), |store| store.log.synced_lengths())
    }
}

pub(crate) fn describe_key(key: &[u8]) -> String {
    if key.first() == Some(&keys::GROUP) {
        return format!("state of group `{}`", String::from_utf8_lossy(&key[1..]));
    }
    if let Some((stream, seq)) = keys::parse_events(key) {
        format!("events of stream #{stream} from seq {seq}")
    } else if let Some((stream, seq)) = keys::parse_legacy_events(key) {
        format!("events of stream #{stream} from seq {seq} (stored in sled)")
    } else if let Some(stream) = keys::parse_stream(key) {
        format!("state of stream #{stream}")
    } else {
        format!("key {key:02x?}")
    }
}

/// Move a damaged record aside (atomically) so it is kept for inspection
/// but never read again.
pub(crate) fn quarantine(
    tree: &sled::Tree,
    key: &[u8],
    value: &[u8],
    err: &RecordError,
    notices: &Notices,
) -> Result<(), QueueError> {
    notices.emit(
        Notice::new(
            QUEUE_RECORD_QUARANTINED,
            format!("damaged queue record quarantined: {err}"),
        )
        .with("record", describe_key(key)),
    );
    let mut batch = sled::Batch::default();
    batch.insert(keys::quarantine(key), value);
    batch.remove(key);
    tree.apply_batch(batch)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use safd_connector::Severity;

    /// A chunk removed by retention while a reader held its index entry
    /// (its segment deleted with it) is not reported as damage.
    #[tokio::test]
    async fn a_chunk_removed_during_a_read_is_not_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = Queue::open(dir.path()).unwrap();
        let event = Event {
            id: "e".to_owned(),
            time: 0,
            severity: Severity::Info,
            attributes: Vec::new(),
            body: "body".to_owned(),
        };
        queue.ingest("s", &[event], None).await.unwrap();
        let store = queue.store().unwrap();
        let (key, stored) = store
            .tree
            .scan_prefix([keys::EVENTS])
            .next()
            .unwrap()
            .unwrap();
        // An entry whose segment file is gone (a number never opened, so no
        // handle to it is cached).
        let gone = ChunkIndex {
            segment: 999,
            ..codec::decode::<ChunkIndex>(&stored).unwrap()
        };
        let value = codec::encode(&gone).unwrap();
        // What retention does: the entry goes, then the segment file.
        store.tree.remove(&key).unwrap();
        assert!(store.read_chunk(&key, &value).unwrap().is_none());
        assert_eq!(store.tree.scan_prefix([keys::QUARANTINE]).count(), 0);

        // The same failure with the entry still there is damage.
        store.tree.insert(&key, &value[..]).unwrap();
        assert!(store.read_chunk(&key, &value).unwrap().is_none());
        assert_eq!(store.tree.scan_prefix([keys::QUARANTINE]).count(), 1);
    }
}
