//! The host-side connector contract.
//!
//! These are the types and traits through which the delivery engine talks to
//! sources and destinations. They mirror the WIT package
//! `safd:connector@0.2.1` but are plain Rust: the engine never sees wasmtime
//! types, and engine tests implement the traits with in-process fakes while
//! the daemon uses the WebAssembly runtime's implementations.

mod block;
mod error;
mod event;
pub mod event_ids;
mod notice;
mod session;

pub use block::{EventBlock, SequencedBlock};
pub use error::{ConnectorError, SessionError};
pub use event::{
    Attribute, Cursor, Event, SequencedEvent, Severity, StreamPosition, Timestamp, decode_events,
};
pub use notice::{Notice, NoticeSink};
/// The encoding events cross the plugin boundary in (the WIT `event-block`).
pub use safd_event_block as event_block;
pub use session::{
    Acknowledgement, CatchUpFrom, CatchUpRequest, DeliveryReport, DestinationConnector,
    DestinationSession, Endpoint, Health, MemberRole, PollLimits, Registration, Rejection,
    SessionInfo, SourceBatch, SourceConnector, SourceSession, StreamBatch, retry_after,
};
