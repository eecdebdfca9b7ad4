//! `safd-mgmt`: run the reference management server.

use anyhow::Context;
use clap::Parser;
use safd_mgmt::protocol::BodyFormats;
use safd_mgmt::serve::{ServeLimits, serve};
use safd_mgmt::store::{DEFAULT_INDEX_CACHE_BYTES, Limits};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

// A delivery's request body, its parsed events and the segment built from
// them are large, short-lived allocations; glibc malloc maps and unmaps
// such blocks per request (page faults on every delivery) where mimalloc
// reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// With transparent huge pages, mimalloc's partly used 2 MiB regions are
/// resident whole (safd measured a third of its RSS without them).
/// Files and directories made from here on are the user's alone (0600,
/// 0700): the data directory holds every event's text.
fn private_by_default() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(err) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!("cannot turn transparent huge pages off: {err}");
    }
}

/// Reference management server for safd: stores the events safd delivers,
/// durably and deduplicated, and shows them in a web console.
///
/// On start it prints one line `listening on http://ADDR` (`https://` with
/// --tls-cert; with the real port
/// when `--listen` asks for port 0), then serves until SIGINT or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "safd-mgmt", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8471")]
    listen: SocketAddr,
    /// Database directory (created if missing). Events, high-waters,
    /// sessions and the inbox survive restarts here.
    #[arg(long, default_value = "safd-mgmt-data")]
    data: PathBuf,
    /// Bearer token every request must carry (`Authorization: Bearer …`).
    /// With --tokens it is the operator's: good for every endpoint.
    #[arg(
        long,
        env = "SAFD_MGMT_TOKEN",
        hide_env_values = true,
        required_unless_present_any = ["completions", "man_page"]
    )]
    token: Option<String>,
    /// Tokens file (TOML): `[agents]` maps each agent id to its own token,
    /// good for registering and delivering as that agent only; `console`
    /// is a read-only token. See docs/mgmt-server.md.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Start with the event service down: the server answers "not ready"
    /// and keeps events in its durable inbox until the service is brought
    /// up (`POST /safd/v1/admin/service {"ready": true}`).
    #[arg(long, conflicts_with = "service_up")]
    service_down: bool,
    /// Start with the event service up even if it was down when the server
    /// last stopped (without either flag the last state is kept).
    #[arg(long)]
    service_up: bool,
    /// Streams the server holds, all agents together; events of further
    /// streams are rejected. Each costs memory (docs/protocol.md, Limits).
    #[arg(long, default_value_t = Limits::default().max_streams, value_parser = clap::value_parser!(u32).range(1..))]
    max_streams: u32,
    /// Streams one agent may have here; events of further streams are
    /// rejected.
    #[arg(long, default_value_t = Limits::default().max_streams_per_agent, value_parser = clap::value_parser!(u32).range(1..))]
    max_streams_per_agent: u32,
    /// Streams new to the server one delivery may open; further new
    /// streams wait for the agent's next delivery.
    #[arg(long, default_value_t = Limits::default().max_new_streams_per_delivery, value_parser = clap::value_parser!(u32).range(1..))]
    max_new_streams_per_delivery: u32,
    /// Memory for the index's page cache, in MiB: more speeds up queries
    /// over many streams, and costs its size in resident memory.
    #[arg(long, default_value_t = DEFAULT_INDEX_CACHE_BYTES >> 20, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    index_cache_mib: u64,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Connections served at once; further ones are closed at once.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Seconds a client has to send a request's headers once the
    /// connection is ready for one: a client that says nothing, or an idle
    /// keep-alive connection, is closed after it.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3600))]
    header_timeout_secs: u32,
    /// Seconds a request may take, its body included; then 408.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=3600))]
    request_timeout_secs: u32,
    /// Require a client certificate signed by one of these CAs (PEM) of
    /// every client: mutual TLS. Needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Delivery bodies this server reads and lists at register: `both`
    /// (the binary event-block body, then JSON) or `json` (JSON only, as a
    /// server before the binary body; for comparing the two).
    #[arg(long, value_enum, default_value = "both")]
    body_formats: BodyFormatsArg,
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) on stdout and exit.
    #[arg(long, value_enum, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
    /// Print the man page (roff) on stdout and exit; packages ship it.
    #[arg(long, hide = true)]
    man_page: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BodyFormatsArg {
    Both,
    Json,
}

/// `--completions` and `--man-page`: generated from the argument
/// definition itself, so a package ships what the binary accepts.
fn print_assets(args: &Args) -> anyhow::Result<bool> {
    use clap::CommandFactory as _;
    if let Some(shell) = args.completions {
        clap_complete::generate(
            shell,
            &mut Args::command(),
            "safd-mgmt",
            &mut std::io::stdout(),
        );
        return Ok(true);
    }
    if args.man_page {
        clap_mangen::Man::new(Args::command())
            .render(&mut std::io::stdout())
            .context("writing the man page")?;
        return Ok(true);
    }
    Ok(false)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    private_by_default();
    disable_transparent_huge_pages();
    let args = Args::parse();
    if print_assets(&args)? {
        return Ok(());
    }
    let token = args.token.clone().unwrap_or_default();
    if token.is_empty() {
        anyhow::bail!("--token is empty; give the token agents will present");
    }
    let service_ready = if args.service_down {
        Some(false)
    } else if args.service_up {
        Some(true)
    } else {
        None
    };
    let limits = Limits {
        max_streams: args.max_streams,
        max_streams_per_agent: args.max_streams_per_agent,
        max_new_streams_per_delivery: args.max_new_streams_per_delivery,
    };
    let credentials = match &args.tokens {
        Some(path) => safd_mgmt::credentials::Credentials::load(&token, path)?,
        None => safd_mgmt::credentials::Credentials::operator_only(&token),
    };
    if args.tokens.is_some() {
        tracing::info!(
            agents = credentials.agents(),
            "per-agent tokens from {}",
            args.tokens
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    if let Some(path) = args.tokens.clone() {
        reload_tokens_on_sighup(credentials.clone(), token.clone(), path);
    }
    let (listener, router) = safd_mgmt::bind(
        &args.data,
        args.listen,
        credentials,
        service_ready,
        limits,
        args.index_cache_mib << 20,
        match args.body_formats {
            BodyFormatsArg::Both => BodyFormats::Both,
            BodyFormatsArg::Json => BodyFormats::JsonOnly,
        },
    )
    .await?;
    let addr = listener.local_addr().context("listener address")?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(safd_mgmt::tls::server_config(
            cert,
            key,
            args.client_ca.as_deref(),
        )?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    // One line, written even if nobody reads it (a closed pipe must not
    // stop the server); tests and the demo parse it for the port.
    let _ = writeln!(std::io::stdout(), "listening on {scheme}://{addr}");
    tracing::info!("console: {scheme}://{addr}/console#token=<your token>");
    let limits = ServeLimits {
        max_connections: args.max_connections as usize,
        header_timeout: Duration::from_secs(args.header_timeout_secs.into()),
        request_timeout: Duration::from_secs(args.request_timeout_secs.into()),
    };
    match tls {
        Some(config) => {
            let listener = safd_mgmt::tls::TlsListener::new(listener, config)?;
            serve(listener, router, limits, shutdown_signal()).await;
        }
        None => serve(listener, router, limits, shutdown_signal()).await,
    }
    Ok(())
}

/// SIGHUP reads the tokens file again: an agent added (or a token
/// replaced or withdrawn) takes effect without a restart. A file that
/// cannot be used is logged and the tokens in force stay.
fn reload_tokens_on_sighup(
    credentials: safd_mgmt::credentials::Credentials,
    operator: String,
    path: PathBuf,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("SIGHUP cannot be caught: the tokens file is read at start only");
            return;
        };
        while hangups.recv().await.is_some() {
            match credentials.reload(&operator, &path) {
                Ok(agents) => tracing::info!(
                    agents,
                    "SIGHUP: per-agent tokens read again from {}",
                    path.display()
                ),
                Err(err) => {
                    tracing::error!("SIGHUP: {err:#}; the tokens in force stay")
                }
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
