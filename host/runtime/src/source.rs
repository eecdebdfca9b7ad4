//! Source connectors backed by a WebAssembly plugin.

use crate::bindings::{self, source_world::Source};
use crate::call::CallOutcome;
use crate::supervisor::{InstanceSpec, LiveInstance, Supervisor, call_live};
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
            moved_on: false,
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

impl LiveInstance for LiveReader {
    fn store(&self) -> &Store<InstanceState> {
        &self.store
    }
}

/// A reading session. After a failure it rebuilds its instance and resumes
/// from the last cursor passed to `commit` (which is durable by contract).
pub struct WasmSourceSession {
    supervisor: Supervisor<LiveReader>,
    resume_from: Option<Cursor>,
    /// The instance's position moved past `resume_from` (events polled, a
    /// seek) and no commit caught up with it yet: until one does, a fresh
    /// instance would not start where this one stands.
    moved_on: bool,
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
        let resume_from = &self.resume_from;
        self.supervisor
            .live_or_start(
                async |spec, store| {
                    let instance = spec.plugin.instantiate_source(&mut *store).await?;
                    let constructed = instance
                        .safd_connector_source_connector()
                        .reader()
                        .call_constructor(&mut *store, &spec.config, resume_from.as_ref())
                        .await?;
                    Ok(constructed.map(|reader| (instance, reader)))
                },
                |store, (instance, reader)| LiveReader {
                    store,
                    instance,
                    reader,
                },
            )
            .await
    }
}

#[async_trait]
impl SourceSession for WasmSourceSession {
    async fn poll(&mut self, limits: PollLimits) -> Result<SourceBatch, SessionError> {
        // Where everything read was committed, a fresh instance resumes
        // exactly where this one stands: the point to shed one near its
        // memory limit.
        if !self.moved_on {
            self.supervisor.recycle_if_near_limit();
        }
        let limits = bindings::poll_limits_to_wit(limits);
        let batch = call_live!(self, |live| live
            .instance
            .safd_connector_source_connector()
            .reader()
            .call_poll(&mut live.store, live.reader, limits))?;
        if batch.cursor.is_some() || batch.events.count > 0 {
            self.moved_on = true;
        }
        bindings::batch_from_wit(batch).or_else(|err| {
            // A plugin that cannot encode its events is broken: treat it like
            // one that said so (rebuild it, and disable it if it keeps
            // happening). Nothing was stored, so nothing is lost.
            let fatal = bindings::wit::ConnectorError::Fatal(format!(
                "plugin returned an event block that does not decode ({err}); fix the plugin"
            ));
            self.supervisor
                .settle(CallOutcome::Returned(Err(fatal)), false)
        })
    }

    async fn commit(&mut self, cursor: &Cursor) -> Result<(), SessionError> {
        // The cursor is durable before commit is called, so it is the right
        // place to resume even if this very call fails.
        self.resume_from = Some(cursor.clone());
        call_live!(self, |live| live
            .instance
            .safd_connector_source_connector()
            .reader()
            .call_commit(&mut live.store, live.reader, cursor))?;
        self.moved_on = false;
        Ok(())
    }

    async fn seek(&mut self, from: Timestamp) -> Result<(), SessionError> {
        self.moved_on = true;
        call_live!(self, |live| live
            .instance
            .safd_connector_source_connector()
            .reader()
            .call_seek(&mut live.store, live.reader, from))
    }
}
