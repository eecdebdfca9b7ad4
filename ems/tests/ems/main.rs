//! The EMS crate's integration tests, one binary: framing properties over
//! arbitrary bytes, and tailing real directories the simulator writes.
#![allow(clippy::unwrap_used)]

mod framing_props;
mod tail;
