//! `safd-tools`: the pipeline benchmarks and the soak — developer tools
//! that run the real `safd`, `safd-mgmt` and `ems-sim` binaries (found next
//! to this one) and count what arrives. Not part of the shipped daemon;
//! `cargo xtask bench-pipeline`, `bench-syslog`, `bench-net-in`, `bench-nats`
//! and `soak` build and run
//! them.

mod bench;
mod bench_nats;
mod bench_net_in;
mod bench_syslog;
mod progress;
mod soak;
mod syslog_receiver;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// safd's benchmarks and soak test.
#[derive(Debug, Parser)]
#[command(name = "safd-tools", version, max_term_width = 100)]
struct Tools {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure the whole pipeline against its targets: end-to-end
    /// events/s, event → server latency, failover times, backlog replay
    /// rate and safd's RSS; writes bench.json and bench.md.
    ///
    /// Runs `safd run` as a process with primary and backup `safd-mgmt`
    /// and the EMS simulator; use release builds (`cargo xtask
    /// bench-pipeline`).
    Bench(bench::BenchArgs),
    /// Measure file-tail → durable queue → syslog (plain TCP, newline
    /// framing) to a local receiver: events/s from safd's start to the last
    /// line received, and safd's CPU time; writes bench-syslog.json and
    /// bench-syslog.md.
    ///
    /// Use release builds (`cargo xtask bench-syslog`).
    BenchSyslog(bench_syslog::BenchSyslogArgs),
    /// Measure EMS format A text sent over the network into net-in (plain
    /// TCP, then RELP) → durable queue → syslog to a local receiver:
    /// events/s from the first byte sent to the last event received, and
    /// safd's CPU per million events; writes bench-net-in.json and
    /// bench-net-in.md.
    ///
    /// Use release builds (`cargo xtask bench-net-in`).
    BenchNetIn(bench_net_in::BenchNetInArgs),
    /// Measure file-tail → durable queue → nats-jetstream → an R1
    /// file-backed stream on a local nats-server: events/s from safd's
    /// start until the stream holds the last one, safd's CPU per million
    /// events, every line stored once, and event → acknowledgement latency
    /// at a steady rate; writes bench-nats.json and bench-nats.md.
    ///
    /// Use release builds (`cargo xtask bench-nats`).
    BenchNats(bench_nats::BenchNatsArgs),
    /// Run the demo pipeline for a long time with random faults (kill -9 of
    /// safd and the servers, SIGSTOP, the index removed, a full disk) and
    /// count every event at the end; writes soak.json and soak.md.
    ///
    /// `cargo xtask soak --minutes N` builds what it needs and runs it.
    Soak(soak::SoakArgs),
}

fn main() -> ExitCode {
    let tools = Tools::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SAFD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("safd-tools: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match tools.command {
            Command::Bench(args) => bench::run(args).await,
            Command::BenchSyslog(args) => bench_syslog::run(args).await,
            Command::BenchNetIn(args) => bench_net_in::run(args).await,
            Command::BenchNats(args) => bench_nats::run(args).await,
            Command::Soak(args) => soak::run(args).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("safd-tools: {err:#}");
            ExitCode::FAILURE
        }
    }
}
