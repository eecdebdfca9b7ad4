//! Running guest calls under limits, and rebuilding failed instances.
//!
//! Every call is bounded twice: an epoch deadline traps guest code that runs
//! too long, and an outer tokio timeout covers time the guest spends blocked
//! in host calls (which epochs cannot interrupt). Either way, and on any
//! trap, the store is discarded: a store that trapped cannot be entered
//! again. The next call rebuilds it after a backoff; too many failures within
//! a window disable the instance.

use crate::bindings::{self, source_world::safd::connector::types as wit};
use crate::call::{CallOutcome, arm, bounded, trap_summary};
use crate::config::{Limits, RestartPolicy};
use crate::plugin::Plugin;
use crate::report::Reporter;
use crate::sandbox::Sandbox;
use crate::state::InstanceState;
use safd_connector::{ConnectorError, Notice, SessionError, event_ids};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wasmtime::Store;

/// Everything needed to (re)build one connector instance, and its restart
/// history: kept here, not per session, because the engine opens a new
/// session after a failure, and "too many failures in a window" must count
/// them all.
pub(crate) struct InstanceSpec {
    pub(crate) plugin: Arc<Plugin>,
    pub(crate) name: Arc<str>,
    pub(crate) config: String,
    pub(crate) sandbox: Sandbox,
    pub(crate) limits: Limits,
    pub(crate) restarts: Mutex<RestartTracker>,
}

impl InstanceSpec {
    pub(crate) fn new(
        plugin: Arc<Plugin>,
        name: &str,
        config: String,
        sandbox: Sandbox,
        limits: Limits,
    ) -> Self {
        let restarts = Mutex::new(RestartTracker::new(limits.restart.clone()));
        Self {
            plugin,
            name: Arc::from(name),
            config,
            sandbox,
            limits,
            restarts,
        }
    }

    fn restarts(&self) -> std::sync::MutexGuard<'_, RestartTracker> {
        self.restarts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn new_store(&self) -> Result<Store<InstanceState>, SessionError> {
        let state = InstanceState::new(
            self.name.clone(),
            &self.sandbox,
            self.limits.memory_bytes,
            self.plugin.reporter().clone(),
        )
        .map_err(|e| SessionError::Start(e.to_string()))?;
        Ok(state.into_store(self.plugin.engine()))
    }
}

/// One bounded call on a session's live instance: build the instance if
/// needed, arm the deadline, run the call under the outer timeout, and settle
/// the outcome (discarding the instance on failure). `$live` names the live
/// instance inside `$call`.
macro_rules! call_live {
    ($session:expr, |$live:ident| $call:expr) => {{
        let timeout = $session.supervisor.call_timeout();
        let $live = $session.live().await?;
        $crate::call::arm(&mut $live.store, timeout);
        let denials = $live.store.data().denials.clone();
        let denied_before = denials.load(std::sync::atomic::Ordering::Relaxed);
        let outcome = $crate::call::bounded(timeout, $call).await;
        let refused = $live.store.data().memory.refused;
        let denied = denials.load(std::sync::atomic::Ordering::Relaxed) != denied_before;
        $crate::supervisor::missing_grant($session.supervisor.settle(outcome, refused), denied)
    }};
}
pub(crate) use call_live;

/// An `unauthorized` answer from a call during which the sandbox refused
/// an access is a missing grant ([`SessionError::NotGranted`]), not a
/// receiver turning safd's credentials down.
pub(crate) fn missing_grant<T>(
    settled: Result<T, SessionError>,
    denied: bool,
) -> Result<T, SessionError> {
    match settled {
        Err(SessionError::Connector(ConnectorError::Unauthorized(reason))) if denied => {
            Err(SessionError::NotGranted(reason))
        }
        other => other,
    }
}

/// A live instance: its store, whatever else the session keeps of it.
pub(crate) trait LiveInstance {
    fn store(&self) -> &Store<InstanceState>;
}

/// The share of the memory limit (in %) past which a live instance is
/// rebuilt at the next point where nothing of it is needed: memory a guest
/// has grown never shrinks, and a guest that keeps growing (a leak in the
/// plugin, or in its language's bindings: componentize-py 0.25 never frees
/// a `list<u8>` it passes to the host) would otherwise run out in the
/// middle of a call — a trap, and a delivery written twice to a receiver
/// that cannot tell.
const RECYCLE_AT_PERCENT: usize = 75;

/// Owns one session's live instance (of type `L`); the restart history is
/// the connector instance's ([`InstanceSpec`]).
pub(crate) struct Supervisor<L> {
    pub(crate) spec: Arc<InstanceSpec>,
    pub(crate) live: Option<L>,
    /// The next instance built replaces one that failed.
    pending_restart: bool,
}

impl<L> Supervisor<L> {
    pub(crate) fn new(spec: Arc<InstanceSpec>) -> Self {
        Self {
            spec,
            live: None,
            pending_restart: false,
        }
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        self.spec.limits.call_timeout
    }

    /// Drop the live instance if its memory reached [`RECYCLE_AT_PERCENT`]
    /// of the limit, so the next call builds a fresh one. Only for callers
    /// at a point where the instance holds nothing the session still
    /// needs; not a failure (no backoff, not counted towards disabling).
    pub(crate) fn recycle_if_near_limit(&mut self) -> bool
    where
        L: LiveInstance,
    {
        let Some(live) = &self.live else {
            return false;
        };
        let memory = &live.store().data().memory;
        if !memory.at_least(RECYCLE_AT_PERCENT) {
            return false;
        }
        let used = memory.used();
        self.live = None;
        self.spec.plugin.reporter().emit(
            Notice::new(
                event_ids::PLUGIN_RECYCLED,
                format!(
                    "plugin instance rebuilt between calls: it held {} MiB of its {} MiB memory \
                     limit (its memory only grows; if this repeats often, the plugin leaks)",
                    used >> 20,
                    self.spec.limits.memory_bytes >> 20
                ),
            )
            .with("connector", &self.spec.name)
            .with("memory_bytes", used),
        );
        true
    }

    /// Wait out the backoff before (re)building the instance.
    async fn before_start(&mut self) -> Result<(), SessionError> {
        let not_before = self.spec.restarts().before_start()?;
        if let Some(at) = not_before {
            tokio::time::sleep_until(at.into()).await;
        }
        Ok(())
    }

    /// The live instance, building one (after any backoff) if there is none.
    /// `build` instantiates and constructs the session resource in the fresh
    /// store; `assemble` packages the result.
    pub(crate) async fn live_or_start<P>(
        &mut self,
        build: impl AsyncFnOnce(
            &InstanceSpec,
            &mut Store<InstanceState>,
        ) -> wasmtime::Result<Result<P, wit::ConnectorError>>,
        assemble: impl FnOnce(Store<InstanceState>, P) -> L,
    ) -> Result<&mut L, SessionError> {
        if let Some(live) = self.live.take() {
            return Ok(self.live.insert(live));
        }
        self.before_start().await?;
        let spec = self.spec.clone();
        let timeout = self.call_timeout();
        let mut store = spec.new_store()?;
        arm(&mut store, timeout);
        let outcome = bounded(timeout, build(&spec, &mut store)).await;
        let refused = store.data().memory.refused;
        let parts = self.settle(outcome, refused)?;
        Ok(self.started(assemble(store, parts)))
    }

    /// Install a freshly built instance.
    fn started(&mut self, live: L) -> &mut L {
        if self.pending_restart {
            self.pending_restart = false;
            self.spec.plugin.reporter().emit(
                Notice::new(event_ids::PLUGIN_RESTARTED, "plugin instance rebuilt")
                    .with("connector", &self.spec.name),
            );
        }
        self.live.insert(live)
    }

    /// Turn a call's outcome into the session's result; discard the
    /// instance if it failed.
    pub(crate) fn settle<T>(
        &mut self,
        outcome: CallOutcome<Result<T, wit::ConnectorError>>,
        memory_refused: bool,
    ) -> Result<T, SessionError> {
        let name = &*self.spec.name;
        let err = match outcome {
            CallOutcome::Returned(Ok(value)) => return Ok(value),
            CallOutcome::Returned(Err(err)) => {
                let err = bindings::connector_error(err);
                let ConnectorError::Fatal(message) = &err else {
                    return Err(err.into());
                };
                self.spec.plugin.reporter().emit(
                    Notice::new(
                        event_ids::PLUGIN_FATAL,
                        format!("plugin reported a fatal error, rebuilding it: {message}"),
                    )
                    .with("connector", name),
                );
                SessionError::Connector(err)
            }
            CallOutcome::Trapped(trap) => {
                let reason = if memory_refused {
                    format!(
                        "memory limit of {} MiB reached ({})",
                        self.spec.limits.memory_bytes >> 20,
                        trap_summary(&trap)
                    )
                } else {
                    trap_summary(&trap)
                };
                self.spec.plugin.reporter().emit(
                    Notice::new(
                        event_ids::PLUGIN_TRAPPED,
                        format!("plugin trapped, rebuilding it: {reason}"),
                    )
                    .with("connector", name),
                );
                tracing::debug!(connector = name, "trap details: {trap:?}");
                SessionError::Trapped(reason)
            }
            CallOutcome::Elapsed => {
                let limit = self.call_timeout();
                self.spec.plugin.reporter().emit(
                    Notice::new(
                        event_ids::PLUGIN_TIMED_OUT,
                        "plugin call interrupted at its time limit, rebuilding it",
                    )
                    .with("connector", name)
                    .with("limit_ms", limit.as_millis()),
                );
                SessionError::TimedOut(limit)
            }
        };
        self.live = None;
        self.pending_restart = true;
        if let Some(disabled) = self
            .spec
            .restarts()
            .record_failure(name, self.spec.plugin.reporter())
        {
            return Err(disabled);
        }
        Err(err)
    }
}

/// Failure history of one connector instance, across its sessions.
pub(crate) struct RestartTracker {
    policy: RestartPolicy,
    failures: VecDeque<Instant>,
    not_before: Option<Instant>,
    disabled: bool,
}

impl RestartTracker {
    fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            failures: VecDeque::new(),
            not_before: None,
            disabled: false,
        }
    }

    fn disabled_error(&self) -> SessionError {
        SessionError::Disabled {
            restarts: self.policy.max_restarts,
            window: self.policy.window,
        }
    }

    /// Refused once disabled; otherwise when a (re)build may start. Every
    /// session of the instance waits out the same backoff.
    fn before_start(&self) -> Result<Option<Instant>, SessionError> {
        if self.disabled {
            return Err(self.disabled_error());
        }
        Ok(self.not_before.filter(|at| *at > Instant::now()))
    }

    /// Record a failure; returns the `Disabled` error once the instance has
    /// failed too often.
    fn record_failure(&mut self, connector: &str, reporter: &Reporter) -> Option<SessionError> {
        let now = Instant::now();
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        let recent = self.failures.len() as u32;
        if recent > self.policy.max_restarts {
            self.disabled = true;
            reporter.emit(
                Notice::new(
                    event_ids::PLUGIN_DISABLED,
                    "plugin instance disabled after repeated failures; fix the plugin or its \
                     config, then reload",
                )
                .with("connector", connector)
                .with("failures", recent)
                .with("window_s", self.policy.window.as_secs()),
            );
            return Some(self.disabled_error());
        }
        let factor = 1u32 << (recent - 1).min(16);
        let backoff = self
            .policy
            .initial_backoff
            .saturating_mul(factor)
            .min(self.policy.max_backoff);
        self.not_before = Some(now + backoff);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_disables() {
        let mut t = RestartTracker::new(RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            max_restarts: 3,
            window: Duration::from_secs(60),
        });
        let mut backoffs = Vec::new();
        for _ in 0..3 {
            assert!(t.record_failure("t", &Reporter::default()).is_none());
            let wait = t.not_before.unwrap().duration_since(Instant::now());
            backoffs.push(wait);
        }
        assert!(backoffs[0] <= Duration::from_millis(100));
        assert!(
            backoffs[1] > Duration::from_millis(100) && backoffs[1] <= Duration::from_millis(200)
        );
        assert!(
            backoffs[2] > Duration::from_millis(200) && backoffs[2] <= Duration::from_millis(300)
        );
        assert!(matches!(
            t.record_failure("t", &Reporter::default()),
            Some(SessionError::Disabled { restarts: 3, .. })
        ));
        assert!(t.disabled);
    }
}
