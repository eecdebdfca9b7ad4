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
    /// The sandbox's count of refused accesses.
    pub(crate) denials: Arc<std::sync::atomic::AtomicU64>,
    /// What the `tls` interface may connect to and listen on.
    pub(crate) tls_sockets: crate::tls_socket::TlsSockets,
    /// Where `receiver-notice` calls go as numbered events, and the streams
    /// already reported (once per stream while the instance lives).
    pub(crate) notices: crate::receiver_notice::ReceiverNotices,
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
        reporter: crate::report::Reporter,
    ) -> Result<Self, GrantError> {
        let mut table = ResourceTable::new();
        table.set_max_capacity(max_resources(sandbox));
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_HTTP_FIELDS_BYTES);
        Ok(Self {
            wasi: sandbox.wasi_ctx(&connector)?,
            http,
            http_policy: sandbox.http_policy(&connector),
            table,
            memory: MemoryCap::new(memory_bytes),
            deadline: None,
            denials: sandbox.denials.clone(),
            tls_sockets: sandbox.tls_sockets(&connector),
            notices: crate::receiver_notice::ReceiverNotices::new(reporter),
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

impl InstanceState {
    /// The instance's host objects (streams, pollables, listeners).
    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
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

/// Host-side objects (open files, sockets, pollables, HTTP fields and
/// bodies…) one instance may hold at once. Each is host memory the memory
/// limit does not see; a connector holds a handful.
pub(crate) const MAX_RESOURCES: usize = 1024;

/// Connections an instance granted `listen` may hold open at once (net-in's
/// `max_connections` goes up to this).
pub(crate) const MAX_ACCEPTED_CONNECTIONS: usize = 10_000;

/// Host objects one accepted connection holds: its socket and its two
/// streams (wasi-libc keeps them for the connection's life), and a
/// pollable while the guest waits on it.
const RESOURCES_PER_CONNECTION: usize = 4;

/// What an instance may hold: [`MAX_RESOURCES`], and for one granted
/// `listen` room for [`MAX_ACCEPTED_CONNECTIONS`] on top (with 1 024 alone
/// a listener trapped at about 340 connections, losing them all).
fn max_resources(sandbox: &Sandbox) -> usize {
    if sandbox.listen.is_empty() {
        MAX_RESOURCES
    } else {
        MAX_RESOURCES + RESOURCES_PER_CONNECTION * MAX_ACCEPTED_CONNECTIONS
    }
}

/// Bytes of one set of HTTP header fields (wasmtime's default is 128 KiB;
/// with [`MAX_RESOURCES`] sets that would be 128 MiB outside the limit).
const MAX_HTTP_FIELDS_BYTES: usize = 16 * 1024;

/// Core instances, linear memories and tables in one store. A Rust
/// plugin built by wit-component has 3 core instances, 1 memory and 2
/// tables (measured by lowering these until the shipped plugins failed);
/// components made from other languages link a few more modules. Since
/// memories and tables are capped by their total size, these counts only
/// bound the bookkeeping per store.
pub(crate) const MAX_INSTANCES: usize = 32;
pub(crate) const MAX_MEMORIES: usize = 4;
pub(crate) const MAX_TABLES: usize = 16;

/// Table elements are host-side memory too; no legitimate connector needs
/// more than this, and each counts towards the memory limit at this size.
const MAX_TABLE_ELEMENTS: usize = 100_000;
const TABLE_ELEMENT_BYTES: usize = 16;

/// Caps what one instance's linear memories and tables hold together, and
/// how many of them (and of core instances) it may create; remembers a
/// refused growth so a resulting trap can be reported as "memory limit
/// reached".
pub(crate) struct MemoryCap {
    max_bytes: usize,
    /// Bytes of every memory and table of the instance so far.
    used: usize,
    pub(crate) refused: bool,
}

impl MemoryCap {
    fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            used: 0,
            refused: false,
        }
    }

    /// Whether the instance's memories and tables hold `percent` % of the
    /// limit or more.
    pub(crate) fn at_least(&self, percent: usize) -> bool {
        self.used >= self.max_bytes / 100 * percent
    }

    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// Grow the instance's total from `current` to `desired` bytes of one
    /// memory or table, if the total stays under the limit.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let next = self.used.saturating_sub(current).saturating_add(desired);
        if next > self.max_bytes {
            self.refused = true;
            return false;
        }
        self.used = next;
        true
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.refused = true;
            return Ok(false);
        }
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A core module with `memories` memories of one 64 KiB page each,
    /// written out by hand (magic, version, memory section).
    fn module_with_memories(memories: u8) -> Vec<u8> {
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend_from_slice(&[5, 1 + 2 * memories, memories]);
        for _ in 0..memories {
            wasm.extend_from_slice(&[0x00, 0x01]);
        }
        wasm
    }

    fn instantiate(memories: u8, max_bytes: usize) -> wasmtime::Result<()> {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, module_with_memories(memories))?;
        let mut store = Store::new(&engine, MemoryCap::new(max_bytes));
        store.limiter(|cap| cap);
        wasmtime::Instance::new(&mut store, &module, &[]).map(drop)
    }

    #[test]
    fn memories_per_instance_are_limited_in_number() {
        instantiate(MAX_MEMORIES as u8, 1 << 20).unwrap();
        let err = instantiate(MAX_MEMORIES as u8 + 3, 1 << 20).unwrap_err();
        assert!(format!("{err:?}").contains("memory"), "{err:?}");
    }

    /// The limit is a total across memories: two memories of 64 KiB do not
    /// fit in 100 KiB, though each would.
    #[test]
    fn the_memory_limit_is_a_total_across_memories() {
        instantiate(1, 100 << 10).unwrap();
        assert!(instantiate(2, 100 << 10).is_err());
        instantiate(2, 128 << 10).unwrap();
    }

    #[test]
    fn tables_count_towards_the_total() {
        let mut cap = MemoryCap::new(1 << 20);
        assert!(cap.grow(0, 1 << 19));
        // 40 000 elements of 16 bytes: 640 KiB more is over 1 MiB.
        assert!(
            !cap.table_growing(0, 40_000, None).unwrap(),
            "table refused"
        );
        assert!(cap.refused);
        assert!(cap.table_growing(0, 1_000, None).unwrap());
        assert!(!cap.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap());
    }
}
