//! The data inside one connector instance's `Store`.

use crate::bindings::source_world::safd::connector::{log, types};
use crate::sandbox::{GrantError, HttpPolicy, Sandbox};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub(crate) struct InstanceState {
    pub(crate) connector: Arc<str>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_policy: HttpPolicy,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
    /// When the current call must end; checked on every epoch tick.
    pub(crate) deadline: Option<Instant>,
}

/// The error an epoch callback raises when a call runs past its deadline;
/// recognised to report a timeout rather than a generic trap.
#[derive(Debug, thiserror::Error)]
#[error("call exceeded its wall-clock limit")]
pub(crate) struct DeadlineExceeded;

impl InstanceState {
    pub(crate) fn new(
        connector: Arc<str>,
        sandbox: &Sandbox,
        memory_bytes: usize,
    ) -> Result<Self, GrantError> {
        Ok(Self {
            wasi: sandbox.wasi_ctx(&connector)?,
            http: WasiHttpCtx::new(),
            http_policy: sandbox.http_policy(&connector),
            table: ResourceTable::new(),
            memory: MemoryCap::new(memory_bytes),
            deadline: None,
            connector,
        })
    }

    /// A store with limits and deadline enforcement installed.
    pub(crate) fn into_store(self, engine: &wasmtime::Engine) -> Store<Self> {
        let mut store = Store::new(engine, self);
        store.limiter(|state| &mut state.memory);
        // While a call runs, wasmtime calls this on every epoch tick (10 ms):
        // past the deadline the call traps; before it, the guest yields to
        // the executor so a busy plugin never starves other instances.
        store.epoch_deadline_callback(|ctx| match ctx.data().deadline {
            Some(deadline) if Instant::now() >= deadline => Err(DeadlineExceeded.into()),
            _ => Ok(UpdateDeadline::Yield(1)),
        });
        store.set_epoch_deadline(1);
        store
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

impl types::Host for InstanceState {}

impl log::Host for InstanceState {
    fn emit(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) {
        let message = crate::log_text::clean(&message, crate::log_text::MAX_MESSAGE);
        let fields = crate::log_text::fields(&fields);
        let connector = &*self.connector;
        match level {
            log::Level::Trace => tracing::trace!(connector, fields, "{message}"),
            log::Level::Debug => tracing::debug!(connector, fields, "{message}"),
            log::Level::Info => tracing::info!(connector, fields, "{message}"),
            log::Level::Warn => tracing::warn!(connector, fields, "{message}"),
            log::Level::Error => tracing::error!(connector, fields, "{message}"),
        }
    }
}

/// Caps an instance's linear memory, and remembers a refused growth so a
/// resulting trap can be reported as "memory limit reached".
pub(crate) struct MemoryCap {
    max_bytes: usize,
    pub(crate) refused: bool,
}

/// Table elements are host-side memory too; no legitimate connector needs
/// more than this.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl MemoryCap {
    fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            refused: false,
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
