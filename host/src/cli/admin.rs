//! `safd status`, `safd catchup`, `safd dlq`, `safd reload`: clients of a
//! running safd's admin API.

use crate::admin::CatchUpRequest;
use crate::admin::client::AdminClient;
use clap::{Args, Subcommand};
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// The running safd's admin API (`[admin] listen`).
    #[arg(long, env = "SAFD_ADMIN", default_value = "127.0.0.1:8470")]
    admin: String,
    /// Its token (`[admin] token`), if it has one.
    #[arg(long, env = "SAFD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// An API served over TLS (`[admin] tls`): the CA that signed its
    /// certificate (PEM). Implies https.
    #[arg(long, env = "SAFD_ADMIN_CA")]
    admin_ca: Option<std::path::PathBuf>,
    /// A client certificate for an API that requires one (PEM).
    #[arg(long, env = "SAFD_ADMIN_CERT", requires = "admin_key")]
    admin_cert: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "SAFD_ADMIN_KEY", requires = "admin_cert")]
    admin_key: Option<std::path::PathBuf>,
}

impl AdminArgs {
    pub(crate) fn client(&self) -> anyhow::Result<AdminClient> {
        AdminClient::new(
            &self.admin,
            self.token.clone(),
            &crate::admin::client::ClientTls {
                ca_file: self.admin_ca.clone(),
                cert_file: self.admin_cert.clone(),
                key_file: self.admin_key.clone(),
            },
        )
    }
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The whole status as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CatchUpArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The group whose active member gets the replay.
    #[arg(long)]
    group: String,
    /// Broadcast groups: the member to replay to.
    #[arg(long)]
    member: Option<String>,
    /// Replay a stream from this seq: STREAM=SEQ (repeatable).
    #[arg(
        long = "from-seq",
        value_name = "STREAM=SEQ",
        conflicts_with = "from_time"
    )]
    from_seq: Vec<String>,
    /// Replay events ingested since this RFC 3339 time.
    #[arg(long = "from-time", value_name = "TIME")]
    from_time: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ReloadArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List a group's dead letters.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        group: String,
    },
    /// Deliver a group's dead letters again; those now accepted leave the
    /// dead-letter queue.
    Replay {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        group: String,
    },
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await?
}

pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = args.admin.client()?;
    let status = blocking(move || client.status()).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "agent {}   up {} s",
        status.agent_id, status.uptime_secs
    )?;
    writeln!(out, "queue {}", queue_line(&status.queue))?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<20} {:>12} {:>12} {:>12} {:>12}",
        "STREAM", "FIRST SEQ", "NEXT SEQ", "STORED", "BYTES"
    )?;
    for s in &status.streams {
        writeln!(
            out,
            "{:<20} {:>12} {:>12} {:>12} {:>12}",
            s.name, s.first_seq, s.next_seq, s.stored_events, s.bytes
        )?;
    }
    if !status.sources.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{:<20} {:<10} {:>8} {:>9} {:>9}  LAST ERROR",
            "SOURCE", "STATE", "SINCE", "FAILURES", "RESTARTS"
        )?;
        for s in &status.sources {
            writeln!(
                out,
                "{:<20} {:<10} {:>7}s {:>9} {:>9}  {}",
                s.stream,
                s.state,
                s.since_secs,
                s.failures,
                s.restarts,
                s.last_error.as_deref().unwrap_or("-")
            )?;
        }
    }
    for group in &status.groups {
        for lane in &group.lanes {
            writeln!(out)?;
            let lag: u64 = lane.lag.values().sum();
            let oldest = lane
                .oldest_unacknowledged_secs
                .values()
                .max()
                .copied()
                .unwrap_or(0);
            writeln!(
                out,
                "group {} ({})   active {}   epoch {}   unacknowledged {lag} (oldest {}){}",
                lane.cursor,
                group.mode,
                lane.active.as_deref().unwrap_or("none"),
                lane.epoch,
                age(oldest),
                if lane.catching_up {
                    "   catching up"
                } else {
                    ""
                }
            )?;
            writeln!(
                out,
                "  {:<12} {:<12} {:<11} {:<30} LAST ERROR",
                "MEMBER", "HEALTH", "REGISTERED", "ADDRESS"
            )?;
            for m in &lane.members {
                writeln!(
                    out,
                    "  {:<12} {:<12} {:<11} {:<30} {}",
                    m.name,
                    m.health,
                    if m.registered { "yes" } else { "no" },
                    m.address,
                    m.last_error.as_deref().unwrap_or("-")
                )?;
            }
        }
    }
    if !status.recent_events.is_empty() {
        writeln!(out)?;
        writeln!(out, "recent events:")?;
        for notice in status.recent_events.iter().rev().take(10).rev() {
            writeln!(out, "  {} [{}] {}", notice.time, notice.id, notice.message)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `12.0 MiB of 1.0 GiB (1 %); disk 40.2 GiB free, 64.0 MiB kept`.
pub(crate) fn queue_line(queue: &crate::admin::QueueView) -> String {
    let percent = if queue.capacity_bytes == 0 {
        0.0
    } else {
        queue.stored_bytes as f64 * 100.0 / queue.capacity_bytes as f64
    };
    let disk = match queue.disk_free_bytes {
        Some(free) => format!(
            "disk {} free, {} kept",
            bytes(free),
            bytes(queue.min_free_bytes)
        ),
        None => format!(
            "disk: free space unknown, {} kept",
            bytes(queue.min_free_bytes)
        ),
    };
    format!(
        "{} of {} ({percent:.0} %); {disk}",
        bytes(queue.stored_bytes),
        bytes(queue.capacity_bytes)
    )
}

/// Bytes in binary units, one decimal.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Seconds as `0s`, `42s`, `3m12s`, `5h03m`, `2d04h`.
pub(crate) fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

pub(crate) async fn catch_up(args: CatchUpArgs) -> anyhow::Result<ExitCode> {
    let mut from_seq = std::collections::BTreeMap::new();
    for item in &args.from_seq {
        let Some((stream, seq)) = item.split_once('=') else {
            anyhow::bail!("--from-seq `{item}`: write STREAM=SEQ, e.g. ems-prod1=48000");
        };
        let seq: u64 = seq
            .parse()
            .map_err(|_| anyhow::anyhow!("--from-seq `{item}`: `{seq}` is not a seq"))?;
        from_seq.insert(stream.to_owned(), seq);
    }
    if from_seq.is_empty() && args.from_time.is_none() {
        anyhow::bail!("give --from-seq STREAM=SEQ or --from-time TIME");
    }
    let request = CatchUpRequest {
        group: args.group.clone(),
        member: args.member.clone(),
        from_seq,
        from_time: args.from_time.clone(),
    };
    let client = args.admin.client()?;
    blocking(move || client.catch_up(&request)).await?;
    println!(
        "catch-up of group `{}` started (see `safd status` and events 4001/4002)",
        args.group
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn dlq(command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List { admin, group } => {
            let client = admin.client()?;
            let letters = blocking(move || client.dead_letters(&group)).await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<16} {:>10} {:<12} {:<28} REASON",
                "STREAM", "SEQ", "MEMBER", "REJECTED AT"
            )?;
            for l in &letters {
                writeln!(
                    out,
                    "{:<16} {:>10} {:<12} {:<28} {}",
                    l.stream, l.seq, l.member, l.rejected_at, l.reason
                )?;
            }
            writeln!(out, "{} dead letter(s)", letters.len())?;
        }
        DlqCommand::Replay { admin, group } => {
            let client = admin.client()?;
            let answer = blocking(move || client.replay(&group)).await?;
            println!("{} dead letter(s) queued for replay", answer["queued"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit status 1 when the file was refused or something could not be
/// applied, so scripts notice.
pub(crate) async fn reload(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let client = args.admin.client()?;
    let report = blocking(move || client.reload()).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else if !report.problems.is_empty() {
        writeln!(
            out,
            "reload refused; the running configuration stays. Fix these and reload again:"
        )?;
        for problem in &report.problems {
            writeln!(out, "  {problem}")?;
        }
    } else {
        let restart = (
            "needs a restart (running values kept)",
            &report.needs_restart[..],
        );
        for (label, entries) in report.sections().into_iter().chain([restart]) {
            if !entries.is_empty() {
                writeln!(out, "{label}: {}", entries.join(", "))?;
            }
        }
    }
    Ok(if report.applied() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
