//! Destination connectors backed by a WebAssembly plugin.

use crate::bindings::{self, destination_world::Destination};
use crate::state::InstanceState;
use crate::supervisor::{InstanceSpec, Supervisor, call_live};
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
        let endpoint = bindings::endpoint_to_wit(&self.endpoint);
        self.supervisor
            .live_or_start(
                async |spec, store| {
                    let instance = spec.plugin.instantiate_destination(&mut *store).await?;
                    let constructed = instance
                        .safd_connector_destination_connector()
                        .writer()
                        .call_constructor(&mut *store, &spec.config, &endpoint)
                        .await?;
                    Ok(constructed.map(|writer| (instance, writer)))
                },
                |store, (instance, writer)| LiveWriter {
                    store,
                    instance,
                    writer,
                },
            )
            .await
    }
}

#[async_trait]
impl DestinationSession for WasmDestinationSession {
    async fn register(&mut self, info: &SessionInfo) -> Result<Registration, SessionError> {
        let info = bindings::session_info_to_wit(info);
        let registration = call_live!(self, |live| live
            .instance
            .safd_connector_destination_connector()
            .writer()
            .call_register(&mut live.store, live.writer, &info))?;
        Ok(bindings::registration_from_wit(registration))
    }

    async fn deliver(&mut self, batches: &[StreamBatch]) -> Result<DeliveryReport, SessionError> {
        let batches = bindings::stream_batches_to_wit(batches);
        let report = call_live!(self, |live| live
            .instance
            .safd_connector_destination_connector()
            .writer()
            .call_deliver(&mut live.store, live.writer, &batches))?;
        Ok(bindings::report_from_wit(report))
    }

    async fn probe(&mut self) -> Result<Health, SessionError> {
        let health = call_live!(self, |live| live
            .instance
            .safd_connector_destination_connector()
            .writer()
            .call_probe(&mut live.store, live.writer))?;
        Ok(bindings::health_from_wit(health))
    }
}
