//! In-process fake connectors for engine tests: a management server whose
//! link and event service can be switched off (or made silent), a
//! destination connector that talks to it, and a source fed by the test.
#![allow(dead_code, clippy::unwrap_used)]

use async_trait::async_trait;
use safd_connector::{
    Acknowledgement, CatchUpFrom, CatchUpRequest, ConnectorError, Cursor, DeliveryReport,
    DestinationConnector, DestinationSession, Endpoint, Event, Health, PollLimits, Registration,
    Rejection, SequencedEvent, SessionError, SessionInfo, Severity, SourceBatch, SourceConnector,
    SourceSession, StreamBatch, StreamPosition, Timestamp,
};
use safd_engine::{Engine, EngineError, SAFD_STREAM, Tuning};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a fake management server holds and how it behaves.
#[derive(Debug)]
pub struct ServerState {
    /// safd can reach it (otherwise: connection refused).
    pub link_up: bool,
    /// It accepts connections but never answers (SIGSTOP).
    pub silent: bool,
    /// It refuses safd's credentials (a wrong token).
    pub refuses_token: bool,
    /// How often it did.
    pub token_refusals: u64,
    /// safd's sandbox keeps the plugin from its address (a missing grant).
    pub not_granted: bool,
    /// Its event service runs (otherwise it spools into its inbox).
    pub service_up: bool,
    /// Like the reference server: on register, ask for catch-up from its
    /// high-water + 1 whenever safd has stored more.
    pub asks_catch_up: bool,
    /// Deduplicated store: (stream, seq) → event id.
    pub events: BTreeMap<(String, u64), String>,
    /// (stream, seq) in order of first arrival.
    pub arrivals: Vec<(String, u64)>,
    /// When each held event arrived.
    pub arrived_at: BTreeMap<(String, u64), Instant>,
    /// Deliveries of events it already held (removed by its dedup).
    pub duplicates: u64,
    /// The same, per stream.
    pub duplicates_by_stream: BTreeMap<String, u64>,
    /// (stream, first, last): seqs the group said it left out.
    pub left_out: Vec<(String, u64, u64)>,
    pub registrations: Vec<SessionInfo>,
    /// Event ids it permanently rejects.
    pub rejects: HashSet<String>,
    /// Reject whole batches that contain a rejected id (instead of
    /// listing the event).
    pub reject_whole_batch: bool,
    pub delivery_calls: u64,
    /// Subtracted from the epoch echoed in catch-up requests (a receiver
    /// with a stale view).
    pub epoch_skew: u64,
    /// Answer `deliver` with backpressure this many times first.
    pub backpressure: u32,
    /// The wait that backpressure asks for.
    pub retry_after: Duration,
    /// Event ids that make the destination trap (a plugin bug that one
    /// event triggers), whenever a delivery holds one.
    pub traps_on: HashSet<String>,
    /// Event ids that make the destination trap once, the first time a
    /// delivery holds one (a fault that does not repeat).
    pub traps_once: HashSet<String>,
    /// Traps so far.
    pub traps: u64,
    pub register_calls: u64,
    /// How long a registration takes to be answered (a slow network).
    pub register_delay: Duration,
    /// Abort the process at a step of a call (crash tests): `register`,
    /// `before-store` or `after-store` of call N, or `after-ack` of
    /// delivery N (at the start of delivery N + 1).
    pub crash_at: Option<(String, u64)>,
    /// Print `stored <stream> <seq> <id>` for every event stored, as it is
    /// stored (so a parent process sees what the server holds).
    pub print_stored: bool,
    /// A delivered batch whose events were not consecutive seqs, if any.
    pub disorder: Option<Vec<u64>>,
}

impl ServerState {
    fn crash_if(&self, step: &str, call: u64) {
        if self
            .crash_at
            .as_ref()
            .is_some_and(|(s, n)| s == step && *n == call)
        {
            std::process::abort();
        }
    }
}

impl Default for ServerState {
    fn default() -> Self {
        Self {
            link_up: true,
            silent: false,
            refuses_token: false,
            token_refusals: 0,
            not_granted: false,
            service_up: true,
            asks_catch_up: true,
            events: BTreeMap::new(),
            arrivals: Vec::new(),
            arrived_at: BTreeMap::new(),
            duplicates: 0,
            duplicates_by_stream: BTreeMap::new(),
            left_out: Vec::new(),
            registrations: Vec::new(),
            rejects: HashSet::new(),
            reject_whole_batch: false,
            delivery_calls: 0,
            epoch_skew: 0,
            backpressure: 0,
            retry_after: Duration::from_millis(20),
            traps_on: HashSet::new(),
            traps_once: HashSet::new(),
            traps: 0,
            register_calls: 0,
            register_delay: Duration::ZERO,
            crash_at: None,
            print_stored: false,
            disorder: None,
        }
    }
}

impl ServerState {
    /// Highest seq of `stream` held with every seq below it.
    pub fn contiguous(&self, stream: &str) -> u64 {
        let mut n = 0;
        while self.events.contains_key(&(stream.to_owned(), n + 1)) {
            n += 1;
        }
        n
    }

    pub fn count(&self, stream: &str) -> usize {
        self.events.keys().filter(|(s, _)| s == stream).count()
    }

    /// Die like a plain-TCP receiver: what arrived in the last `window`
    /// was still in its buffers and is gone; it no longer answers.
    pub fn crash_losing(&mut self, window: Duration) {
        let since = Instant::now() - window;
        let lost: Vec<(String, u64)> = self
            .arrived_at
            .iter()
            .filter(|(_, at)| **at >= since)
            .map(|(key, _)| key.clone())
            .collect();
        for key in lost {
            self.events.remove(&key);
            self.arrived_at.remove(&key);
        }
        self.link_up = false;
    }
}

/// A fake management server shared between the test and the connector.
#[derive(Clone, Debug, Default)]
pub struct FakeServer(pub Arc<Mutex<ServerState>>);

impl FakeServer {
    pub fn with<R>(&self, f: impl FnOnce(&mut ServerState) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }

    pub fn set(&self, service_up: bool, link_up: bool) {
        self.with(|s| {
            s.service_up = service_up;
            s.link_up = link_up;
        });
    }
}

/// A destination connector whose sessions talk to `FakeServer`s by
/// member name.
#[derive(Clone, Debug, Default)]
pub struct FakeDestination {
    pub servers: Arc<Mutex<BTreeMap<String, FakeServer>>>,
    /// Answer like plain TCP: "written", never "stored".
    pub transport_write: bool,
}

impl FakeDestination {
    pub fn server(&self, member: &str) -> FakeServer {
        self.servers
            .lock()
            .unwrap()
            .entry(member.to_owned())
            .or_default()
            .clone()
    }
}

#[async_trait]
impl DestinationConnector for FakeDestination {
    async fn open(&self, endpoint: Endpoint) -> Result<Box<dyn DestinationSession>, SessionError> {
        Ok(Box::new(FakeSession {
            server: self.server(&endpoint.member),
            registered: false,
        }))
    }

    fn acknowledgement(&self) -> Acknowledgement {
        if self.transport_write {
            Acknowledgement::TransportWrite
        } else {
            Acknowledgement::DurableCommit
        }
    }
}

struct FakeSession {
    server: FakeServer,
    /// Like a plugin instance: it must be registered before it delivers,
    /// and forgets that when it traps (the instance is rebuilt).
    registered: bool,
}

impl FakeSession {
    /// Fail like a refused connection, or hang like a stopped process.
    async fn reach(&self) -> Result<(), SessionError> {
        let (link_up, silent, refuses_token, not_granted) = self
            .server
            .with(|s| (s.link_up, s.silent, s.refuses_token, s.not_granted));
        if silent {
            std::future::pending::<()>().await;
        }
        if not_granted {
            return Err(SessionError::NotGranted(
                "safd's sandbox refused the request to http://fake: add `fake` to this \
                 destination's grants.http"
                    .into(),
            ));
        }
        if refuses_token && link_up {
            self.server.with(|s| s.token_refusals += 1);
            return Err(ConnectorError::Unauthorized("401: bad token".into()).into());
        }
        if link_up {
            Ok(())
        } else {
            Err(ConnectorError::Unavailable("connection refused".into()).into())
        }
    }
}

#[async_trait]
impl DestinationSession for FakeSession {
    async fn register(&mut self, info: &SessionInfo) -> Result<Registration, SessionError> {
        self.reach().await?;
        let delay = self.server.with(|s| s.register_delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.registered = true;
        Ok(self.server.with(|s| {
            s.register_calls += 1;
            s.crash_if("register", s.register_calls);
            s.registrations.push(info.clone());
            let high_water: Vec<StreamPosition> = info
                .stored
                .iter()
                .map(|p| StreamPosition {
                    stream: p.stream.clone(),
                    seq: s.contiguous(&p.stream),
                })
                .filter(|p| p.seq > 0)
                .collect();
            let behind: Vec<StreamPosition> = info
                .stored
                .iter()
                .filter(|p| p.stream != SAFD_STREAM && s.contiguous(&p.stream) < p.seq)
                .map(|p| StreamPosition {
                    stream: p.stream.clone(),
                    seq: s.contiguous(&p.stream) + 1,
                })
                .collect();
            let catch_up = (s.asks_catch_up && !behind.is_empty()).then(|| CatchUpRequest {
                epoch: info.epoch - s.epoch_skew.min(info.epoch),
                start: CatchUpFrom::Positions(behind),
            });
            Registration {
                high_water,
                service_ready: s.service_up,
                catch_up,
            }
        }))
    }

    async fn deliver(&mut self, batches: &[StreamBatch]) -> Result<DeliveryReport, SessionError> {
        self.reach().await?;
        if !self.registered {
            return Err(ConnectorError::Fatal("deliver called before register".into()).into());
        }
        let batches: Vec<OwnedBatch> = batches.iter().map(OwnedBatch::decode).collect();
        let batches = batches.as_slice();
        let result = self.server.with(|s| {
            s.delivery_calls += 1;
            s.crash_if("before-store", s.delivery_calls);
            s.crash_if("after-ack", s.delivery_calls - 1);
            if s.backpressure > 0 {
                s.backpressure -= 1;
                return Err(ConnectorError::Backpressure {
                    retry_after: s.retry_after,
                    message: "inbox busy".into(),
                }
                .into());
            }
            let once = batches
                .iter()
                .flat_map(|b| b.events.iter())
                .find(|e| s.traps_once.contains(&e.event.id))
                .map(|e| e.event.id.clone());
            if let Some(id) = &once {
                s.traps_once.remove(id);
            }
            if once.is_some()
                || batches
                    .iter()
                    .any(|b| b.events.iter().any(|e| s.traps_on.contains(&e.event.id)))
            {
                s.traps += 1;
                return Err(SessionError::Trapped(
                    "wasm `unreachable` instruction executed".into(),
                ));
            }
            let mut report = DeliveryReport::default();
            if s.reject_whole_batch
                && batches.iter().any(|b| {
                    b.events.len() > 1 && b.events.iter().any(|e| s.rejects.contains(&e.event.id))
                })
            {
                return Err(ConnectorError::Rejected("malformed event in batch".into()).into());
            }
            if s.reject_whole_batch
                && let [batch] = batches
                && let [event] = batch.events.as_slice()
                && s.rejects.contains(&event.event.id)
            {
                return Err(ConnectorError::Rejected("malformed event".into()).into());
            }
            for batch in batches {
                for &(first, last) in &batch.left_out {
                    s.left_out.push((batch.stream.clone(), first, last));
                }
                if batch.left_out.is_empty()
                    && batch.events.windows(2).any(|w| w[1].seq != w[0].seq + 1)
                {
                    s.disorder = Some(batch.events.iter().map(|e| e.seq).collect());
                }
                let mut through = 0;
                for event in &batch.events {
                    through = event.seq;
                    if s.rejects.contains(&event.event.id) {
                        report.rejected.push(Rejection {
                            stream: batch.stream.clone(),
                            seq: event.seq,
                            reason: "malformed event".into(),
                        });
                        continue;
                    }
                    let key = (batch.stream.clone(), event.seq);
                    if s.events.contains_key(&key) {
                        s.duplicates += 1;
                        *s.duplicates_by_stream
                            .entry(batch.stream.clone())
                            .or_default() += 1;
                    } else {
                        s.events.insert(key.clone(), event.event.id.clone());
                        s.arrived_at.insert(key.clone(), Instant::now());
                        s.arrivals.push(key);
                    }
                    if s.print_stored {
                        use std::io::Write;
                        let mut out = std::io::stdout().lock();
                        writeln!(
                            out,
                            "stored {} {} {}",
                            batch.stream, event.seq, event.event.id
                        )
                        .unwrap();
                        out.flush().unwrap();
                    }
                }
                report.acknowledged.push(StreamPosition {
                    stream: batch.stream.clone(),
                    seq: through,
                });
            }
            s.crash_if("after-store", s.delivery_calls);
            Ok(report)
        });
        if result.as_ref().is_err_and(SessionError::instance_was_reset) {
            self.registered = false;
        }
        result
    }

    async fn probe(&mut self) -> Result<Health, SessionError> {
        self.reach().await?;
        Ok(Health {
            service_ready: self.server.with(|s| s.service_up),
            detail: String::new(),
        })
    }
}

/// A delivered batch decoded, as a receiver reads it.
struct OwnedBatch {
    stream: String,
    events: Vec<SequencedEvent>,
    left_out: Vec<(u64, u64)>,
}

impl OwnedBatch {
    fn decode(batch: &StreamBatch) -> Self {
        let events = batch.events.to_events();
        assert_eq!(
            events.len(),
            batch.events.len(),
            "a delivered block decodes whole"
        );
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            batch.events.seqs(),
            "the block's seqs are the events'"
        );
        Self {
            stream: batch.stream.clone(),
            left_out: batch.left_out.clone(),
            events,
        }
    }
}

/// A source that hands over the events the test appends to its log.
/// Cursor: the index of the next event (u64 big-endian).
#[derive(Clone, Debug, Default)]
pub struct FakeSource {
    pub log: Arc<Mutex<Vec<Event>>>,
    /// Highest committed index.
    pub committed: Arc<Mutex<u64>>,
    pub seeks: Arc<Mutex<Vec<Timestamp>>>,
    /// Answers of the next seeks, in order, before they succeed.
    pub seek_errors: Arc<Mutex<VecDeque<ConnectorError>>>,
    /// While set, opening a session fails with this reason.
    pub refuse_open: Arc<Mutex<Option<String>>>,
}

impl FakeSource {
    pub fn append(&self, count: u64, prefix: &str) {
        let mut log = self.log.lock().unwrap();
        for _ in 0..count {
            let n = log.len() as u64;
            log.push(event(prefix, n));
        }
    }

    /// One event per severity given, in order.
    pub fn append_severities(&self, severities: &[Severity], prefix: &str) {
        let mut log = self.log.lock().unwrap();
        for &severity in severities {
            let n = log.len() as u64;
            log.push(Event {
                severity,
                ..event(prefix, n)
            });
        }
    }

    pub fn len(&self) -> u64 {
        self.log.lock().unwrap().len() as u64
    }
}

pub fn event(prefix: &str, n: u64) -> Event {
    Event {
        id: format!("{prefix}-{n}"),
        time: 1_700_000_000_000_000 + n as i64,
        severity: Severity::Info,
        attributes: Vec::new(),
        body: format!("event {n}"),
    }
}

#[async_trait]
impl SourceConnector for FakeSource {
    async fn open(
        &self,
        resume_from: Option<Cursor>,
    ) -> Result<Box<dyn SourceSession>, SessionError> {
        if let Some(reason) = self.refuse_open.lock().unwrap().clone() {
            return Err(SessionError::Start(reason));
        }
        let position = resume_from
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .unwrap_or(0);
        Ok(Box::new(FakeSourceSession {
            source: self.clone(),
            position,
        }))
    }
}

struct FakeSourceSession {
    source: FakeSource,
    position: u64,
}

#[async_trait]
impl SourceSession for FakeSourceSession {
    async fn poll(&mut self, limits: PollLimits) -> Result<SourceBatch, SessionError> {
        let log = self.source.log.lock().unwrap();
        let start = self.position as usize;
        let end = (start + limits.max_events as usize).min(log.len());
        let events = log[start.min(end)..end].to_vec();
        self.position = end as u64;
        Ok(SourceBatch {
            cursor: (!events.is_empty()).then(|| self.position.to_be_bytes().to_vec()),
            more: end < log.len(),
            events: events.into(),
        })
    }

    async fn commit(&mut self, cursor: &Cursor) -> Result<(), SessionError> {
        let at = u64::from_be_bytes(cursor.clone().try_into().unwrap());
        let mut committed = self.source.committed.lock().unwrap();
        // The pump may poll ahead of its commits, but commits come in
        // order: a session is never told it may release what comes after
        // something not yet durable.
        assert!(
            at >= *committed,
            "commit of {at} after commit of {}",
            *committed
        );
        *committed = at;
        Ok(())
    }

    async fn seek(&mut self, from: Timestamp) -> Result<(), SessionError> {
        self.source.seeks.lock().unwrap().push(from);
        if let Some(err) = self.source.seek_errors.lock().unwrap().pop_front() {
            return Err(err.into());
        }
        let log = self.source.log.lock().unwrap();
        self.position = log.iter().position(|e| e.time >= from).unwrap_or(log.len()) as u64;
        Ok(())
    }
}

/// An operator's catch-up of group `mgmt`'s active member from seq `seq`
/// of stream `ems`.
pub async fn catch_up_ems_from(engine: &Engine, seq: u64) -> Result<(), EngineError> {
    engine
        .catch_up(
            "mgmt",
            None,
            CatchUpFrom::Positions(vec![StreamPosition {
                stream: "ems".into(),
                seq,
            }]),
        )
        .await
}

/// Wait until `condition` holds, polling, or panic with `what` after
/// `deadline`.
pub async fn eventually(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !condition() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The active member of the engine's (first lane of) group `group`.
pub fn active(engine: &Engine, group: &str) -> Option<String> {
    engine
        .groups()
        .into_iter()
        .find(|g| g.name == group)
        .and_then(|g| g.lanes.first().and_then(|l| l.active.clone()))
}

/// Ids of the notices the engine emitted so far.
pub fn notice_ids(engine: &Engine) -> Vec<u32> {
    engine.notices().recent().iter().map(|n| n.id).collect()
}

/// Acked seq of `stream` in group `group` (first lane).
pub fn acked(engine: &Engine, group: &str, stream: &str) -> u64 {
    engine
        .groups()
        .into_iter()
        .find(|g| g.name == group)
        .and_then(|g| g.lanes.first().and_then(|l| l.acked.get(stream).copied()))
        .unwrap_or(0)
}

/// Group timings that make failures quick to provoke and see.
pub fn fast_tuning() -> Tuning {
    Tuning {
        batch_max_events: 16,
        batch_max_bytes: 1 << 20,
        request_timeout: Duration::from_millis(300),
        probe_interval: Duration::from_millis(20),
        failback_after: 3,
        transient_limit: 3,
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        linger: Duration::from_millis(200),
    }
}

/// An engine on `data_dir` (agent `test-agent`; the retention pass is
/// hourly, so tests that need it run it themselves): what
/// `Engine::open` returns.
pub fn open_engine(
    data_dir: impl Into<std::path::PathBuf>,
    queue: safd_engine::QueueOptions,
) -> (Engine, safd_engine::OpenReport) {
    Engine::open(safd_engine::EngineOptions {
        agent_id: "test-agent".into(),
        data_dir: data_dir.into(),
        queue,
        retention_interval: Duration::from_secs(3600),
    })
    .unwrap()
}

/// Group members `names`, each served by `destination` at `fake://NAME`.
pub fn fake_members(
    names: &[&str],
    destination: &FakeDestination,
) -> Vec<safd_engine::MemberConfig> {
    names
        .iter()
        .map(|name| safd_engine::MemberConfig {
            name: (*name).into(),
            address: format!("fake://{name}"),
            connector: Arc::new(destination.clone()),
        })
        .collect()
}
