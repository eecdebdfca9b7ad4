//! safd's delivery engine.
//!
//! This crate decides whether an event survives. It knows nothing about
//! WebAssembly: it drives connectors through the traits of
//! `safd-connector`.
//!
//! Built so far: the durable store-and-forward queue ([`Queue`]) — events and
//! source cursors written in one atomic batch, group commit (one fsync shared
//! by every ingest that arrives while another is in flight), versioned and
//! checksummed records, recovery on open, quarantine of damaged records; and
//! the failover choice rule ([`failover::choose_active`]).

mod codec;
pub mod failover;
mod flush;
mod keys;
mod queue;

pub use codec::RecordError;
pub use queue::{GroupState, IngestReceipt, OpenReport, Queue, QueueError, StreamState};
