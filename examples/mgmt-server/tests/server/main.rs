//! safd-mgmt's tests against the real process, one binary: the command
//! line, protocol version 1, hostile input, the console in a real browser,
//! and the mgmt-http plugin through safd's runtime.
#![allow(clippy::unwrap_used)]

mod common;

mod cli;
mod console;
mod hostile;
mod plugin;
mod protocol;
