//! Stable numeric ids of safd's own events (the catalog in `docs/events.md`).
//!
//! Each id is logged as the `event_id` field of a tracing record. The ids
//! never change meaning; retired ids are not reused.

/// A damaged queue record (failed its version or checksum check) was moved
/// aside instead of being read; the events in it are not delivered.
pub const QUEUE_RECORD_QUARANTINED: u32 = 2005;

/// A plugin instance trapped (crashed); it will be rebuilt.
pub const PLUGIN_TRAPPED: u32 = 3001;
/// A plugin call ran past its wall-clock limit and was interrupted.
pub const PLUGIN_TIMED_OUT: u32 = 3002;
/// A plugin instance was rebuilt after a failure.
pub const PLUGIN_RESTARTED: u32 = 3003;
/// A plugin instance failed too often and was disabled.
pub const PLUGIN_DISABLED: u32 = 3004;
/// A plugin file was refused at load (bad manifest, API, kind or component).
pub const PLUGIN_REFUSED: u32 = 3005;
/// A capability the operator granted was not requested by the plugin's
/// manifest (or the reverse) and is therefore not in effect.
pub const PLUGIN_GRANT_IGNORED: u32 = 3006;
/// A plugin tried to reach something it was not granted (HTTP authority or
/// socket address).
pub const PLUGIN_ACCESS_DENIED: u32 = 3007;
/// A plugin reported a fatal error; its instance will be rebuilt.
pub const PLUGIN_FATAL: u32 = 3008;
