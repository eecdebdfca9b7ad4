//! Durable storage: the event log (`journal`) holds the events, one sled
//! database indexes them (where each segment lies, the id index for
//! deduplication, the seqs held per agent-stream from which the high-water
//! comes, the inbox held while the event service is down, counters) and
//! holds agent sessions.
//!
//! A delivery is acknowledged once its segments are appended to the log
//! and synced. Its index changes are then written in one atomic sled batch
//! that sled flushes on its own; records the flushed index does not cover
//! are indexed again from the log on open.

use crate::held::HeldSeqs;
use crate::id_index::{self, BuildPassThrough, IdHash, IdIndex};
use crate::journal::{Journal, JournalError, JournalReader, Location, Position};
use crate::protocol::{self, DeliverResponse, Delivery, Form, Positions, Rejection};
use crate::segment::{SealedSegment, Segment, SegmentBuilder, SegmentHeader};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error("damaged record under key {key}: {reason}")]
    Damaged { key: String, reason: String },
    #[error("cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("it is in use by another process (is another safd-mgmt running on it?)")]
    Locked,
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(
        "an earlier write to the event log failed, so nothing more is accepted; restart the \
         server (it reads the log back and continues after the last complete record)"
    )]
    Poisoned,
}

/// The data directory, readable by the server's user only: it holds every
/// event's text. Created 0700; an existing one open to others is closed
/// (and said so). Files inside are created 0600 (the server's umask).
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path),
        Err(err) => Err(err),
        Ok(meta) if meta.is_dir() && meta.permissions().mode() & 0o077 != 0 => {
            tracing::warn!(
                path = %path.display(),
                "the data directory was open to other users (mode {:o}); made 0700",
                meta.permissions().mode() & 0o777
            );
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        }
        Ok(_) => Ok(()),
    }
}

/// Key prefixes; all records live in one tree so one batch covers them.
mod prefix {
    /// agent, stream, first seq → a segment of events.
    pub const SEGMENT: u8 = b'e';
    /// Same suffix as a segment → the id hashes of its events.
    pub const IDS: u8 = b'i';
    /// Same suffix as a segment → its event count, while in the inbox.
    pub const INBOX: u8 = b'x';
    /// agent, stream → the held seqs.
    pub const STREAM: u8 = b's';
    pub const SESSION: u8 = b'g';
    pub const META: u8 = b'm';
}

/// The first byte of a segment's index value: where in the log it lies.
/// (A segment stored in sled itself, by servers before the log, starts
/// with its version byte, 1.)
const IN_LOG: u8 = b'L';

/// `prefix part \0 part \0 …`, each part escaped so that it holds no 0
/// byte: whatever bytes the names hold, two different (agent, stream)
/// pairs never make the same key or a prefix of each other's keys.
/// Names that follow the rules (`safd_event_block::names`) hold neither
/// 0 nor 1 and are written as they are, as servers before the escaping
/// wrote them.
fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = vec![prefix];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        escape_into(&mut key, part);
    }
    key
}

/// 0 → 1 1, 1 → 1 2; every other byte as it is.
fn escape_into(out: &mut Vec<u8>, part: &[u8]) {
    for &byte in part {
        match byte {
            0 => out.extend_from_slice(&[1, 1]),
            1 => out.extend_from_slice(&[1, 2]),
            other => out.push(other),
        }
    }
}

/// The inverse of [`escape_into`]; `None` for a byte string it cannot
/// have written.
fn unescape(part: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(part.len());
    let mut bytes = part.iter();
    while let Some(&byte) = bytes.next() {
        match byte {
            0 => return None,
            1 => match bytes.next() {
                Some(1) => out.push(0),
                Some(2) => out.push(1),
                _ => return None,
            },
            other => out.push(other),
        }
    }
    Some(out)
}

fn segment_key(agent: &str, stream: &str, first_seq: u64) -> Vec<u8> {
    let mut key = key(prefix::SEGMENT, &[agent.as_bytes(), stream.as_bytes()]);
    key.push(0);
    key.extend_from_slice(&first_seq.to_be_bytes());
    key
}

/// A record that belongs to a segment: the segment key under another
/// prefix.
fn companion_key(prefix: u8, segment_key: &[u8]) -> Vec<u8> {
    let mut key = segment_key.to_vec();
    key[0] = prefix;
    key
}

fn inbox_key(segment_key: &[u8]) -> Vec<u8> {
    companion_key(prefix::INBOX, segment_key)
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub agent: String,
    pub stream: String,
    pub seq: u64,
    pub id: String,
    /// Microseconds since the Unix epoch.
    pub time: i64,
    pub severity: String,
    pub attributes: Vec<(String, String)>,
    pub body: String,
    /// When the server stored it (microseconds since the Unix epoch).
    pub received_at: i64,
}

/// An agent's last registration with this server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub agent_id: String,
    pub group: String,
    pub member: String,
    pub role: String,
    pub epoch: u64,
    pub active: bool,
    pub stored: Positions,
    pub acknowledged: Positions,
    /// RFC 3339.
    pub registered_at: String,
    /// High-water per stream reported at that registration.
    pub high_water: Positions,
    /// Whether a catch-up was asked for.
    pub asked_catch_up: bool,
    /// What the server holds now, per stream (its high-water at the time
    /// of the query, not of the registration): filled in by queries.
    #[serde(default)]
    pub holds: Positions,
}

/// Filters of the query API.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventQuery {
    pub agent: Option<String>,
    pub stream: Option<String>,
    /// Minimum severity.
    pub severity: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
    /// Text the body or an attribute value contains (ignoring case).
    pub text: Option<String>,
    pub limit: Option<usize>,
}

/// The longest `text` filter: a query string is the client's to size.
const MAX_TEXT_FILTER: usize = 256;

/// `text` of a query, lowercased once: matched against every event's body
/// and attribute values, ignoring case.
#[derive(Debug)]
struct TextFilter(Option<String>);

impl TextFilter {
    fn new(text: Option<&str>) -> Result<Self, String> {
        match text {
            Some(text) if text.len() > MAX_TEXT_FILTER => Err(format!(
                "text is {} bytes; at most {MAX_TEXT_FILTER}",
                text.len()
            )),
            Some(text) if !text.is_empty() => Ok(Self(Some(text.to_lowercase()))),
            _ => Ok(Self(None)),
        }
    }

    fn matches<'a>(&self, body: &str, mut values: impl Iterator<Item = &'a str>) -> bool {
        let Some(needle) = &self.0 else {
            return true;
        };
        let contains = |haystack: &str| haystack.to_lowercase().contains(needle.as_str());
        contains(body) || values.any(contains)
    }
}

/// Counters shown by `/health`, `/stats` and the console; persisted with
/// every delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Events stored.
    pub stored: u64,
    /// Events received again (same seq or same id) and stored once.
    pub duplicates: u64,
    /// Events refused for good.
    pub rejected: u64,
    /// Stored events waiting for the event service.
    pub inbox: u64,
}

/// One agent-stream as `/stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamSummary {
    pub agent: String,
    pub stream: String,
    /// The lowest seq held: where this server joined the stream.
    pub first: u64,
    /// Every held seq, as inclusive ranges.
    pub held: Vec<[u64; 2]>,
    pub high_water: u64,
    /// Runs of missing seqs above the high-water (events that arrived out
    /// of order, or went to another server).
    pub gaps: usize,
}

/// What the single writer owns: the state every delivery reads and updates.
#[derive(Debug)]
struct WriterState {
    /// Held seqs per (agent, stream), as persisted under `prefix::STREAM`.
    streams: HashMap<(String, String), HeldSeqs>,
    /// How many streams each agent has here, for [`Limits`].
    streams_per_agent: HashMap<String, usize>,
    ids: IdIndex,
    counters: Counters,
    journal: Journal,
}

impl WriterState {
    /// Index one log record: in memory, and in `batch` for sled. The same
    /// code indexes a delivery's records and those read back on open;
    /// `ids` are the (id hash, seq) of the record's events.
    fn index_record(
        &mut self,
        batch: &mut sled::Batch,
        location: Location,
        header: &SegmentHeader,
        ids: &[(IdHash, u64)],
    ) -> Result<(), StoreError> {
        if let Some(first_seq) = header.first_seq {
            let (agent, stream) = (&header.agent, &header.stream);
            let segment_key = segment_key(agent, stream, first_seq);
            let held = match self.streams.entry((agent.clone(), stream.clone())) {
                Entry::Occupied(held) => held.into_mut(),
                Entry::Vacant(new) => {
                    *self.streams_per_agent.entry(agent.clone()).or_default() += 1;
                    new.insert(HeldSeqs::default())
                }
            };
            self.ids.insert_many(stream, ids);
            for &(_, seq) in ids {
                held.insert(seq);
            }
            for &(seq, _, _) in &header.duplicates {
                held.insert(seq);
            }
            for &(seq, _) in &header.rejected {
                held.insert(seq);
            }
            for &(first, last) in &header.left_out {
                held.insert_range(first, last);
            }
            batch.insert(
                key(prefix::STREAM, &[agent.as_bytes(), stream.as_bytes()]),
                serde_json::to_vec(held)?,
            );
            if !ids.is_empty() {
                batch.insert(
                    companion_key(prefix::IDS, &segment_key),
                    id_index::encode_entries(ids),
                );
            }
            if header.into_inbox && header.count > 0 {
                batch.insert(
                    inbox_key(&segment_key),
                    &u64::from(header.count).to_be_bytes()[..],
                );
            }
            let mut value = Vec::with_capacity(1 + Location::ENCODED);
            value.push(IN_LOG);
            value.extend_from_slice(&location.encode());
            batch.insert(segment_key, value);
        }
        if let Some(counters) = header.counters {
            self.counters = counters;
            batch.insert(counters_key(), serde_json::to_vec(&counters)?);
        }
        batch.insert(indexed_key(), &location.end().encode()[..]);
        Ok(())
    }
}

pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// Where the event log lives, for readers.
    log_dir: std::path::PathBuf,
    /// Set when a write to the log failed: what follows it in the file
    /// cannot be trusted, so nothing more is accepted until a restart.
    poisoned: Arc<AtomicBool>,
    /// One delivery at a time: dedup and high-water updates read what the
    /// previous delivery wrote.
    writer: Arc<Mutex<WriterState>>,
    /// A copy of the counters for readers that must not wait for a flush.
    counters: std::sync::Mutex<Counters>,
    /// The last 15 minutes of intake, for the console's plots.
    history: std::sync::Mutex<crate::history::History>,
    service_ready: AtomicBool,
    limits: Limits,
}

/// How much one client can make the server hold in memory: every stream
/// costs its held ranges and its entries in the maps (measured in
/// `tests/e2e/mgmt_server/hostile.rs`, bounded in docs/protocol.md), so the number of
/// streams is limited; ids and events cost what is stored, which the
/// request size and the field limits of [`protocol::WireEvent::check`]
/// bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Streams the server holds, all agents together.
    pub max_streams: u32,
    /// Streams one agent may have here.
    pub max_streams_per_agent: u32,
    /// Streams new to the server that one delivery may open; the batches
    /// of further new streams are left unacknowledged, and the agent sends
    /// them again.
    pub max_new_streams_per_delivery: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_streams: 100_000,
            max_streams_per_agent: 1_000,
            max_new_streams_per_delivery: 100,
        }
    }
}

/// Separate runs of held seqs one stream may have (gaps + 1); an event
/// that would open another is rejected. The runs are written with every
/// delivery to the stream, so their number is what such a write costs.
pub const MAX_HELD_RANGES: usize = 1_024;

/// Whether a delivery may open a stream new to the server.
enum Admission {
    Open,
    /// Not in this delivery: its events are left unacknowledged.
    Later,
    /// Never, as things stand: its events are rejected with the reason.
    Refused(String),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// sled writes any page over a quarter of a log segment to its own blob
/// file (a file create and an fsync each). Data directories written before
/// the event log hold 128 KiB event segments in sled leaves of up to 16
/// records; 16 MiB log segments keep such leaves inline.
const SLED_SEGMENT_BYTES: usize = 16 << 20;

/// sled's page cache by default (sled's own default is 1 GiB, which a
/// client opening many streams filled). Measured against 1 GiB,
/// interleaved, medians of 3 (150 deliveries of 1 024 realistic events,
/// then queries of 1 000): 495 926 vs 515 115 events/s, within the
/// machine's noise; 74 vs 73 ms per query.
pub const DEFAULT_INDEX_CACHE_BYTES: u64 = 16 << 20;

/// How often sled flushes the index on its own. What it has not flushed
/// when the server stops is indexed again from the event log on open.
const SLED_FLUSH_MS: u64 = 500;

fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Damaged {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn counters_key() -> Vec<u8> {
    key(prefix::META, &[b"counters"])
}

/// The log position up to which the index is written.
fn indexed_key() -> Vec<u8> {
    key(prefix::META, &[b"indexed"])
}

impl Store {
    /// Open (or create) the database at `path`. `service_ready` overrides
    /// the persisted state of the event service switch when given.
    pub fn open(path: &Path, service_ready: Option<bool>) -> Result<Self, StoreError> {
        Self::open_with_cache(path, service_ready, DEFAULT_INDEX_CACHE_BYTES)
    }

    /// [`Store::open`] with an index page cache of `cache_bytes`.
    pub fn open_with_cache(
        path: &Path,
        service_ready: Option<bool>,
        cache_bytes: u64,
    ) -> Result<Self, StoreError> {
        make_private(path).map_err(|err| StoreError::Io {
            path: path.to_owned(),
            source: err,
        })?;
        let db = sled::Config::new()
            .path(path)
            .segment_size(SLED_SEGMENT_BYTES)
            .flush_every_ms(Some(SLED_FLUSH_MS))
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|err| match err {
                // sled reports its file lock only in the message.
                sled::Error::Io(io) if io.to_string().contains("acquire lock") => {
                    StoreError::Locked
                }
                other => StoreError::Db(other),
            })?;
        let tree = db.open_tree("safd-mgmt")?;
        let service_key = key(prefix::META, &[b"service_ready"]);
        let persisted = tree.get(&service_key)?.is_none_or(|v| v.as_ref() != b"0");
        if let Some(ready) = service_ready {
            // The flag sets the state from now on, across restarts too.
            tree.insert(&service_key, if ready { &b"1"[..] } else { &b"0"[..] })?;
            db.flush()?;
        }
        let mut streams = HashMap::new();
        let mut ids = IdIndex::default();
        for item in tree.scan_prefix([prefix::STREAM]) {
            let (key, value) = item?;
            let (agent, stream) = split_agent_stream(&key)?;
            streams.insert((agent, stream), decode(&key, &value)?);
        }
        for item in tree.scan_prefix([prefix::IDS]) {
            let (key, value) = item?;
            let (_, stream) = split_agent_stream(&key)?;
            let entries = id_index::decode_entries(&value).ok_or_else(|| StoreError::Damaged {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: "id record length is not a multiple of 24".to_owned(),
            })?;
            for (hash, seq) in entries {
                ids.insert(hash, &stream, seq);
            }
        }
        let counters_key = counters_key();
        let counters = match tree.get(&counters_key)? {
            Some(value) => decode(&counters_key, &value)?,
            None => Counters::default(),
        };
        let indexed = match tree.get(indexed_key())? {
            Some(value) => Position::decode(&value).ok_or_else(|| StoreError::Damaged {
                key: "indexed".to_owned(),
                reason: "not a log position".to_owned(),
            })?,
            None => Position::default(),
        };
        let log_dir = path.join("events");
        let (journal, unindexed) = Journal::open(&log_dir, indexed)?;
        let mut streams_per_agent: HashMap<String, usize> = HashMap::new();
        for (agent, _) in streams.keys() {
            *streams_per_agent.entry(agent.clone()).or_default() += 1;
        }
        let mut state = WriterState {
            streams,
            streams_per_agent,
            ids,
            counters,
            journal,
        };
        if !unindexed.is_empty() {
            let records = unindexed
                .iter()
                .map(|(l, payload)| (*l, payload.as_slice()));
            index_records(&mut state, &tree, records)?;
            db.flush()?;
            tracing::info!(
                records = unindexed.len(),
                "indexed log records the index had not stored before the server stopped"
            );
        }
        tracing::debug!(ids = state.ids.len(), "id index rebuilt");
        Ok(Self {
            db,
            tree,
            log_dir,
            poisoned: Arc::default(),
            counters: std::sync::Mutex::new(state.counters),
            history: std::sync::Mutex::default(),
            writer: Arc::new(Mutex::new(state)),
            service_ready: AtomicBool::new(service_ready.unwrap_or(persisted)),
            limits: Limits::default(),
        })
    }

    /// The same store with other limits on what clients make it hold.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn counters(&self) -> Counters {
        *self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish_counters(&self, counters: Counters) {
        *self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = counters;
    }

    /// Events stored per second and their lag over the last 15 minutes.
    pub fn history(&self) -> Vec<crate::history::Point> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .points(now_micros())
    }

    pub fn service_ready(&self) -> bool {
        self.service_ready.load(Ordering::Acquire)
    }

    /// Take the event service down or bring it back. Bringing it back
    /// releases the inbox to the service.
    pub async fn set_service_ready(&self, ready: bool) -> Result<(), StoreError> {
        let mut state = self.writer.lock().await;
        let mut batch = sled::Batch::default();
        batch.insert(
            key(prefix::META, &[b"service_ready"]),
            if ready { &b"1"[..] } else { &b"0"[..] },
        );
        let mut counters = state.counters;
        if ready {
            for item in self.tree.scan_prefix([prefix::INBOX]) {
                let (key, value) = item?;
                let count = value
                    .as_ref()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                counters.inbox = counters.inbox.saturating_sub(count);
                batch.remove(key);
            }
            batch.insert(counters_key(), serde_json::to_vec(&counters)?);
        }
        self.tree.apply_batch(batch)?;
        self.db.flush_async().await?;
        self.service_ready.store(ready, Ordering::Release);
        let released = state.counters.inbox - counters.inbox;
        state.counters = counters;
        self.publish_counters(counters);
        if released > 0 {
            tracing::info!(released, "event service back: inbox released");
        }
        Ok(())
    }

    /// The high-water per stream of `agent`.
    pub async fn high_water(&self, agent: &str) -> Positions {
        let state = self.writer.lock().await;
        state
            .streams
            .iter()
            .filter(|((a, _), _)| a == agent)
            .map(|((_, stream), held)| (stream.clone(), held.high_water()))
            .collect()
    }

    /// Per agent-stream: the high-water and how many gaps lie above it.
    pub async fn streams(&self) -> Vec<StreamSummary> {
        let state = self.writer.lock().await;
        let mut out: Vec<_> = state
            .streams
            .iter()
            .map(|((agent, stream), held)| StreamSummary {
                agent: agent.clone(),
                stream: stream.clone(),
                first: held.first(),
                held: held.ranges().map(|(a, b)| [a, b]).collect(),
                high_water: held.high_water(),
                gaps: held.range_count().saturating_sub(1),
            })
            .collect();
        out.sort_by(|a, b| (&a.agent, &a.stream).cmp(&(&b.agent, &b.stream)));
        out
    }

    pub async fn record_session(&self, session: &Session) -> Result<(), StoreError> {
        let key = key(
            prefix::SESSION,
            &[
                session.agent_id.as_bytes(),
                session.group.as_bytes(),
                session.member.as_bytes(),
            ],
        );
        self.tree.insert(key, serde_json::to_vec(session)?)?;
        self.db.flush_async().await?;
        Ok(())
    }

    pub fn sessions(&self) -> Result<Vec<Session>, StoreError> {
        self.tree
            .scan_prefix([prefix::SESSION])
            .map(|item| {
                let (key, value) = item?;
                decode(&key, &value)
            })
            .collect()
    }

    /// Store a delivery: deduplicate, reject what can never be accepted,
    /// append it to the event log and sync it, and report the accepted
    /// prefix per stream. Indexing follows the answer (see below).
    pub async fn deliver(&self, request: &Delivery<'_>) -> Result<DeliverResponse, StoreError> {
        let mut state = self.writer.clone().lock_owned().await;
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        let agent: &str = request.agent_id;
        let received_at = now_micros();
        let into_inbox = !self.service_ready();
        let mut counters = state.counters;
        let mut intake = crate::history::Intake::default();
        let mut response = DeliverResponse::default();
        // The log records of this delivery, each with the counters as they
        // stand once it is indexed.
        let mut records: Vec<SealedSegment> = Vec::new();
        let mut recorded = counters;
        // Held seqs as this delivery leaves them, for deduplication within
        // it; the state changes only once its records are synced.
        let mut touched: HashMap<&str, HeldSeqs> = HashMap::new();
        // Ids stored by this delivery, not yet in the index, per stream.
        // One map for the whole delivery (a map per stream cost an
        // allocation per stream, which a delivery opening 100 streams
        // paid 100 times), keyed by the id hash scoped to the stream's
        // number within this delivery.
        let events_sent: usize = request.batches.iter().map(|b| b.events.len()).sum();
        let mut pending_ids: HashMap<IdHash, u64, BuildPassThrough> =
            HashMap::with_capacity_and_hasher(events_sent, BuildPassThrough::default());
        let mut stream_numbers: HashMap<&str, u32> = HashMap::new();
        let mut seal = |segment: SegmentBuilder, stream: &str, counters: Counters| {
            if segment.first_seq.is_none() {
                return Ok::<_, StoreError>(());
            }
            let mut segment = segment;
            segment.header.agent = agent.to_owned();
            segment.header.stream = stream.to_owned();
            segment.header.into_inbox = into_inbox;
            segment.header.received_at = received_at;
            segment.header.counters = Some(counters);
            records.push(segment.seal()?);
            recorded = counters;
            Ok(())
        };

        // Streams this delivery opens, and those it may not open.
        let mut opened = 0usize;
        let mut not_opened: HashMap<&str, Option<String>> = HashMap::new();
        let agent_streams = state.streams_per_agent.get(agent).copied().unwrap_or(0);
        for stream_batch in &request.batches {
            let stream: &str = stream_batch.stream;
            if !touched.contains_key(stream) && !not_opened.contains_key(stream) {
                match state.streams.get(&(agent.to_owned(), stream.to_owned())) {
                    Some(held) => {
                        touched.insert(stream, held.clone());
                    }
                    None => match self.admit(state.streams.len(), agent_streams, opened) {
                        Admission::Open => {
                            opened += 1;
                            touched.insert(stream, HeldSeqs::default());
                        }
                        Admission::Later => {
                            not_opened.insert(stream, None);
                        }
                        Admission::Refused(reason) => {
                            not_opened.insert(stream, Some(reason));
                        }
                    },
                }
            }
            let Some(held) = touched.get_mut(stream) else {
                if let Some(Some(reason)) = not_opened.get(stream) {
                    for event in &stream_batch.events {
                        counters.rejected += 1;
                        response.rejected.push(Rejection {
                            stream: stream.to_owned(),
                            seq: event.seq,
                            reason: reason.clone(),
                        });
                    }
                }
                continue;
            };
            let mut segment = SegmentBuilder::default();
            let known_ids = state.ids.of_stream(stream);
            let next_number = stream_numbers.len() as u32;
            let number = *stream_numbers.entry(stream).or_insert(next_number);
            // Every event of the batch ends up stored, known or rejected
            // (a storage failure fails the whole request), so the accepted
            // prefix is the whole batch, whatever its order.
            let mut accepted_through: Option<u64> = None;
            for event in &stream_batch.events {
                let seq = event.seq;
                accepted_through = Some(accepted_through.map_or(seq, |s| s.max(seq)));
                if held.contains(seq) {
                    counters.duplicates += 1;
                    continue;
                }
                if held.range_count() >= MAX_HELD_RANGES && held.opens_range(seq) {
                    counters.rejected += 1;
                    response.rejected.push(Rejection {
                        stream: stream.to_owned(),
                        seq,
                        reason: format!(
                            "the stream already has {MAX_HELD_RANGES} separate runs of seqs \
                             here; seq {seq} would open another: deliver the missing seqs first"
                        ),
                    });
                    continue;
                }
                match &event.checked {
                    Err(reason) => {
                        counters.rejected += 1;
                        response.rejected.push(Rejection {
                            stream: stream.to_owned(),
                            seq,
                            reason: reason.clone(),
                        });
                        segment.header.rejected.push((seq, reason.clone()));
                    }
                    Ok(checked) => {
                        let hash = id_index::id_hash(agent, event.id);
                        let pending_key = id_index::scoped(hash, number);
                        let earlier = pending_ids
                            .get(&pending_key)
                            .copied()
                            .or_else(|| known_ids.get(hash));
                        if let Some(earlier_seq) = earlier {
                            counters.duplicates += 1;
                            segment
                                .header
                                .duplicates
                                .push((seq, stream.to_owned(), earlier_seq));
                        } else {
                            counters.stored += 1;
                            intake.add(received_at, checked.time);
                            if into_inbox {
                                counters.inbox += 1;
                            }
                            pending_ids.insert(pending_key, seq);
                            segment.ids.push((hash, seq));
                            match &checked.form {
                                // As it came: the binary body's bytes are
                                // the segment's encoding.
                                Form::Encoded(bytes) => segment.events.push_encoded(1, bytes),
                                Form::Fields { severity, event } => segment.events.push_sequenced(
                                    seq,
                                    &event.id,
                                    checked.time,
                                    *severity,
                                    event.attributes.iter().map(|(k, v)| (k, v)),
                                    &event.body,
                                ),
                            }
                        }
                    }
                }
                held.insert(seq);
                segment.note_seq(seq);
                if segment.is_full() {
                    seal(std::mem::take(&mut segment), stream, counters)?;
                }
            }
            // What the agent's routing left out for this server: held as
            // settled, so the stream stays one run.
            for &[first, last] in &stream_batch.left_out {
                if first > last || first == 0 {
                    tracing::warn!(
                        agent,
                        stream,
                        first,
                        last,
                        "left_out range ignored: not a range of seqs"
                    );
                    continue;
                }
                // Only what is not held yet is recorded: a seq is settled
                // into one record only (the first one keys its segment).
                let mut recorded_all = true;
                for (from, through) in held.missing_within(first, last) {
                    if held.range_count() >= MAX_HELD_RANGES && held.range_opens_run(from, through)
                    {
                        // Not held, so not acknowledged: sent again later.
                        recorded_all = false;
                        break;
                    }
                    held.insert_range(from, through);
                    segment.note_seq(from);
                    segment.header.left_out.push((from, through));
                }
                if recorded_all {
                    accepted_through = Some(accepted_through.map_or(last, |s| s.max(last)));
                }
            }
            seal(segment, stream, counters)?;
            if let Some(seq) = accepted_through {
                let through = response.acknowledged.entry(stream.to_owned()).or_insert(0);
                *through = (*through).max(seq);
            }
        }
        if counters != recorded {
            // Only duplicates of held seqs: no segment, but the counters
            // moved.
            let mut only_counters = SegmentBuilder::default();
            only_counters.header.received_at = received_at;
            only_counters.header.counters = Some(counters);
            records.push(only_counters.seal()?);
        }
        if records.is_empty() {
            return Ok(response);
        }

        let locations = match self.append_and_sync(&mut state.journal, &records).await {
            Ok(locations) => locations,
            Err(err) => {
                self.poisoned.store(true, Ordering::Release);
                tracing::error!("event log write failed; no more deliveries accepted: {err}");
                return Err(err);
            }
        };
        self.publish_counters(counters);
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(received_at, intake);
        // The delivery is durable in the log: answer now, and index it
        // (memory and sled) while the agent prepares its next batch. The
        // writer lock goes with the indexing, so the next delivery, and
        // every reader that takes the lock, sees the index with it. sled is
        // not flushed: what it loses in a crash is indexed from the log
        // again on open.
        let tree = self.tree.clone();
        let poisoned = self.poisoned.clone();
        tokio::task::spawn_blocking(move || {
            let synced: Vec<_> = locations.into_iter().zip(records.iter()).collect();
            let indexed = index_sealed(&mut state, &tree, &synced);
            // The database before the lock: whoever waits for the lock to
            // close the store must find the database free.
            drop(tree);
            drop(state);
            if let Err(err) = indexed {
                poisoned.store(true, Ordering::Release);
                tracing::error!(
                    "indexing a delivery failed; no more deliveries accepted until a restart \
                     indexes the event log again: {err}"
                );
            }
        });
        Ok(response)
    }

    /// Whether a delivery may open one more stream, given how many the
    /// server holds, how many its agent has and how many the delivery
    /// opened already.
    fn admit(&self, streams: usize, agent_streams: usize, opened: usize) -> Admission {
        let limits = &self.limits;
        let limit = |value: u32| usize::try_from(value).unwrap_or(usize::MAX);
        if agent_streams + opened >= limit(limits.max_streams_per_agent) {
            Admission::Refused(format!(
                "the agent has {} streams at this server, its limit \
                 (--max-streams-per-agent); raise the limit or send fewer streams",
                limits.max_streams_per_agent
            ))
        } else if streams + opened >= limit(limits.max_streams) {
            Admission::Refused(format!(
                "the server holds {} streams, its limit (--max-streams); raise the limit",
                limits.max_streams
            ))
        } else if opened >= limit(limits.max_new_streams_per_delivery) {
            Admission::Later
        } else {
            Admission::Open
        }
    }

    /// Append `records` to the log and sync them; the sync runs off the
    /// async runtime.
    async fn append_and_sync(
        &self,
        journal: &mut Journal,
        records: &[SealedSegment],
    ) -> Result<Vec<Location>, StoreError> {
        let locations = journal.append_all(records.iter().map(|r| r.bytes.as_slice()))?;
        let sync = journal.sync_job();
        tokio::task::spawn_blocking(move || sync.run())
            .await
            .map_err(|e| {
                StoreError::Journal(JournalError::Io {
                    path: self.log_dir.clone(),
                    source: std::io::Error::other(e),
                })
            })??;
        Ok(locations)
    }

    /// Stored events released to the service (not those in the inbox),
    /// newest first.
    pub fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, String> {
        // Wait for the index writes of deliveries already answered.
        drop(self.writer.blocking_lock());
        let min_severity = match &query.severity {
            None => 0,
            Some(s) => protocol::SEVERITIES
                .iter()
                .position(|known| known == s)
                .ok_or_else(|| {
                    format!(
                        "severity `{s}` is not one of {}",
                        protocol::SEVERITIES.join(", ")
                    )
                })?,
        };
        let parse_time = |name: &str, value: &Option<String>| -> Result<Option<i64>, String> {
            value
                .as_deref()
                .map(|v| {
                    v.parse::<jiff::Timestamp>()
                        .map(|t| t.as_microsecond())
                        .map_err(|e| format!("{name} `{v}` is not an RFC 3339 time: {e}"))
                })
                .transpose()
        };
        let since = parse_time("since", &query.since)?;
        let until = parse_time("until", &query.until)?;
        let text = TextFilter::new(query.text.as_deref())?;
        let limit = query.limit.unwrap_or(200).min(10_000);
        let scan_prefix = match (&query.agent, &query.stream) {
            (Some(agent), Some(stream)) => {
                let mut k = key(prefix::SEGMENT, &[agent.as_bytes(), stream.as_bytes()]);
                k.push(0);
                k
            }
            (Some(agent), None) => {
                let mut k = key(prefix::SEGMENT, &[agent.as_bytes()]);
                k.push(0);
                k
            }
            _ => vec![prefix::SEGMENT],
        };
        let mut out = Vec::new();
        // The oldest `received_at` among the newest `limit` kept so far.
        let mut floor: Option<i64> = None;
        let mut log = JournalReader::new(&self.log_dir);
        for item in self.tree.scan_prefix(&scan_prefix) {
            let (key, value) = item.map_err(|e| e.to_string())?;
            if self
                .tree
                .contains_key(inbox_key(&key))
                .map_err(|e| e.to_string())?
            {
                continue;
            }
            let (agent, stream) = split_agent_stream(&key).map_err(|e| e.to_string())?;
            if query.stream.as_ref().is_some_and(|s| *s != stream) {
                continue;
            }
            let from_log;
            let bytes: &[u8] = match value.split_first() {
                Some((&IN_LOG, location)) => {
                    let location = Location::decode(location).ok_or_else(|| {
                        format!(
                            "damaged record under {}: not a log location",
                            String::from_utf8_lossy(&key)
                        )
                    })?;
                    from_log = log.read(location).map_err(|e| {
                        tracing::error!("{e}");
                        e.to_string()
                    })?;
                    &from_log
                }
                // Stored in sled by a server before the event log.
                _ => &value,
            };
            let segment = Segment::decode(bytes).map_err(|reason| {
                tracing::error!(key = %String::from_utf8_lossy(&key), "damaged segment: {reason}");
                format!(
                    "damaged record under {}: {reason}",
                    String::from_utf8_lossy(&key)
                )
            })?;
            // The answer is the newest `limit` events: a segment older
            // than all of those kept so far cannot add one, and what is
            // kept stays under twice the limit whatever the log holds.
            if out.len() >= limit && floor.is_some_and(|f| segment.header.received_at < f) {
                continue;
            }
            for item in segment.events() {
                let (seq, event) = item?;
                if usize::from(event.severity) < min_severity
                    || since.is_some_and(|t| event.time < t)
                    || until.is_some_and(|t| event.time >= t)
                    || !text.matches(event.body, event.attributes.iter().map(|(_, v)| v))
                {
                    continue;
                }
                out.push(StoredEvent {
                    agent: agent.clone(),
                    stream: stream.clone(),
                    seq,
                    id: event.id.to_owned(),
                    time: event.time,
                    severity: protocol::SEVERITIES
                        .get(usize::from(event.severity))
                        .copied()
                        .unwrap_or("info")
                        .to_owned(),
                    attributes: event
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    body: event.body.to_owned(),
                    received_at: segment.header.received_at,
                });
            }
            if out.len() >= 2 * limit {
                newest_first(&mut out, limit);
                floor = out.last().map(|e| e.received_at);
            }
        }
        newest_first(&mut out, limit);
        Ok(out)
    }
}

/// The newest `limit` of `events`, newest first.
fn newest_first(events: &mut Vec<StoredEvent>, limit: usize) {
    events.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(b.seq.cmp(&a.seq)));
    events.truncate(limit);
}

/// Index synced log records, in memory and in one sled batch: a delivery's,
/// or those read back on open.
fn index_records<'a>(
    state: &mut WriterState,
    tree: &sled::Tree,
    records: impl IntoIterator<Item = (Location, &'a [u8])>,
) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for (location, payload) in records {
        let damaged = |reason: String| StoreError::Damaged {
            key: format!("log record at {location:?}"),
            reason,
        };
        let segment = Segment::decode(payload).map_err(damaged)?;
        let agent = &segment.header.agent;
        let ids = segment
            .events()
            .map(|item| item.map(|(seq, event)| (id_index::id_hash(agent, event.id), seq)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(damaged)?;
        state.index_record(&mut batch, location, &segment.header, &ids)?;
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// Index a delivery's synced records from what was kept when they were
/// built, without reading their events again.
fn index_sealed(
    state: &mut WriterState,
    tree: &sled::Tree,
    records: &[(Location, &SealedSegment)],
) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for (location, sealed) in records {
        state.index_record(&mut batch, *location, &sealed.header, &sealed.ids)?;
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// (agent, stream) from a key `prefix agent \0 stream [\0 ...]` (the
/// parts escaped by [`key`]).
fn split_agent_stream(key: &[u8]) -> Result<(String, String), StoreError> {
    let mut parts = key.get(1..).unwrap_or_default().splitn(3, |&b| b == 0);
    let text = |part: Option<&[u8]>| {
        let bytes = unescape(part?)?;
        String::from_utf8(bytes).ok()
    };
    match (text(parts.next()), text(parts.next())) {
        (Some(agent), Some(stream)) => Ok((agent, stream)),
        _ => Err(StoreError::Damaged {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "key does not name an agent and a stream".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DeliverRequest;
    use std::path::Path;

    #[test]
    fn the_text_filter_ignores_case_and_looks_at_attribute_values_too() {
        let filter = TextFilter::new(Some("Line Not")).unwrap();
        assert!(filter.matches("LDEV 1: LINE NOT READY", std::iter::empty()));
        assert!(filter.matches("x", ["line not ready"].into_iter()));
        assert!(!filter.matches("LINE READY", ["ok"].into_iter()));
        assert!(
            TextFilter::new(Some(""))
                .unwrap()
                .matches("x", std::iter::empty())
        );
        let long = "x".repeat(MAX_TEXT_FILTER + 1);
        assert!(
            TextFilter::new(Some(&long))
                .unwrap_err()
                .contains("at most 256")
        );
    }

    fn request(agent: &str, events: &[(u64, &str)]) -> String {
        let events: Vec<_> = events
            .iter()
            .map(|(seq, id)| {
                serde_json::json!({"seq": seq, "id": id, "time": "2024-03-11T01:17:10Z",
                    "severity": "major", "attributes": [["system", "\\PROD1"]], "body": "text"})
            })
            .collect();
        serde_json::json!({"agent_id": agent, "group": "g", "epoch": 1,
            "batches": [{"stream": "ems", "events": events}]})
        .to_string()
    }

    async fn deliver(store: &Store, agent: &str, events: &[(u64, &str)]) -> DeliverResponse {
        let body = request(agent, events);
        let request: DeliverRequest<'_> = serde_json::from_str(&body).unwrap();
        store.deliver(&Delivery::from_json(&request)).await.unwrap()
    }

    async fn query(store: Arc<Store>) -> Vec<StoredEvent> {
        tokio::task::spawn_blocking(move || store.query(&EventQuery::default()).unwrap())
            .await
            .unwrap()
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }

    /// What a crash between a delivery's sync and sled's next flush
    /// leaves: the log has the delivery, the index does not. Here the
    /// index is missing altogether (a fresh database beside a full log).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliveries_the_index_missed_are_indexed_from_the_log_on_open() {
        let original = tempfile::tempdir().unwrap();
        {
            let store = Store::open(original.path(), None).unwrap();
            deliver(&store, "a1", &[(1, "e1"), (2, "e2"), (3, "e3")]).await;
            deliver(&store, "a1", &[(2, "e2"), (5, "e5")]).await;
            store.set_service_ready(false).await.unwrap();
            deliver(&store, "a1", &[(4, "e4"), (6, "e1")]).await;
            // Indexing runs after the answer; let it finish before the
            // database is opened again.
            drop(store.writer.lock().await);
        }
        let log_only = tempfile::tempdir().unwrap();
        copy_dir(
            &original.path().join("events"),
            &log_only.path().join("events"),
        );

        for dir in [original.path(), log_only.path()] {
            // The service switch lives in sled only; the log says which
            // events went to the inbox.
            let store = Arc::new(Store::open(dir, Some(false)).unwrap());
            let counters = store.counters();
            assert_eq!(
                (counters.stored, counters.duplicates, counters.inbox),
                (5, 2, 1),
                "{}",
                dir.display()
            );
            assert_eq!(store.high_water("a1").await.get("ems"), Some(&6));
            let summary = store.streams().await;
            assert_eq!(summary[0].held, vec![[1, 6]]);
            // The inbox event is not released yet.
            assert_eq!(query(store.clone()).await.len(), 4);
            // Replays are recognised by seq and by id.
            let answer = deliver(&store, "a1", &[(3, "e3"), (7, "e5")]).await;
            assert_eq!(answer.acknowledged.get("ems"), Some(&7));
            assert_eq!(store.counters().stored, 5);
            store.set_service_ready(true).await.unwrap();
            assert_eq!(query(store.clone()).await.len(), 5);
            assert_eq!(store.counters().inbox, 0);
        }
    }

    /// (agent, stream) pairs that would share a key if the key only
    /// joined the names with 0: for every char U+0000..=U+00FF (every byte
    /// value), the char inside the agent or inside the stream.
    fn lookalike_pairs() -> Vec<(String, String)> {
        (0u32..=0xFF)
            .filter_map(char::from_u32)
            .flat_map(|c| {
                [
                    (format!("a{c}b"), "c".to_owned()),
                    ("a".to_owned(), format!("b{c}c")),
                    (format!("a{c}"), "bc".to_owned()),
                    (format!("a\u{1}{c}"), "b".to_owned()),
                ]
            })
            .collect()
    }

    #[test]
    fn keys_keep_every_agent_and_stream_apart_whatever_their_bytes() {
        let pairs = lookalike_pairs();
        let mut keys = std::collections::HashSet::new();
        for (agent, stream) in &pairs {
            let pair_key = segment_key(agent, stream, 1);
            assert_eq!(
                split_agent_stream(&pair_key).unwrap(),
                (agent.clone(), stream.clone())
            );
            // An agent's prefix scan finds its own keys only.
            let mut agent_prefix = key(prefix::SEGMENT, &[agent.as_bytes()]);
            agent_prefix.push(0);
            for (other, other_stream) in &pairs {
                if other != agent {
                    assert!(
                        !segment_key(other, other_stream, 1).starts_with(&agent_prefix),
                        "{agent:?} / {other:?}"
                    );
                }
            }
            assert!(keys.insert(pair_key), "{agent:?} {stream:?}");
        }
    }

    /// The report of the issue, for every byte value: names the HTTP API
    /// refuses, delivered straight to the store, then a restart; no event
    /// of one pair is taken for another's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookalike_names_keep_their_own_events_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = lookalike_pairs();
        let deliver_all = |store: Arc<Store>| {
            let pairs = pairs.clone();
            async move {
                for (i, (agent, stream)) in pairs.iter().enumerate() {
                    let body = serde_json::json!({"agent_id": agent, "group": "g", "epoch": 1,
                        "batches": [{"stream": stream, "events": [
                            // One id for all: dedup on ids must keep the
                            // pairs apart too.
                            {"seq": 1, "id": "same-id", "time": "2024-03-11T01:17:10Z",
                             "severity": "info", "body": format!("event of pair {i}")}]}]})
                    .to_string();
                    let request: DeliverRequest<'_> = serde_json::from_str(&body).unwrap();
                    let answer = store.deliver(&Delivery::from_json(&request)).await.unwrap();
                    assert_eq!(answer.acknowledged.get(stream.as_str()), Some(&1));
                }
                drop(store.writer.lock().await);
            }
        };
        {
            let store = Arc::new(Store::open(dir.path(), None).unwrap().with_limits(Limits {
                max_new_streams_per_delivery: 1,
                ..Limits::default()
            }));
            deliver_all(store.clone()).await;
            assert_eq!(store.counters().stored, pairs.len() as u64);
        }
        let store = Arc::new(Store::open(dir.path(), None).unwrap());
        // Delivered again after the restart: every one is known.
        deliver_all(store.clone()).await;
        let counters = store.counters();
        assert_eq!(
            (counters.stored, counters.duplicates),
            (pairs.len() as u64, pairs.len() as u64)
        );
        let all = EventQuery {
            limit: Some(10_000),
            ..EventQuery::default()
        };
        let events = tokio::task::spawn_blocking(move || store.query(&all).unwrap())
            .await
            .unwrap();
        assert_eq!(events.len(), pairs.len());
        for event in events {
            let i: usize = event
                .body
                .trim_start_matches("event of pair ")
                .parse()
                .unwrap();
            assert_eq!((&event.agent, &event.stream), (&pairs[i].0, &pairs[i].1));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_acknowledged_delivery_is_queryable_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), None).unwrap());
        for seq in 1..=50u64 {
            let id = format!("e{seq}");
            deliver(&store, "a1", &[(seq, &id)]).await;
            assert_eq!(query(store.clone()).await.len(), seq as usize);
        }
    }
}
