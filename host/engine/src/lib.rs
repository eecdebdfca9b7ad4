//! safd's delivery engine.
//!
//! This crate decides whether an event survives. It knows nothing about
//! WebAssembly: it drives connectors through the traits of
//! `safd-connector`.
//!
//! - [`Queue`]: the durable store-and-forward queue — events and source
//!   cursors written in one atomic batch, group commit, versioned and
//!   checksummed records, recovery and quarantine, capacity (block or
//!   drop-oldest), the replay window, dead letters.
//! - [`failover`]: the choice rule of `failover-matrix.csv`.
//! - [`Engine`]: sources pumped into the queue, groups dispatched from it
//!   (failover and broadcast), member health, failback, catch-up with
//!   fencing, and safd's own numbered events ([`Notice`]).

mod catch_up;
mod clock;
mod dispatch;
mod engine;
pub mod failover;
mod group;
mod member;
pub mod metrics;
mod notice;
mod pump;
mod queue;
mod source_state;

pub use catch_up::{CatchUpDecision, RefusalReason};
pub use engine::{
    Engine, EngineError, EngineOptions, GroupStatus, LaneStatus, MemberStatus, PumpTuning,
    StreamStatus,
};
pub use failover::MemberHealth;
pub use group::{GroupConfig, GroupMode, MemberConfig, Routes, Tuning};
pub use metrics::Metrics;
pub use notice::{Notice, Notices, SAFD_STREAM};
pub use queue::codec::RecordError;
pub use queue::dead_letter::DeadLetter;
pub use queue::retention::TrimReport;
pub use queue::{
    GroupState, HeldBatch, IndexRebuilt, IngestReceipt, OpenReport, Queue, QueueError,
    QueueOptions, Retention, StreamState, WhenFull,
};
pub use source_state::{SourceActivity, SourceStatus};
