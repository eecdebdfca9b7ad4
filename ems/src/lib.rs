//! NonStop EMS event logs as the ems-reader plugin reads them and the
//! ems-sim generator writes them (see `docs/ems-formats.md`):
//!
//! - format A, the printing distributor's text: one header line per event,
//!   continuation lines indented;
//! - format B, tokenized JSON Lines: one lossless JSON object per line.
//!
//! This crate is target-neutral (it builds for the host and for
//! `wasm32-wasip2`): [`framing`] cuts complete records out of bytes read
//! from a log file, [`text`] and [`json`] parse and render them, and
//! [`tail`] follows a directory of rotating log files (plain `std::fs`,
//! which inside the plugin is the granted, read-only directory).
//! [`safd_event`] is what a record becomes in safd, the same for every
//! plugin that reads EMS.

mod event;
pub mod framing;
pub mod json;
pub mod safd_event;
pub mod tail;
pub mod text;
mod zone;

pub use event::{EmsEvent, Process, Ssid, Subject};
pub use zone::{Zone, ZoneError};

/// Which of the two log formats a directory holds (configured, never
/// guessed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Printing-distributor text.
    A,
    /// Tokenized JSON Lines.
    B,
}

/// Why a record did not parse. The record is still emitted (flagged, with
/// its raw text) by the reader; this says what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);
