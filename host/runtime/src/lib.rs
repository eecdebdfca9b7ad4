//! safd's WebAssembly connector runtime.
//!
//! Loads connector plugins (`<name>.wasm` components plus `<name>.toml`
//! manifests) from a plugin directory, compiles each once into a cache owned
//! by safd, and runs each connector instance in its own sandboxed `Store`:
//! operator-granted WASI capabilities only, a memory cap, a wall-clock limit
//! per call, and rebuild-with-backoff after a trap or timeout.
//!
//! The delivery engine drives connectors through the traits of
//! `safd-connector`; [`WasmSource`] and [`WasmDestination`] implement them.
//! This crate knows nothing about queues or failover.

mod bindings;
mod cache;
mod call;
mod config;
mod destination;
mod error;
mod guest_output;
mod http_link;
mod http_pool;
mod instance;
mod local_fs;
mod log_text;
mod manifest;
mod plugin;
mod receiver_notice;
mod report;
mod sandbox;
mod source;
mod state;
mod supervisor;
mod tls;
mod tls_listener;
mod tls_socket;

pub use cache::CompileOrigin;
pub use config::{Grants, Limits, RestartPolicy, RuntimeConfig};
pub use destination::{WasmDestination, WasmDestinationSession};
pub use error::{LoadError, LoadErrorKind, RuntimeError, SetupError};
pub use manifest::{
    Capabilities, EndpointForm, Manifest, ManifestError, PluginKind, supported_api,
};
pub use plugin::{ConfigProblem, LoadReport, Plugin, PluginDescription, Runtime};
pub use sandbox::{GrantError, Sandbox, grant_covering};
pub use source::{WasmSource, WasmSourceSession};
pub use tls::{TlsError, TlsFiles, server_config};
pub use tls_listener::TlsListener;
