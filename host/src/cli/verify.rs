//! `safd verify`: do a group's servers, together, hold every event safd
//! counts as acknowledged? Asks the running safd (its admin API) what each
//! group acknowledged per stream and which events it dead-lettered, asks
//! each member's server (safd-mgmt's `/safd/v1/stats`) which seqs it holds,
//! and lists the seqs no server holds. A failover pair splits a stream
//! between its servers; only their union has to be whole.

use super::admin::AdminArgs;
use crate::admin::client::{ClientTls, tls_config};
use crate::admin::{GroupView, LaneView};
use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The group to verify (default: every group).
    #[arg(long)]
    group: Option<String>,
    /// A token the servers accept for reading: safd-mgmt's console token
    /// or the operator's.
    #[arg(long, env = "SAFD_VERIFY_TOKEN", hide_env_values = true)]
    server_token: String,
    /// The CA (PEM) that signed the servers' certificates, for servers
    /// served over https.
    #[arg(long)]
    server_ca: Option<PathBuf>,
    /// The result as JSON.
    #[arg(long)]
    json: bool,
}

/// One stream of one group's lane: what is missing from its servers.
#[derive(Debug, Serialize)]
struct StreamVerdict {
    group: String,
    stream: String,
    /// Every seq from 1 to this was acknowledged.
    acknowledged: u64,
    /// Dead-lettered seqs: acknowledged, never meant to be held.
    dead_letters: usize,
    /// What the servers together hold, as inclusive ranges.
    held: Vec<[u64; 2]>,
    /// Acknowledged seqs no server holds, as inclusive ranges.
    missing: Vec<[u64; 2]>,
}

/// `/safd/v1/stats` of safd-mgmt, the part this needs.
#[derive(Debug, Deserialize)]
struct ServerStats {
    streams: Vec<ServerStream>,
}

#[derive(Debug, Deserialize)]
struct ServerStream {
    agent: String,
    stream: String,
    held: Vec<[u64; 2]>,
}

pub(crate) fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let admin = args.admin.client()?;
    let status = admin.status()?;
    let groups: Vec<&GroupView> = status
        .groups
        .iter()
        .filter(|g| args.group.as_ref().is_none_or(|name| *name == g.name))
        .collect();
    if groups.is_empty() {
        match &args.group {
            Some(name) => bail!("safd has no group `{name}`; `safd status` lists them"),
            None => bail!("safd has no groups to verify"),
        }
    }
    let tls = args
        .server_ca
        .as_ref()
        .map(|ca| {
            tls_config(
                &ClientTls {
                    ca_file: Some(ca.clone()),
                    ..ClientTls::default()
                },
                "server",
            )
        })
        .transpose()?;
    let mut verdicts = Vec::new();
    for group in groups {
        let routes = if group.streams.is_empty() {
            safd_engine::Routes::all()
        } else {
            safd_engine::Routes::matching(&group.streams)
                .map_err(|e| anyhow::anyhow!("group `{}`: streams {e}", group.name))?
        };
        let mut dead: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for letter in admin.dead_letters(&group.name)? {
            dead.entry(letter.stream).or_default().insert(letter.seq);
        }
        for lane in &group.lanes {
            let held = held_by_lane(lane, &status.agent_id, &args.server_token, tls.as_ref())?;
            for (stream, &acknowledged) in &lane.acknowledged {
                if acknowledged == 0 || !routes.routes(stream) {
                    continue;
                }
                let none = BTreeSet::new();
                let dead = dead.get(stream).unwrap_or(&none);
                let held = held.get(stream).cloned().unwrap_or_default();
                verdicts.push(StreamVerdict {
                    group: lane.cursor.clone(),
                    stream: stream.clone(),
                    acknowledged,
                    dead_letters: dead.range(..=acknowledged).count(),
                    missing: missing(acknowledged, &held, dead),
                    held,
                });
            }
        }
    }
    let complete = verdicts.iter().all(|v| v.missing.is_empty());
    if args.json {
        let answer = serde_json::json!({ "complete": complete, "streams": verdicts });
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print_verdicts(&verdicts);
    }
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Per stream of `agent`, the union of what the lane's members hold.
fn held_by_lane(
    lane: &LaneView,
    agent: &str,
    token: &str,
    tls: Option<&ureq::tls::TlsConfig>,
) -> anyhow::Result<BTreeMap<String, Vec<[u64; 2]>>> {
    let mut union: BTreeMap<String, Vec<[u64; 2]>> = BTreeMap::new();
    for member in &lane.members {
        let stats = server_stats(&member.address, token, tls).with_context(|| {
            format!(
                "cannot verify `{}`: member `{}` ({}) did not answer",
                lane.cursor, member.name, member.address
            )
        })?;
        for stream in stats.streams.into_iter().filter(|s| s.agent == agent) {
            union.entry(stream.stream).or_default().extend(stream.held);
        }
    }
    for ranges in union.values_mut() {
        *ranges = merged(std::mem::take(ranges));
    }
    Ok(union)
}

fn server_stats(
    address: &str,
    token: &str,
    tls: Option<&ureq::tls::TlsConfig>,
) -> anyhow::Result<ServerStats> {
    let url = format!("{}/safd/v1/stats", address.trim_end_matches('/'));
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)));
    if let Some(tls) = tls {
        config = config.tls_config(tls.clone());
    }
    let agent: ureq::Agent = config.build().into();
    let mut response = agent
        .get(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string()?;
    match status {
        200 => serde_json::from_str(&body).with_context(|| {
            format!("{url} did not answer as safd-mgmt does (docs/mgmt-server.md, Query API)")
        }),
        401 => bail!("{url}: 401: give --server-token a token the server accepts for reading"),
        _ => bail!("{url}: {status}: {body}"),
    }
}

/// Sorted, overlapping and adjacent ranges joined.
fn merged(mut ranges: Vec<[u64; 2]>) -> Vec<[u64; 2]> {
    ranges.sort_unstable();
    let mut out: Vec<[u64; 2]> = Vec::with_capacity(ranges.len());
    for [start, end] in ranges {
        match out.last_mut() {
            Some(last) if start <= last[1].saturating_add(1) => last[1] = last[1].max(end),
            _ => out.push([start, end]),
        }
    }
    out
}

/// The seqs from 1 to `acknowledged` that `held` (merged) lacks, without
/// the dead-lettered ones, as inclusive ranges.
fn missing(acknowledged: u64, held: &[[u64; 2]], dead: &BTreeSet<u64>) -> Vec<[u64; 2]> {
    let mut gaps = Vec::new();
    let mut next = 1;
    for &[start, end] in held {
        if start > acknowledged {
            break;
        }
        if start > next {
            gaps.push([next, start - 1]);
        }
        next = next.max(end.saturating_add(1));
    }
    if next <= acknowledged {
        gaps.push([next, acknowledged]);
    }
    // Dead letters were acknowledged without being held: cut them out.
    let mut out = Vec::new();
    for [start, end] in gaps {
        let mut from = start;
        for &seq in dead.range(start..=end) {
            if seq > from {
                out.push([from, seq - 1]);
            }
            from = seq + 1;
        }
        if from <= end {
            out.push([from, end]);
        }
    }
    out
}

fn print_verdicts(verdicts: &[StreamVerdict]) {
    let ranges = |ranges: &[[u64; 2]]| -> String {
        if ranges.is_empty() {
            return "none".to_owned();
        }
        ranges
            .iter()
            .map(|[a, b]| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}–{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for v in verdicts {
        let verdict = if v.missing.is_empty() {
            "complete".to_owned()
        } else {
            format!("MISSING {}", ranges(&v.missing))
        };
        let dead = if v.dead_letters > 0 {
            format!(" ({} dead-lettered)", v.dead_letters)
        } else {
            String::new()
        };
        println!(
            "{}  {}: acknowledged 1–{}{dead}, held {}: {verdict}",
            v.group,
            v.stream,
            v.acknowledged,
            ranges(&v.held)
        );
    }
    let short: u64 = verdicts
        .iter()
        .flat_map(|v| &v.missing)
        .map(|[a, b]| b - a + 1)
        .sum();
    if short == 0 {
        println!(
            "verify: complete: the servers together hold every acknowledged event ({} streams)",
            verdicts.len()
        );
    } else {
        println!(
            "verify: {short} acknowledged events are held by no server (listed above as MISSING)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_that_split_a_stream_between_them_is_whole_together() {
        let union = merged(vec![[1, 100], [151, 300], [90, 150]]);
        assert_eq!(union, vec![[1, 300]]);
        assert!(missing(300, &union, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn the_seqs_no_server_holds_are_listed_without_the_dead_letters() {
        let held = merged(vec![[1, 10], [21, 30]]);
        let dead: BTreeSet<u64> = [15, 40].into();
        assert_eq!(
            missing(45, &held, &dead),
            vec![[11, 14], [16, 20], [31, 39], [41, 45]]
        );
        // What was acknowledged later than a server's newest held seq.
        assert_eq!(missing(12, &held, &BTreeSet::new()), vec![[11, 12]]);
        assert_eq!(missing(5, &[], &BTreeSet::new()), vec![[1, 5]]);
    }
}
