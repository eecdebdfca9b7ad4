//! Write safd connector plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2` that exports
//! either the `source` or the `destination` world of the WIT package
//! `safd:connector@0.1.0` (see `wit/connector.wit` in the safd repository).
//!
//! A source plugin implements [`source::Guest`] (describe, validate-config) and
//! [`source::GuestReader`] (one reading session), then exports them with one
//! macro:
//!
//! ```ignore
//! use safd_plugin_sdk::source::{Guest, GuestReader, Batch, PollLimits};
//! use safd_plugin_sdk::types::*;
//!
//! struct Plugin;
//! struct Reader { /* … */ }
//!
//! impl Guest for Plugin {
//!     type Reader = Reader;
//!     fn describe() -> Description { /* … */ }
//!     fn validate_config(config: String) -> Result<(), Vec<ConfigProblem>> { /* … */ }
//! }
//! impl GuestReader for Reader { /* new, poll, commit, seek */ }
//!
//! safd_plugin_sdk::export_source!(Plugin);
//! ```
//!
//! A destination does the same with [`destination::Guest`],
//! [`destination::GuestWriter`] and [`export_destination!`].
//!
//! `docs/plugin-guide.md` walks through complete examples.

// The generated bindings name this crate by its absolute path so that the
// exported macros work in plugin crates; make that path valid here too.
extern crate self as safd_plugin_sdk;

pub mod config;
pub mod events;
pub mod log;
pub mod time;

/// Bindings of the `source` world. Plugin authors normally use [`source`] and
/// [`types`] instead of this module.
pub mod source_bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "safd:connector/source",
        pub_export_macro: true,
        export_macro_name: "export_source",
        default_bindings_module: "::safd_plugin_sdk::source_bindings",
        runtime_path: "::safd_plugin_sdk::__private::wit_bindgen::rt",
        generate_all,
    });
}

/// Bindings of the `destination` world, sharing the `types` and `log`
/// interfaces with [`source_bindings`] so that one `Event` type serves both.
pub mod destination_bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "safd:connector/destination",
        pub_export_macro: true,
        export_macro_name: "export_destination",
        default_bindings_module: "::safd_plugin_sdk::destination_bindings",
        runtime_path: "::safd_plugin_sdk::__private::wit_bindgen::rt",
        with: {
            "safd:connector/types@0.1.0": crate::source_bindings::safd::connector::types,
            "safd:connector/log@0.1.0": crate::source_bindings::safd::connector::log,
        },
    });
}

pub use destination_bindings::export_destination;
pub use source_bindings::export_source;

/// Types shared by sources and destinations: events, errors, descriptions.
pub mod types {
    pub use crate::source_bindings::safd::connector::types::*;

    impl Severity {
        /// The severity named `name` (`debug`, `info`, `warning`, `minor`,
        /// `major`, `critical`), as operators write it in configs.
        pub fn from_name(name: &str) -> Option<Self> {
            Some(match name {
                "debug" => Self::Debug,
                "info" => Self::Info,
                "warning" => Self::Warning,
                "minor" => Self::Minor,
                "major" => Self::Major,
                "critical" => Self::Critical,
                _ => return None,
            })
        }
    }

    impl ConfigProblem {
        /// A problem at `path` (a dotted path into the config, empty for the
        /// whole text) described by `message`.
        pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
            Self {
                path: path.into(),
                message: message.into(),
            }
        }
    }

    /// One key/value attribute of an event (the WIT `attribute` record).
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    pub struct Attribute {
        pub key: String,
        pub value: String,
    }

    impl Attribute {
        /// A key/value attribute.
        pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
            Self {
                key: key.into(),
                value: value.into(),
            }
        }
    }

    /// An owned event (the WIT `event` record). Events cross the boundary in
    /// an [`EventBlock`]: build one with [`crate::events::EventWriter`].
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Event {
        /// Stable identity: the same event read twice gets the same id.
        pub id: String,
        /// When the event happened, microseconds since the Unix epoch (UTC).
        pub time: Timestamp,
        pub severity: Severity,
        pub attributes: Vec<Attribute>,
        /// The human-readable text.
        pub body: String,
    }

    impl Event {
        /// Copy an event read from a block.
        pub fn from_ref(event: &crate::events::EventRef<'_>) -> Self {
            Self {
                id: event.id.to_owned(),
                time: event.time,
                severity: crate::events::severity(event),
                attributes: event
                    .attributes
                    .iter()
                    .map(|(key, value)| Attribute::new(key, value))
                    .collect(),
                body: event.body.to_owned(),
            }
        }

        /// The byte size the host counts against `poll-limits.max-bytes`.
        pub fn byte_size(&self) -> usize {
            safd_event_block::byte_size(
                &self.id,
                &self.body,
                self.attributes
                    .iter()
                    .map(|a| (a.key.as_str(), a.value.as_str())),
            )
        }
    }
}

/// The `source` interface a source plugin implements.
pub mod source {
    pub use crate::source_bindings::exports::safd::connector::source_connector::*;
}

/// The `destination` interface a destination plugin implements.
pub mod destination {
    pub use crate::destination_bindings::exports::safd::connector::destination_connector::*;
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}
