//! `safd plugins try FILE --config JSON`: one plugin run on its own, in the
//! daemon's sandbox and limits, without a daemon or a server setup.
//!
//! A source is polled (its events printed as JSON lines on stdout), its
//! cursor committed, then the instance is opened again from that cursor:
//! an event read again is reported (exit status 1), as is a cursor the
//! plugin cannot resume from. A destination opens a session to
//! `--address`, registers, delivers sample events (from `--events FILE`,
//! JSON lines, or generated) and probes, printing each answer or the error
//! case the plugin chose.

use super::CacheArgs;
use anyhow::{Context, bail};
use clap::Args;
use safd_connector::{
    Attribute, DestinationConnector, Endpoint, Event, MemberRole, PollLimits, SequencedEvent,
    SessionInfo, Severity, SourceConnector, StreamBatch, StreamPosition,
};
use safd_runtime::{Grants, PluginKind, TlsFiles};
use std::collections::HashSet;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct TryArgs {
    /// The plugin's `.wasm` file (its `.toml` manifest beside it).
    file: PathBuf,
    /// The instance's config, as JSON (what `config = { … }` holds).
    #[arg(long, default_value = "{}")]
    config: String,
    #[command(flatten)]
    grants: GrantArgs,
    /// Sources: polls before the restart from the cursor (fewer when the
    /// source has nothing more).
    #[arg(long, default_value_t = 20)]
    polls: u32,
    /// Destinations: the member's address (as in `members`).
    #[arg(long)]
    address: Option<String>,
    /// Destinations: events to deliver, one JSON object per line (`id`,
    /// `time` as RFC 3339, `severity`, `attributes` as an object, `body`).
    #[arg(long, value_name = "FILE.jsonl")]
    events: Option<PathBuf>,
    /// Destinations: how many events to generate without `--events`.
    #[arg(long, default_value_t = 5)]
    count: u64,
    #[command(flatten)]
    cache: CacheArgs,
}

/// What the plugin may reach: the `grants` of an instance, as flags.
#[derive(Debug, Args)]
pub(crate) struct GrantArgs {
    /// A directory the plugin may read (repeatable).
    #[arg(long = "grant-dir", value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// An HTTP authority (`host:port`) the plugin may send to (repeatable).
    #[arg(long = "grant-http", value_name = "AUTHORITY")]
    http: Vec<String>,
    /// A TCP address (`ip:port`) the plugin may connect to (repeatable).
    #[arg(long = "grant-tcp", value_name = "ADDRESS")]
    tcp: Vec<String>,
    /// A local address (`ip:port`) a source may listen on (repeatable).
    #[arg(long = "grant-listen", value_name = "ADDRESS")]
    listen: Vec<String>,
    /// TLS: the CA bundle (PEM) whose certificates are trusted
    /// (`grants.tls.ca_file`).
    #[arg(long = "grant-tls-ca", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// TLS: the certificate chain (PEM) presented to peers
    /// (`grants.tls.cert_file`).
    #[arg(long = "grant-tls-cert", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// TLS: the private key (PEM) of the certificate (`grants.tls.key_file`).
    #[arg(long = "grant-tls-key", value_name = "FILE")]
    tls_key: Option<PathBuf>,
}

impl GrantArgs {
    pub(crate) fn grants(&self) -> Grants {
        Grants {
            dirs: self.dirs.clone(),
            http: self.http.clone(),
            tcp: self.tcp.clone(),
            listen: self.listen.clone(),
            tls: (self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some()).then(
                || TlsFiles {
                    ca_file: self.tls_ca.clone(),
                    cert_file: self.tls_cert.clone(),
                    key_file: self.tls_key.clone(),
                },
            ),
        }
    }
}

/// The stream a destination is given.
const STREAM: &str = "try";

pub(crate) async fn run(args: TryArgs) -> anyhow::Result<ExitCode> {
    let runtime = args.cache.runtime()?;
    let plugin = runtime.load(&args.file)?;
    let grants = args.grants.grants();
    match plugin.manifest.kind {
        PluginKind::Source => {
            let source = plugin.source("try", args.config.clone(), &grants)?;
            try_source(&source, args.polls).await
        }
        PluginKind::Destination => {
            let Some(address) = args.address.clone() else {
                bail!("a destination needs --address: the member address to deliver to");
            };
            let destination = plugin
                .destination("try", args.config.clone(), &grants)
                .await?;
            let events = match &args.events {
                Some(path) => read_events(path)?,
                None => generated(args.count),
            };
            try_destination(&destination, address, events).await
        }
    }
}

async fn try_source(source: &dyn SourceConnector, polls: u32) -> anyhow::Result<ExitCode> {
    let limits = PollLimits::default();
    let mut session = source.open(None).await.context("open")?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut cursor = None;
    let mut polled = 0;
    while polled < polls {
        polled += 1;
        let batch = session.poll(limits).await.context("poll")?;
        let events = batch.events.to_events();
        for event in &events {
            println!("{}", event_json(event));
            seen.insert(event.id.clone());
        }
        if let Some(next) = batch.cursor {
            session.commit(&next).await.context("commit")?;
            cursor = Some(next);
        }
        eprintln!(
            "poll {polled}: {} events{}{}",
            events.len(),
            if cursor.is_some() {
                ", cursor committed"
            } else {
                ""
            },
            if batch.more { ", more ready" } else { "" }
        );
        if events.is_empty() && !batch.more {
            break;
        }
    }
    let Some(cursor) = cursor else {
        eprintln!(
            "try: {} events in {polled} polls; no cursor returned, so no restart",
            seen.len()
        );
        return Ok(ExitCode::SUCCESS);
    };
    // A restart as safd makes one: a fresh instance from the last cursor.
    drop(session);
    let mut resumed = source
        .open(Some(cursor))
        .await
        .context("open again from the committed cursor")?;
    let batch = resumed
        .poll(limits)
        .await
        .context("poll after the restart")?;
    let repeated: Vec<String> = batch
        .events
        .to_events()
        .into_iter()
        .filter(|e| seen.contains(&e.id))
        .map(|e| e.id)
        .collect();
    if !repeated.is_empty() {
        eprintln!(
            "try: FAILED: opened from its cursor, the source read {} events again: {}",
            repeated.len(),
            repeated.join(", ")
        );
        return Ok(ExitCode::from(1));
    }
    eprintln!(
        "try: {} events in {polled} polls; restarted from the committed cursor: nothing \
         read again ({} new events in its first poll)",
        seen.len(),
        batch.events.len()
    );
    Ok(ExitCode::SUCCESS)
}

async fn try_destination(
    destination: &dyn DestinationConnector,
    address: String,
    events: Vec<Event>,
) -> anyhow::Result<ExitCode> {
    println!("acknowledgement: {:?}", destination.acknowledgement());
    let mut session = destination
        .open(Endpoint {
            member: "try".to_owned(),
            address,
            role: MemberRole::Primary,
        })
        .await
        .context("open")?;
    let stored = events.len() as u64;
    let info = SessionInfo {
        agent_id: "safd-try".to_owned(),
        group: "try".to_owned(),
        epoch: 1,
        active: true,
        stored: vec![StreamPosition {
            stream: STREAM.to_owned(),
            seq: stored,
        }],
        acknowledged: Vec::new(),
    };
    let failed = |what: &str, err: &dyn std::fmt::Display| {
        println!("{what}: error: {err}");
        Ok(ExitCode::from(1))
    };
    match session.register(&info).await {
        Ok(registration) => println!(
            "register: service ready {}, high-water {}, catch-up {}",
            registration.service_ready,
            positions(&registration.high_water),
            if registration.catch_up.is_some() {
                "asked"
            } else {
                "not asked"
            }
        ),
        Err(err) => return failed("register", &err),
    }
    let batch = StreamBatch::new(
        STREAM,
        events
            .into_iter()
            .zip(1..)
            .map(|(event, seq)| SequencedEvent { seq, event })
            .collect::<Vec<_>>()
            .into(),
    );
    match session.deliver(std::slice::from_ref(&batch)).await {
        Ok(report) => {
            println!(
                "deliver {stored} events (stream `{STREAM}`, seqs 1–{stored}): acknowledged {}",
                positions(&report.acknowledged)
            );
            for rejection in &report.rejected {
                println!(
                    "  rejected {} seq {}: {}",
                    rejection.stream, rejection.seq, rejection.reason
                );
            }
        }
        Err(err) => return failed("deliver", &err),
    }
    match session.probe().await {
        Ok(health) => println!(
            "probe: service ready {}{}",
            health.service_ready,
            if health.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", health.detail)
            }
        ),
        Err(err) => return failed("probe", &err),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn positions(positions: &[StreamPosition]) -> String {
    if positions.is_empty() {
        return "none".to_owned();
    }
    positions
        .iter()
        .map(|p| format!("{} through {}", p.stream, p.seq))
        .collect::<Vec<_>>()
        .join(", ")
}

fn event_json(event: &Event) -> serde_json::Value {
    serde_json::json!({
        "id": event.id,
        "time": jiff::Timestamp::from_microsecond(event.time)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| event.time.to_string()),
        "severity": event.severity.as_str(),
        "attributes": event
            .attributes
            .iter()
            .map(|a| (a.key.clone(), serde_json::Value::from(a.value.clone())))
            .collect::<serde_json::Map<_, _>>(),
        "body": event.body,
    })
}

pub(crate) fn generated(count: u64) -> Vec<Event> {
    let now = jiff::Timestamp::now().as_microsecond();
    (1..=count)
        .map(|n| Event {
            id: format!("try-{now}-{n}"),
            time: now,
            severity: Severity::Info,
            attributes: vec![Attribute::new("source", "safd plugins try")],
            body: format!("sample event {n} of {count} from safd plugins try"),
        })
        .collect()
}

/// Events from a JSON-lines file, each line checked with its number.
fn read_events(path: &std::path::Path) -> anyhow::Result<Vec<Event>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut events = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}: not JSON", at()))?;
        let text = |key: &str| value[key].as_str().map(str::to_owned);
        let Some(body) = text("body") else {
            bail!("{}: `body` (a string) is missing", at());
        };
        let time = match text("time") {
            Some(time) => time
                .parse::<jiff::Timestamp>()
                .with_context(|| format!("{}: `time` is not an RFC 3339 time", at()))?
                .as_microsecond(),
            None => jiff::Timestamp::now().as_microsecond(),
        };
        let severity = match text("severity") {
            Some(name) => Severity::from_name(&name).with_context(|| {
                format!("{}: severity `{name}` is not one of debug, info, warning, minor, major, critical", at())
            })?,
            None => Severity::Info,
        };
        let attributes = value["attributes"]
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(k, v)| Attribute::new(k.clone(), v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        events.push(Event {
            id: text("id").unwrap_or_else(|| format!("try-line-{}", n + 1)),
            time,
            severity,
            attributes,
            body,
        });
    }
    if events.is_empty() {
        bail!("{} holds no events", path.display());
    }
    Ok(events)
}
