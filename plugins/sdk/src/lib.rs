//! Write safd connector plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2` that exports
//! either the `source` or the `destination` world of the WIT package
//! `safd:connector@0.2.1` (see `wit/connector.wit` in the safd repository).
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
pub mod http;
pub mod json;
pub mod log;
pub mod net;
pub mod notice;
pub mod syslog;
pub mod tcp;
pub mod time;
pub mod tls;

/// Inputs for a plugin's native unit tests.
pub mod testing {
    /// Odd but valid events (empty and huge strings, control and
    /// multi-byte characters, extreme times, many attributes), the same
    /// ones `safd plugins test` delivers: a destination must deliver or
    /// reject each, never trap. Build a batch of them with
    /// [`StreamBatch::sequenced`](crate::types::StreamBatch::sequenced).
    pub use safd_event_block::odd::odd_events;
}

/// Bindings of the `source` world. Plugin authors normally use [`source`] and
/// [`types`] instead of this module.
pub mod source_bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "safd:connector/source",
        pub_export_macro: true,
        export_macro_name: "export_source",
        default_bindings_module: "::safd_plugin_sdk::source_bindings",
        runtime_path: "::safd_plugin_sdk::__private::wit_bindgen::rt",
        // The WIT `event`, `attribute` and `severity` are the event-block
        // crate's types: one definition for the host and every plugin.
        with: {
            "safd:connector/types@0.2.1/severity": ::safd_plugin_sdk::__private::event_block::Severity,
            "safd:connector/types@0.2.1/attribute": ::safd_plugin_sdk::__private::event_block::Attribute,
            "safd:connector/types@0.2.1/event": ::safd_plugin_sdk::__private::event_block::Event,
        },
        generate_all,
    });
}

/// Bindings of the `destination` world, sharing the `types` and `log`
/// interfaces with [`source_bindings`] so that one `Event` type serves both.
pub mod destination_bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "safd:connector/destination",
        pub_export_macro: true,
        export_macro_name: "export_destination",
        default_bindings_module: "::safd_plugin_sdk::destination_bindings",
        runtime_path: "::safd_plugin_sdk::__private::wit_bindgen::rt",
        with: {
            "safd:connector/types@0.2.1": crate::source_bindings::safd::connector::types,
            "safd:connector/log@0.2.1": crate::source_bindings::safd::connector::log,
            "safd:connector/tls@0.2.1": crate::source_bindings::safd::connector::tls,
            "wasi:io/poll@0.2.12": crate::source_bindings::wasi::io::poll,
            "wasi:io/error@0.2.12": crate::source_bindings::wasi::io::error,
            "wasi:io/streams@0.2.12": crate::source_bindings::wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": crate::source_bindings::wasi::clocks::monotonic_clock,
        },
    });
}

pub use destination_bindings::export_destination;
pub use source_bindings::export_source;

/// Types shared by sources and destinations: events, errors, descriptions.
pub mod types {
    pub use crate::source_bindings::safd::connector::types::*;

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

    /// The owned event types, defined once (in `safd-event-block`) for the
    /// host and every plugin. Events cross the boundary in an
    /// [`EventBlock`]: build one with [`crate::events::EventWriter`], read
    /// one with [`StreamBatch::events`](crate::events).
    pub use safd_event_block::{Attribute, Event, Severity, Timestamp};
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
    pub use safd_event_block as event_block;
    pub use wit_bindgen;
}
