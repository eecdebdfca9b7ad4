//! Destination connectors backed by a WebAssembly plugin.

use crate::bindings::{self, destination_world::Destination};
use crate::state::InstanceState;
use crate::supervisor::{InstanceSpec, Supervisor, arm, bounded};
use async_trait::async_trait;
use safd_connector::{
    Acknowledgement, DeliveryReport, DestinationConnector, DestinationSession, Endpoint, Health,
    Registration, SessionError, SessionInfo, StreamBatch,
};
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

/// A configured destination instance; opens one session per endpoint.
pub struct WasmDestination {
    spec: Arc<InstanceSpec>,
    acknowledgement: Acknowledgement,
}

impl std::fmt::Debug for WasmDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmDestination")
            .field("name", &self.spec.name)
            .field("acknowledgement", &self.acknowledgement)
            .finish_non_exhaustive()
    }
}

impl WasmDestination {
    pub(crate) fn new(spec: Arc<InstanceSpec>, acknowledgement: Acknowledgement) -> Self {
        Self {
            spec,
            acknowledgement,
        }
    }

    /// Open a session with its concrete type (the trait returns it boxed).
    pub async fn open_session(
        &self,
        endpoint: Endpoint,
    ) -> Result<WasmDestinationSession, SessionError> {
        let mut session = WasmDestinationSession {
            supervisor: Supervisor::new(self.spec.clone()),
            endpoint,
        };
        session.live().await?;
        Ok(session)
    }
}

#[async_trait]
impl DestinationConnector for WasmDestination {
    async fn open(&self, endpoint: Endpoint) -> Result<Box<dyn DestinationSession>, SessionError> {
        Ok(Box::new(self.open_session(endpoint).await?))
    }

    fn acknowledgement(&self) -> Acknowledgement {
        self.acknowledgement
    }
}

struct LiveWriter {
    store: Store<InstanceState>,
    instance: Destination,
    writer: ResourceAny,
}

/// A session with one endpoint. After a failure the next call runs on a
/// fresh instance, which the caller must `register` again.
pub struct WasmDestinationSession {
    supervisor: Supervisor<LiveWriter>,
    endpoint: Endpoint,
}

impl std::fmt::Debug for WasmDestinationSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmDestinationSession")
            .field("name", &self.supervisor.spec.name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl WasmDestinationSession {
    async fn live(&mut self) -> Result<&mut LiveWriter, SessionError> {
        if let Some(live) = self.supervisor.live.take() {
            return Ok(self.supervisor.live.insert(live));
        }
        self.supervisor.before_start().await?;
        let spec = self.supervisor.spec.clone();
        let timeout = self.supervisor.call_timeout();
        let endpoint = bindings::endpoint_to_wit(&self.endpoint);
        let mut store = spec.new_store()?;
        arm(&mut store, timeout);
        let outcome = bounded(timeout, async {
            let instance = spec.plugin.instantiate_destination(&mut store).await?;
            let constructed = instance
                .safd_connector_destination_connector()
                .writer()
                .call_constructor(&mut store, &spec.config, &endpoint)
                .await?;
            Ok(constructed.map(|writer| (instance, writer)))
        })
        .await;
        let refused = store.data().memory.refused;
        let (instance, writer) = self.supervisor.settle(outcome, refused)?;
        Ok(self.supervisor.started(LiveWriter {
            store,
            instance,
            writer,
        }))
    }
}

#[async_trait]
impl DestinationSession for WasmDestinationSession {
    async fn register(&mut self, info: &SessionInfo) -> Result<Registration, SessionError> {
        let timeout = self.supervisor.call_timeout();
        let info = bindings::session_info_to_wit(info);
        let live = self.live().await?;
        arm(&mut live.store, timeout);
        let outcome = bounded(
            timeout,
            live.instance
                .safd_connector_destination_connector()
                .writer()
                .call_register(&mut live.store, live.writer, &info),
        )
        .await;
        let refused = live.store.data().memory.refused;
        let registration = self.supervisor.settle(outcome, refused)?;
        Ok(bindings::registration_from_wit(registration))
    }

    async fn deliver(&mut self, batches: &[StreamBatch]) -> Result<DeliveryReport, SessionError> {
        let timeout = self.supervisor.call_timeout();
        let batches = bindings::stream_batches_to_wit(batches);
        let live = self.live().await?;
        arm(&mut live.store, timeout);
        let outcome = bounded(
            timeout,
            live.instance
                .safd_connector_destination_connector()
                .writer()
                .call_deliver(&mut live.store, live.writer, &batches),
        )
        .await;
        let refused = live.store.data().memory.refused;
        let report = self.supervisor.settle(outcome, refused)?;
        Ok(bindings::report_from_wit(report))
    }

    async fn probe(&mut self) -> Result<Health, SessionError> {
        let timeout = self.supervisor.call_timeout();
        let live = self.live().await?;
        arm(&mut live.store, timeout);
        let outcome = bounded(
            timeout,
            live.instance
                .safd_connector_destination_connector()
                .writer()
                .call_probe(&mut live.store, live.writer),
        )
        .await;
        let refused = live.store.data().memory.refused;
        let health = self.supervisor.settle(outcome, refused)?;
        Ok(bindings::health_from_wit(health))
    }
}
