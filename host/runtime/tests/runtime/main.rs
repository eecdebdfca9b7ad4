//! The runtime's tests against the built fixture plugins, one binary (each
//! test binary links wasmtime again): every sandbox property, loading and
//! the compile cache, destination sessions, guest logging.
#![allow(clippy::unwrap_used)]

mod common;

mod destination;
mod guest_logging;
mod loading;
mod recycling;
mod sandbox;
