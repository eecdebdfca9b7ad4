//! safd's end-to-end tests, one binary: the real `safd` binary and plugins,
//! real `safd-mgmt` servers, rsyslog and a browser where a test needs them,
//! started on loopback ports and stopped by the tests.
#![allow(clippy::unwrap_used)]

#[path = "../../../examples/mgmt-server/tests/server/common/mod.rs"]
mod mgmt;
mod plugins;
mod rsyslog;
mod safd_process;

mod cli;
mod daemon;
mod ems_reader;
mod file_tail;
mod syslog;
