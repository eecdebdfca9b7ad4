//! Durable storage in one sled database: event segments, the id index for
//! deduplication, the seqs held per agent-stream (from which the high-water
//! comes), the inbox held while the event service is down, counters and
//! agent sessions.
//!
//! Everything one delivery changes is written in one atomic sled batch and
//! flushed to disk before the delivery is acknowledged.

use crate::held::HeldSeqs;
use crate::id_index::{self, IdHash, IdIndex};
use crate::protocol::{self, DeliverRequest, DeliverResponse, Positions, Rejection};
use crate::segment::{Segment, SegmentBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
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

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = vec![prefix];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
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
    pub limit: Option<usize>,
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

/// What one delivery writes, gathered into one atomic sled batch.
struct PendingWrite {
    batch: sled::Batch,
    counters: Counters,
    received_at: i64,
    into_inbox: bool,
}

impl PendingWrite {
    fn put_segment(
        &mut self,
        agent: &str,
        stream: &str,
        mut segment: SegmentBuilder,
    ) -> Result<(), StoreError> {
        let Some(first_seq) = segment.first_seq else {
            return Ok(());
        };
        segment.header.received_at = self.received_at;
        let events = u64::from(segment.events.count());
        let key = segment_key(agent, stream, first_seq);
        if !segment.id_hashes.is_empty() {
            self.batch.insert(
                companion_key(prefix::IDS, &key),
                id_index::encode_entries(&segment.id_hashes),
            );
        }
        if self.into_inbox && events > 0 {
            self.batch
                .insert(inbox_key(&key), &events.to_be_bytes()[..]);
            self.counters.inbox += events;
        }
        self.batch.insert(key, segment.encode()?);
        Ok(())
    }
}

/// What the single writer owns: the state every delivery reads and updates.
#[derive(Debug, Default)]
struct WriterState {
    /// Held seqs per (agent, stream), as persisted under `prefix::STREAM`.
    streams: HashMap<(String, String), HeldSeqs>,
    ids: IdIndex,
    counters: Counters,
}

pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// One delivery at a time: dedup and high-water updates read what the
    /// previous delivery wrote.
    writer: Mutex<WriterState>,
    /// A copy of the counters for readers that must not wait for a flush.
    counters: std::sync::Mutex<Counters>,
    service_ready: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// sled writes any page over a quarter of a log segment to its own blob
/// file (a file create and an fsync each). A leaf holds up to 16 records,
/// so 16 MiB log segments keep a leaf of 128 KiB event segments inline in
/// the log. Measured with `benches/delivery.rs`: 512 KiB log segments
/// (sled's default) with 32 KiB event segments spent a quarter of the
/// server's time creating blob files; 6 KiB event segments avoided that
/// but split leaves so often that they were slower still.
const SLED_SEGMENT_BYTES: usize = 16 << 20;

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

impl Store {
    /// Open (or create) the database at `path`. `service_ready` overrides
    /// the persisted state of the event service switch when given.
    pub fn open(path: &Path, service_ready: Option<bool>) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .segment_size(SLED_SEGMENT_BYTES)
            .flush_every_ms(None)
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
        let mut state = WriterState::default();
        for item in tree.scan_prefix([prefix::STREAM]) {
            let (key, value) = item?;
            let (agent, stream) = split_agent_stream(&key)?;
            state.streams.insert((agent, stream), decode(&key, &value)?);
        }
        for item in tree.scan_prefix([prefix::IDS]) {
            let (key, value) = item?;
            let (_, stream) = split_agent_stream(&key)?;
            let entries = id_index::decode_entries(&value).ok_or_else(|| StoreError::Damaged {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: "id record length is not a multiple of 24".to_owned(),
            })?;
            for (hash, seq) in entries {
                state.ids.insert(hash, &stream, seq);
            }
        }
        tracing::debug!(ids = state.ids.len(), "id index rebuilt");
        let counters_key = counters_key();
        if let Some(value) = tree.get(&counters_key)? {
            state.counters = decode(&counters_key, &value)?;
        }
        Ok(Self {
            db,
            tree,
            counters: std::sync::Mutex::new(state.counters),
            writer: Mutex::new(state),
            service_ready: AtomicBool::new(service_ready.unwrap_or(persisted)),
        })
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
    /// commit durably, and report the accepted prefix per stream.
    pub async fn deliver(
        &self,
        request: &DeliverRequest<'_>,
    ) -> Result<DeliverResponse, StoreError> {
        let mut state = self.writer.lock().await;
        let agent: &str = &request.agent_id;
        let mut pending = PendingWrite {
            batch: sled::Batch::default(),
            counters: state.counters,
            received_at: now_micros(),
            into_inbox: !self.service_ready(),
        };
        let mut response = DeliverResponse::default();
        // Held seqs as this delivery leaves them; they replace the state
        // only once the batch is on disk.
        let mut touched: HashMap<&str, HeldSeqs> = HashMap::new();
        // Ids stored by this delivery, not yet in the index.
        let mut pending_ids: HashMap<IdHash, (&str, u64)> = HashMap::new();

        for stream_batch in &request.batches {
            let stream: &str = &stream_batch.stream;
            if !touched.contains_key(stream) {
                let held = state
                    .streams
                    .get(&(agent.to_owned(), stream.to_owned()))
                    .cloned()
                    .unwrap_or_default();
                touched.insert(stream, held);
            }
            let Some(held) = touched.get_mut(stream) else {
                continue;
            };
            let mut segment = SegmentBuilder::default();
            // Every event of the batch ends up stored, known or rejected
            // (a storage failure fails the whole request), so the accepted
            // prefix is the whole batch, whatever its order.
            let mut accepted_through: Option<u64> = None;
            for event in &stream_batch.events {
                let seq = event.seq;
                accepted_through = Some(accepted_through.map_or(seq, |s| s.max(seq)));
                if held.contains(seq) {
                    pending.counters.duplicates += 1;
                    continue;
                }
                match event.check() {
                    Err(reason) => {
                        pending.counters.rejected += 1;
                        response.rejected.push(Rejection {
                            stream: stream.to_owned(),
                            seq,
                            reason: reason.clone(),
                        });
                        segment.header.rejected.push((seq, reason));
                    }
                    Ok((time, severity)) => {
                        let hash = id_index::id_hash(agent, &event.id);
                        let earlier = pending_ids
                            .get(&hash)
                            .copied()
                            .or_else(|| state.ids.get(hash));
                        if let Some((stream, earlier_seq)) = earlier {
                            pending.counters.duplicates += 1;
                            segment
                                .header
                                .duplicates
                                .push((seq, stream.to_owned(), earlier_seq));
                        } else {
                            pending.counters.stored += 1;
                            pending_ids.insert(hash, (stream, seq));
                            segment.id_hashes.push((hash, seq));
                            segment.events.push_sequenced(
                                seq,
                                &event.id,
                                time,
                                severity,
                                event.attributes.iter().map(|(k, v)| (k, v)),
                                &event.body,
                            );
                        }
                    }
                }
                held.insert(seq);
                segment.note_seq(seq);
                if segment.is_full() {
                    pending.put_segment(agent, stream, std::mem::take(&mut segment))?;
                }
            }
            pending.put_segment(agent, stream, segment)?;
            if let Some(seq) = accepted_through {
                let through = response.acknowledged.entry(stream.to_owned()).or_insert(0);
                *through = (*through).max(seq);
            }
        }

        for (stream, held) in &touched {
            pending.batch.insert(
                key(prefix::STREAM, &[agent.as_bytes(), stream.as_bytes()]),
                serde_json::to_vec(held)?,
            );
        }
        let counters = pending.counters;
        pending
            .batch
            .insert(counters_key(), serde_json::to_vec(&counters)?);
        self.tree.apply_batch(pending.batch)?;
        self.db.flush_async().await?;

        for (hash, (stream, seq)) in pending_ids {
            state.ids.insert(hash, stream, seq);
        }
        for (stream, held) in touched {
            state
                .streams
                .insert((agent.to_owned(), stream.to_owned()), held);
        }
        state.counters = counters;
        self.publish_counters(counters);
        Ok(response)
    }

    /// Stored events released to the service (not those in the inbox),
    /// newest first.
    pub fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, String> {
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
            let segment = Segment::decode(&value).map_err(|reason| {
                tracing::error!(key = %String::from_utf8_lossy(&key), "damaged segment: {reason}");
                format!(
                    "damaged record under {}: {reason}",
                    String::from_utf8_lossy(&key)
                )
            })?;
            for item in segment.events() {
                let (seq, event) = item?;
                if usize::from(event.severity) < min_severity
                    || since.is_some_and(|t| event.time < t)
                    || until.is_some_and(|t| event.time >= t)
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
        }
        out.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(b.seq.cmp(&a.seq)));
        out.truncate(limit);
        Ok(out)
    }
}

/// (agent, stream) from a key `prefix agent \0 stream [\0 ...]`.
fn split_agent_stream(key: &[u8]) -> Result<(String, String), StoreError> {
    let mut parts = key.get(1..).unwrap_or_default().splitn(3, |&b| b == 0);
    match (parts.next(), parts.next()) {
        (Some(agent), Some(stream)) => Ok((
            String::from_utf8_lossy(agent).into_owned(),
            String::from_utf8_lossy(stream).into_owned(),
        )),
        _ => Err(StoreError::Damaged {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "key does not name an agent and a stream".to_owned(),
        }),
    }
}
