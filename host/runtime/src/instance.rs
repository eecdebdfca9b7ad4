//! Connector instances of a loaded plugin: the operator's name, config and
//! grants checked against the plugin and turned into the spec a supervisor
//! rebuilds the instance from. Kept apart from `plugin.rs` so that loading
//! a plugin does not depend on running one (plugin → supervisor → plugin
//! was a loop).

use crate::config::Grants;
use crate::destination::WasmDestination;
use crate::error::SetupError;
use crate::manifest::PluginKind;
use crate::plugin::Plugin;
use crate::sandbox::Sandbox;
use crate::source::WasmSource;
use crate::supervisor::InstanceSpec;
use safd_connector::Acknowledgement;
use std::sync::Arc;

impl Plugin {
    fn spec(
        self: &Arc<Self>,
        instance: &str,
        config: String,
        grants: &Grants,
        expected: PluginKind,
    ) -> Result<Arc<InstanceSpec>, SetupError> {
        if self.kind() != expected {
            return Err(SetupError::WrongKind {
                plugin: self.name().to_owned(),
                actual: self.kind(),
                expected,
            });
        }
        let sandbox = Sandbox::reporting(
            instance,
            self.manifest.capabilities,
            grants,
            self.reporter().clone(),
        )?;
        Ok(Arc::new(InstanceSpec::new(
            self.clone(),
            instance,
            config,
            sandbox,
            self.limits().clone(),
        )))
    }

    /// A source connector instance named `instance` with its config (JSON
    /// text) and the operator's grants.
    pub fn source(
        self: &Arc<Self>,
        instance: &str,
        config: String,
        grants: &Grants,
    ) -> Result<WasmSource, SetupError> {
        Ok(WasmSource::new(self.spec(
            instance,
            config,
            grants,
            PluginKind::Source,
        )?))
    }

    /// A destination connector instance; asks the plugin for its
    /// acknowledgement semantics once.
    pub async fn destination(
        self: &Arc<Self>,
        instance: &str,
        config: String,
        grants: &Grants,
    ) -> Result<WasmDestination, SetupError> {
        let spec = self.spec(instance, config, grants, PluginKind::Destination)?;
        let acknowledgement = self
            .describe()
            .await?
            .acknowledgement
            .unwrap_or(Acknowledgement::TransportWrite);
        Ok(WasmDestination::new(spec, acknowledgement))
    }
}
