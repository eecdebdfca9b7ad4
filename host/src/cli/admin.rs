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
    fn client(&self) -> anyhow::Result<AdminClient> {
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
            "{:<20} {:<10} {:>8} {:>9}  LAST ERROR",
            "SOURCE", "STATE", "SINCE", "FAILURES"
        )?;
        for s in &status.sources {
            writeln!(
                out,
                "{:<20} {:<10} {:>7}s {:>9}  {}",
                s.stream,
                s.state,
                s.since_secs,
                s.failures,
                s.last_error.as_deref().unwrap_or("-")
            )?;
        }
    }
    for group in &status.groups {
        for lane in &group.lanes {
            writeln!(out)?;
            let lag: u64 = lane.lag.values().sum();
            writeln!(
                out,
                "group {} ({})   active {}   epoch {}   unacknowledged {lag}{}",
                lane.cursor,
                group.mode,
                lane.active.as_deref().unwrap_or("none"),
                lane.epoch,
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
