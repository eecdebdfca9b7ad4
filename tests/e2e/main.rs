//! safd's end-to-end tests, one binary: the real `safd`, `safd-tools`,
//! `safd-mgmt` and `ems-sim` binaries and the built plugins, rsyslog and a
//! browser where a test needs them, started on loopback ports and stopped
//! by the tests. What they start and where they find it: `support`.
#![allow(clippy::unwrap_used)]

mod support;

mod cli;
mod conformance;
mod daemon;
mod ems_reader;
mod file_tail;
mod mgmt_server;
mod nats;
mod net_in;
mod package;
mod plugin_sdk;
mod secrets;
mod syslog;
mod tls;
