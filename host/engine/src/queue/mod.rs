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
pub(crate) mod index_damage;
pub(crate) mod keys;
pub(crate) mod migrate;
pub(crate) mod reopen;
pub(crate) mod replay;
pub(crate) mod retention;
pub(crate) mod segments;

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
    notices: Notices,
    metrics: Arc<Metrics>,
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
        let io = match &err {
            QueueError::Storage(sled::Error::Io(e)) => Some(e.to_string()),
            QueueError::Fsync(reason) => Some(reason.clone()),
            QueueError::Segments(e) => Some(e.to_string()),
            _ => None,
        };
        if let Some(reason) = io {
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
            record: StreamRecord::new(stream),
        }));
        streams
            .by_name
            .insert(stream.to_owned(), (id, entry.clone()));
        Ok(entry)
    }

    /// Store `events` of `stream` with the source `cursor` that follows
    /// them, in one atomic write, and return once it is durable. Only then
    /// may the source be told to commit. A `None` cursor keeps the stored
    /// one. When the queue is full this waits for room (`block`) or drops
    /// the oldest undelivered events (`drop_oldest`).
    pub async fn ingest(
        &self,
        stream: &str,
        events: &[Event],
        cursor: Option<&Cursor>,
    ) -> Result<IngestReceipt, QueueError> {
        self.ingest_block(stream, &EventBlock::from_events(events), cursor)
            .await
    }

    /// [`Queue::ingest`] for events still in the encoding a plugin sent
    /// them in: their bytes are stored as they are.
    pub async fn ingest_block(
        &self,
        stream: &str,
        events: &EventBlock,
        cursor: Option<&Cursor>,
    ) -> Result<IngestReceipt, QueueError> {
        self.ingest_inner(stream, events, cursor, true).await
    }

    /// Ingest safd's own events: they bypass the capacity limit, because
    /// "the queue is full" must itself get through.
    pub(crate) async fn ingest_internal(
        &self,
        stream: &str,
        events: &[Event],
    ) -> Result<IngestReceipt, QueueError> {
        self.ingest_inner(stream, &EventBlock::from_events(events), None, false)
            .await
    }

    async fn ingest_inner(
        &self,
        stream: &str,
        events: &EventBlock,
        cursor: Option<&Cursor>,
        limited: bool,
    ) -> Result<IngestReceipt, QueueError> {
        let ingested_at = crate::clock::now_micros();
        let mut encoded: Vec<EncodedChunk> = events
            .runs(CHUNK_BYTES)
            .map(|(count, run)| EncodedChunk {
                count: u64::from(count),
                earliest: event_block::events(run, count)
                    .filter_map(Result::ok)
                    .map(|e| e.time)
                    .min()
                    .unwrap_or(i64::MAX),
                stored: codec::encode_chunk(ingested_at, count, run),
            })
            .collect();
        if encoded.is_empty() {
            // No events: one frame without any carries the cursor.
            encoded.push(EncodedChunk {
                count: 0,
                earliest: i64::MAX,
                stored: Vec::new(),
            });
        }
        let bytes: u64 = encoded.iter().map(|c| c.stored.len() as u64).sum();
        if limited {
            self.wait_for_room(bytes).await?;
            self.check_free_space(bytes)?;
        }
        let writing = self.writes.clone().read_owned().await;
        let store = self.store()?;
        // Per-stream order: seqs are assigned, and index entries written,
        // under the stream's lock, held across the segment sync (shared
        // with other streams) so index entries land in seq order.
        let entry = self.entry(stream)?.lock_owned().await;
        let write = DurableWrite {
            store,
            entry,
            chunks: encoded,
            events: events.len() as u64,
            cursor: cursor.cloned(),
            ingested_at,
            bytes,
            used_bytes: self.used_bytes.clone(),
            unflushed: self.unflushed.clone(),
            appended: self.appended.clone(),
            _writing: writing,
        };
        // Once frames are appended, their seqs are taken: the rest (sync,
        // index entries, the stream's state) runs to its end even if this
        // caller goes away (a source stopped by a reload), so a later
        // ingest can never be given the same seqs.
        let (first_seq, next_seq, durable_after) = tokio::spawn(write.run())
            .await
            .map_err(|e| QueueError::Fsync(format!("the write task ended abnormally: {e}")))?
            .map_err(|e| self.failed(e))?;
        self.metrics.fsync.observe(durable_after);
        Metrics::add(&self.metrics.events_ingested, events.len() as u64);
        self.check_high_water();
        Ok(IngestReceipt {
            first_seq,
            next_seq,
            durable_after,
        })
    }

    /// Wait until `bytes` more fit under the capacity, reclaiming
    /// acknowledged events first and, with `drop_oldest`, undelivered ones.
    async fn wait_for_room(&self, bytes: u64) -> Result<(), QueueError> {
        let capacity = self.options.capacity_bytes;
        if bytes > capacity {
            return Err(QueueError::BatchTooLarge {
                batch: bytes,
                capacity,
            });
        }
        loop {
            // Registered before the check, so a wakeup between the check
            // and the wait is not lost.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.fits(bytes) {
                break;
            }
            self.reclaim_acknowledged(bytes).await?;
            if self.fits(bytes) {
                break;
            }
            if self.options.when_full == WhenFull::DropOldest {
                self.drop_oldest(bytes).await?;
                break;
            }
            if !self.full_announced.swap(true, Ordering::AcqRel) {
                self.notices.emit(
                    Notice::new(
                        QUEUE_FULL,
                        "queue full: sources are blocked until delivery frees space",
                    )
                    .with("used_bytes", self.used_bytes())
                    .with("capacity_bytes", capacity),
                );
            }
            room.await;
        }
        self.full_announced.store(false, Ordering::Release);
        Ok(())
    }

    /// Refuse a write of `bytes` that would leave less than the reserve
    /// free on the data directory's file system.
    fn check_free_space(&self, bytes: u64) -> Result<(), QueueError> {
        let reserve = self.options.min_free_bytes;
        if reserve == 0 {
            return Ok(());
        }
        match fs2::available_space(&self.path) {
            Ok(free) if free < reserve.saturating_add(bytes) => {
                Err(QueueError::DiskFull { free, reserve })
            }
            Ok(_) => Ok(()),
            // Not knowing is no reason to hold the source back; a write
            // that really fails is reported as such.
            Err(err) => {
                tracing::debug!("cannot tell the free space of the data directory: {err}");
                Ok(())
            }
        }
    }

    fn fits(&self, bytes: u64) -> bool {
        self.used_bytes() + bytes <= self.options.capacity_bytes
    }

    /// Stored bytes of all event chunks.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Acquire)
    }

    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    /// Announce crossing the high-water mark, in either direction, once.
    pub(crate) fn check_high_water(&self) {
        let mark = self.options.capacity_bytes / 100 * u64::from(self.options.high_water_percent);
        let used = self.used_bytes();
        let above = used >= mark;
        if self.above_high_water.swap(above, Ordering::AcqRel) == above {
            return;
        }
        let (id, message) = if above {
            (QUEUE_HIGH_WATER, "queue above its high-water mark")
        } else {
            (
                QUEUE_BELOW_HIGH_WATER,
                "queue back below its high-water mark",
            )
        };
        self.notices.emit(
            Notice::new(id, message)
                .with("used_bytes", used)
                .with("capacity_bytes", self.options.capacity_bytes),
        );
    }

    /// A receiver that changes whenever events were ingested.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
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
        match self.stream_id(stream) {
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
        let store = self.store()?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in store.tree.range(chunk_range(&store, id, from_seq)?) {
            let (key, value) = item?;
            let Some((_, first_seq)) = keys::parse_events(&key) else {
                continue;
            };
            let read = store.read_chunk(&key, &value).map_err(|e| self.failed(e))?;
            let Some(events) = read else {
                continue;
            };
            let events: Vec<Event> = events.to_events();
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

    /// Like [`Queue::read`], but the events stay encoded: each is cut from
    /// its stored chunk and framed behind its seq, never decoded (the
    /// chunk's checksum covers bytes that were checked at ingest). This is
    /// what deliveries are built from.
    pub fn read_block(
        &self,
        stream: &str,
        from_seq: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<SequencedBlock, QueueError> {
        let mut out = SequencedBlock::new();
        let Some(id) = self.stream_id(stream) else {
            return Ok(out);
        };
        let store = self.store()?;
        for item in store.tree.range(chunk_range(&store, id, from_seq)?) {
            let (key, value) = item?;
            let Some((_, first_seq)) = keys::parse_events(&key) else {
                continue;
            };
            let read = store.read_chunk_with(&key, &value, |stored| {
                let (count, events) = codec::chunk_events(stored)?;
                let spans = event_block::spans(events, count)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| RecordError::Decode(e.to_string()))?;
                Ok((events.to_vec(), spans))
            });
            let read = read.map_err(|e| self.failed(e))?;
            let Some((events, spans)) = read else {
                continue;
            };
            for (seq, span) in (first_seq..).zip(spans) {
                if seq < from_seq {
                    continue;
                }
                if out.len() >= max_events || (out.text_bytes() >= max_bytes && !out.is_empty()) {
                    return Ok(out);
                }
                out.push_encoded(seq, &events[span.start..span.end], span.text_bytes);
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

    /// The first seq of `stream` whose event time is at or after `time`
    /// among the stored events; `None` when no stored event is that recent.
    pub fn first_seq_at_or_after(
        &self,
        stream: &str,
        time: Timestamp,
    ) -> Result<Option<u64>, QueueError> {
        let Some(id) = self.stream_id(stream) else {
            return Ok(None);
        };
        let store = self.store()?;
        for item in store
            .tree
            .range(keys::events(id, 0)..=keys::events(id, u64::MAX))
        {
            let (key, value) = item?;
            let Some((_, first_seq)) = keys::parse_events(&key) else {
                continue;
            };
            let read = store.read_chunk(&key, &value).map_err(|e| self.failed(e))?;
            let Some(events) = read else {
                continue;
            };
            if let Some(offset) = events.iter().position(|e| e.time >= time) {
                return Ok(Some(first_seq + offset as u64));
            }
        }
        Ok(None)
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

impl Store {
    /// The events of the chunk whose index entry is (`key`, `value`).
    /// `None` when the entry or the chunk is damaged (or its segment is
    /// gone): the entry is then quarantined and announced.
    pub(crate) fn read_chunk(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<EventBlock>, QueueError> {
        self.read_chunk_with(key, value, codec::decode_chunk)
    }

    /// Read the chunk `key` → `value` indexes and `decode` it; a damaged
    /// entry or chunk (including one `decode` refuses) is quarantined
    /// (`None`).
    pub(crate) fn read_chunk_with<T>(
        &self,
        key: &[u8],
        value: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, RecordError>,
    ) -> Result<Option<T>, QueueError> {
        let index = match codec::decode::<ChunkIndex>(value) {
            Ok(index) => index,
            Err(err) => {
                quarantine(&self.tree, key, value, &err, &self.notices)?;
                return Ok(None);
            }
        };
        let damage = match self.log.read(&index) {
            Ok(stored) => match decode(&stored) {
                Ok(events) => return Ok(Some(events)),
                Err(err) => err,
            },
            // Removed (retention) since the entry was read: its segment may
            // be gone with it. Nothing is damaged.
            Err(_) if self.tree.get(key)?.as_deref() != Some(value) => return Ok(None),
            // The segment is gone or shorter than the entry says: damage.
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                RecordError::Decode(format!(
                    "its segment {:016x} cannot be read at {}: {err}",
                    index.segment, index.offset
                ))
            }
            // Trouble, not damage (too many open files, an I/O error): the
            // chunk is left as it is and the read fails; the store is
            // marked failed and reopened (2007/2008), and reading resumes.
            Err(err) => return Err(QueueError::Segments(err)),
        };
        quarantine(&self.tree, key, value, &damage, &self.notices)?;
        self.log.release(index.segment);
        Ok(None)
    }
}

/// The index keys of stream `id`'s chunks from the one that holds
/// `from_seq` (the last whose first seq is not after it) to the end.
fn chunk_range(
    store: &Store,
    id: u32,
    from_seq: u64,
) -> Result<std::ops::RangeInclusive<Vec<u8>>, QueueError> {
    let start = store
        .tree
        .range(keys::events(id, 0)..=keys::events(id, from_seq))
        .next_back()
        .transpose()?
        .map_or(keys::events(id, from_seq).to_vec(), |(key, _)| key.to_vec());
    Ok(start..=keys::events(id, u64::MAX).to_vec())
}

/// Open the store at `path` and read every stream's and group's state.
/// Damaged records are quarantined and reported; what the index lacks is
/// taken from the segment files ([`replay`]), and an index
/// that sled cannot read at all is set aside and rebuilt from them.
pub(crate) fn load(
    path: &Path,
    notices: &Notices,
) -> Result<(Store, Streams, OpenReport), QueueError> {
    let (db, set_aside) = open_db(path)?;
    let tree = db.open_tree("saf")?;
    let segments_dir = path.join(SEGMENTS_DIR);
    let mut report = OpenReport::default();
    report.groups = load_groups(&tree, &mut report.quarantined, notices)?;
    let mut records: BTreeMap<u32, StreamRecord> = BTreeMap::new();
    let mut damaged: BTreeSet<u32> = BTreeSet::new();
    for item in tree.scan_prefix([keys::STREAM]) {
        let (key, value) = item?;
        let Some(id) = keys::parse_stream(&key) else {
            continue;
        };
        match codec::decode::<StreamRecord>(&value) {
            Ok(record) => {
                records.insert(id, record);
            }
            Err(err) => {
                quarantine(&tree, &key, &value, &err, notices)?;
                report.quarantined.push(describe_key(&key));
                damaged.insert(id);
            }
        }
    }
    let index_was_empty = records.is_empty() && damaged.is_empty();
    let mut acked: HashMap<String, u64> = HashMap::new();
    for (stream, seq) in report.groups.values().flat_map(|g| &g.acked) {
        let highest = acked.entry(stream.clone()).or_default();
        *highest = (*highest).max(*seq);
    }
    let replayed = replay::replay(&tree, &segments_dir, &mut records, &damaged, &acked)?;
    if set_aside.is_some() || (index_was_empty && !replayed.rebuilt.is_empty()) {
        report.index_rebuilt = Some(IndexRebuilt {
            set_aside,
            streams: replayed.rebuilt.clone(),
        });
    }
    // The replayed index entries and records are durable before the new
    // segment's checkpoints are written and old segments deleted.
    db.flush()?;
    let checkpoints = records.iter().map(|(id, record)| Checkpoint {
        stream_id: *id,
        stream: record.name.clone(),
        next_seq: record.next_seq,
        cursor: record.cursor.clone(),
    });
    let log = SegmentLog::open(&segments_dir, checkpoints)?;
    log.track(replayed.indexed_segments.iter().copied());
    migrate::move_sled_chunks(&tree, &log, &records, notices)?;
    db.flush()?;
    log.delete_unreferenced()?;
    let mut streams = Streams {
        next_id: records
            .keys()
            .chain(&damaged)
            .copied()
            .chain(replayed.highest_stream_id)
            .max()
            .map_or(0, |id| id + 1),
        ..Streams::default()
    };
    for (id, record) in records {
        report.streams.push(StreamState::from(&record));
        streams.by_name.insert(
            record.name.clone(),
            (
                id,
                Arc::new(tokio::sync::Mutex::new(StreamEntry { id, record })),
            ),
        );
    }
    report.streams.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((
        Store {
            tree,
            commit: GroupCommit::new(move || db.flush().map(drop).map_err(|e| e.to_string())),
            log,
            notices: notices.clone(),
        },
        streams,
        report,
    ))
}

/// Event 2009 for an index rebuilt from the segment files.
fn index_rebuilt_notice(rebuilt: &IndexRebuilt) -> Notice {
    let mut message = format!(
        "the queue's index was rebuilt from the segment files ({} streams found); \
         groups deliver again what they had acknowledged (servers deduplicate)",
        rebuilt.streams.len()
    );
    if let Some(aside) = &rebuilt.set_aside {
        message.push_str(&format!(
            "; the damaged index, with any dead letters, was kept in {}",
            aside.display()
        ));
    }
    let notice = Notice::new(QUEUE_INDEX_REBUILT, message).with("streams", rebuilt.streams.len());
    match &rebuilt.set_aside {
        Some(aside) => notice.with("set_aside", aside.display()),
        None => notice,
    }
}

/// Every group's state; a damaged one is quarantined and started again
/// with an epoch no earlier one can match.
fn load_groups(
    tree: &sled::Tree,
    quarantined: &mut Vec<String>,
    notices: &Notices,
) -> Result<BTreeMap<String, GroupState>, QueueError> {
    let mut groups = BTreeMap::new();
    for item in tree.scan_prefix([keys::GROUP]) {
        let (key, value) = item?;
        let name = String::from_utf8_lossy(&key[1..]).into_owned();
        let state = match codec::decode::<GroupState>(&value) {
            Ok(state) => state,
            Err(err) => {
                quarantine(tree, &key, &value, &err, notices)?;
                quarantined.push(describe_key(&key));
                // The old epoch is unknown: jump above any epoch that can
                // have been issued (they count up from 1), so a stale
                // catch-up request can never match. Acks restart at 0:
                // re-delivery is harmless, receivers deduplicate.
                let state = GroupState {
                    epoch: unmatchable_epoch(),
                    ..GroupState::default()
                };
                tree.insert(&key, codec::encode(&state)?)?;
                state
            }
        };
        groups.insert(name, state);
    }
    Ok(groups)
}

/// An epoch above any that can have been issued before (epochs count up
/// from 1, one per change of active member): the time in microseconds.
pub(crate) fn unmatchable_epoch() -> u64 {
    crate::clock::now_micros().unsigned_abs()
}

/// Event payload per stored chunk. A chunk is the unit of reading and of
/// removal, so it stays well under a typical delivery batch; bigger chunks
/// mean fewer index entries.
const CHUNK_BYTES: usize = 64 * 1024;

/// The frame headers of an ingest's chunks: the last one carries the
/// cursor.
fn frame_headers(
    entry: &StreamEntry,
    chunks: &[EncodedChunk],
    first_seq: u64,
    cursor: Option<&Cursor>,
    ingested_at: i64,
) -> Vec<FrameHeader> {
    let mut seq = first_seq;
    let last = chunks.len().saturating_sub(1);
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let header = FrameHeader {
                stream_id: entry.id,
                stream: entry.record.name.clone(),
                first_seq: seq,
                count: chunk.count,
                ingest_first_seq: first_seq,
                last: i == last,
                cursor: if i == last { cursor.cloned() } else { None },
                ingested_at,
                earliest: chunk.earliest,
                payload_len: u32::try_from(chunk.stored.len()).unwrap_or(u32::MAX),
            };
            seq += chunk.count;
            header
        })
        .collect()
}

/// The part of an ingest that must not be cancelled: append the frames,
/// wait for their sync, write their index entries and the stream's state.
struct DurableWrite {
    store: Arc<Store>,
    entry: tokio::sync::OwnedMutexGuard<StreamEntry>,
    chunks: Vec<EncodedChunk>,
    events: u64,
    cursor: Option<Cursor>,
    ingested_at: i64,
    bytes: u64,
    used_bytes: Arc<AtomicU64>,
    unflushed: Arc<AtomicBool>,
    /// Wakes the dispatchers.
    appended: tokio::sync::watch::Sender<u64>,
    /// Keeps a reopen of the store waiting until this write is done.
    _writing: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl DurableWrite {
    /// Returns the seqs given (`first..next`) and how long the sync took.
    async fn run(mut self) -> Result<(u64, u64, Duration), QueueError> {
        let store = &self.store;
        let first_seq = self.entry.record.next_seq;
        let next_seq = first_seq + self.events;
        let frames = frame_headers(
            &self.entry,
            &self.chunks,
            first_seq,
            self.cursor.as_ref(),
            self.ingested_at,
        );
        let locations = store.log.append(
            frames
                .iter()
                .zip(&self.chunks)
                .map(|(h, c)| (h, &c.stored[..])),
        )?;
        let durable_after = store.log.durable().await.map_err(QueueError::Fsync)?;
        // Durable from here on: the frames carry the events and the
        // cursor. sled's records follow, flushed lazily.
        let mut record = self.entry.record.clone();
        record.next_seq = next_seq;
        record.bytes += self.bytes;
        if self.cursor.is_some() {
            record.cursor.clone_from(&self.cursor);
        }
        let mut batch = sled::Batch::default();
        for ((frame, chunk), (segment, offset)) in frames.iter().zip(&self.chunks).zip(locations) {
            if frame.count == 0 {
                continue;
            }
            let index = ChunkIndex {
                segment,
                offset,
                len: frame.payload_len,
                ingested_at: self.ingested_at,
                earliest: chunk.earliest,
            };
            batch.insert(
                &keys::events(self.entry.id, frame.first_seq)[..],
                codec::encode(&index)?,
            );
        }
        batch.insert(&keys::stream(self.entry.id)[..], codec::encode(&record)?);
        store.tree.apply_batch(batch)?;
        self.unflushed.store(true, Ordering::Release);
        self.entry.record = record;
        self.used_bytes.fetch_add(self.bytes, Ordering::AcqRel);
        self.appended.send_modify(|n| *n += 1);
        Ok((first_seq, next_seq, durable_after))
    }
}

/// One chunk of an ingest, encoded for its segment file.
struct EncodedChunk {
    count: u64,
    earliest: Timestamp,
    stored: Vec<u8>,
}

/// sled's page cache (its default is 1 GiB). sled holds only small
/// records; events are in the segment files.
const SLED_CACHE_BYTES: u64 = 32 << 20;

/// The directory of the segment files, inside the queue's directory.
const SEGMENTS_DIR: &str = "segments";

/// How long `open` waits for sled's file lock. sled releases it from its own
/// I/O threads shortly after the previous handle is dropped (a restart in
/// the same process, or a previous safd still exiting).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Open sled at `path`. An index sled reports as corrupt is moved aside
/// (kept for inspection, returned) and a new one started: the segment
/// files rebuild it.
fn open_db(path: &Path) -> Result<(sled::Db, Option<PathBuf>), QueueError> {
    match open_sled(path) {
        Err(QueueError::IndexDamaged(reason)) => {
            let aside = index_damage::set_aside(path).map_err(|e| QueueError::Open {
                path: path.display().to_string(),
                reason: format!(
                    "its index is damaged ({reason}) and cannot be moved aside to be rebuilt: \
                     {e}; move the files `conf`, `db`, `snap.*` and `blobs` out of the data \
                     directory by hand (the events are in `segments/`) and start again"
                ),
            })?;
            tracing::error!(
                event_id = QUEUE_INDEX_REBUILT,
                set_aside = %aside.display(),
                "the queue's index is damaged ({reason}); it was moved aside and is rebuilt \
                 from the segment files"
            );
            Ok((open_sled(path)?, Some(aside)))
        }
        other => other.map(|db| (db, None)),
    }
}

fn open_sled(path: &Path) -> Result<sled::Db, QueueError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let config = sled::Config::new()
            .path(path)
            // Durability comes from our own group-commit flushes.
            .flush_every_ms(None)
            .cache_capacity(SLED_CACHE_BYTES);
        // sled 0.34 asserts on some damage instead of returning an error;
        // either way the index cannot be read.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .unwrap_or_else(|_| Err(sled::Error::Corruption { at: None, bt: () }));
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
            Err(err @ sled::Error::Corruption { .. }) => {
                return Err(QueueError::IndexDamaged(err.to_string()));
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
