//! safd as a library: what the `safd` daemon and the `safd-tools`
//! benchmarks share (the command line, the admin API and its client, the
//! harness that runs the demo pipeline's processes).

pub mod admin;
pub mod cli;
mod config;
mod reload;
