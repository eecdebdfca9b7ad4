//! Source connectors backed by a WebAssembly plugin.

use crate::bindings::{self, source_world::Source};
use crate::supervisor::{InstanceSpec, Supervisor, arm, bounded};
use async_trait::async_trait;
use safd_connector::{
    Cursor, PollLimits, SessionError, SourceBatch, SourceConnector, SourceSession, Timestamp,
};
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

use crate::state::InstanceState;

/// A configured source instance; opens sessions.
pub struct WasmSource {
    spec: Arc<InstanceSpec>,
}

impl std::fmt::Debug for WasmSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmSource")
            .field("name", &self.spec.name)
            .finish_non_exhaustive()
    }
}

impl WasmSource {
    pub(crate) fn new(spec: Arc<InstanceSpec>) -> Self {
        Self { spec }
    }

    /// Open a session with its concrete type (the trait returns it boxed).
    pub async fn open_session(
        &self,
        resume_from: Option<Cursor>,
    ) -> Result<WasmSourceSession, SessionError> {
        let mut session = WasmSourceSession {
            supervisor: Supervisor::new(self.spec.clone()),
            resume_from,
        };
        session.live().await?;
        Ok(session)
    }
}

#[async_trait]
impl SourceConnector for WasmSource {
    async fn open(
        &self,
        resume_from: Option<Cursor>,
    ) -> Result<Box<dyn SourceSession>, SessionError> {
        Ok(Box::new(self.open_session(resume_from).await?))
    }
}

struct LiveReader {
    store: Store<InstanceState>,
    instance: Source,
    reader: ResourceAny,
}

/// A reading session. After a failure it rebuilds its instance and resumes
/// from the last cursor passed to `commit` (which is durable by contract).
pub struct WasmSourceSession {
    supervisor: Supervisor<LiveReader>,
    resume_from: Option<Cursor>,
}

impl std::fmt::Debug for WasmSourceSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmSourceSession")
            .field("name", &self.supervisor.spec.name)
            .finish_non_exhaustive()
    }
}

impl WasmSourceSession {
    async fn live(&mut self) -> Result<&mut LiveReader, SessionError> {
        if let Some(live) = self.supervisor.live.take() {
            return Ok(self.supervisor.live.insert(live));
        }
        self.supervisor.before_start().await?;
        let spec = self.supervisor.spec.clone();
        let timeout = self.supervisor.call_timeout();
        let mut store = spec.new_store()?;
        arm(&mut store, timeout);
        let outcome = bounded(timeout, async {
            let instance = spec.plugin.instantiate_source(&mut store).await?;
            let constructed = instance
                .safd_connector_source_connector()
                .reader()
                .call_constructor(&mut store, &spec.config, self.resume_from.as_ref())
                .await?;
            Ok(constructed.map(|reader| (instance, reader)))
        })
        .await;
        let refused = store.data().memory.refused;
        let (instance, reader) = self.supervisor.settle(outcome, refused)?;
        Ok(self.supervisor.started(LiveReader {
            store,
            instance,
            reader,
        }))
    }
}

#[async_trait]
impl SourceSession for WasmSourceSession {
    async fn poll(&mut self, limits: PollLimits) -> Result<SourceBatch, SessionError> {
        let timeout = self.supervisor.call_timeout();
        let live = self.live().await?;
        arm(&mut live.store, timeout);
        let outcome = bounded(
            timeout,
            live.instance
                .safd_connector_source_connector()
                .reader()
                .call_poll(
                    &mut live.store,
                    live.reader,
                    bindings::poll_limits_to_wit(limits),
                ),
        )
        .await;
        let refused = live.store.data().memory.refused;
        let batch = self.supervisor.settle(outcome, refused)?;
        Ok(bindings::batch_from_wit(batch))
    }

    async fn commit(&mut self, cursor: &Cursor) -> Result<(), SessionError> {
        // The cursor is durable before commit is called, so it is the right
        // place to resume even if this very call fails.
        self.resume_from = Some(cursor.clone());
        let timeout = self.supervisor.call_timeout();
        let live = self.live().await?;
        arm(&mut live.store, timeout);
        let outcome = bounded(
            timeout,
            live.instance
                .safd_connector_source_connector()
                .reader()
                .call_commit(&mut live.store, live.reader, cursor),
        )
        .await;
        let refused = live.store.data().memory.refused;
        self.supervisor.settle(outcome, refused)
    }

    async fn seek(&mut self, from: Timestamp) -> Result<(), SessionError> {
        let timeout = self.supervisor.call_timeout();
        let live = self.live().await?;
        arm(&mut live.store, timeout);
        let outcome = bounded(
            timeout,
            live.instance
                .safd_connector_source_connector()
                .reader()
                .call_seek(&mut live.store, live.reader, from),
        )
        .await;
        let refused = live.store.data().memory.refused;
        self.supervisor.settle(outcome, refused)
    }
}
