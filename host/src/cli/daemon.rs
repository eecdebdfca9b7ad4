//! `safd run` and `safd check`: the daemon from its configuration file.

use crate::admin::ReloadRequest;
use crate::config::{self, Checked};
use crate::reload::{self, Applied};
use anyhow::Context;
use clap::Args;
use safd_engine::Engine;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Clone, Args)]
pub(crate) struct ConfigArgs {
    /// Configuration file (see docs/configuration.md).
    #[arg(short = 'c', long = "config", env = "SAFD_CONFIG")]
    pub config: PathBuf,
    /// Where compiled plugin code is cached when the file sets no
    /// `cache_dir`. Default: $XDG_CACHE_HOME/safd or ~/.cache/safd.
    #[arg(long, env = "SAFD_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl ConfigArgs {
    async fn check(&self) -> Result<Checked, config::ConfigError> {
        config::check(&self.config, |from_file| {
            let cache = super::CacheArgs {
                cache_dir: from_file.map(Path::to_owned).or(self.cache_dir.clone()),
            };
            cache.runtime()
        })
        .await
    }
}

/// `safd check -c FILE`: everything `run` checks before it opens anything.
pub(crate) async fn check(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    match args.check().await {
        Ok(checked) => {
            println!("{}: OK — {}", args.config.display(), checked.summary());
            for warning in &checked.warnings {
                println!(
                    "{}:{}: warning: {}: {}",
                    args.config.display(),
                    warning.line,
                    warning.key,
                    warning.message
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("{err}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `safd run -c FILE`: check, open the queue, start sources and groups, and
/// serve until SIGINT or SIGTERM; SIGHUP (or `safd reload`) re-reads the
/// file.
pub(crate) async fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let checked = match args.check().await {
        Ok(checked) => checked,
        Err(err) => {
            super::log::say(&err.to_string());
            return Ok(ExitCode::FAILURE);
        }
    };
    let summary = checked.summary();
    for warning in &checked.warnings {
        tracing::warn!(
            "{}:{}: {}: {}",
            args.config.display(),
            warning.line,
            warning.key,
            warning.message
        );
    }
    let admin_options = checked.admin.clone();
    let admin_listen = admin_options.listen;
    let agent_id = checked.engine.agent_id.clone();
    let mut applied = Applied::of(&checked);
    let engine = start_engine(checked)?;
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<ReloadRequest>(4);
    let (admin_addr, listener, router) = crate::admin::bind(
        engine.clone(),
        &agent_id,
        admin_listen,
        admin_options.token.clone(),
        reload_tx,
    )
    .await
    .with_context(|| {
        format!(
            "admin.listen: cannot listen on {admin_listen}; change [admin] listen in {} \
                     (is another safd running?)",
            args.config.display()
        )
    })?;
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = admin_stopped.await;
    };
    let scheme = if admin_options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let admin = match admin_options.tls {
        None => tokio::spawn(serve_admin(listener, router, stopped)),
        Some(config) => {
            let listener = crate::admin::tls::AdminTlsListener(
                safd_runtime::TlsListener::new(listener, config, "admin API".into())
                    .context("admin.tls: serving the admin API over TLS")?,
            );
            tokio::spawn(serve_admin(listener, router, stopped))
        }
    };
    super::log::say(&format!(
        "safd running: {summary}; admin API on {scheme}://{admin_addr}"
    ));
    super::systemd::notify(&format!(
        "READY=1\nSTATUS=running: {summary}; admin API on {scheme}://{admin_addr}"
    ));

    let signal = serve(&args, &engine, &mut applied, &mut reload_rx).await?;
    super::systemd::notify(&format!(
        "STOPPING=1\nSTATUS={signal}: settling deliveries in flight, flushing"
    ));
    super::log::say(&format!(
        "safd: {signal}: stopping sources, settling deliveries in flight, flushing"
    ));
    engine
        .shutdown()
        .await
        .context("stopping the engine cleanly")?;
    let _ = stop_admin.send(());
    let _ = admin.await;
    super::log::say("safd: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Serve the admin API on `listener` until `stopped`.
async fn serve_admin<L>(
    listener: L,
    router: axum::Router,
    stopped: impl Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(stopped)
        .await;
    if let Err(err) = served {
        tracing::error!("admin API stopped: {err}");
    }
}

/// Open the queue and start the sources and groups of a checked
/// configuration.
pub(crate) fn start_engine(checked: Checked) -> anyhow::Result<Arc<Engine>> {
    let (engine, report) = Engine::open(checked.engine).with_context(|| {
        "cannot open the queue; check data_dir (writable, not used by another safd)".to_owned()
    })?;
    tracing::info!(?report, "queue opened");
    // The runtime's plugin events (3xxx) take the engine's path too.
    checked
        .runtime
        .report_to(Arc::new(engine.notices().clone()));
    let engine = Arc::new(engine);
    for (name, source, tuning) in checked.sources {
        engine
            .add_source(&name, Arc::new(source), tuning)
            .with_context(|| format!("starting source `{name}`"))?;
    }
    for group in checked.groups {
        let name = group.name.clone();
        engine
            .add_group(group)
            .with_context(|| format!("starting group `{name}`"))?;
    }
    Ok(engine)
}

/// Apply reloads (SIGHUP, or `safd reload` through the admin API) one at a
/// time until SIGINT or SIGTERM.
async fn serve(
    args: &ConfigArgs,
    engine: &Engine,
    applied: &mut Applied,
    reloads: &mut tokio::sync::mpsc::Receiver<ReloadRequest>,
) -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    loop {
        let reply = tokio::select! {
            _ = term.recv() => return Ok("SIGTERM"),
            _ = interrupt.recv() => return Ok("SIGINT"),
            _ = hangup.recv() => None,
            Some(reply) = reloads.recv() => Some(reply),
        };
        super::systemd::notify("RELOADING=1\nSTATUS=reloading the configuration");
        let runtime = applied.runtime().clone();
        let next = config::check(&args.config, |_| Ok(runtime)).await;
        let report = reload::apply(engine, applied, next).await;
        let summary = report.summary();
        super::systemd::notify(&format!("READY=1\nSTATUS={summary}"));
        if report.applied() {
            super::log::say(&format!("safd: {summary}"));
        } else {
            tracing::error!("{summary}");
            super::log::say(&format!("safd: {summary}"));
        }
        if let Some(reply) = reply {
            // The caller may have given up waiting; the reload stands.
            let _ = reply.send(report);
        }
    }
}
