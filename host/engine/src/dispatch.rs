//! The dispatcher of one cursor: it reads a group's unacknowledged events
//! from the queue in seq order and delivers them to the active member,
//! judges member health from every answer, fails over and back, and
//! carries out catch-ups.
//!
//! A failover group has one dispatcher (one cursor per stream for the
//! group); a broadcast group has one per member (each its own cursor).
//!
//! Every call to a member runs as its own task that owns the member's
//! session for the duration of the call, so a slow or silent member never
//! holds up the others: the standby is probed while the active member
//! delivers. A session's calls are never concurrent. Each call is bounded
//! by `request_timeout`; on timeout the session is discarded and the member
//! counts as unreachable (a silent peer).

use crate::catch_up::{self, CatchUpDecision};
use crate::failover::{MemberHealth, choose_active};
use crate::group::Tuning;
use crate::member::{Member, backoff};
use crate::metrics::Metrics;
use crate::notice::{Notice, Notices};
use crate::pump::{Gap, SeekRequest, SourceDirectory};
use crate::queue::Queue;
use crate::queue::dead_letter::DeadLetter;
use safd_connector::event_ids::{
    ALL_MEMBERS_DOWN, CATCH_UP_COMPLETED, CATCH_UP_REFUSED, CATCH_UP_STARTED, DEAD_LETTERED,
    DEEP_CATCH_UP, DELIVERY_RESUMED, FAILED_BACK, FAILED_OVER, MEMBER_DEGRADED, MEMBER_NOT_GRANTED,
    MEMBER_RECOVERED, MEMBER_UNAUTHORIZED, MEMBER_UNREACHABLE, POISON_EVENT,
};
use safd_connector::{
    CatchUpFrom, ConnectorError, DeliveryReport, DestinationSession, Health, Registration,
    SequencedEvent, SessionError, SessionInfo, StreamBatch, StreamPosition,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Requests from the engine API.
pub(crate) enum LaneCommand {
    /// Operator-triggered catch-up of the active member.
    CatchUp {
        from: CatchUpFrom,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Deliver the dead letters again (with their original seqs).
    ReplayDeadLetters { reply: oneshot::Sender<usize> },
}

/// A member as the status API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub name: String,
    pub address: String,
    pub health: MemberHealth,
    pub registered: bool,
    pub healthy_probes: u32,
    pub last_error: Option<String>,
}

/// One dispatcher's state for the status API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaneStatus {
    /// The cursor owner: the group, or `group/member` in broadcast mode.
    pub cursor: String,
    pub active: Option<String>,
    pub epoch: u64,
    pub members: Vec<MemberStatus>,
    /// Per stream, the highest acknowledged seq.
    pub acked: BTreeMap<String, u64>,
    pub catching_up: bool,
}

/// What a finished call reports back.
struct CallDone {
    member: usize,
    /// When the call started (confirms writes that lingered before it).
    started: Instant,
    session: Option<Box<dyn DestinationSession>>,
    outcome: Outcome,
}

enum Outcome {
    Registered {
        epoch: u64,
        /// What the registration told the member.
        active: bool,
        result: Result<Registration, SessionError>,
    },
    Delivered {
        plan: Plan,
        result: Result<DeliveryReport, SessionError>,
    },
    Probed(Result<Health, SessionError>),
}

/// A delivery in flight.
struct Plan {
    batches: Vec<StreamBatch>,
    /// Dead letters replayed on request rather than regular events.
    dead_letters: bool,
}

impl Plan {
    fn len(&self) -> usize {
        self.batches.iter().map(|b| b.events.len()).sum()
    }
}

/// A catch-up being replayed: per stream, the seq it must reach.
struct CatchUp {
    member: String,
    through: BTreeMap<String, u64>,
}

pub(crate) struct Lane {
    pub(crate) cursor: String,
    pub(crate) group: String,
    pub(crate) agent_id: String,
    pub(crate) queue: Arc<Queue>,
    pub(crate) notices: Notices,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) sources: SourceDirectory,
    pub(crate) members: Vec<Member>,
    pub(crate) tuning: Tuning,
    /// The streams this group delivers.
    pub(crate) routes: crate::group::Routes,
    /// Events below it are left out (`min_severity`).
    pub(crate) min_severity: Option<safd_connector::Severity>,
    pub(crate) status: Arc<Mutex<LaneStatus>>,
    pub(crate) commands: mpsc::Receiver<LaneCommand>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) state: LaneState,
}

#[derive(Default)]
pub(crate) struct LaneState {
    active: Option<usize>,
    epoch: u64,
    /// A catch-up may be honoured (see `catch_up`).
    window_open: bool,
    /// 1004 was said for the outage under way (at start, no member yet).
    all_down_said: bool,
    acked: BTreeMap<String, u64>,
    /// Per stream, the next seq to send; behind `acked + 1` while a
    /// catch-up replays.
    send_from: BTreeMap<String, u64>,
    /// Per stream, send one event per call up to this seq, to find the
    /// event a receiver rejects as a whole batch.
    isolate_through: BTreeMap<String, u64>,
    catching_up: Option<CatchUp>,
    dead_letter_replay: Vec<DeadLetter>,
    /// Deliveries that made the destination trap or fail fatally, by the
    /// (stream, first seq) they started with and whether they held one
    /// event alone: how often. (Not by their length: safd's own events of
    /// the failures join the next attempt.)
    poison_strikes: BTreeMap<(String, u64, bool), u32>,
    /// Events a transport-write member took, waiting out the linger
    /// before they count as delivered, oldest first.
    lingering: std::collections::VecDeque<Lingering>,
}

/// What one delivery to a transport-write member wrote.
struct Lingering {
    member: usize,
    written_at: Instant,
    /// Per stream, the highest seq written.
    through: BTreeMap<String, u64>,
}

impl Lane {
    pub(crate) async fn run(mut self) {
        let stored = self.queue.group(&self.cursor).await;
        self.state.epoch = stored.epoch;
        self.state.acked = stored.acked;
        // Whoever registers first after safd starts may catch up: safd
        // cannot know what the members lost while it was down.
        self.state.window_open = true;
        let mut appended = self.queue.subscribe();
        let mut calls: JoinSet<CallDone> = JoinSet::new();
        loop {
            self.pass_over_unrouted().await;
            if let Err(err) = self.launch_calls(&mut calls).await {
                tracing::error!(group = %self.group, "cannot read the queue: {err}");
            }
            self.publish_status();
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                Some(done) = calls.join_next() => match done {
                    Ok(done) => self.handle(done).await,
                    Err(err) => tracing::error!(group = %self.group, "a delivery task failed: {err}"),
                },
                Some(command) = self.commands.recv() => self.command(command).await,
                Ok(()) = appended.changed() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        // Settle what is in flight (its acks count), bounded by the
        // request timeout every call carries.
        while let Some(done) = calls.join_next().await {
            if let Ok(done) = done {
                self.handle(done).await;
            }
        }
        self.publish_status();
    }

    /// Start the calls that are due: registrations of members not
    /// registered, a delivery to the active member when events wait, and
    /// probes.
    async fn launch_calls(&mut self, calls: &mut JoinSet<CallDone>) -> Result<(), String> {
        let now = Instant::now();
        for index in 0..self.members.len() {
            let member = &self.members[index];
            if member.busy || now < member.hold_until {
                continue;
            }
            let is_active = self.state.active == Some(index);
            // Writes waiting out their linger are confirmed by the next
            // call that starts after it: an idle member is probed then.
            let probe_due = match self.linger_due(index) {
                Some(due) => member.probe_due.min(due),
                None => member.probe_due,
            };
            // Registered again: at a new epoch when it is active, and
            // when it is no longer the active member it was told it was
            // (a failback or failover leaves it).
            if member.registered_epoch.is_none()
                || (is_active && member.registered_epoch != Some(self.state.epoch))
                || (!is_active && member.told_active)
            {
                self.spawn_register(index, calls).await;
            } else if is_active && let Some(plan) = self.next_plan().await? {
                self.spawn_deliver(index, plan, calls);
            } else if now >= probe_due {
                self.spawn_probe(index, calls);
            }
        }
        Ok(())
    }

    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.busy)
            .map(|(index, m)| {
                if m.registered_epoch.is_none() {
                    m.hold_until
                } else {
                    let due = self
                        .linger_due(index)
                        .map_or(m.probe_due, |due| m.probe_due.min(due));
                    m.hold_until.max(due)
                }
            })
            .min()
            .unwrap_or(far)
            .min(far)
    }

    /// When the oldest write to `index` waiting out its linger may be
    /// confirmed.
    fn linger_due(&self, index: usize) -> Option<Instant> {
        self.state
            .lingering
            .front()
            .filter(|l| l.member == index)
            .map(|l| l.written_at + self.tuning.linger)
    }

    /// A call to `index` that started at `started` succeeded: every write
    /// to it that had lingered long enough by then counts as delivered.
    async fn confirm_lingering(&mut self, index: usize, started: Instant) {
        let linger = self.tuning.linger;
        while let Some(front) = self.state.lingering.front() {
            if front.member != index || front.written_at + linger > started {
                break;
            }
            let Some(confirmed) = self.state.lingering.pop_front() else {
                break;
            };
            for (stream, seq) in confirmed.through {
                self.advance(&stream, seq).await;
            }
        }
    }

    /// Take the member's session (opening one if needed) into a task.
    fn spawn_call<F>(&mut self, index: usize, calls: &mut JoinSet<CallDone>, call: F)
    where
        F: for<'s> FnOnce(
                &'s mut Box<dyn DestinationSession>,
            )
                -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send + 's>>
            + Send
            + 'static,
    {
        let member = &mut self.members[index];
        member.busy = true;
        let session = member.session.take();
        let connector = member.connector.clone();
        let endpoint = member.endpoint.clone();
        let timeout = self.tuning.request_timeout;
        let started = Instant::now();
        calls.spawn(async move {
            // A failed open reports as a failed probe: the member is
            // unreachable either way, and the plan is rebuilt from the queue.
            let mut session = match session {
                Some(session) => session,
                None => match tokio::time::timeout(timeout, connector.open(endpoint)).await {
                    Ok(Ok(session)) => session,
                    Ok(Err(err)) => {
                        return CallDone {
                            member: index,
                            started,
                            session: None,
                            outcome: Outcome::Probed(Err(err)),
                        };
                    }
                    Err(_) => {
                        return CallDone {
                            member: index,
                            started,
                            session: None,
                            outcome: Outcome::Probed(Err(SessionError::TimedOut(timeout))),
                        };
                    }
                },
            };
            match tokio::time::timeout(timeout, call(&mut session)).await {
                Ok(outcome) => CallDone {
                    member: index,
                    started,
                    session: Some(session),
                    outcome,
                },
                // The session is dropped mid-call: a fresh one is opened
                // and registered next time.
                Err(_) => CallDone {
                    member: index,
                    started,
                    session: None,
                    outcome: Outcome::Probed(Err(SessionError::TimedOut(timeout))),
                },
            }
        });
    }

    async fn spawn_register(&mut self, index: usize, calls: &mut JoinSet<CallDone>) {
        let info = self.session_info(index).await;
        let epoch = info.epoch;
        let active = info.active;
        self.members[index].registering = true;
        self.spawn_call(index, calls, move |session| {
            Box::pin(async move {
                Outcome::Registered {
                    epoch,
                    active,
                    result: session.register(&info).await,
                }
            })
        });
    }

    /// From the time of the event `seq` of `events` (the last of an
    /// acknowledged run) to now, into the group's latency histogram.
    fn observe_latency(&self, events: &safd_connector::SequencedBlock, seq: u64) {
        let Some(index) = events.seqs().iter().position(|&s| s == seq) else {
            return;
        };
        if let Some(event) = events.get(index) {
            let micros = crate::clock::now_micros().saturating_sub(event.event.time);
            let latency = Duration::from_micros(u64::try_from(micros).unwrap_or(0));
            self.metrics.delivery_latency.observe(&self.group, latency);
        }
    }

    fn spawn_deliver(&mut self, index: usize, plan: Plan, calls: &mut JoinSet<CallDone>) {
        Metrics::add(&self.metrics.delivery_calls, 1);
        self.metrics.labelled.add(
            "safd_delivery_calls_total",
            &[
                ("group", &self.group),
                ("member", &self.members[index].name),
            ],
            1,
        );
        self.spawn_call(index, calls, move |session| {
            Box::pin(async move {
                let result = session.deliver(&plan.batches).await;
                Outcome::Delivered { plan, result }
            })
        });
    }

    fn spawn_probe(&mut self, index: usize, calls: &mut JoinSet<CallDone>) {
        self.spawn_call(index, calls, |session| {
            Box::pin(async move { Outcome::Probed(session.probe().await) })
        });
    }

    /// Streams the group does not deliver count as acknowledged up to
    /// what is stored: nothing of them waits for it.
    async fn pass_over_unrouted(&mut self) {
        if self.routes.is_all() {
            return;
        }
        for head in self.queue.streams().await {
            if !self.routes.routes(&head.name) {
                self.advance(&head.name, head.next_seq - 1).await;
            }
        }
    }

    async fn session_info(&mut self, index: usize) -> SessionInfo {
        let routes = self.routes.clone();
        let heads: Vec<_> = self
            .queue
            .streams()
            .await
            .into_iter()
            .filter(|head| routes.routes(&head.name))
            .collect();
        SessionInfo {
            agent_id: self.agent_id.clone(),
            group: self.group.clone(),
            epoch: self.state.epoch,
            active: self.state.active == Some(index),
            stored: heads
                .iter()
                .map(|s| StreamPosition {
                    stream: s.name.clone(),
                    seq: s.next_seq - 1,
                })
                .collect(),
            acknowledged: self
                .state
                .acked
                .iter()
                .filter(|(stream, _)| routes.routes(stream))
                .map(|(stream, seq)| StreamPosition {
                    stream: stream.clone(),
                    seq: *seq,
                })
                .collect(),
        }
    }

    /// The next delivery: dead letters being replayed first, then every
    /// stream's events from its send position, within the batch limits.
    async fn next_plan(&mut self) -> Result<Option<Plan>, String> {
        if !self.state.dead_letter_replay.is_empty() {
            let take = self
                .state
                .dead_letter_replay
                .len()
                .min(self.tuning.batch_max_events);
            let mut by_stream: BTreeMap<String, Vec<SequencedEvent>> = BTreeMap::new();
            for letter in self.state.dead_letter_replay.drain(..take) {
                by_stream
                    .entry(letter.stream)
                    .or_default()
                    .push(letter.event);
            }
            return Ok(Some(Plan {
                batches: by_stream
                    .into_iter()
                    .map(|(stream, events)| StreamBatch::new(stream, events.into()))
                    .collect(),
                dead_letters: true,
            }));
        }
        let mut batches = Vec::new();
        let mut events_left = self.tuning.batch_max_events;
        let mut bytes_left = self.tuning.batch_max_bytes;
        for head in self.queue.streams().await {
            if events_left == 0 || bytes_left == 0 {
                break;
            }
            if !self.routes.routes(&head.name) {
                continue;
            }
            let stored = head.next_seq - 1;
            let from = self.send_from(&head.name);
            if from > stored {
                continue;
            }
            let isolate = self
                .state
                .isolate_through
                .get(&head.name)
                .is_some_and(|through| from <= *through);
            let max_events = if isolate { 1 } else { events_left };
            let events = self
                .queue
                .read_block(&head.name, from, max_events, bytes_left)
                .map_err(|e| e.to_string())?;
            if events.is_empty() {
                continue;
            }
            events_left -= events.len();
            bytes_left = bytes_left.saturating_sub(events.text_bytes());
            batches.push(match self.min_severity {
                None => StreamBatch::new(head.name, events),
                Some(min) => {
                    // Left-out events go with the batch as ranges: the
                    // receiver counts them as settled, so its held seqs
                    // stay one run and a batch of nothing but them still
                    // moves the group on.
                    let (kept, left_out) = events.split_by_severity(min);
                    StreamBatch {
                        stream: head.name,
                        events: kept,
                        left_out,
                    }
                }
            });
            if isolate {
                break;
            }
        }
        Ok((!batches.is_empty()).then_some(Plan {
            batches,
            dead_letters: false,
        }))
    }

    fn send_from(&self, stream: &str) -> u64 {
        let acked = self.state.acked.get(stream).copied().unwrap_or(0);
        self.state
            .send_from
            .get(stream)
            .copied()
            .unwrap_or(acked + 1)
    }

    async fn handle(&mut self, done: CallDone) {
        let index = done.member;
        self.members[index].busy = false;
        self.members[index].registering = false;
        self.members[index].session = done.session;
        let succeeded = match &done.outcome {
            Outcome::Registered { result, .. } => result.is_ok(),
            Outcome::Delivered { result, .. } => result.is_ok(),
            Outcome::Probed(result) => result.is_ok(),
        };
        if succeeded {
            self.confirm_lingering(index, done.started).await;
        }
        match done.outcome {
            Outcome::Registered {
                epoch,
                active,
                result,
            } => match result {
                Ok(registration) => {
                    self.members[index].told_active = active;
                    self.registered(index, epoch, registration).await
                }
                Err(err) => self.call_failed(index, &err, None).await,
            },
            Outcome::Delivered { plan, result } => match result {
                Ok(report) => self.delivered(index, plan, report).await,
                Err(err) => self.call_failed(index, &err, Some(plan)).await,
            },
            Outcome::Probed(result) => match result {
                Ok(health) => {
                    self.answered(index, health.service_ready);
                    self.evaluate_active().await;
                }
                Err(err) => self.call_failed(index, &err, None).await,
            },
        }
    }

    /// A member answered a registration or probe.
    fn answered(&mut self, index: usize, service_ready: bool) {
        let previous = self.members[index].answered(service_ready, &self.tuning);
        let member = &self.members[index];
        if previous == member.health {
            return;
        }
        let notice = match member.health {
            MemberHealth::Degraded => Notice::new(
                MEMBER_DEGRADED,
                format!(
                    "member `{}` of group `{}` is reachable but its event service is not ready",
                    member.name, self.group
                ),
            ),
            _ => Notice::new(
                MEMBER_RECOVERED,
                format!(
                    "member `{}` of group `{}` is reachable and ready",
                    member.name, self.group
                ),
            ),
        };
        self.notices.emit(
            notice
                .with("group", &self.group)
                .with("member", &member.name),
        );
    }

    async fn registered(&mut self, index: usize, epoch: u64, registration: Registration) {
        self.answered(index, registration.service_ready);
        self.members[index].registered_epoch = Some(epoch);
        // What the member already holds needs no delivery.
        for position in &registration.high_water {
            self.advance(&position.stream, position.seq).await;
        }
        self.evaluate_active().await;
        let Some(request) = registration.catch_up else {
            return;
        };
        let is_active = self.state.active == Some(index);
        if is_active && epoch != self.state.epoch {
            // It registered just before becoming active; it is registered
            // again at the new epoch and may ask again then.
            return;
        }
        let name = self.members[index].name.clone();
        let active = self.state.active.map(|i| self.members[i].name.clone());
        match catch_up::decide(
            &name,
            active.as_deref(),
            request.epoch,
            self.state.epoch,
            self.state.window_open,
        ) {
            CatchUpDecision::Honour => {
                self.state.window_open = false;
                self.start_catch_up(index, &request.start, false).await;
            }
            CatchUpDecision::Refuse(reason) => {
                Metrics::add(&self.metrics.catch_ups_refused, 1);
                self.metrics.labelled.add(
                    "safd_catch_ups_refused_total",
                    &[("group", &self.group)],
                    1,
                );
                self.notices.emit(
                    Notice::new(
                        CATCH_UP_REFUSED,
                        format!(
                            "catch-up request from member `{name}` of group `{}` refused: {reason}",
                            self.group
                        ),
                    )
                    .with("group", &self.group)
                    .with("member", &name)
                    .with("epoch", request.epoch),
                );
            }
        }
    }

    /// Record that the group holds `stream` through `seq`.
    async fn advance(&mut self, stream: &str, seq: u64) {
        let current = self.state.acked.get(stream).copied().unwrap_or(0);
        if seq <= current {
            return;
        }
        match self.queue.ack(&self.cursor, stream, seq).await {
            Ok(acked) => {
                self.state.acked.insert(stream.to_owned(), acked);
                let from = self.send_from(stream);
                if from <= acked && self.state.catching_up.is_none() {
                    self.state.send_from.insert(stream.to_owned(), acked + 1);
                }
            }
            Err(err) => tracing::error!(group = %self.group, "cannot record an ack: {err}"),
        }
    }

    async fn delivered(&mut self, index: usize, plan: Plan, report: DeliveryReport) {
        let member = &mut self.members[index];
        member.transient = 0;
        member.failures = 0;
        member.backpressured_since = None;
        let member_name = member.name.clone();
        let acknowledged: BTreeMap<&str, u64> = report
            .acknowledged
            .iter()
            .map(|p| (p.stream.as_str(), p.seq))
            .collect();
        let rejected: BTreeMap<(&str, u64), &str> = report
            .rejected
            .iter()
            .map(|r| ((r.stream.as_str(), r.seq), r.reason.as_str()))
            .collect();
        let mut progressed = false;
        // Transport-write members: what was written, to confirm later.
        let mut written: BTreeMap<String, u64> = BTreeMap::new();
        for batch in &plan.batches {
            let Some((first, last)) = batch.span() else {
                continue;
            };
            let stream = batch.stream.as_str();
            // Seqs the group left out are settled once everything before
            // them is: a receiver that knows nothing of them acknowledges
            // its last event, and a batch of nothing but them is settled
            // whole.
            let over_left_out = |mut settled: u64| {
                for &(from, through) in &batch.left_out {
                    if from <= settled + 1 && through > settled {
                        settled = through;
                    }
                }
                settled
            };
            let mut settled = over_left_out(
                acknowledged
                    .get(stream)
                    .copied()
                    .unwrap_or(0)
                    .max(first - 1),
            );
            for (i, &seq) in batch.events.seqs().iter().enumerate() {
                if let Some(reason) = rejected.get(&(stream, seq)) {
                    // Rejections are rare: only the rejected event is
                    // decoded, for its dead letter. It is settled only
                    // once its dead letter is stored; otherwise it is sent
                    // (and rejected) again.
                    let kept = batch.events.get(i).is_some_and(|event| {
                        self.dead_letter(&member_name, stream, &event, reason, DEAD_LETTERED)
                    });
                    if !kept {
                        settled = settled.min(seq - 1);
                    } else if seq == settled + 1 {
                        settled = over_left_out(seq);
                    }
                } else if seq <= settled && plan.dead_letters {
                    self.forget_dead_letter(stream, seq);
                }
            }
            let settled = settled.min(last);
            if settled >= first {
                progressed = true;
                let delivered = batch
                    .events
                    .seqs()
                    .iter()
                    .take_while(|&&seq| seq <= settled)
                    .count() as u64;
                Metrics::add(&self.metrics.events_delivered, delivered);
                self.metrics.labelled.add(
                    "safd_events_delivered_total",
                    &[
                        ("group", &self.group),
                        ("member", &member_name),
                        ("stream", stream),
                    ],
                    delivered,
                );
                self.observe_latency(&batch.events, settled);
            }
            if plan.dead_letters {
                // Replayed letters the receiver neither took nor rejected
                // go back in line.
                let unsettled: Vec<(String, u64)> = batch
                    .events
                    .seqs()
                    .iter()
                    .filter(|&&seq| seq > settled && !rejected.contains_key(&(stream, seq)))
                    .map(|&seq| (stream.to_owned(), seq))
                    .collect();
                self.requeue_dead_letters(&unsettled);
                continue;
            }
            self.state
                .send_from
                .insert(stream.to_owned(), settled.max(first - 1) + 1);
            if self.members[index].transport_write {
                written.insert(stream.to_owned(), settled);
            } else {
                self.advance(stream, settled).await;
            }
        }
        if !written.is_empty() {
            self.state.lingering.push_back(Lingering {
                member: index,
                written_at: Instant::now(),
                through: written,
            });
        }
        let sent_from: BTreeMap<String, u64> = plan
            .batches
            .iter()
            .map(|b| (b.stream.clone(), self.send_from(&b.stream)))
            .collect();
        self.state
            .poison_strikes
            .retain(|(stream, seq, _), _| sent_from.get(stream).is_none_or(|from| seq >= from));
        if !progressed && report.rejected.is_empty() {
            // The receiver took nothing: treat like a transient error.
            let err = SessionError::Connector(ConnectorError::Transient(
                "the receiver acknowledged nothing of the batch".into(),
            ));
            self.call_failed(index, &err, None).await;
            return;
        }
        self.check_catch_up_done();
        self.evaluate_active().await;
    }

    /// Keep `event` as a dead letter and announce it (`id`: 1008 for a
    /// rejection, 1011 for an event that made the destination fail);
    /// returns whether it was stored.
    fn dead_letter(
        &mut self,
        member: &str,
        stream: &str,
        event: &SequencedEvent,
        reason: &str,
        id: u32,
    ) -> bool {
        let letter = DeadLetter {
            group: self.cursor.clone(),
            stream: stream.to_owned(),
            event: event.clone(),
            member: member.to_owned(),
            reason: reason.to_owned(),
            rejected_at: crate::clock::now_micros(),
        };
        if let Err(err) = self.queue.put_dead_letter(&letter) {
            tracing::error!(
                group = %self.group,
                "cannot store a dead letter (the event stays queued and is sent again): {err}"
            );
            return false;
        }
        Metrics::add(&self.metrics.dead_lettered, 1);
        self.metrics.labelled.add(
            "safd_dead_lettered_total",
            &[("group", &self.group), ("member", member)],
            1,
        );
        let what = if id == POISON_EVENT {
            "made the destination fail twice on its own"
        } else {
            "was permanently rejected"
        };
        self.notices.emit(
            Notice::new(
                id,
                format!(
                    "event {} of stream `{stream}` (seq {}) {what} by member `{member}` of group \
                     `{}`: {reason}; kept as a dead letter, delivery goes on",
                    event.event.id, event.seq, self.group
                ),
            )
            .with("group", &self.group)
            .with("member", member)
            .with("stream", stream)
            .with("seq", event.seq),
        );
        true
    }

    /// Put the dead letters of `keys` (stream, seq) back at the front of
    /// the replay line.
    fn requeue_dead_letters(&mut self, keys: &[(String, u64)]) {
        if keys.is_empty() {
            return;
        }
        let letters = match self.queue.dead_letters(&self.cursor) {
            Ok(letters) => letters,
            Err(err) => {
                tracing::error!(group = %self.group, "cannot read dead letters: {err}");
                return;
            }
        };
        let wanted: BTreeSet<&(String, u64)> = keys.iter().collect();
        let mut again: Vec<DeadLetter> = letters
            .into_iter()
            .filter(|l| wanted.contains(&(l.stream.clone(), l.event.seq)))
            .collect();
        again.append(&mut self.state.dead_letter_replay);
        self.state.dead_letter_replay = again;
    }

    fn forget_dead_letter(&mut self, stream: &str, seq: u64) {
        if let Err(err) = self.queue.remove_dead_letter(&self.cursor, stream, seq) {
            tracing::error!(group = %self.group, "cannot remove a replayed dead letter: {err}");
        }
    }

    /// A call failed: decide between retrying the same member and counting
    /// it unreachable (which fails over).
    async fn call_failed(&mut self, index: usize, err: &SessionError, plan: Option<Plan>) {
        Metrics::add(&self.metrics.delivery_retries, u64::from(plan.is_some()));
        if plan.is_some() {
            self.metrics.labelled.add(
                "safd_delivery_retries_total",
                &[
                    ("group", &self.group),
                    ("member", &self.members[index].name),
                ],
                1,
            );
        }
        if err.instance_was_reset() {
            // The plugin instance behind the session was rebuilt: it knows
            // nothing of the registration, so the member registers again
            // before its next delivery.
            self.members[index].registered_epoch = None;
        }
        if self.state.lingering.iter().any(|l| l.member == index) {
            // Written but never confirmed: the connection they went over
            // failed, so they may be lost. Send them again (receivers see
            // their ids; a few duplicates are the price).
            self.state.lingering.retain(|l| l.member != index);
            self.state.send_from.clear();
            self.state.isolate_through.clear();
        }
        if let Some(plan) = &plan
            && plan.dead_letters
            && !matches!(err, SessionError::Connector(ConnectorError::Rejected(_)))
        {
            // A replay that did not go through is not dropped: it is
            // retried with the next delivery.
            let keys: Vec<(String, u64)> = plan
                .batches
                .iter()
                .flat_map(|b| b.events.seqs().iter().map(|&seq| (b.stream.clone(), seq)))
                .collect();
            self.requeue_dead_letters(&keys);
        }
        let tuning = self.tuning;
        match err {
            SessionError::Connector(ConnectorError::Backpressure { retry_after, .. }) => {
                // A member that has only said "later" for longer than a
                // call may take is as good as silent: fail over. The wait
                // it asks for is capped, so no answer can stop a group.
                let member = &mut self.members[index];
                let since = *member.backpressured_since.get_or_insert_with(Instant::now);
                if since.elapsed() < tuning.request_timeout {
                    member.hold((*retry_after).min(tuning.retry_max));
                    return;
                }
            }
            SessionError::Trapped(_) | SessionError::Connector(ConnectorError::Fatal(_))
                if plan.as_ref().is_some_and(|p| !p.dead_letters) =>
            {
                if let Some(plan) = plan
                    && self.destination_failed_on(index, &plan, err).await
                {
                    return;
                }
            }
            SessionError::Connector(ConnectorError::Transient(_)) => {
                let member = &mut self.members[index];
                member.transient += 1;
                member.last_error = Some(err.to_string());
                if member.transient < tuning.transient_limit {
                    let wait = backoff(member.transient, &tuning);
                    member.hold(wait);
                    return;
                }
            }
            SessionError::Connector(ConnectorError::Rejected(reason)) => {
                if let Some(plan) = plan {
                    self.whole_batch_rejected(index, plan, reason).await;
                    return;
                }
            }
            SessionError::NotGranted(reason) => {
                let member = &self.members[index];
                // Damped like 1010: a missing grant stays missing until the
                // configuration changes.
                let refusals = member.failures.saturating_add(1);
                if member.health != MemberHealth::Unreachable
                    || member.failures == 0
                    || refusals.is_power_of_two()
                {
                    self.notices.emit(
                        Notice::new(
                            MEMBER_NOT_GRANTED,
                            format!(
                                "safd's sandbox kept member `{}` of group `{}` from its \
                                 address: {reason}",
                                member.name, self.group
                            ),
                        )
                        .with("group", &self.group)
                        .with("member", &member.name)
                        .with("refusals", refusals),
                    );
                }
            }
            SessionError::Connector(ConnectorError::Unauthorized(reason)) => {
                let member = &self.members[index];
                // Said on the first refusal of a run and then ever more
                // rarely (2nd, 4th, 8th…): a wrong token does not fix
                // itself, and one line every retry buries everything else.
                let refusals = member.failures.saturating_add(1);
                let say = member.health != MemberHealth::Unreachable
                    || member.failures == 0
                    || refusals.is_power_of_two();
                if say {
                    self.notices.emit(
                        Notice::new(
                            MEMBER_UNAUTHORIZED,
                            format!(
                                "member `{}` of group `{}` refused safd's credentials: {reason}; \
                             fix the member's token in the configuration",
                                member.name, self.group
                            ),
                        )
                        .with("group", &self.group)
                        .with("member", &member.name)
                        .with("refusals", refusals),
                    );
                }
            }
            _ => {}
        }
        self.unreachable(index, err.to_string()).await;
    }

    /// A delivery made the destination trap or fail fatally. Once is
    /// chance; a batch that does it twice is sent one event at a time, and
    /// an event that does it twice on its own is a poison event: it is
    /// dead-lettered with the failure as its reason (event 1011) and
    /// delivery goes on. (One event at a time, not halving: each failure
    /// counts towards the plugin's restart limit, and this finds the
    /// culprit in four.) Returns whether the member is simply retried.
    async fn destination_failed_on(
        &mut self,
        index: usize,
        plan: &Plan,
        err: &SessionError,
    ) -> bool {
        let Some((batch, first)) = plan
            .batches
            .first()
            .and_then(|b| b.events.first_seq().map(|seq| (b, seq)))
        else {
            return false;
        };
        let key = (batch.stream.clone(), first, plan.len() == 1);
        let strikes = {
            let strikes = self.state.poison_strikes.entry(key).or_default();
            *strikes += 1;
            *strikes
        };
        let member = &mut self.members[index];
        member.last_error = Some(err.to_string());
        member.hold(backoff(strikes, &self.tuning));
        if strikes < 2 {
            return true;
        }
        if plan.len() > 1 {
            for batch in &plan.batches {
                if let Some(last) = batch.events.last_seq() {
                    self.state
                        .isolate_through
                        .insert(batch.stream.clone(), last);
                }
            }
            return true;
        }
        let Some(event) = batch.events.get(0) else {
            return false;
        };
        let name = self.members[index].name.clone();
        let reason = format!("the destination failed on this event twice: {err}");
        if self.dead_letter(&name, &batch.stream, &event, &reason, POISON_EVENT) {
            let stream = batch.stream.clone();
            self.state
                .poison_strikes
                .retain(|(s, seq, _), _| *s != stream || *seq > event.seq);
            self.state.send_from.insert(stream.clone(), event.seq + 1);
            self.advance(&stream, event.seq).await;
        }
        true
    }

    /// A receiver rejected a whole batch: find the culprit by sending the
    /// batch one event at a time; a single rejected event is dead-lettered.
    async fn whole_batch_rejected(&mut self, index: usize, plan: Plan, reason: &str) {
        if plan.len() == 1
            && let Some(batch) = plan.batches.first()
            && let Some(event) = batch.events.get(0)
        {
            let member = self.members[index].name.clone();
            let kept = self.dead_letter(&member, &batch.stream, &event, reason, DEAD_LETTERED);
            if kept && !plan.dead_letters {
                self.state
                    .send_from
                    .insert(batch.stream.clone(), event.seq + 1);
                self.advance(&batch.stream, event.seq).await;
            }
            return;
        }
        if plan.dead_letters {
            return; // They stay dead letters.
        }
        for batch in &plan.batches {
            if let Some(last) = batch.events.last_seq() {
                self.state
                    .isolate_through
                    .insert(batch.stream.clone(), last);
            }
        }
    }

    async fn unreachable(&mut self, index: usize, error: String) {
        let previous = self.members[index].failed(error.clone(), &self.tuning);
        if previous != MemberHealth::Unreachable || self.members[index].failures == 1 {
            let member = &self.members[index];
            self.notices.emit(
                Notice::new(
                    MEMBER_UNREACHABLE,
                    format!(
                        "cannot reach member `{}` of group `{}` at {}: {error}",
                        member.name, self.group, member.endpoint.address
                    ),
                )
                .with("group", &self.group)
                .with("member", &member.name),
            );
        }
        if self.state.active == Some(index) {
            // Whatever was in flight is unacknowledged: it goes again, to
            // whichever member takes over (receivers deduplicate).
            self.rewind();
        }
        self.evaluate_active().await;
    }

    /// Send from the acked positions again and drop any catch-up.
    fn rewind(&mut self) {
        self.state.send_from.clear();
        self.state.isolate_through.clear();
        self.state.lingering.clear();
        if let Some(catch_up) = self.state.catching_up.take() {
            tracing::info!(
                group = %self.group,
                member = %catch_up.member,
                "catch-up abandoned: the member changed"
            );
        }
    }

    /// Apply the choice rule, with failback damping.
    async fn evaluate_active(&mut self) {
        let health: Vec<MemberHealth> = self.members.iter().map(|m| m.health).collect();
        let best = choose_active(&health);
        let current = self.state.active.filter(|a| self.members[*a].reachable());
        let next = match (current, best) {
            // Nobody active (safd's start, or after a total outage): the
            // first member to register takes over, but a member whose
            // registration is already on the wire gets its answer heard
            // first (bounded by the request timeout) when it could be the
            // better choice: one of higher priority, or any member while
            // the best so far is only degraded (a ready member beats it).
            // So a start with every member up does not fail over and back,
            // and events do not go to a degraded server's inbox for the
            // moment before a ready one answers.
            (None, Some(best))
                if self.members.iter().enumerate().any(|(i, m)| {
                    m.registering
                        && !m.reachable()
                        && (i < best || self.members[best].health == MemberHealth::Degraded)
                }) =>
            {
                return;
            }
            (None, best) => {
                if best.is_none() {
                    self.say_all_down_once_every_member_failed();
                }
                best
            }
            (Some(active), Some(best)) if best < active => {
                // Failback: damped, and only once the in-flight batch
                // to the current member is settled.
                let candidate = &self.members[best];
                if candidate.healthy_probes >= self.tuning.failback_after
                    && !self.members[active].busy
                {
                    Some(best)
                } else {
                    Some(active)
                }
            }
            (Some(_), best) => best,
        };
        if next != self.state.active {
            self.switch_active(next).await;
        }
    }

    /// No member was ever active (safd's start) and every one has now
    /// failed: the outage is as real as one that follows a failover, and
    /// is said the same way (1004), once.
    fn say_all_down_once_every_member_failed(&mut self) {
        if self.state.all_down_said
            || !self
                .members
                .iter()
                .all(|m| m.health == MemberHealth::Unreachable && m.failures > 0)
        {
            return;
        }
        self.state.all_down_said = true;
        self.notices
            .emit(self.all_down_notice().with("group", &self.group));
    }

    fn all_down_notice(&self) -> Notice {
        let errors: Vec<String> = self
            .members
            .iter()
            .filter_map(|m| Some(format!("`{}`: {}", m.name, m.last_error.as_deref()?)))
            .collect();
        let why = if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join("; "))
        };
        Notice::new(
            ALL_MEMBERS_DOWN,
            format!(
                "no member of group `{}` is reachable{why}: events are kept in safd's queue",
                self.group
            ),
        )
    }

    async fn switch_active(&mut self, next: Option<usize>) {
        let previous = self.state.active;
        let next_name = next.map(|i| self.members[i].name.clone());
        let epoch = match self
            .queue
            .change_active(&self.cursor, next_name.as_deref())
            .await
        {
            Ok(epoch) => epoch,
            Err(err) => {
                tracing::error!(group = %self.group, "cannot persist the active member: {err}");
                return;
            }
        };
        self.state.active = next;
        self.state.epoch = epoch;
        self.rewind();
        let previous_name = previous.map(|i| self.members[i].name.clone());
        let notice = match (previous, next) {
            (_, None) => {
                self.state.window_open = false;
                self.state.all_down_said = true;
                self.all_down_notice()
            }
            (None, Some(_)) => {
                self.state.all_down_said = false;
                // The first member to register after an outage may
                // catch up; the other one will be refused.
                self.state.window_open = true;
                Notice::new(
                    DELIVERY_RESUMED,
                    format!(
                        "group `{}` delivers to member `{}`",
                        self.group,
                        next_name.as_deref().unwrap_or_default()
                    ),
                )
            }
            (Some(from), Some(to)) => {
                self.state.window_open = false;
                let (id, counter, family, verb) = if to > from {
                    (
                        FAILED_OVER,
                        &self.metrics.failovers,
                        "safd_failovers_total",
                        "failed over",
                    )
                } else {
                    (
                        FAILED_BACK,
                        &self.metrics.failbacks,
                        "safd_failbacks_total",
                        "failed back",
                    )
                };
                Metrics::add(counter, 1);
                self.metrics
                    .labelled
                    .add(family, &[("group", &self.group)], 1);
                Notice::new(
                    id,
                    format!(
                        "group `{}` {verb} from `{}` to `{}`",
                        self.group,
                        previous_name.as_deref().unwrap_or_default(),
                        next_name.as_deref().unwrap_or_default()
                    ),
                )
                .with("from", previous_name.as_deref().unwrap_or_default())
            }
        };
        self.notices.emit(
            notice
                .with("group", &self.group)
                .with("member", next_name.as_deref().unwrap_or("-"))
                .with("epoch", epoch),
        );
    }

    /// Replay what `index` asks for: from the queue within the replay
    /// window, and through the source (deep catch-up) before it.
    async fn start_catch_up(&mut self, index: usize, from: &CatchUpFrom, by_operator: bool) {
        let member = self.members[index].name.clone();
        let mut through = BTreeMap::new();
        let mut replayed = 0u64;
        for head in self.queue.streams().await {
            // A catch-up replays what the group delivers, nothing else.
            if !self.routes.routes(&head.name) {
                continue;
            }
            let acked = self.state.acked.get(&head.name).copied().unwrap_or(0);
            let start = match from {
                CatchUpFrom::Positions(positions) => {
                    match positions.iter().find(|p| p.stream == head.name) {
                        Some(position) => position.seq.max(1),
                        None => continue,
                    }
                }
                CatchUpFrom::Time(time) => {
                    let oldest_time = self
                        .queue
                        .read(&head.name, head.first_seq, 1, usize::MAX)
                        .ok()
                        .and_then(|events| events.first().map(|e| e.event.time));
                    if head.first_seq > 1 && oldest_time.is_none_or(|t| *time < t) {
                        self.deep_catch_up(&member, &head.name, 1, head.first_seq, *time);
                    }
                    match self.queue.first_seq_at_or_after(&head.name, *time) {
                        Ok(Some(seq)) => seq,
                        _ => continue,
                    }
                }
            };
            if start > acked {
                continue; // Regular delivery sends it anyway.
            }
            if start < head.first_seq
                && let CatchUpFrom::Positions(_) = from
            {
                match self.queue.seek_time_for(&head.name, start).await {
                    Some(time) => {
                        self.deep_catch_up(&member, &head.name, start, head.first_seq, time);
                    }
                    None => self.notices.emit(
                        self.gap(&member, &head.name, start, head.first_seq)
                            .notice("no running source can re-read them"),
                    ),
                }
            }
            let replay_from = start.max(head.first_seq);
            if replay_from > acked {
                continue;
            }
            replayed += acked - replay_from + 1;
            let send_from = self.send_from(&head.name).min(replay_from);
            self.state.send_from.insert(head.name.clone(), send_from);
            through.insert(head.name.clone(), acked);
        }
        Metrics::add(&self.metrics.catch_ups, 1);
        self.metrics
            .labelled
            .add("safd_catch_ups_total", &[("group", &self.group)], 1);
        self.notices.emit(
            Notice::new(
                CATCH_UP_STARTED,
                format!(
                    "catch-up of member `{member}` of group `{}` started: {replayed} events to \
                     replay from the queue{}",
                    self.group,
                    if by_operator {
                        " (requested by the operator)"
                    } else {
                        ""
                    }
                ),
            )
            .with("group", &self.group)
            .with("member", &member)
            .with("events", replayed)
            .with("epoch", self.state.epoch),
        );
        self.state.catching_up = Some(CatchUp { member, through });
        self.check_catch_up_done();
    }

    /// Ask the source of `stream` to re-read from `time` the seqs from
    /// `from` that left the replay window (they begin at `first_retained`).
    fn deep_catch_up(&self, member: &str, stream: &str, from: u64, first_retained: u64, time: i64) {
        let gap = self.gap(member, stream, from, first_retained);
        match self.sources.seek(stream, SeekRequest { time, gap }) {
            Ok(()) => {
                self.notices.emit(
                    Notice::new(
                        DEEP_CATCH_UP,
                        format!(
                            "catch-up of member `{member}` reaches before the replay window of \
                             stream `{stream}` (oldest kept seq {first_retained}): the source re-reads \
                             from time {time}"
                        ),
                    )
                    .with("group", &self.group)
                    .with("member", member)
                    .with("stream", stream)
                    .with("time", time),
                );
            }
            Err(request) => self
                .notices
                .emit(request.gap.notice("no running source can re-read them")),
        }
    }

    /// Seqs `from` up to the one before `first_retained` of `stream`, which
    /// a catch-up of `member` asked for.
    fn gap(&self, member: &str, stream: &str, from: u64, first_retained: u64) -> Gap {
        Gap {
            group: self.group.clone(),
            member: member.to_owned(),
            stream: stream.to_owned(),
            first_seq: from,
            last_seq: first_retained.saturating_sub(1),
        }
    }

    fn check_catch_up_done(&mut self) {
        let Some(catch_up) = &self.state.catching_up else {
            return;
        };
        let done = catch_up
            .through
            .iter()
            .all(|(stream, through)| self.send_from(stream) > *through);
        if !done {
            return;
        }
        self.notices.emit(
            Notice::new(
                CATCH_UP_COMPLETED,
                format!(
                    "catch-up of member `{}` of group `{}` completed",
                    catch_up.member, self.group
                ),
            )
            .with("group", &self.group)
            .with("member", &catch_up.member),
        );
        self.state.catching_up = None;
    }

    async fn command(&mut self, command: LaneCommand) {
        match command {
            LaneCommand::CatchUp { from, reply } => {
                let outcome = match self.state.active {
                    Some(index) if self.state.catching_up.is_none() => {
                        self.start_catch_up(index, &from, true).await;
                        Ok(())
                    }
                    Some(_) => Err("a catch-up is already running".to_owned()),
                    None => Err(format!(
                        "no member of group `{}` is reachable; retry when one is",
                        self.group
                    )),
                };
                let _ = reply.send(outcome);
            }
            LaneCommand::ReplayDeadLetters { reply } => {
                let letters = match self.queue.dead_letters(&self.cursor) {
                    Ok(letters) => letters,
                    Err(err) => {
                        tracing::error!(group = %self.group, "cannot read dead letters: {err}");
                        Vec::new()
                    }
                };
                let count = letters.len();
                let known: BTreeSet<(String, u64)> = self
                    .state
                    .dead_letter_replay
                    .iter()
                    .map(|l| (l.stream.clone(), l.event.seq))
                    .collect();
                self.state.dead_letter_replay.extend(
                    letters
                        .into_iter()
                        .filter(|l| !known.contains(&(l.stream.clone(), l.event.seq))),
                );
                let _ = reply.send(count);
            }
        }
    }

    fn publish_status(&self) {
        let status = LaneStatus {
            cursor: self.cursor.clone(),
            active: self.state.active.map(|i| self.members[i].name.clone()),
            epoch: self.state.epoch,
            members: self
                .members
                .iter()
                .map(|m| MemberStatus {
                    name: m.name.clone(),
                    address: m.endpoint.address.clone(),
                    health: m.health,
                    registered: m.registered_epoch.is_some(),
                    healthy_probes: m.healthy_probes,
                    last_error: m.last_error.clone(),
                })
                .collect(),
            acked: self.state.acked.clone(),
            catching_up: self.state.catching_up.is_some(),
        };
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = status;
    }
}
