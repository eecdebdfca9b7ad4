use crate::{Cursor, EventBlock, SequencedBlock, SessionError, StreamPosition, Timestamp};
use async_trait::async_trait;
use std::time::Duration;

/// Events of one stream, in seq order: what a destination session is
/// given to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamBatch {
    pub stream: String,
    pub events: SequencedBlock,
    /// Seqs the group's routing left out (`min_severity`), inclusive
    /// ranges in order: settled for this receiver without being sent.
    pub left_out: Vec<(u64, u64)>,
}

impl StreamBatch {
    /// A batch of `events` with nothing left out.
    pub fn new(stream: impl Into<String>, events: SequencedBlock) -> Self {
        Self {
            stream: stream.into(),
            events,
            left_out: Vec::new(),
        }
    }

    /// The first and last seq the batch accounts for: its events and the
    /// ranges it left out. `None` for an empty batch.
    pub fn span(&self) -> Option<(u64, u64)> {
        let events = self.events.first_seq().zip(self.events.last_seq());
        let left_out = self
            .left_out
            .first()
            .map(|r| r.0)
            .zip(self.left_out.last().map(|r| r.1));
        match (events, left_out) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (one, other) => one.or(other),
        }
    }
}

/// How much one `poll` may return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollLimits {
    pub max_events: u32,
    pub max_bytes: u32,
}

impl Default for PollLimits {
    fn default() -> Self {
        Self {
            max_events: 256,
            max_bytes: 1 << 20,
        }
    }
}

/// The result of one `poll`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceBatch {
    /// The events, still in the encoding the source sent them in.
    pub events: EventBlock,
    /// Position after these events; `None` when unchanged.
    pub cursor: Option<Cursor>,
    /// More events are ready right now.
    pub more: bool,
}

/// Opens reading sessions of one configured source instance.
#[async_trait]
pub trait SourceConnector: Send + Sync {
    /// Open a session resuming after `resume_from` (the last durable cursor),
    /// or from the source's beginning when `None`.
    async fn open(
        &self,
        resume_from: Option<Cursor>,
    ) -> Result<Box<dyn SourceSession>, SessionError>;
}

/// One reading session. Calls are never concurrent (`&mut self`).
#[async_trait]
pub trait SourceSession: Send {
    /// The next events, without blocking; empty when nothing is ready.
    async fn poll(&mut self, limits: PollLimits) -> Result<SourceBatch, SessionError>;
    /// Everything up to `cursor` is durably stored.
    async fn commit(&mut self, cursor: &Cursor) -> Result<(), SessionError>;
    /// Deep catch-up: reposition at the first event at or after `from`.
    async fn seek(&mut self, from: Timestamp) -> Result<(), SessionError>;
}

/// The role of an endpoint within its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberRole {
    Primary,
    Backup,
    Broadcast,
}

/// The endpoint the host chose for a destination session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub member: String,
    pub address: String,
    pub role: MemberRole,
}

/// What the host tells a receiver when registering.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionInfo {
    pub agent_id: String,
    pub group: String,
    pub epoch: u64,
    pub active: bool,
    pub stored: Vec<StreamPosition>,
    pub acknowledged: Vec<StreamPosition>,
}

/// Where a catch-up should start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatchUpFrom {
    Positions(Vec<StreamPosition>),
    Time(Timestamp),
}

/// A receiver's request to be sent what it missed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatchUpRequest {
    pub epoch: u64,
    pub start: CatchUpFrom,
}

/// What a receiver said when registering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub high_water: Vec<StreamPosition>,
    pub service_ready: bool,
    pub catch_up: Option<CatchUpRequest>,
}

/// One permanently rejected event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub stream: String,
    pub seq: u64,
    pub reason: String,
}

/// What a receiver did with a delivered batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Per stream, the highest seq durably accepted (accepted prefix).
    pub acknowledged: Vec<StreamPosition>,
    pub rejected: Vec<Rejection>,
}

/// Health as seen by a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub service_ready: bool,
    pub detail: String,
}

/// What a successful delivery means for a destination's transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acknowledgement {
    DurableCommit,
    TransportWrite,
}

/// Opens sessions of one configured destination (one per group member).
#[async_trait]
pub trait DestinationConnector: Send + Sync {
    /// Prepare a session with `endpoint`; connecting happens in `register`.
    async fn open(&self, endpoint: Endpoint) -> Result<Box<dyn DestinationSession>, SessionError>;
    /// The destination's acknowledgement semantics.
    fn acknowledgement(&self) -> Acknowledgement;
}

/// One session with one endpoint. Calls are never concurrent (`&mut self`).
#[async_trait]
pub trait DestinationSession: Send {
    async fn register(&mut self, info: &SessionInfo) -> Result<Registration, SessionError>;
    async fn deliver(&mut self, batches: &[StreamBatch]) -> Result<DeliveryReport, SessionError>;
    async fn probe(&mut self) -> Result<Health, SessionError>;
}

/// Backoff the host should apply before retrying after `err`, if the error
/// carries one.
pub fn retry_after(err: &SessionError) -> Option<Duration> {
    match err {
        SessionError::Connector(crate::ConnectorError::Backpressure { retry_after, .. }) => {
            Some(*retry_after)
        }
        _ => None,
    }
}
