//! Moving a source's events into the queue: poll, ingest (durable), then
//! commit. A source is told to commit only after its batch was fsynced, so
//! a crash at any point re-reads at most what was not yet durable.
//!
//! When a poll says more events are ready, the next poll runs while its
//! batch is being stored: the plugin reads and frames the next events on
//! one core while the queue encodes, writes and syncs on the other (the
//! store, about 0.6 ms per 1 024 events, no longer adds to the poll's
//! time; `docs/benchmarks.md`). Commits
//! stay in order, each after its batch is durable; the WIT contract has
//! always said a commit covers everything up to its cursor, not that it
//! follows the last poll. A batch read ahead and not yet stored is simply
//! read again after a restart or a failed session, like any uncommitted
//! one.

use crate::notice::{Notice, Notices};
use crate::queue::{HeldBatch, Queue};
use crate::source_state::{SourceActivity, SourceState};
use safd_connector::event_ids::{CATCH_UP_GAP, QUEUE_WRITE_FAILED, SOURCE_FAILED};
use safd_connector::{
    ConnectorError, Cursor, PollLimits, SessionError, SourceBatch, SourceConnector, SourceSession,
    Timestamp,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How a source is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PumpTuning {
    pub limits: PollLimits,
    /// Wait after a poll that said no more events are ready.
    pub idle_wait: Duration,
    /// A poll, commit or seek taking longer fails the session.
    pub call_timeout: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for PumpTuning {
    fn default() -> Self {
        Self {
            limits: PollLimits::default(),
            // An idle poll costs microseconds; waiting long between them
            // is what an event written just after a poll waits for (50 ms
            // put the p99 of event → server commit at 75 ms).
            idle_wait: Duration::from_millis(10),
            call_timeout: Duration::from_secs(10),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
        }
    }
}

/// Requests to a running source, from catch-up.
#[derive(Debug)]
pub(crate) enum PumpCommand {
    /// Deep catch-up: re-read from an event time.
    Seek(SeekRequest),
}

/// A deep catch-up asked of a source, and what it is for: if the source
/// cannot re-read, these events are a gap (4005).
#[derive(Debug)]
pub(crate) struct SeekRequest {
    pub time: Timestamp,
    pub gap: Gap,
}

/// Seqs of a stream that a catch-up of a member asked for and the queue no
/// longer holds.
#[derive(Debug)]
pub(crate) struct Gap {
    pub group: String,
    pub member: String,
    pub stream: String,
    pub first_seq: u64,
    pub last_seq: u64,
}

impl Gap {
    /// The critical notice (4005) saying these events cannot be re-sent,
    /// and `why`.
    pub(crate) fn notice(&self, why: &str) -> Notice {
        Notice::new(
            CATCH_UP_GAP,
            format!(
                "catch-up of member `{}` cannot be complete: seqs {}..{} of stream `{}` left \
                 the replay window and {why}",
                self.member, self.first_seq, self.last_seq, self.stream
            ),
        )
        .with("group", &self.group)
        .with("member", &self.member)
        .with("stream", &self.stream)
        .with("first_seq", self.first_seq)
        .with("last_seq", self.last_seq)
    }
}

/// How a seek failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeekFailure {
    /// `transient`, `backpressure`, no answer in time: worth another try.
    Passing,
    /// `rejected`: the source cannot read its events again (no history);
    /// its session is as it was.
    Refused,
    /// Anything else (`fatal`, a trap): the session is reopened.
    Failed,
}

/// Tries of a seek that fails with a passing error (`transient`,
/// `backpressure`, no answer in time) before the catch-up's gap is
/// announced; any other error gives up at once.
const SEEK_ATTEMPTS: u32 = 5;

/// The running sources by stream name, so a catch-up can ask one to seek.
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceDirectory {
    by_stream: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<PumpCommand>>>>,
}

impl SourceDirectory {
    pub(crate) fn insert(&self, stream: &str, commands: mpsc::UnboundedSender<PumpCommand>) {
        self.by_stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(stream.to_owned(), commands);
    }

    pub(crate) fn remove(&self, stream: &str) {
        self.by_stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(stream);
    }

    /// Ask the source of `stream` to re-read from `request.time`; the
    /// request back when no running source produces that stream.
    pub(crate) fn seek(&self, stream: &str, request: SeekRequest) -> Result<(), SeekRequest> {
        let sources = self
            .by_stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = sources.get(stream) else {
            return Err(request);
        };
        tx.send(PumpCommand::Seek(request))
            .map_err(|mpsc::error::SendError(PumpCommand::Seek(request))| request)
    }
}

/// How long a store may take before the source counts as held back.
const HELD_BACK_AFTER: Duration = Duration::from_secs(1);

pub(crate) struct Pump {
    pub(crate) stream: String,
    pub(crate) connector: Arc<dyn SourceConnector>,
    pub(crate) queue: Arc<Queue>,
    pub(crate) notices: Notices,
    pub(crate) tuning: PumpTuning,
    pub(crate) commands: mpsc::UnboundedReceiver<PumpCommand>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) state: SourceState,
}

enum Step {
    Continue,
    Idle,
    Failed(String),
}

impl Pump {
    pub(crate) async fn run(mut self) {
        let mut failures = 0u32;
        let mut session: Option<Box<dyn SourceSession>> = None;
        // With the failed tries so far.
        let mut pending_seek: Option<(SeekRequest, u32)> = None;
        // A batch polled while the one before it was stored.
        let mut read_ahead: Option<SourceBatch> = None;
        while !*self.shutdown.borrow() {
            while let Ok(PumpCommand::Seek(request)) = self.commands.try_recv() {
                pending_seek = Some((request, 0));
            }
            if session.is_none() {
                read_ahead = None;
                self.state.set(SourceActivity::Starting);
                match self.open().await {
                    Ok(opened) => {
                        self.state.set(SourceActivity::Running);
                        session = Some(opened);
                    }
                    Err(reason) => {
                        failures += 1;
                        self.source_failed(&reason, failures);
                        self.pause(self.retry_wait(failures)).await;
                        continue;
                    }
                }
            }
            let Some(live) = session.as_mut() else {
                continue;
            };
            // A batch read before the seek was asked for is stored first.
            if read_ahead.is_none()
                && let Some((request, tries)) = pending_seek.take()
            {
                let time = request.time;
                match self.seek(live.as_mut(), time).await {
                    Ok(()) => {
                        tracing::info!(stream = %self.stream, time, "source repositioned for a deep catch-up")
                    }
                    Err((reason, failure)) => {
                        let tries = tries + 1;
                        if failure == SeekFailure::Passing && tries < SEEK_ATTEMPTS {
                            pending_seek = Some((request, tries));
                        } else {
                            self.notices.emit(request.gap.notice(&format!(
                                "the source cannot re-read them (its seek to time {time} \
                                 answered: {reason})"
                            )));
                        }
                        // A source that refused reads on as it was; after
                        // any other failure it is reopened from the last
                        // durable cursor (it may have moved).
                        if failure != SeekFailure::Refused {
                            failures += 1;
                            session = None;
                            self.source_failed(&format!("seek: {reason}"), failures);
                            self.pause(self.retry_wait(failures)).await;
                            continue;
                        }
                    }
                }
            }
            let may_read_ahead = pending_seek.is_none();
            match self.step(live, &mut read_ahead, may_read_ahead).await {
                Step::Continue => {
                    if failures > 0 {
                        self.state.set(SourceActivity::Running);
                    }
                    failures = 0;
                }
                Step::Idle => {
                    if failures > 0 {
                        self.state.set(SourceActivity::Running);
                    }
                    failures = 0;
                    self.pause(self.tuning.idle_wait).await;
                }
                Step::Failed(reason) => {
                    failures += 1;
                    // Reopened from the last durable cursor: whatever the
                    // failed session had read but not handed over is read
                    // again.
                    session = None;
                    self.source_failed(&reason, failures);
                    self.pause(self.retry_wait(failures)).await;
                }
            }
        }
    }

    async fn open(&self) -> Result<Box<dyn SourceSession>, String> {
        let resume_from: Option<Cursor> = self
            .queue
            .streams()
            .await
            .into_iter()
            .find(|s| s.name == self.stream)
            .and_then(|s| s.cursor);
        self.timed(self.connector.open(resume_from)).await
    }

    /// One poll → ingest → commit round; the poll is the one read ahead
    /// by the round before, if it read one. When the batch says more are
    /// ready (and `may_read_ahead`), the next poll runs while this batch is
    /// stored, and is kept in `read_ahead` for the next round.
    async fn step(
        &mut self,
        session: &mut Box<dyn SourceSession>,
        read_ahead: &mut Option<SourceBatch>,
        may_read_ahead: bool,
    ) -> Step {
        let batch: SourceBatch = match read_ahead.take() {
            Some(batch) => batch,
            None => match self.timed(session.poll(self.tuning.limits)).await {
                Ok(batch) => batch,
                Err(reason) => return Step::Failed(reason),
            },
        };
        if batch.events.is_empty() && batch.cursor.is_none() {
            return if batch.more {
                Step::Continue
            } else {
                Step::Idle
            };
        }
        let storer = self.storer();
        let (stored, batch, next) = if batch.more && may_read_ahead {
            // The store on a task of its own, so that it runs on another
            // core while this one runs the plugin's next poll.
            let storing = tokio::spawn(storer.store(batch));
            // A task spawned from a worker waits in that worker's LIFO
            // slot, which other workers cannot steal, until the spawner
            // yields: without this the store started only after the poll
            // (3.3 ms for 1 024 events instead of 0.6 ms beside it).
            tokio::task::yield_now().await;
            let next = self.timed(session.poll(self.tuning.limits)).await;
            match storing.await {
                Ok((stored, batch)) => (stored, batch, Some(next)),
                Err(err) => {
                    // Not committed: read again by the reopened session.
                    return Step::Failed(format!("storing a batch ended abnormally: {err}"));
                }
            }
        } else {
            let (stored, batch) = storer.store(batch).await;
            (stored, batch, None)
        };
        if stored.is_none() {
            // Shut down before the batch was durable: the source was not
            // told to move on, so it is read again at the next start.
            return Step::Idle;
        }
        if let Some(cursor) = &batch.cursor
            && let Err(reason) = self.timed(session.commit(cursor)).await
        {
            // The events are durable; a failed commit only means the source
            // may hand some of them over again (deduplicated downstream).
            return Step::Failed(reason);
        }
        match next {
            Some(Ok(next)) => *read_ahead = Some(next),
            Some(Err(reason)) => return Step::Failed(reason),
            None => {}
        }
        if batch.more {
            Step::Continue
        } else {
            Step::Idle
        }
    }

    fn storer(&self) -> Storer {
        Storer {
            stream: self.stream.clone(),
            queue: self.queue.clone(),
            notices: self.notices.clone(),
            state: self.state.clone(),
            shutdown: self.shutdown.clone(),
            tuning: self.tuning,
        }
    }

    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, SessionError>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.tuning.call_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms",
                self.tuning.call_timeout.as_millis()
            )),
        }
    }

    /// Seek `live` to `time`; on failure why, and what kind of failure.
    async fn seek(
        &self,
        live: &mut dyn SourceSession,
        time: Timestamp,
    ) -> Result<(), (String, SeekFailure)> {
        match tokio::time::timeout(self.tuning.call_timeout, live.seek(time)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                let failure = match err {
                    SessionError::TimedOut(_)
                    | SessionError::Connector(
                        ConnectorError::Transient(_) | ConnectorError::Backpressure { .. },
                    ) => SeekFailure::Passing,
                    SessionError::Connector(ConnectorError::Rejected(_)) => SeekFailure::Refused,
                    _ => SeekFailure::Failed,
                };
                Err((err.to_string(), failure))
            }
            Err(_) => Err((
                format!(
                    "no answer within {} ms",
                    self.tuning.call_timeout.as_millis()
                ),
                SeekFailure::Passing,
            )),
        }
    }

    fn source_failed(&self, reason: &str, failures: u32) {
        self.state.failed(reason, failures);
        if failures == 1 || failures.is_power_of_two() {
            self.notices.emit(
                Notice::new(
                    SOURCE_FAILED,
                    format!(
                        "source of stream `{}` failed: {reason}; reopening from its last \
                         durable cursor",
                        self.stream
                    ),
                )
                .with("stream", &self.stream)
                .with("failures", failures),
            );
        }
    }

    fn retry_wait(&self, failures: u32) -> Duration {
        retry_wait(&self.tuning, failures)
    }

    /// Sleep, but wake at once on shutdown.
    async fn pause(&mut self, wait: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.shutdown.changed() => {}
        }
    }
}

fn retry_wait(tuning: &PumpTuning, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    tuning
        .retry_min
        .saturating_mul(1 << exponent)
        .min(tuning.retry_max)
}

/// What storing a source's batch needs, apart from the session: moved onto
/// a task of its own while the session reads ahead.
struct Storer {
    stream: String,
    queue: Arc<Queue>,
    notices: Notices,
    state: SourceState,
    shutdown: watch::Receiver<bool>,
    tuning: PumpTuning,
}

impl Storer {
    /// Store `batch` durably, retrying a failing write for as long as it
    /// takes: a full or failing disk delays the source, it never loses
    /// what it handed over. `None` when safd shuts down first. The batch
    /// comes back for its commit.
    async fn store(mut self, batch: SourceBatch) -> (Option<()>, SourceBatch) {
        let mut attempt = 0u32;
        let mut held = HeldBatch::default();
        loop {
            // A full queue (`when_full = "block"`) can hold this wait for
            // as long as delivery is down; shutdown must not. Giving up
            // here loses nothing: the source was not told to move on.
            let (stored, waiting) = {
                let ingest = self.queue.ingest_held(
                    &self.stream,
                    &batch.events,
                    batch.cursor.as_ref(),
                    &mut held,
                );
                tokio::pin!(ingest);
                let mut waiting = false;
                let stored = loop {
                    tokio::select! {
                        stored = &mut ingest => break Some(stored),
                        _ = self.shutdown.changed() => break None,
                        // A store that takes this long waits for room (a full
                        // queue, a data disk short of min_free_mib): say so.
                        _ = tokio::time::sleep(HELD_BACK_AFTER), if !waiting => {
                            waiting = true;
                            self.state.held_back(
                                "waiting for room in the queue (full, or the data disk short of \
                                 min_free_mib)",
                            );
                        }
                    }
                };
                (stored, waiting)
            };
            let Some(stored) = stored else {
                return (None, batch);
            };
            match stored {
                Ok(_) => {
                    if attempt > 0 || waiting {
                        self.state.set(SourceActivity::Running);
                    }
                    return (Some(()), batch);
                }
                Err(err) => {
                    attempt += 1;
                    self.state
                        .held_back(&format!("cannot store its events: {err}"));
                    if attempt == 1 || attempt.is_power_of_two() {
                        self.notices.emit(
                            Notice::new(
                                QUEUE_WRITE_FAILED,
                                format!(
                                    "cannot store events of stream `{}`: {err}; the source is \
                                     held back and the write retried",
                                    self.stream
                                ),
                            )
                            .with("stream", &self.stream)
                            .with("attempt", attempt),
                        );
                    }
                    if *self.shutdown.borrow() {
                        return (None, batch);
                    }
                    self.pause_until_writable(retry_wait(&self.tuning, attempt))
                        .await;
                }
            }
        }
    }

    /// Sleep before retrying a write, but wake at once when a failed store
    /// was reopened (or on shutdown).
    async fn pause_until_writable(&mut self, wait: Duration) {
        let mut failure = self.queue.failure();
        if failure.borrow_and_update().is_none() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.changed() => {}
            }
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = failure.wait_for(Option::is_none) => {}
            _ = self.shutdown.changed() => {}
        }
    }
}
