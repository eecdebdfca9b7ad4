//! The engine's integration tests, one binary: real queue files, fake
//! connectors (`common::fakes`), real crashes of a child process.
#![allow(clippy::unwrap_used)]

mod common;

mod capacity;
mod crash;
mod delivery;
mod dispatch_crash;
mod failover;
mod full_disk;
mod groups;
mod queue;
mod schedules;
