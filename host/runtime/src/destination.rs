//! Destination connectors backed by a WebAssembly plugin.

use crate::bindings::{self, destination_world::Destination};
use crate::state::InstanceState;
use crate::supervisor::{InstanceSpec, LiveInstance, Supervisor, call_live};
use async_trait::async_trait;
use safd_connector::{
    Acknowledgement, ConnectorError, DeliveryReport, DestinationConnector, DestinationSession,
    Endpoint, Health, Registration, SessionError, SessionInfo, StreamBatch,
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
            registered: None,
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

impl LiveInstance for LiveWriter {
    fn store(&self) -> &Store<InstanceState> {
        &self.store
    }
}

/// A session with one endpoint. After a failure the next call runs on a
/// fresh instance, which the caller must `register` again.
pub struct WasmDestinationSession {
    supervisor: Supervisor<LiveWriter>,
    endpoint: Endpoint,
    /// What the engine registered with, and what the receiver answered:
    /// a rebuilt instance registers again with the same.
    registered: Option<(SessionInfo, Registration)>,
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

    async fn register_live(&mut self, info: &SessionInfo) -> Result<Registration, SessionError> {
        let wit_info = bindings::session_info_to_wit(info);
        let registration = call_live!(self, |live| live
            .instance
            .safd_connector_destination_connector()
            .writer()
            .call_register(&mut live.store, live.writer, &wit_info))?;
        Ok(bindings::registration_from_wit(registration))
    }

    /// Between deliveries nothing of the instance is needed but its
    /// registration: one near its memory limit is rebuilt and registers
    /// again as the engine did. A receiver that answers differently now
    /// (asks for a catch-up, is not ready) is reported unavailable, so the
    /// engine registers it anew itself and acts on the answer.
    async fn recycle_if_near_limit(&mut self) -> Result<(), SessionError> {
        let Some((info, before)) = self.registered.clone() else {
            return Ok(());
        };
        if !self.supervisor.recycle_if_near_limit() {
            return Ok(());
        }
        let now = self.register_live(&info).await?;
        if now.catch_up.is_some() || now.service_ready != before.service_ready {
            self.registered = None;
            return Err(SessionError::Connector(ConnectorError::Unavailable(
                "the plugin instance was rebuilt near its memory limit and the receiver \
                 answered its registration differently; registering again"
                    .to_owned(),
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl DestinationSession for WasmDestinationSession {
    async fn register(&mut self, info: &SessionInfo) -> Result<Registration, SessionError> {
        self.registered = None;
        let registration = self.register_live(info).await?;
        self.registered = Some((info.clone(), registration.clone()));
        Ok(registration)
    }

    async fn deliver(&mut self, batches: &[StreamBatch]) -> Result<DeliveryReport, SessionError> {
        self.recycle_if_near_limit().await?;
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
