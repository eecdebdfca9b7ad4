//! Bounding one call into a guest: the wall clock armed on the store
//! (epoch deadline) and an outer timeout for time spent in host calls,
//! which the epoch does not see; and the outcome of such a call.

use crate::state::{DeadlineExceeded, InstanceState};
use std::future::Future;
use std::time::{Duration, Instant};
use wasmtime::Store;

/// Time the outer timeout allows beyond the epoch deadline, so that guest
/// code is normally stopped by the (cleaner) epoch trap.
const OUTER_GRACE: Duration = Duration::from_millis(100);

/// How a bounded call ended.
pub(crate) enum CallOutcome<T> {
    Returned(T),
    Trapped(wasmtime::Error),
    Elapsed,
}

/// Start the wall clock of a call on `store`.
pub(crate) fn arm(store: &mut Store<InstanceState>, timeout: Duration) {
    store.data_mut().deadline = Some(Instant::now() + timeout);
    store.set_epoch_deadline(1);
}

/// Run a call that was armed with `arm`, under the outer timeout.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> CallOutcome<T> {
    match tokio::time::timeout(timeout + OUTER_GRACE, call).await {
        Ok(Ok(value)) => CallOutcome::Returned(value),
        Ok(Err(err)) if err.downcast_ref::<DeadlineExceeded>().is_some() => CallOutcome::Elapsed,
        Ok(Err(err)) => CallOutcome::Trapped(err),
        Err(_) => CallOutcome::Elapsed,
    }
}

/// One line for the operator: the trap code (e.g. "wasm `unreachable`
/// instruction executed") rather than the multi-line wasm backtrace.
pub(crate) fn trap_summary(err: &wasmtime::Error) -> String {
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        return trap.to_string();
    }
    err.chain()
        .last()
        .map(|cause| cause.to_string())
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}
