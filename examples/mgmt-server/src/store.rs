//! Durable storage in one sled database: events, the id index for
//! deduplication, per agent-stream high-waters, the inbox held while the
//! event service is down, and agent sessions.
//!
//! Everything one delivery changes is written in one atomic sled batch and
//! flushed to disk before the delivery is acknowledged.

use crate::protocol::{self, DeliverRequest, DeliverResponse, Positions, Rejection};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error("damaged record under key {key}: {reason}")]
    Damaged { key: String, reason: String },
    #[error("cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Key prefixes; all records live in one tree so one batch covers them.
mod prefix {
    pub const EVENT: u8 = b'e';
    pub const ID: u8 = b'i';
    pub const INBOX: u8 = b'x';
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

fn event_key(agent: &str, stream: &str, seq: u64) -> Vec<u8> {
    let mut key = key(prefix::EVENT, &[agent.as_bytes(), stream.as_bytes()]);
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// What is stored under an (agent, stream, seq).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Slot {
    /// The event itself.
    Event(StoredEvent),
    /// The same event id was already stored under another seq.
    DuplicateOf { stream: String, seq: u64 },
    /// Refused for good; the seq counts as settled.
    Rejected { reason: String },
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

/// Per (agent, stream): which seqs are held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StreamState {
    /// The lowest seq ever held: nothing below it is expected (the server
    /// joined the stream there).
    first: u64,
    /// Every seq from `first` up to this one is held (stored, a duplicate
    /// of a stored id, or rejected). This is the reported high-water.
    contiguous: u64,
    /// The highest seq held.
    max: u64,
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

/// Counters shown by `/health` and the console.
#[derive(Debug, Default, Serialize)]
pub struct Counters {
    pub stored: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub inbox: u64,
}

pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// One delivery at a time: dedup and high-water updates read what the
    /// previous delivery wrote.
    writer: Mutex<()>,
    service_ready: AtomicBool,
    stored: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    inbox: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Damaged {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

impl Store {
    /// Open (or create) the database at `path`. `service_ready` overrides
    /// the persisted state of the event service switch when given.
    pub fn open(path: &Path, service_ready: Option<bool>) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(path).open()?;
        let tree = db.open_tree("safd-mgmt")?;
        let service_key = key(prefix::META, &[b"service_ready"]);
        let persisted = tree.get(&service_key)?.is_none_or(|v| v.as_ref() != b"0");
        if let Some(ready) = service_ready {
            // The flag sets the state from now on, across restarts too.
            tree.insert(&service_key, if ready { &b"1"[..] } else { &b"0"[..] })?;
            db.flush()?;
        }
        let store = Self {
            db,
            tree,
            writer: Mutex::new(()),
            service_ready: AtomicBool::new(service_ready.unwrap_or(persisted)),
            stored: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            inbox: AtomicU64::new(0),
        };
        store.recount()?;
        Ok(store)
    }

    fn recount(&self) -> Result<(), StoreError> {
        let mut counters = Counters::default();
        for item in self.tree.scan_prefix([prefix::EVENT]) {
            let (key, value) = item?;
            match decode::<Slot>(&key, &value)? {
                Slot::Event(_) => counters.stored += 1,
                Slot::DuplicateOf { .. } => counters.duplicates += 1,
                Slot::Rejected { .. } => counters.rejected += 1,
            }
        }
        counters.inbox = self.tree.scan_prefix([prefix::INBOX]).count() as u64;
        self.stored.store(counters.stored, Ordering::Relaxed);
        self.duplicates
            .store(counters.duplicates, Ordering::Relaxed);
        self.rejected.store(counters.rejected, Ordering::Relaxed);
        self.inbox.store(counters.inbox, Ordering::Relaxed);
        Ok(())
    }

    pub fn counters(&self) -> Counters {
        Counters {
            stored: self.stored.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            inbox: self.inbox.load(Ordering::Relaxed),
        }
    }

    pub fn service_ready(&self) -> bool {
        self.service_ready.load(Ordering::Acquire)
    }

    /// Take the event service down or bring it back. Bringing it back
    /// releases the inbox to the service.
    pub async fn set_service_ready(&self, ready: bool) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        self.tree.insert(
            key(prefix::META, &[b"service_ready"]),
            if ready { &b"1"[..] } else { &b"0"[..] },
        )?;
        self.service_ready.store(ready, Ordering::Release);
        if ready {
            let mut batch = sled::Batch::default();
            let mut released = 0u64;
            for item in self.tree.scan_prefix([prefix::INBOX]) {
                let (key, _) = item?;
                batch.remove(key);
                released += 1;
            }
            self.tree.apply_batch(batch)?;
            self.inbox.fetch_sub(released, Ordering::Relaxed);
            if released > 0 {
                tracing::info!(released, "event service back: inbox released");
            }
        }
        self.db.flush_async().await?;
        Ok(())
    }

    /// The high-water per stream of `agent`.
    pub fn high_water(&self, agent: &str) -> Result<Positions, StoreError> {
        let mut out = Positions::new();
        let mut prefix_key = key(prefix::STREAM, &[agent.as_bytes()]);
        prefix_key.push(0);
        for item in self.tree.scan_prefix(&prefix_key) {
            let (key, value) = item?;
            let stream = String::from_utf8_lossy(&key[prefix_key.len()..]).into_owned();
            let state: StreamState = decode(&key, &value)?;
            out.insert(stream, state.contiguous);
        }
        Ok(out)
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
    pub async fn deliver(&self, request: &DeliverRequest) -> Result<DeliverResponse, StoreError> {
        let _writer = self.writer.lock().await;
        let agent = &request.agent_id;
        let received_at = now_micros();
        let into_inbox = !self.service_ready();
        let mut batch = sled::Batch::default();
        let mut response = DeliverResponse::default();
        // Seqs and ids written by this batch, not yet visible in the tree.
        let mut pending_seqs: HashMap<&str, BTreeMap<u64, ()>> = HashMap::new();
        let mut pending_ids: HashMap<&str, (&str, u64)> = HashMap::new();
        let (mut stored, mut duplicates, mut rejected) = (0u64, 0u64, 0u64);

        for stream_batch in &request.batches {
            let stream = stream_batch.stream.as_str();
            // Every event of the batch ends up stored, known or rejected
            // (a storage failure fails the whole request), so the accepted
            // prefix is the whole batch, whatever its order.
            let mut accepted_through: Option<u64> = None;
            for event in &stream_batch.events {
                let seq = event.seq;
                let slot_key = event_key(agent, stream, seq);
                let already = self.tree.contains_key(&slot_key)?
                    || pending_seqs
                        .get(stream)
                        .is_some_and(|seqs| seqs.contains_key(&seq));
                if !already {
                    let slot = match event.check() {
                        Err(reason) => {
                            rejected += 1;
                            response.rejected.push(Rejection {
                                stream: stream.to_owned(),
                                seq,
                                reason: reason.clone(),
                            });
                            Slot::Rejected { reason }
                        }
                        Ok(time) => {
                            let id_key = key(prefix::ID, &[agent.as_bytes(), event.id.as_bytes()]);
                            let earlier = match pending_ids.get(event.id.as_str()) {
                                Some(&(s, q)) => Some((s.to_owned(), q)),
                                None => self
                                    .tree
                                    .get(&id_key)?
                                    .map(|v| decode::<(String, u64)>(&id_key, &v))
                                    .transpose()?,
                            };
                            match earlier {
                                Some((stream, seq)) => {
                                    duplicates += 1;
                                    Slot::DuplicateOf { stream, seq }
                                }
                                None => {
                                    stored += 1;
                                    batch.insert(id_key, serde_json::to_vec(&(stream, seq))?);
                                    pending_ids.insert(&event.id, (stream, seq));
                                    if into_inbox {
                                        batch
                                            .insert(key(prefix::INBOX, &[&slot_key[1..]]), &[][..]);
                                    }
                                    Slot::Event(StoredEvent {
                                        agent: agent.clone(),
                                        stream: stream.to_owned(),
                                        seq,
                                        id: event.id.clone(),
                                        time,
                                        severity: event.severity.clone(),
                                        attributes: event.attributes.clone(),
                                        body: event.body.clone(),
                                        received_at,
                                    })
                                }
                            }
                        }
                    };
                    batch.insert(slot_key, serde_json::to_vec(&slot)?);
                    pending_seqs.entry(stream).or_default().insert(seq, ());
                } else {
                    duplicates += 1;
                }
                accepted_through = Some(accepted_through.map_or(seq, |s| s.max(seq)));
            }
            if let Some(seq) = accepted_through {
                let through = response.acknowledged.entry(stream.to_owned()).or_insert(0);
                *through = (*through).max(seq);
            }
        }

        // High-waters, from what is now held.
        for (stream, seqs) in &pending_seqs {
            let state_key = key(prefix::STREAM, &[agent.as_bytes(), stream.as_bytes()]);
            let mut state = match self.tree.get(&state_key)? {
                Some(value) => decode::<StreamState>(&state_key, &value)?,
                None => StreamState::default(),
            };
            let (Some((&lowest, _)), Some((&highest, _))) =
                (seqs.first_key_value(), seqs.last_key_value())
            else {
                continue;
            };
            if state.first == 0 || lowest < state.first {
                // Joined here, or older events arrived (a catch-up):
                // recount contiguity from the new lowest seq.
                state.first = lowest;
                state.contiguous = lowest;
            }
            state.max = state.max.max(highest);
            while state.contiguous < state.max {
                let next = state.contiguous + 1;
                let held = seqs.contains_key(&next)
                    || self.tree.contains_key(event_key(agent, stream, next))?;
                if !held {
                    break;
                }
                state.contiguous = next;
            }
            batch.insert(state_key, serde_json::to_vec(&state)?);
        }

        self.tree.apply_batch(batch)?;
        self.db.flush_async().await?;
        self.stored.fetch_add(stored, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        self.rejected.fetch_add(rejected, Ordering::Relaxed);
        if into_inbox {
            self.inbox.fetch_add(stored, Ordering::Relaxed);
        }
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
                let mut k = key(prefix::EVENT, &[agent.as_bytes(), stream.as_bytes()]);
                k.push(0);
                k
            }
            (Some(agent), None) => {
                let mut k = key(prefix::EVENT, &[agent.as_bytes()]);
                k.push(0);
                k
            }
            _ => vec![prefix::EVENT],
        };
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&scan_prefix) {
            let (key, value) = item.map_err(|e| e.to_string())?;
            let Ok(Slot::Event(event)) = decode::<Slot>(&key, &value) else {
                continue;
            };
            let severity = protocol::SEVERITIES
                .iter()
                .position(|s| *s == event.severity)
                .unwrap_or(0);
            if severity < min_severity
                || query.stream.as_ref().is_some_and(|s| *s != event.stream)
                || since.is_some_and(|t| event.time < t)
                || until.is_some_and(|t| event.time >= t)
            {
                continue;
            }
            let inbox_key = {
                let mut k = vec![prefix::INBOX];
                k.extend_from_slice(&key[1..]);
                k
            };
            if self
                .tree
                .contains_key(inbox_key)
                .map_err(|e| e.to_string())?
            {
                continue;
            }
            out.push(event);
        }
        out.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(b.seq.cmp(&a.seq)));
        out.truncate(limit);
        Ok(out)
    }
}
