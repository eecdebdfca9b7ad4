//! `safd plugins test FILE`: the conformance suite every connector must
//! pass, written once against the WIT contract rather than per plugin.
//!
//! Each check prints one line as it finishes (`ok`, `FAIL` with what was
//! seen and what the contract asks, or `n/a` with why it could not run);
//! the exit status is 1 when any check failed. The plugin runs in the
//! daemon's sandbox and limits, with the grants given on the command line,
//! as `safd plugins try` runs it.
//!
//! What is checked (the contract's words are in `wit/connector.wit`):
//! - every plugin: `describe` is well-formed and matches the manifest; the
//!   given config is accepted; a config that is not JSON, not an object,
//!   has an unknown key or a value of the wrong type for its schema gets
//!   problems, each naming its key; generated configs never make it trap;
//! - sources: polls respect their limits; ids are unique within a read and
//!   the same when read again from the start; a session opened from a
//!   cursor continues exactly after it (nothing read again, nothing
//!   skipped); a cursor it cannot use gives `bad-cursor`;
//! - destinations: registering and delivering to a working receiver
//!   succeeds; acknowledged-through never goes backwards and never passes
//!   the seqs it was given; rejections name only seqs it was given; a
//!   re-sent batch, safd's own stream and left-out ranges are handled;
//!   generated odd events ([`safd_event_block::odd`]) never make it trap,
//!   and what it answers to them is an error case safd can act on; a
//!   member nobody listens on gives `unavailable` (or `transient`).

mod common;
mod destination;
mod source;

use super::CacheArgs;
use super::plugin_try::GrantArgs;
use clap::Args;
use safd_runtime::PluginKind;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// The plugin's `.wasm` file (its `.toml` manifest beside it).
    file: PathBuf,
    /// A working config for the instance, as JSON (what `config = { … }`
    /// holds): the suite derives its bad configs from it.
    #[arg(long, default_value = "{}")]
    config: String,
    #[command(flatten)]
    grants: GrantArgs,
    /// Destinations: the address of a working receiver (as in `members`).
    #[arg(long)]
    address: Option<String>,
    /// Sources: read at most this many events per pass.
    #[arg(long, default_value_t = 2_000)]
    max_events: usize,
    /// Destinations: how many odd events to deliver.
    #[arg(long, default_value_t = 300)]
    odd_events: usize,
    /// The seed of the generated configs and odd events (default: from the
    /// clock; the report prints it, so a failure can be replayed).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    cache: CacheArgs,
}

pub(crate) async fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let runtime = args.cache.runtime()?;
    let plugin = runtime.load(&args.file)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!(
        "safd plugins test {} ({} {}, {}); seed {seed}",
        args.file.display(),
        plugin.kind(),
        plugin.name(),
        plugin.manifest.version
    );
    let mut report = Report {
        verdicts: Vec::new(),
        started: std::time::Instant::now(),
    };
    let schema = common::describe(&plugin, &mut report).await;
    common::configs(&plugin, schema.as_deref(), &args.config, seed, &mut report).await;
    let grants = args.grants.grants();
    match plugin.kind() {
        PluginKind::Source => {
            source::run(&plugin, &args.config, &grants, args.max_events, &mut report).await
        }
        PluginKind::Destination => {
            let setup = destination::Setup {
                config: &args.config,
                grants: &grants,
                address: args.address.as_deref(),
                odd_events: args.odd_events,
                seed,
            };
            destination::run(&plugin, setup, &mut report).await
        }
    }
    Ok(report.finish())
}

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Passed,
    Failed,
    /// The check could not run with this config or input (said why).
    NotApplicable,
}

/// The checks so far, printed as they are recorded.
#[derive(Debug)]
pub(crate) struct Report {
    verdicts: Vec<Verdict>,
    started: std::time::Instant,
}

impl Report {
    pub(crate) fn record(&mut self, verdict: Verdict, check: &str, detail: impl AsRef<str>) {
        let tag = match verdict {
            Verdict::Passed => "ok  ",
            Verdict::Failed => "FAIL",
            Verdict::NotApplicable => "n/a ",
        };
        let detail = detail.as_ref();
        if detail.is_empty() {
            println!("{tag} {check}");
        } else {
            println!("{tag} {check}: {detail}");
        }
        self.verdicts.push(verdict);
    }

    pub(crate) fn pass(&mut self, check: &str, detail: impl AsRef<str>) {
        self.record(Verdict::Passed, check, detail);
    }

    pub(crate) fn fail(&mut self, check: &str, detail: impl AsRef<str>) {
        self.record(Verdict::Failed, check, detail);
    }

    pub(crate) fn not_applicable(&mut self, check: &str, why: impl AsRef<str>) {
        self.record(Verdict::NotApplicable, check, why);
    }

    /// Pass when `problems` is empty, else fail listing them: each once
    /// (with how often it was seen), the first few only.
    pub(crate) fn expect(&mut self, check: &str, passed: &str, problems: &[String]) {
        const SHOWN: usize = 3;
        if problems.is_empty() {
            return self.pass(check, passed);
        }
        let mut distinct: Vec<(&String, usize)> = Vec::new();
        for problem in problems {
            match distinct.iter_mut().find(|(seen, _)| *seen == problem) {
                Some((_, times)) => *times += 1,
                None => distinct.push((problem, 1)),
            }
        }
        let mut shown: Vec<String> = distinct
            .iter()
            .take(SHOWN)
            .map(|(problem, times)| match times {
                1 => (*problem).clone(),
                n => format!("{problem} ({n} times)"),
            })
            .collect();
        if distinct.len() > SHOWN {
            shown.push(format!("and {} more", distinct.len() - SHOWN));
        }
        self.fail(check, shown.join("; "));
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.verdicts.iter().filter(|v| **v == verdict).count()
    }

    fn finish(self) -> ExitCode {
        let failed = self.count(Verdict::Failed);
        println!(
            "{}: {} passed, {failed} failed, {} not applicable, in {:.1} s",
            if failed == 0 { "PASSED" } else { "FAILED" },
            self.count(Verdict::Passed),
            self.count(Verdict::NotApplicable),
            self.started.elapsed().as_secs_f64()
        );
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}
