//! The engine: one queue, the sources that feed it, the groups that drain
//! it, and safd's own events injected into the `safd` stream.

use crate::dispatch::{Lane, LaneCommand, LaneState};
pub use crate::dispatch::{LaneStatus, MemberStatus};
use crate::group::{GroupConfig, GroupMode};
use crate::member::Member;
use crate::metrics::Metrics;
use crate::notice::{MAX_WAITING, Notice, Notices, OwnEvents, SAFD_STREAM};
pub use crate::pump::PumpTuning;
use crate::pump::{Pump, SourceDirectory};
use crate::queue::dead_letter::DeadLetter;
use crate::queue::{HeldBatch, OpenReport, Queue, QueueError, QueueOptions};
use crate::source_state::{SourceState, SourceStatus};
use safd_connector::event_ids::OWN_EVENTS_LEFT_OUT;
use safd_connector::{CatchUpFrom, Event, SourceConnector};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("unknown group `{0}`")]
    UnknownGroup(String),
    #[error("group `{group}` has no member `{member}` (its members: {known})")]
    UnknownMember {
        group: String,
        member: String,
        known: String,
    },
    #[error(
        "group `{0}` is a failover group: a catch-up goes to its active member; leave out the \
         member"
    )]
    MemberOfFailoverGroup(String),
    #[error("the queue has no stream `{stream}` (its streams: {known})")]
    UnknownStream { stream: String, known: String },
    #[error("a group named `{0}` is already running")]
    DuplicateGroup(String),
    #[error("a source for stream `{0}` is already running")]
    DuplicateSource(String),
    #[error("stream name `{0}` is reserved for safd's own events")]
    ReservedStream(String),
    #[error("no source runs for stream `{0}`")]
    UnknownSource(String),
    #[error("group `{0}` has no members")]
    NoMembers(String),
    #[error("catch-up not started: {0}")]
    CatchUp(String),
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// How the engine is set up.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Identifies this safd to receivers (stable across restarts).
    pub agent_id: String,
    pub data_dir: PathBuf,
    pub queue: QueueOptions,
    /// How often the replay window is enforced.
    pub retention_interval: Duration,
}

/// A stream as the status API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStatus {
    pub name: String,
    pub first_seq: u64,
    pub next_seq: u64,
    pub bytes: u64,
    pub cursor: Option<Vec<u8>>,
}

/// A group as the status API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    pub name: String,
    pub mode: GroupMode,
    /// The `streams` globs it delivers (empty: every stream).
    pub streams: Vec<String>,
    /// One per cursor: the group (failover) or each member (broadcast).
    pub lanes: Vec<LaneStatus>,
}

struct GroupHandle {
    name: String,
    mode: GroupMode,
    /// Member names, in the configured order.
    members: Vec<String>,
    streams: Vec<String>,
    lanes: Vec<LaneHandle>,
    running: Running,
}

/// Tasks that stop together: a source's pump, or a group's lanes.
struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// A source's state (pumps only).
    source: Option<SourceState>,
}

impl Running {
    fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
            source: None,
        }
    }

    /// Ask the tasks to stop and wait until they have: a pump finishes its
    /// ingest, a lane settles its calls in flight.
    async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            if let Err(err) = task.await {
                tracing::error!("a task ended abnormally while stopping: {err}");
            }
        }
    }
}

struct LaneHandle {
    /// The member this lane serves alone (broadcast), if any.
    member: Option<String>,
    cursor: String,
    commands: mpsc::Sender<LaneCommand>,
    status: Arc<Mutex<LaneStatus>>,
}

/// The delivery engine.
pub struct Engine {
    options: EngineOptions,
    queue: Arc<Queue>,
    notices: Notices,
    metrics: Arc<Metrics>,
    sources: SourceDirectory,
    /// The pump of each stream.
    pumps: Mutex<BTreeMap<String, Running>>,
    groups: Mutex<Vec<GroupHandle>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
    /// Stops the injection of safd's own events, after everything else.
    injector: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("agent_id", &self.options.agent_id)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Open the queue under `options.data_dir` and start the background
    /// work (injection of safd's own events, retention). Must be called
    /// inside a tokio runtime.
    pub fn open(options: EngineOptions) -> Result<(Self, OpenReport), EngineError> {
        let metrics = Arc::new(Metrics::default());
        let (notices, own_events) = crate::notice::own_events(MAX_WAITING);
        let (queue, report) = Queue::open_with(
            &options.data_dir,
            options.queue,
            notices.clone(),
            metrics.clone(),
        )?;
        let queue = Arc::new(queue);
        let (shutdown, _) = watch::channel(false);
        let injector = tokio::spawn(inject(queue.clone(), options.agent_id.clone(), own_events));
        let mut tasks = JoinSet::new();
        tasks.spawn(enforce_retention(
            queue.clone(),
            options.retention_interval,
            shutdown.subscribe(),
        ));
        tasks.spawn(flush_written(queue.clone(), shutdown.subscribe()));
        tasks.spawn(crate::queue::reopen::recover_store(
            queue.clone(),
            notices.clone(),
            shutdown.subscribe(),
        ));
        Ok((
            Self {
                options,
                queue,
                notices,
                metrics,
                sources: SourceDirectory::default(),
                pumps: Mutex::default(),
                groups: Mutex::default(),
                shutdown,
                tasks: Mutex::new(tasks),
                injector: Mutex::new(Some(injector)),
            },
            report,
        ))
    }

    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    pub fn notices(&self) -> &Notices {
        &self.notices
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Start pumping `connector`'s events into `stream`.
    pub fn add_source(
        &self,
        stream: &str,
        connector: Arc<dyn SourceConnector>,
        tuning: PumpTuning,
    ) -> Result<(), EngineError> {
        if stream == SAFD_STREAM {
            return Err(EngineError::ReservedStream(stream.to_owned()));
        }
        if *self.shutdown.borrow() {
            return Err(EngineError::ShuttingDown);
        }
        let mut pumps = self.pumps.lock().unwrap_or_else(PoisonError::into_inner);
        if pumps.contains_key(stream) {
            return Err(EngineError::DuplicateSource(stream.to_owned()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.sources.insert(stream, tx);
        let mut running = Running::new();
        let state = SourceState::new(stream);
        running.source = Some(state.clone());
        let pump = Pump {
            stream: stream.to_owned(),
            connector,
            queue: self.queue.clone(),
            notices: self.notices.clone(),
            tuning,
            commands: rx,
            shutdown: running.stop.subscribe(),
            state,
        };
        running.tasks.push(tokio::spawn(pump.run()));
        pumps.insert(stream.to_owned(), running);
        Ok(())
    }

    /// Stop the source of `stream` once its current round is durable (its
    /// cursor is stored with its events); another source started for the
    /// stream later resumes from that cursor.
    pub async fn remove_source(&self, stream: &str) -> Result<(), EngineError> {
        let running = self
            .pumps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(stream)
            .ok_or_else(|| EngineError::UnknownSource(stream.to_owned()))?;
        self.sources.remove(stream);
        running.stop().await;
        Ok(())
    }

    /// Start delivering to a group.
    pub fn add_group(&self, config: GroupConfig) -> Result<(), EngineError> {
        if config.members.is_empty() {
            return Err(EngineError::NoMembers(config.name));
        }
        if *self.shutdown.borrow() {
            return Err(EngineError::ShuttingDown);
        }
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if groups.iter().any(|g| g.name == config.name) {
            return Err(EngineError::DuplicateGroup(config.name));
        }
        let members: Vec<Member> = config
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                Member::new(
                    m.name.clone(),
                    m.address.clone(),
                    config.role(i),
                    m.connector.clone(),
                )
            })
            .collect();
        // A failover group is one lane over all members; broadcast is one
        // lane per member, each with its own cursor.
        let lanes: Vec<(Option<String>, String, Vec<Member>)> = match config.mode {
            GroupMode::Failover => vec![(None, config.name.clone(), members)],
            GroupMode::Broadcast => members
                .into_iter()
                .map(|m| {
                    (
                        Some(m.name.clone()),
                        format!("{}/{}", config.name, m.name),
                        vec![m],
                    )
                })
                .collect(),
        };
        let mut handles = Vec::new();
        let mut running = Running::new();
        for (member, cursor, members) in lanes {
            let (tx, rx) = mpsc::channel(16);
            let status = Arc::new(Mutex::new(LaneStatus {
                cursor: cursor.clone(),
                ..LaneStatus::default()
            }));
            let lane = Lane {
                cursor: cursor.clone(),
                group: config.name.clone(),
                agent_id: self.options.agent_id.clone(),
                queue: self.queue.clone(),
                notices: self.notices.clone(),
                metrics: self.metrics.clone(),
                sources: self.sources.clone(),
                members,
                tuning: config.tuning,
                routes: config.streams.clone(),
                min_severity: config.min_severity,
                status: status.clone(),
                commands: rx,
                shutdown: running.stop.subscribe(),
                state: LaneState::default(),
            };
            running.tasks.push(tokio::spawn(lane.run()));
            handles.push(LaneHandle {
                member,
                cursor,
                commands: tx,
                status,
            });
        }
        groups.push(GroupHandle {
            members: config.members.iter().map(|m| m.name.clone()).collect(),
            streams: config.streams.patterns().to_vec(),
            name: config.name,
            mode: config.mode,
            lanes: handles,
            running,
        });
        let cursors: Vec<String> = groups
            .iter()
            .flat_map(|g| g.lanes.iter().map(|l| l.cursor.clone()))
            .collect();
        self.queue.set_cursor_owners(cursors);
        Ok(())
    }

    /// Stop delivering to `name` once its calls in flight are settled. Its
    /// position stays stored: the group resumes from it if it is added
    /// again, but no longer holds back retention or queue room.
    pub async fn remove_group(&self, name: &str) -> Result<(), EngineError> {
        self.stop_group(name).await?;
        self.queue.set_cursor_owners(self.cursor_owners());
        Ok(())
    }

    /// Restart a running group with new members, plugin instances or
    /// tuning: its calls in flight are settled first, and the new lanes
    /// continue from the acknowledged position, so nothing is sent twice
    /// by safd and nothing is skipped. The group's cursor keeps its claim
    /// on retention throughout.
    pub async fn replace_group(&self, config: GroupConfig) -> Result<(), EngineError> {
        if config.members.is_empty() {
            return Err(EngineError::NoMembers(config.name));
        }
        self.stop_group(&config.name).await?;
        self.add_group(config)
    }

    async fn stop_group(&self, name: &str) -> Result<(), EngineError> {
        let handle = {
            let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
            let index = groups
                .iter()
                .position(|g| g.name == name)
                .ok_or_else(|| EngineError::UnknownGroup(name.to_owned()))?;
            groups.remove(index)
        };
        handle.running.stop().await;
        Ok(())
    }

    fn cursor_owners(&self) -> Vec<String> {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|g| g.lanes.iter().map(|l| l.cursor.clone()))
            .collect()
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lanes of `group` a request is for: all of them, or the one of
    /// `member` in a broadcast group.
    fn lanes(
        &self,
        group: &str,
        member: Option<&str>,
    ) -> Result<Vec<(String, mpsc::Sender<LaneCommand>)>, EngineError> {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let handle = groups
            .iter()
            .find(|g| g.name == group)
            .ok_or_else(|| EngineError::UnknownGroup(group.to_owned()))?;
        if let Some(member) = member
            && !handle.members.iter().any(|m| m == member)
        {
            return Err(EngineError::UnknownMember {
                group: group.to_owned(),
                member: member.to_owned(),
                known: handle.members.join(", "),
            });
        }
        let lanes: Vec<_> = handle
            .lanes
            .iter()
            .filter(|l| member.is_none() || l.member.as_deref() == member || l.member.is_none())
            .map(|l| (l.cursor.clone(), l.commands.clone()))
            .collect();
        if let Some(member) = member
            && handle.mode == GroupMode::Broadcast
            && lanes.is_empty()
        {
            return Err(EngineError::UnknownMember {
                group: group.to_owned(),
                member: member.to_owned(),
                known: handle.members.join(", "),
            });
        }
        Ok(lanes)
    }

    fn group_mode(&self, group: &str) -> Option<GroupMode> {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups.iter().find(|g| g.name == group).map(|g| g.mode)
    }

    /// Operator-triggered catch-up of the active member of `group` (or of
    /// one member of a broadcast group).
    pub async fn catch_up(
        &self,
        group: &str,
        member: Option<&str>,
        from: CatchUpFrom,
    ) -> Result<(), EngineError> {
        let lanes = self.lanes(group, member)?;
        if member.is_some() && self.group_mode(group) == Some(GroupMode::Failover) {
            return Err(EngineError::MemberOfFailoverGroup(group.to_owned()));
        }
        if let CatchUpFrom::Positions(positions) = &from {
            for position in positions {
                if self.queue.stream_id(&position.stream).is_none() {
                    let known: Vec<String> = self
                        .queue
                        .streams()
                        .await
                        .into_iter()
                        .map(|s| s.name)
                        .collect();
                    return Err(EngineError::UnknownStream {
                        stream: position.stream.clone(),
                        known: if known.is_empty() {
                            "none yet".to_owned()
                        } else {
                            known.join(", ")
                        },
                    });
                }
            }
        }
        for (_, lane) in lanes {
            let (reply, answer) = oneshot::channel();
            lane.send(LaneCommand::CatchUp {
                from: from.clone(),
                reply,
            })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
            answer
                .await
                .map_err(|_| EngineError::ShuttingDown)?
                .map_err(EngineError::CatchUp)?;
        }
        Ok(())
    }

    /// The dead letters of `group`.
    pub fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>, EngineError> {
        let mut out = Vec::new();
        for (cursor, _) in self.lanes(group, None)? {
            out.extend(self.queue.dead_letters(&cursor)?);
        }
        Ok(out)
    }

    /// Deliver the dead letters of `group` again; returns how many were
    /// queued for replay. Those accepted leave the dead-letter queue.
    pub async fn replay_dead_letters(&self, group: &str) -> Result<usize, EngineError> {
        let mut total = 0;
        for (_, lane) in self.lanes(group, None)? {
            let (reply, answer) = oneshot::channel();
            lane.send(LaneCommand::ReplayDeadLetters { reply })
                .await
                .map_err(|_| EngineError::ShuttingDown)?;
            total += answer.await.map_err(|_| EngineError::ShuttingDown)?;
        }
        if total > 0 {
            self.notices.emit(
                Notice::new(
                    safd_connector::event_ids::DEAD_LETTERS_REPLAYED,
                    format!("{total} dead letters of group `{group}` queued for replay"),
                )
                .with("group", group)
                .with("events", total),
            );
        }
        Ok(total)
    }

    /// Every stream's positions.
    pub async fn streams(&self) -> Vec<StreamStatus> {
        self.queue
            .streams()
            .await
            .into_iter()
            .map(|s| StreamStatus {
                name: s.name,
                first_seq: s.first_seq,
                next_seq: s.next_seq,
                bytes: s.bytes,
                cursor: s.cursor,
            })
            .collect()
    }

    /// Every source's state, by stream name.
    pub fn sources(&self) -> Vec<SourceStatus> {
        self.pumps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter_map(|running| running.source.as_ref().map(SourceState::status))
            .collect()
    }

    /// Every group's dispatchers.
    pub fn groups(&self) -> Vec<GroupStatus> {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|g| GroupStatus {
                name: g.name.clone(),
                mode: g.mode,
                streams: g.streams.clone(),
                lanes: g
                    .lanes
                    .iter()
                    .map(|l| {
                        l.status
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .clone()
                    })
                    .collect(),
            })
            .collect()
    }

    /// Per cursor and stream, how many stored events are not acknowledged.
    pub async fn lag(&self) -> BTreeMap<(String, String), u64> {
        let streams = self.queue.streams().await;
        let mut out = BTreeMap::new();
        for group in self.groups() {
            for lane in group.lanes {
                for stream in &streams {
                    let acked = lane.acked.get(&stream.name).copied().unwrap_or(0);
                    out.insert(
                        (lane.cursor.clone(), stream.name.clone()),
                        (stream.next_seq - 1).saturating_sub(acked),
                    );
                }
            }
        }
        out
    }

    /// Stop sources, settle in-flight deliveries, inject the last notices
    /// and flush. Everything ingested stays queued for the next start.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        self.shutdown.send_replace(true);
        let pumps = std::mem::take(&mut *self.pumps.lock().unwrap_or_else(PoisonError::into_inner));
        let groups =
            std::mem::take(&mut *self.groups.lock().unwrap_or_else(PoisonError::into_inner));
        let stopping = pumps
            .into_values()
            .chain(groups.into_iter().map(|g| g.running));
        // Sources and groups stop side by side: a full queue must not keep
        // a group from settling, nor a slow member keep a source waiting.
        stop_all(stopping).await;
        let mut tasks = std::mem::take(&mut *self.lock_tasks());
        while tasks.join_next().await.is_some() {}
        // The injector ends once every sender is gone; ours is the last
        // one besides the queue's copy, so stop it explicitly after a final
        // drain.
        let injector = self
            .injector
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(injector) = injector {
            tokio::task::yield_now().await;
            injector.abort();
            let _ = injector.await;
        }
        self.queue.flush().await?;
        Ok(())
    }
}

async fn stop_all(stopping: impl Iterator<Item = Running>) {
    let mut all = JoinSet::new();
    for running in stopping {
        all.spawn(running.stop());
    }
    while all.join_next().await.is_some() {}
}

/// Move safd's own notices into the `safd` stream, batching what arrives
/// together. A batch the store cannot take yet (it failed and awaits its
/// reopen) is kept and written once it can: "the store failed" (2007) is
/// itself one of them. Past `MAX_WAITING` notices waiting, the rest are
/// only logged; how many is stored (2010) once the store takes events
/// again.
async fn inject(queue: Arc<Queue>, agent_id: String, mut own_events: OwnEvents) {
    let mut unique = 0u64;
    let mut event_of = |notice: &Notice| {
        unique += 1;
        notice.to_event(&agent_id, unique - 1)
    };
    while let Some(batch) = own_events.next().await {
        let mut events: Vec<Event> = batch.iter().map(&mut event_of).collect();
        let left_out = own_events.take_left_out();
        if left_out > 0 {
            let notice = Notice::new(
                OWN_EVENTS_LEFT_OUT,
                format!(
                    "{left_out} of safd's own events were not stored in the `safd` stream: more \
                     than {MAX_WAITING} waited for the store; they are in safd's log"
                ),
            )
            .with("events", left_out);
            notice.log();
            events.push(event_of(&notice));
        }
        store_own_events(&queue, &events).await;
        own_events.stored(batch.len());
    }
}

/// Store `events` in the `safd` stream, retrying while the store is down.
/// Only a failure that a reopen cannot mend drops them (they were logged
/// when emitted).
async fn store_own_events(queue: &Queue, events: &[Event]) {
    let mut held = HeldBatch::default();
    let mut wait = Duration::from_millis(100);
    loop {
        let err = match queue.ingest_internal(SAFD_STREAM, events, &mut held).await {
            Ok(_) => return,
            Err(err) => err,
        };
        if !err.is_store_failure() {
            tracing::error!("cannot store safd's own events: {err}");
            return;
        }
        tracing::debug!("safd's own events wait for the store: {err}");
        let mut failure = queue.failure();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = failure.wait_for(Option::is_none) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

async fn enforce_retention(
    queue: Arc<Queue>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(err) = queue.enforce_retention().await {
            tracing::error!("retention pass failed: {err}");
        }
    }
}

/// How often sled's records (acks, and the index of events already durable
/// in segment files) are fsynced.
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

async fn flush_written(queue: Arc<Queue>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FLUSH_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(err) = queue.flush_if_written().await {
            tracing::error!("cannot make acknowledgements and the queue's index durable: {err}");
        }
    }
}
