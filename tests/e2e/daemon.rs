//! `safd check` and `safd run` as processes: a real configuration file, the
//! real ems-reader on a directory the simulator wrote, the real mgmt-http
//! plugin delivering to a real `safd-mgmt`.

use crate::support::plugins::plugin_dir;

mod hostile;
use crate::support::mgmt;

use crate::support::safd_process::{
    reload, run, run_with_admin, safd, status, stop_cleanly, wait_for,
};

use ems_sim::{Generator, LogWriter, SimConfig};
use safd_ems::{Format, Zone};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `dir/logs`, with `events` simulated EMS events (format B) in it.
fn ems_logs(dir: &Path, events: u64) -> PathBuf {
    let logs = dir.join("logs");
    std::fs::create_dir(&logs).unwrap();
    if events > 0 {
        simulate(&logs, events);
    }
    logs
}

fn simulate(dir: &Path, events: u64) {
    simulate_seeded(dir, events, 11);
}

/// Different seeds give events with different ids.
fn simulate_seeded(dir: &Path, events: u64, seed: u64) {
    let mut generator = Generator::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    let mut log =
        LogWriter::create(dir, Format::B, Zone::parse("UTC").unwrap(), 256 << 10, 0).unwrap();
    for _ in 0..events {
        log.write(&generator.next_event()).unwrap();
    }
    log.flush().unwrap();
}

/// A `safd-mgmt` on `dir/server` and a configuration delivering `logs` to
/// it alone.
fn one_server(dir: &Path, logs: &Path) -> (mgmt::Server, PathBuf) {
    let server = mgmt::Server::start(&dir.join("server"), &[]);
    let authority = server.authority();
    let path = config(
        dir,
        logs,
        &[("primary", &server.base)],
        std::slice::from_ref(&authority),
    );
    (server, path)
}

/// A configuration: the EMS directory to one group of the given members.
fn config(dir: &Path, logs: &Path, members: &[(&str, &str)], authorities: &[String]) -> PathBuf {
    let members: Vec<String> = members
        .iter()
        .map(|(name, address)| format!("{{ name = \"{name}\", address = \"{address}\" }}"))
        .collect();
    let text = format!(
        r#"agent_id = "test-safd"
data_dir = "{data}"
plugin_dir = "{plugins}"

[admin]
listen = "127.0.0.1:0"

[sources.ems]
plugin = "ems-reader"
config = {{ directory = "{logs}", format = "b", system = "\\PROD1" }}
grants = {{ dirs = ["{logs}"] }}

[groups.mgmt]
mode = "failover"
plugin = "mgmt-http"
config = {{ token = "{token}", timeout_ms = 3000 }}
grants = {{ http = {authorities:?} }}
members = [{members}]
probe_interval_ms = 200
"#,
        data = dir.join("data").display(),
        plugins = plugin_dir().display(),
        logs = logs.display(),
        token = mgmt::TOKEN,
        members = members.join(", "),
    );
    let path = dir.join("safd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A configuration `check` accepts and whose one member nothing serves
/// (port 9): for tests that never deliver. Returns the EMS directory too.
fn config_to_nowhere(dir: &Path) -> (PathBuf, PathBuf) {
    let logs = ems_logs(dir, 0);
    let path = config(
        dir,
        &logs,
        &[("primary", "http://127.0.0.1:9")],
        &["127.0.0.1:9".into()],
    );
    (logs, path)
}

fn text_of(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_good_configuration_and_summarises_it() {
    let dir = tempfile::tempdir().unwrap();
    let logs = ems_logs(dir.path(), 0);
    let path = config(
        dir.path(),
        &logs,
        &[
            ("primary", "http://127.0.0.1:9"),
            ("backup", "http://127.0.0.1:10"),
        ],
        &["127.0.0.1:9".into(), "127.0.0.1:10".into()],
    );
    let output = safd().arg("check").arg("-c").arg(&path).output().unwrap();
    let (stdout, stderr) = text_of(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(stdout.contains("1 source (ems)"), "{stdout}");
    assert!(stdout.contains("with 2 members"), "{stdout}");
}

/// Two EMS readers with the same `system` and `collector` (a copied
/// section) give different events the same ids: `safd check` says so and
/// names the fix; the configuration is still accepted.
#[test]
fn check_warns_when_two_sources_would_produce_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, path) = config_to_nowhere(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    let copy = format!(
        "[sources.ems2]\nplugin = \"ems-reader\"\nconfig = {{ directory = \"{logs}\", format = \"b\", \
         system = \"\\\\PROD1\" }}\ngrants = {{ dirs = [\"{logs}\"] }}\n\n[groups.mgmt]",
        logs = logs.display()
    );
    std::fs::write(&path, text.replacen("[groups.mgmt]", &copy, 1)).unwrap();
    let output = safd().arg("check").arg("-c").arg(&path).output().unwrap();
    let (stdout, stderr) = text_of(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("warning: sources.ems, sources.ems2: these 2 `ems-reader` sources"),
        "{stdout}"
    );
    assert!(
        stdout.contains("give each its own `system` or `collector`"),
        "{stdout}"
    );

    // Another collector: no warning.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            "format = \"b\", system",
            "format = \"b\", collector = \"$1\", system",
            1,
        ),
    )
    .unwrap();
    let output = safd().arg("check").arg("-c").arg(&path).output().unwrap();
    let (stdout, _) = text_of(&output);
    assert!(!stdout.contains("same event ids"), "{stdout}");
}

#[test]
fn check_names_every_problem_with_its_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("safd.toml");
    std::fs::write(
        &path,
        format!(
            r#"agent_id = "a"
data_dir = "{data}"
plugin_dir = "{plugins}"

[sources.ems]
plugin = "ems-readr"

[sources.other]
plugin = "ems-reader"
config = {{ format = "c" }}

[groups.mgmt]
mode = "failover"
plugin = "mgmt-http"
config = {{ token = "t" }}
members = []
"#,
            data = dir.path().join("data").display(),
            plugins = plugin_dir().display(),
        ),
    )
    .unwrap();
    let output = safd().arg("check").arg("-c").arg(&path).output().unwrap();
    let (stdout, stderr) = text_of(&output);
    assert!(!output.status.success(), "{stdout}{stderr}");
    let file = path.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{file}:6: sources.ems.plugin: no plugin `ems-readr`"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("found: "), "{stderr}");
    assert!(
        stderr.contains(&format!("{file}:10: sources.other.config")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:16: groups.mgmt.members: is empty")),
        "{stderr}"
    );

    // Syntax and unknown keys: the parser's line.
    std::fs::write(&path, "agent_id = \"a\"\nplugin_dri = \"/x\"\n").unwrap();
    let output = safd().arg("check").arg("-c").arg(&path).output().unwrap();
    let (_, stderr) = text_of(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("{file}:2: plugin_dri: unknown field `plugin_dri`")),
        "{stderr}"
    );
}

/// A source pinned to its plugin's SHA-256 is accepted; pinned to another
/// digest it is refused, naming both.
#[test]
fn a_pinned_plugin_digest_must_match_the_file() {
    let digest = crate::support::sha256_of(&plugin_dir().join("ems-reader.wasm"));
    let pin = |digest: &str| {
        check_one_member_config(|text| {
            text.replacen(
                "plugin = \"ems-reader\"",
                &format!("plugin = \"ems-reader\"\nsha256 = \"{digest}\""),
                1,
            )
        })
    };
    let (ok, said) = pin(&digest.to_uppercase());
    assert!(ok, "{said}");
    let other = "0".repeat(64);
    let (ok, said) = pin(&other);
    assert!(!ok);
    assert!(
        said.contains("sources.ems.sha256")
            && said.contains(&digest)
            && said.contains(&other)
            && said.contains("the file was replaced"),
        "{said}"
    );
}

/// `safd check` of an EMS → one-member configuration (in a directory of
/// its own), as `edit` changes its text: whether it passed, and what it
/// said.
fn check_one_member_config(edit: impl Fn(&str) -> String) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = config_to_nowhere(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&text)).unwrap();
    let output = safd().arg("check").arg("-c").arg(&path).output().unwrap();
    let (stdout, stderr) = text_of(&output);
    (output.status.success(), format!("{stdout}{stderr}"))
}

/// `streams` on a group: `safd check` names the streams no group delivers
/// (a source's, safd's own) and refuses a pattern that is not a glob.
#[test]
fn check_names_the_streams_no_group_delivers() {
    let route = |streams: &str| {
        check_one_member_config(|text| {
            text.replacen(
                "mode = \"failover\"",
                &format!("mode = \"failover\"\nstreams = {streams}"),
                1,
            )
        })
    };
    let (ok, said) = route("[\"app-*\"]");
    assert!(ok, "{said}");
    assert!(
        said.contains("sources.ems") && said.contains("no group delivers stream `ems`"),
        "{said}"
    );
    assert!(
        said.contains("no group delivers safd's own stream"),
        "{said}"
    );
    let (ok, said) = route("[\"ems\", \"safd\"]");
    assert!(ok && !said.contains("no group delivers"), "{said}");
    let (ok, said) = route("[\"ems-[\"]");
    assert!(!ok && said.contains("groups.mgmt.streams"), "{said}");
}

/// What the sandbox would refuse at the first call is refused by `check`:
/// a member whose address is not granted, a source directory outside the
/// granted ones — both in one run, each with the grant to add, and with
/// an unknown key in the same file (reported with them, not alone).
#[test]
fn check_refuses_an_ungranted_member_address_and_source_directory() {
    let dir = tempfile::tempdir().unwrap();
    let logs = ems_logs(dir.path(), 0);
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let path = config(
        dir.path(),
        &logs,
        &[
            ("primary", "http://127.0.0.1:9"),
            ("backup", "http://127.0.0.1:10"),
        ],
        &["127.0.0.1:9".into()],
    );
    let mut text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("grants = {{ dirs = [\"{}\"] }}", logs.display()),
        &format!("grants = {{ dirs = [\"{}\"] }}", elsewhere.display()),
    );
    text.push_str("\n[queue]\ncapacity = 5\n");
    std::fs::write(&path, text).unwrap();
    let output = safd().arg("check").arg("-c").arg(&path).output().unwrap();
    let (stdout, stderr) = text_of(&output);
    assert!(!output.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("groups.mgmt.grants: member `backup`: `http://127.0.0.1:10` is not granted: add \"127.0.0.1:10\" to grants.http"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "sources.ems.grants.dirs: the source reads {}, which is not granted",
            logs.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("member `primary`"), "{stderr}");
    assert!(
        stderr.contains("queue.capacity: unknown field `capacity`"),
        "{stderr}"
    );
}

#[test]
fn run_delivers_every_simulated_event_and_stops_cleanly_on_sigterm() {
    const EVENTS: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    // Data directories that exist already, open to everyone: both
    // programs close them at start.
    for data in ["data", "server"] {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(data);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let logs = ems_logs(dir.path(), EVENTS);
    let (server, path) = one_server(dir.path(), &logs);

    let (mut daemon, admin, rest) = run_with_admin(&path);
    let ems_high_water = || ems_stream(&server)["high_water"].as_u64().unwrap_or(0);
    wait_for(Duration::from_secs(60), "every event at the server", || {
        ems_high_water() >= EVENTS
    });
    let (_, stats) = server.get("stats");
    assert_eq!(stats["counters"]["rejected"], 0, "{stats}");

    // The admin API and its command-line front-ends.
    let status = status(&admin);
    assert_eq!(status["agent_id"], "test-safd");
    assert_eq!(
        status["groups"][0]["lanes"][0]["active"], "primary",
        "{status}"
    );
    assert_eq!(
        status["groups"][0]["lanes"][0]["members"][0]["health"],
        "ready"
    );
    let ems = status["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ems")
        .unwrap();
    assert_eq!(ems["next_seq"], EVENTS + 1, "{status}");
    let output = safd().args(["status", "--admin", &admin]).output().unwrap();
    let (table, _) = text_of(&output);
    assert!(table.contains("active primary"), "{table}");
    assert!(
        table.contains("queue ") && table.contains(" of 1.0 GiB") && table.contains("free"),
        "{table}"
    );
    assert!(table.contains("unacknowledged 0 (oldest 0s)"), "{table}");
    assert!(
        status["queue"]["capacity_bytes"].as_u64() > Some(0),
        "{status}"
    );
    assert_eq!(
        status["groups"][0]["lanes"][0]["oldest_unacknowledged_secs"]["ems"], 0,
        "{status}"
    );
    assert_eq!(status["sources"][0]["restarts"], 0, "{status}");
    assert!(table.contains("ready"), "{table}");
    let metrics = ureq::get(&format!("http://{admin}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains(&format!("safd_queue_events{{stream=\"ems\"}} {EVENTS}")),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("safd_member_state{cursor=\"mgmt\",member=\"primary\",health=\"active\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "safd_events_delivered_total{{group=\"mgmt\",member=\"primary\",stream=\"ems\"}} {EVENTS}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "safd_events_ingested_total{{stream=\"ems\"}} {EVENTS}"
        )),
        "{metrics}"
    );
    for sample in [
        "safd_build_info{version=",
        "safd_queue_capacity_bytes ",
        "safd_data_disk_free_bytes ",
        "safd_oldest_unacknowledged_age_seconds{cursor=\"mgmt\",stream=\"ems\"} 0",
        "safd_delivery_latency_seconds_count{group=\"mgmt\"} ",
        "safd_numbered_events_total{event_id=",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ] {
        assert!(metrics.contains(sample), "no `{sample}` in {metrics}");
    }
    dashboards_and_alerts_name_metrics_that_exist(&metrics);
    let output = safd()
        .args(["dlq", "list", "--group", "mgmt", "--admin", &admin])
        .output()
        .unwrap();
    let (listing, _) = text_of(&output);
    assert!(listing.contains("0 dead letter(s)"), "{listing}");
    let output = safd()
        .args(["dlq", "list", "--group", "nope", "--admin", &admin])
        .output()
        .unwrap();
    let (_, refused) = text_of(&output);
    assert!(!output.status.success());
    assert!(refused.contains("nope"), "{refused}");

    let rest = stop_cleanly(&mut daemon, rest);
    assert!(rest.contains("safd running: agent `test-safd`"), "{rest}");
    assert!(rest.contains("SIGTERM"), "{rest}");
    assert_eq!(ems_high_water(), EVENTS);

    // safd's and the server's data are their users' alone.
    for data in [dir.path().join("data"), dir.path().join("server")] {
        assert_private(&data);
    }
}

/// Every metric the shipped Grafana dashboard and Prometheus alert rules
/// query is one safd serves (`metrics`: a running safd's /metrics).
fn dashboards_and_alerts_name_metrics_that_exist(metrics: &str) {
    let mut kinds = std::collections::BTreeMap::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            kinds.insert(name.to_owned(), kind.to_owned());
        }
    }
    let exists = |name: &str| {
        kinds.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| kinds.get(base).is_some_and(|k| k == "histogram"))
            })
    };
    let named = |expr: &str| -> Vec<String> {
        expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|token| token.starts_with("safd_") || token.starts_with("process_"))
            .map(str::to_owned)
            .collect()
    };
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(configs.join("safd-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules = std::fs::read_to_string(configs.join("safd-alerts.yml")).unwrap();
    let alerts: Vec<String> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:").map(str::to_owned))
        .collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    for expr in exprs.iter().chain(&alerts) {
        for name in named(expr) {
            assert!(
                exists(&name),
                "`{name}` (in `{expr}`) is not a metric safd serves"
            );
        }
    }
}

/// Every directory under `root` (itself included) 0700, every file 0600.
fn assert_private(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut pending = vec![root.to_owned()];
    let mut files = 0;
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", path.display());
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else if meta.is_file() {
            files += 1;
            assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
        }
    }
    assert!(files > 0, "nothing under {}", root.display());
}

/// Events of the `ems` stream the server stored (its total minus safd's
/// own events).
fn stored_ems_events(server: &mgmt::Server) -> u64 {
    let own = server.events("stream=safd&limit=10000").len() as u64;
    server.stored() - own
}

fn ems_stream(server: &mgmt::Server) -> serde_json::Value {
    stream_stats(server, "ems")
}

/// The server's `/stats` entry of `stream` (null if it has none).
fn stream_stats(server: &mgmt::Server, stream: &str) -> serde_json::Value {
    server.get("stats").1["streams"]
        .as_array()
        .and_then(|streams| streams.iter().find(|s| s["stream"] == stream).cloned())
        .unwrap_or_default()
}

/// safd killed (SIGKILL) at 20 moments while it reads, stores and
/// delivers: every event reaches the server exactly once.
#[test]
fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    // Enough that every kill lands mid-stream: a run of up to 220 ms
    // delivers up to some 70 000 events (reading ahead while storing
    // made safd fast enough that 300 000 ran out after five kills at up
    // to 400 ms).
    const EVENTS: u64 = 700_000;
    const KILLS: u32 = 20;
    let dir = tempfile::tempdir().unwrap();
    let logs = ems_logs(dir.path(), EVENTS);
    let (server, path) = one_server(dir.path(), &logs);
    let start = || run(&path, Stdio::null());
    // Deterministic "random" moments between 20 and 220 ms after start:
    // some land while plugins load, some mid-ingest, some mid-delivery.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut progress = Vec::new();
    for _ in 0..KILLS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut daemon = start();
        std::thread::sleep(Duration::from_millis(20 + state % 200));
        daemon.kill().unwrap(); // SIGKILL
        daemon.wait().unwrap();
        progress.push(ems_stream(&server)["high_water"].as_u64().unwrap_or(0));
    }
    eprintln!("high-water after each kill: {progress:?}");
    // The kills must land while events flow: a kill counts when its run
    // moved the server's high-water and left events still to deliver.
    let mut before = 0;
    let mut mid_stream = 0;
    for &seq in &progress {
        if before < seq && seq < EVENTS {
            mid_stream += 1;
        }
        before = seq;
    }
    assert!(
        mid_stream >= 10,
        "only {mid_stream} kills landed mid-stream: {progress:?}"
    );
    // End of stream: one more event, last in the logs. The reader reads in
    // order, so an event it ingested again after a kill would have taken a
    // seq before this one.
    simulate_seeded(&logs, 1, 99);
    let (mut daemon, admin, rest) = run_with_admin(&path);
    wait_for(
        Duration::from_secs(120),
        "the last event at the server",
        || ems_stream(&server)["high_water"].as_u64() >= Some(EVENTS + 1),
    );
    let stream = ems_stream(&server);
    assert_eq!(stream["high_water"], EVENTS + 1, "{stream}");
    assert_eq!(stream["gaps"], 0, "{stream}");
    // safd gave each event one seq: none was ingested twice.
    let status = status(&admin);
    let ems = status["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ems")
        .unwrap()
        .clone();
    assert_eq!(ems["next_seq"], EVENTS + 2, "{status}");
    stop_cleanly(&mut daemon, rest);
    // Every event stored exactly once: what was sent again (a delivery
    // whose acknowledgement a kill cut off) was recognised, not stored.
    assert_eq!(stored_ems_events(&server), EVENTS + 1);
    let (_, stats) = server.get("stats");
    assert_eq!(stats["counters"]["rejected"], 0, "{stats}");
    eprintln!(
        "re-sent and recognised: {}",
        stats["counters"]["duplicates"]
    );
}

/// Whether `server` holds one of safd's own events with this catalog id.
fn has_notice(server: &mgmt::Server, id: &str) -> bool {
    server
        .events("stream=safd&limit=10000")
        .iter()
        .any(|event| {
            event["attributes"]
                .as_array()
                .is_some_and(|attrs| attrs.iter().any(|kv| kv[0] == "event_id" && kv[1] == id))
        })
}

#[test]
fn a_killed_primary_fails_over_to_the_backup_and_back_without_loss() {
    const EVENTS: u64 = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let logs = ems_logs(dir.path(), EVENTS);
    let primary_data = dir.path().join("primary");
    let primary = mgmt::Server::start(&primary_data, &[]);
    let backup = mgmt::Server::start(&dir.path().join("backup"), &[]);
    let authorities = [primary.authority(), backup.authority()];
    let primary_address = primary.base.clone();
    let path = config(
        dir.path(),
        &logs,
        &[("primary", &primary_address), ("backup", &backup.base)],
        &authorities,
    );
    let (daemon, admin, _stderr) = run_with_admin(&path);

    wait_for(
        Duration::from_secs(60),
        "the primary to receive events",
        || ems_stream(&primary)["high_water"].as_u64().unwrap_or(0) >= 3_000,
    );
    primary.kill(); // SIGKILL: connection refused from now on
    wait_for(
        Duration::from_secs(60),
        "the backup to receive the rest",
        || ems_stream(&backup)["high_water"].as_u64() == Some(EVENTS),
    );

    // Together they hold every event: the backup took over where the
    // primary's acknowledgements stopped (an unacknowledged batch may be
    // on both; each server stores it once).
    let primary = mgmt::Server::start_on(
        primary_address.trim_start_matches("http://"),
        &primary_data,
        &[],
    );
    let at_primary = ems_stream(&primary);
    let at_backup = ems_stream(&backup);
    assert_eq!(at_primary["first"], 1, "{at_primary}");
    assert_eq!(at_primary["gaps"], 0, "{at_primary}");
    assert_eq!(at_backup["gaps"], 0, "{at_backup}");
    let primary_through = at_primary["high_water"].as_u64().unwrap();
    let backup_from = at_backup["first"].as_u64().unwrap();
    assert!(
        backup_from <= primary_through + 1,
        "lost between {primary_through} and {backup_from}"
    );
    assert!(
        has_notice(&backup, "1002"),
        "no failover event at the backup"
    );

    // The primary is back on its old address: safd fails back after the
    // damping probes, and says so to the primary.
    wait_for(Duration::from_secs(30), "failback to the primary", || {
        has_notice(&primary, "1003")
    });
    // The backup is told it is no longer active, and its console shows
    // what it holds now, not what it held when it registered.
    let session_at = |server: &mgmt::Server| {
        let (_, sessions) = server.get("query/sessions");
        sessions
            .as_array()
            .and_then(|s| s.first().cloned())
            .unwrap_or_default()
    };
    wait_for(
        Duration::from_secs(30),
        "the backup's session no longer active",
        || session_at(&backup)["active"] == false,
    );
    let backup_session = session_at(&backup);
    assert_eq!(backup_session["holds"]["ems"], EVENTS, "{backup_session}");
    assert_eq!(session_at(&primary)["active"], true);

    // `safd verify`: the pair together holds every acknowledged event.
    let verify = || {
        let output = safd()
            .args(["verify", "--admin", &admin, "--server-token", mgmt::TOKEN])
            .output()
            .unwrap();
        let (stdout, stderr) = text_of(&output);
        (output.status.code(), format!("{stdout}{stderr}"))
    };
    let (code, said) = verify();
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains(&format!("mgmt  ems: acknowledged 1–{EVENTS}"))
            && said.contains("verify: complete"),
        "{said}"
    );

    // Events deleted from one server's store (the backup's, which alone
    // held what the primary missed): verify names exactly those.
    let backup_data = dir.path().join("backup");
    let backup_address = backup.base.clone();
    backup.kill();
    std::fs::remove_dir_all(&backup_data).unwrap();
    let _backup = mgmt::Server::start_on(
        backup_address.trim_start_matches("http://"),
        &backup_data,
        &[],
    );
    let (code, said) = verify();
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "mgmt  ems: acknowledged 1–{EVENTS}, held 1–{primary_through}: MISSING {}–{EVENTS}",
            primary_through + 1
        )),
        "{said}"
    );
    assert!(said.contains("held by no server"), "{said}");
    drop(daemon);
}

/// Every row of `failover-matrix.csv` with real servers: link down = no
/// server process on that address (connection refused), service down = the
/// server's `--service-down` switch. Checks the member safd makes active,
/// where the events end up (a server's inbox when its service is down),
/// and that with no member reachable they wait in safd's queue.
#[test]
fn every_row_of_the_failover_matrix_with_real_servers() {
    const EVENTS: u64 = 200;
    let matrix = include_str!("../../docs/design/failover-matrix.csv");
    let rows: Vec<Vec<&str>> = matrix
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("p_service") && !l.trim().is_empty())
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 16);
    // The catch-up rows alternate which member comes back first.
    let mut first_registrants = Vec::new();
    for row in rows {
        let (p_service, p_link, b_service, b_link) = (row[0], row[1], row[2], row[3]);
        let expected = row[row.len() - 3];
        let waits_in = row[row.len() - 2];
        let catch_up = row[row.len() - 1];
        let label = format!("primary {p_service}/{p_link}, backup {b_service}/{b_link}");
        let dir = tempfile::tempdir().unwrap();
        let logs = ems_logs(dir.path(), EVENTS);
        let start = |name: &str, service: &str, link: &str| -> (Option<mgmt::Server>, String) {
            if link == "up" {
                let extra: &[&str] = if service == "down" {
                    &["--service-down"]
                } else {
                    &[]
                };
                let server = mgmt::Server::start(&dir.path().join(name), extra);
                let base = server.base.clone();
                (Some(server), base)
            } else {
                // A port nobody listens on: connection refused.
                let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let address = format!("http://{}", free.local_addr().unwrap());
                (None, address)
            }
        };
        let (primary, primary_address) = start("primary", p_service, p_link);
        let (backup, backup_address) = start("backup", b_service, b_link);
        let authorities: Vec<String> = [&primary_address, &backup_address]
            .iter()
            .map(|a| mgmt::authority_of(a))
            .collect();
        let path = config(
            dir.path(),
            &logs,
            &[("primary", &primary_address), ("backup", &backup_address)],
            &authorities,
        );
        let (daemon, admin, _) = run_with_admin(&path);

        let servers = [("primary", &primary), ("backup", &backup)];
        match expected {
            "none" => {
                wait_for(Duration::from_secs(30), &label, || {
                    let status = status(&admin);
                    let stored = status["streams"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|s| s["name"] == "ems" && s["next_seq"] == EVENTS + 1);
                    stored && status["groups"][0]["lanes"][0]["active"].is_null()
                });
                assert_eq!(waits_in, "safd-queue", "{label}");
                let lane = &status(&admin)["groups"][0]["lanes"][0];
                assert_eq!(lane["lag"]["ems"], EVENTS, "{label}: {lane}");
                assert_eq!(catch_up, "first-registrant", "{label}");
                // The outage ends: both servers come back, one first.
                let (first, second) = if first_registrants.len() % 2 == 0 {
                    (("primary", &primary_address), ("backup", &backup_address))
                } else {
                    (("backup", &backup_address), ("primary", &primary_address))
                };
                first_registrants.push(first.0);
                let start_on = |(name, address): (&str, &String)| {
                    mgmt::Server::start_on(
                        &mgmt::authority_of(address),
                        &dir.path().join(format!("{name}-back")),
                        &[],
                    )
                };
                let first_server = start_on(first);
                wait_for(Duration::from_secs(30), &label, || {
                    status(&admin)["groups"][0]["lanes"][0]["active"] == first.0
                });
                wait_for(Duration::from_secs(60), &label, || {
                    ems_stream(&first_server)["high_water"].as_u64() == Some(EVENTS)
                });
                let second_server = start_on(second);
                let back = [&first_server, &second_server];
                let announced = |id: &str| -> Vec<String> {
                    back.iter().flat_map(|s| notice_members(s, id)).collect()
                };
                wait_for(
                    Duration::from_secs(30),
                    &format!("{label}: the {} refused", second.0),
                    || announced("4003").iter().any(|m| m == second.0),
                );
                let started = announced("4001");
                assert!(started.iter().any(|m| m == first.0), "{label}: {started:?}");
                assert!(
                    started.iter().all(|m| m == first.0),
                    "{label}: both caught up: {started:?}"
                );
            }
            member => {
                let (_, server) = servers.iter().find(|(name, _)| *name == member).unwrap();
                let server = server.as_ref().unwrap();
                wait_for(Duration::from_secs(30), &label, || {
                    ems_stream(server)["high_water"].as_u64() == Some(EVENTS)
                });
                let lane = &status(&admin)["groups"][0]["lanes"][0];
                assert_eq!(lane["active"], member, "{label}: {lane}");
                let (_, stats) = server.get("stats");
                let expected_inbox = waits_in == format!("{member}-server-inbox");
                let inbox = stats["counters"]["inbox"].as_u64().unwrap();
                assert_eq!(
                    inbox > 0,
                    expected_inbox,
                    "{label}: inbox {inbox}, expected events to wait in {waits_in}"
                );
                for (name, other) in &servers {
                    if *name != member
                        && let Some(other) = other
                    {
                        assert_eq!(
                            ems_stream(other)["high_water"].as_u64().unwrap_or(0),
                            0,
                            "{label}: {name} received events"
                        );
                    }
                }
            }
        }
        drop(daemon);
    }
    assert_eq!(
        first_registrants,
        ["primary", "backup", "primary", "backup"],
        "the catch-up rows"
    );
}

/// A silent primary (SIGSTOP: the connection stays open, nothing answers)
/// is detected by the request timeout and the backup takes over.
#[test]
fn a_silent_primary_is_detected_and_failed_over() {
    const EVENTS: u64 = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let logs = ems_logs(dir.path(), EVENTS);
    let primary = mgmt::Server::start(&dir.path().join("primary"), &[]);
    let backup = mgmt::Server::start(&dir.path().join("backup"), &[]);
    let authorities = [primary.authority(), backup.authority()];
    let path = config(
        dir.path(),
        &logs,
        &[("primary", &primary.base), ("backup", &backup.base)],
        &authorities,
    );
    let (_daemon, admin, _) = run_with_admin(&path);
    wait_for(
        Duration::from_secs(60),
        "the primary to receive events",
        || ems_stream(&primary)["high_water"].as_u64().unwrap_or(0) >= 3_000,
    );
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([name, &primary.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let stopped = Instant::now();
    wait_for(Duration::from_secs(60), "the backup to take over", || {
        ems_stream(&backup)["high_water"].as_u64() == Some(EVENTS)
    });
    eprintln!(
        "silent primary: all events at the backup {:.2} s after SIGSTOP",
        stopped.elapsed().as_secs_f64()
    );
    let lane = &status(&admin)["groups"][0]["lanes"][0];
    assert_eq!(lane["active"], "backup", "{lane}");
    assert!(
        has_notice(&backup, "1002"),
        "no failover event at the backup"
    );
    signal("-CONT");
}

/// A damaged plugin file is one clear line from `safd check`, naming the
/// file and the fix, and `safd run` refuses to start on it.
#[test]
fn a_corrupt_plugin_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for name in ["ems-reader", "mgmt-http"] {
        for ext in ["wasm", "toml"] {
            std::fs::copy(
                plugin_dir().join(format!("{name}.{ext}")),
                plugins.join(format!("{name}.{ext}")),
            )
            .unwrap();
        }
    }
    // Truncated in transfer: half a component.
    let wasm = plugins.join("mgmt-http.wasm");
    let bytes = std::fs::read(&wasm).unwrap();
    std::fs::write(&wasm, &bytes[..bytes.len() / 2]).unwrap();
    let (_, path) = config_to_nowhere(dir.path());
    let read = |path: &Path| std::fs::read_to_string(path).unwrap();
    std::fs::write(
        &path,
        read(&path).replace(
            &plugin_dir().display().to_string(),
            &plugins.display().to_string(),
        ),
    )
    .unwrap();
    for command in ["check", "run"] {
        let output = safd().arg(command).arg("-c").arg(&path).output().unwrap();
        let (_, stderr) = text_of(&output);
        assert!(!output.status.success(), "{command}: {stderr}");
        let problems: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("safd.toml:"))
            .collect();
        assert_eq!(problems.len(), 1, "{command}: {stderr}");
        assert!(
            problems[0].contains("groups.mgmt.plugin"),
            "{}",
            problems[0]
        );
        assert!(problems[0].contains("mgmt-http.wasm"), "{}", problems[0]);
    }
}

/// `safd.toml` in `dir`: the fixture source as stream `ems` with `source`
/// (the inside of its config table), then `group` (a whole group table).
fn fixture_source_config(dir: &Path, source: &str, group: &str) -> PathBuf {
    let path = dir.join("safd.toml");
    std::fs::write(
        &path,
        format!(
            r#"agent_id = "test-safd"
data_dir = "{data}"
plugin_dir = "{plugins}"

[admin]
listen = "127.0.0.1:0"

[sources.ems]
plugin = "fixture-source"
config = {{ {source} }}

{group}
"#,
            data = dir.join("data").display(),
            plugins = plugin_dir().display(),
        ),
    )
    .unwrap();
    path
}

/// A source plugin that traps mid-stream is rebuilt and resumes from its
/// durable cursor: every event reaches the server, once.
#[test]
fn a_source_plugin_trapping_mid_stream_loses_nothing() {
    const EVENTS: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let server = mgmt::Server::start(&dir.path().join("server"), &[]);
    let authority = server.authority();
    let mut script = vec!["\"ok\""; 20];
    script.push("\"trap\"");
    let path = fixture_source_config(
        dir.path(),
        &format!(
            "total = {EVENTS}, events_per_poll = 64, script = [{}]",
            script.join(", ")
        ),
        &format!(
            r#"[groups.mgmt]
mode = "failover"
plugin = "mgmt-http"
config = {{ token = "{token}" }}
grants = {{ http = ["{authority}"] }}
members = [{{ name = "primary", address = "{base}" }}]"#,
            token = mgmt::TOKEN,
            base = server.base,
        ),
    );
    let (_daemon, _admin, _) = run_with_admin(&path);
    wait_for(Duration::from_secs(60), "every event at the server", || {
        ems_stream(&server)["high_water"].as_u64() == Some(EVENTS)
    });
    let stream = ems_stream(&server);
    assert_eq!(stream["gaps"], 0, "{stream}");
    assert_eq!(stored_ems_events(&server), EVENTS);
    wait_for(Duration::from_secs(30), "the trap to be reported", || {
        has_notice(&server, "3001")
    });
}

/// A destination plugin that traps whenever a delivery holds one event (a
/// poison event, here seq 700 of 1 000): the batch is split until the
/// event is alone, it becomes a dead letter with the trap as its reason,
/// and every other event is delivered — through the real runtime, which
/// rebuilds the trapped instance each time.
#[test]
fn a_poison_event_is_dead_lettered_and_the_rest_delivered() {
    const EVENTS: u64 = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_source_config(
        dir.path(),
        &format!("total = {EVENTS}, events_per_poll = 64"),
        r#"[groups.sink]
mode = "failover"
plugin = "fixture-destination"
config = { trap_on_seq = 700 }
members = [{ name = "only", address = "fixture://only" }]
probe_interval_ms = 200"#,
    );
    let (mut daemon, admin, stderr) = run_with_admin(&path);
    let acked = || {
        status(&admin)["groups"][0]["lanes"][0]["acknowledged"]["ems"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_for(Duration::from_secs(60), "every event settled", || {
        acked() == EVENTS
    });
    let letters: serde_json::Value = ureq::get(&format!("http://{admin}/dlq?group=sink"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["seq"], 700, "{letters:?}");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.contains("trapped"), "{reason}");
    stop_cleanly(&mut daemon, stderr);
}

/// The member fields of safd's own events with this catalog id.
fn notice_members(server: &mgmt::Server, id: &str) -> Vec<String> {
    server
        .events("stream=safd&limit=10000")
        .iter()
        .filter_map(|event| {
            let attrs = event["attributes"].as_array()?;
            let has_id = attrs.iter().any(|kv| kv[0] == "event_id" && kv[1] == id);
            let member = attrs.iter().find(|kv| kv[0] == "member")?;
            has_id.then(|| member[1].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// After both servers were down, the first to register catches up and the
/// other's request is refused (the OVNM rule: from the primary or the
/// backup, never both); every event ends up delivered.
#[test]
fn after_a_total_outage_exactly_one_member_catches_up() {
    const EVENTS: u64 = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let logs = ems_logs(dir.path(), EVENTS);
    let (primary_data, backup_data) = (dir.path().join("primary"), dir.path().join("backup"));
    let primary = mgmt::Server::start(&primary_data, &[]);
    let backup = mgmt::Server::start(&backup_data, &[]);
    let addresses = [primary.base.clone(), backup.base.clone()];
    let authorities: Vec<String> = addresses
        .iter()
        .map(|a| a.trim_start_matches("http://").to_owned())
        .collect();
    let path = config(
        dir.path(),
        &logs,
        &[("primary", &addresses[0]), ("backup", &addresses[1])],
        &authorities,
    );
    let (_daemon, admin, _) = run_with_admin(&path);
    wait_for(
        Duration::from_secs(60),
        "the primary to receive events",
        || ems_stream(&primary)["high_water"].as_u64().unwrap_or(0) >= 3_000,
    );
    primary.kill();
    backup.kill();
    wait_for(Duration::from_secs(30), "safd to see both down", || {
        status(&admin)["groups"][0]["lanes"][0]["active"].is_null()
    });

    // The primary registers first and becomes active; then the backup.
    let primary = mgmt::Server::start_on(&authorities[0], &primary_data, &[]);
    wait_for(Duration::from_secs(30), "the primary to be active", || {
        status(&admin)["groups"][0]["lanes"][0]["active"] == "primary"
    });
    let backup = mgmt::Server::start_on(&authorities[1], &backup_data, &[]);
    wait_for(
        Duration::from_secs(60),
        "every event at the primary",
        || ems_stream(&primary)["high_water"].as_u64() == Some(EVENTS),
    );
    wait_for(
        Duration::from_secs(30),
        "the backup's request refused",
        || notice_members(&primary, "4003").contains(&"backup".to_owned()),
    );
    let started = notice_members(&primary, "4001");
    assert!(started.contains(&"primary".to_owned()), "{started:?}");
    assert!(
        !started.contains(&"backup".to_owned()),
        "the backup caught up too"
    );
    assert_eq!(ems_stream(&primary)["gaps"], 0);
    // The backup holds nothing of the stream: it was never active.
    assert_eq!(ems_stream(&backup)["high_water"].as_u64().unwrap_or(0), 0);
}

/// A copy of the built plugins the test may add files to.
fn private_plugin_dir(dir: &Path) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for name in ["ems-reader", "mgmt-http"] {
        for ext in ["wasm", "toml"] {
            let file = format!("{name}.{ext}");
            std::fs::copy(plugin_dir().join(&file), plugins.join(&file)).unwrap();
        }
    }
    plugins
}

/// The messages of safd's recent events with this id, from its status.
fn recent(admin: &str, id: u64) -> Vec<String> {
    status(admin)["recent_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["id"] == id)
        .map(|n| n["message"].as_str().unwrap().to_owned())
        .collect()
}

/// `safd reload` and SIGHUP mid-stream: a source added, a source restarted
/// on a plugin file dropped into the plugin directory and then replaced in
/// place, a group restarted with new tuning, a source removed; a setting
/// that needs a restart and a broken file are reported and change nothing.
/// Every event reaches the server once: no loss, nothing sent twice.
#[test]
fn reload_applies_connector_changes_mid_stream_without_loss_or_duplicates() {
    const EVENTS: u64 = 20_000;
    const MORE: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let plugins = private_plugin_dir(dir.path());
    let logs = ems_logs(dir.path(), EVENTS);
    let more = dir.path().join("more");
    std::fs::create_dir(&more).unwrap();
    simulate_seeded(&more, MORE, 12);
    let (server, path) = one_server(dir.path(), &logs);
    let original = std::fs::read_to_string(&path).unwrap().replace(
        &plugin_dir().display().to_string(),
        &plugins.display().to_string(),
    );
    std::fs::write(&path, &original).unwrap();
    let (mut daemon, admin, rest) = run_with_admin(&path);
    let high_water = |stream: &str| {
        stream_stats(&server, stream)["high_water"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_for(
        Duration::from_secs(60),
        "the first events delivered",
        || high_water("ems") > 0,
    );

    // A new plugin file dropped in and used by `ems`, a second source, and
    // new group tuning: one reload, mid-stream.
    std::fs::copy(
        plugins.join("ems-reader.wasm"),
        plugins.join("ems-reader-v2.wasm"),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(plugins.join("ems-reader.toml")).unwrap();
    std::fs::write(
        plugins.join("ems-reader-v2.toml"),
        manifest.replace("name = \"ems-reader\"", "name = \"ems-reader-v2\""),
    )
    .unwrap();
    let changed = original
        .replace("plugin = \"ems-reader\"", "plugin = \"ems-reader-v2\"")
        .replace("probe_interval_ms = 200", "probe_interval_ms = 250")
        + &format!(
            r#"
[sources.ems-more]
plugin = "ems-reader"
config = {{ directory = "{more}", format = "b", system = "\\PROD2" }}
grants = {{ dirs = ["{more}"] }}
"#,
            more = more.display()
        );
    std::fs::write(&path, &changed).unwrap();
    let (ok, report) = reload(&admin);
    assert!(ok, "{report}");
    assert_eq!(report["added"], serde_json::json!(["sources.ems-more"]));
    assert_eq!(
        report["restarted"],
        serde_json::json!(["sources.ems", "groups.mgmt"]),
        "{report}"
    );
    assert_eq!(report["needs_restart"], serde_json::json!([]));

    // The plugin file replaced in place by a new build (here: the same
    // code with an extra custom section), picked up on SIGHUP.
    let mut wasm = std::fs::read(plugins.join("ems-reader-v2.wasm")).unwrap();
    wasm.extend_from_slice(&[0x00, 0x0c, 0x0b]);
    wasm.extend_from_slice(b"reload-test");
    std::fs::write(plugins.join("ems-reader-v2.wasm"), wasm).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for(Duration::from_secs(120), "the SIGHUP reload", || {
        recent(&admin, 5001).len() == 2
    });
    let second = recent(&admin, 5001).pop().unwrap();
    assert!(
        second.contains("restarted: sources.ems;") && second.contains("groups.mgmt"),
        "{second}"
    );
    assert!(second.contains("unchanged: sources.ems-more"), "{second}");

    // A setting only a restart can change: reported, the rest applies.
    std::fs::write(
        &path,
        changed.replace("[admin]", "[queue]\ncapacity_mib = 512\n\n[admin]"),
    )
    .unwrap();
    let (ok, report) = reload(&admin);
    assert!(ok, "{report}");
    assert_eq!(report["needs_restart"], serde_json::json!(["queue"]));
    assert_eq!(report["restarted"], serde_json::json!([]), "{report}");

    // A broken file: refused with its problems, nothing changes.
    std::fs::write(
        &path,
        changed.replace("mode = \"failover\"", "mode = \"sideways\""),
    )
    .unwrap();
    let (ok, report) = reload(&admin);
    assert!(!ok);
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("safd.toml:") && problems.contains("sideways"),
        "{problems}"
    );
    assert_eq!(recent(&admin, 5002).len(), 1);

    wait_for(
        Duration::from_secs(120),
        "every event at the server",
        || high_water("ems") == EVENTS && high_water("ems-more") == MORE,
    );
    // The second source removed: it stops, the rest carries on.
    std::fs::write(&path, original.replace("ems-reader\"", "ems-reader-v2\"")).unwrap();
    let (ok, report) = reload(&admin);
    assert!(ok, "{report}");
    assert_eq!(report["removed"], serde_json::json!(["sources.ems-more"]));

    let (_, stats) = server.get("stats");
    assert_eq!(stats["counters"]["duplicates"], 0, "sent twice: {stats}");
    assert_eq!(stats["counters"]["rejected"], 0, "{stats}");
    for stream in stats["streams"].as_array().unwrap() {
        assert_eq!(stream["gaps"], 0, "{stream}");
    }
    let rest = stop_cleanly(&mut daemon, rest);
    assert!(
        rest.contains("safd: reloaded; added: sources.ems-more"),
        "{rest}"
    );
}

/// A small tmpfs mounted for a test, unmounted when dropped. Mounting needs
/// CAP_SYS_ADMIN (root in the CI container); `None` where that is not
/// permitted, unless SAFD_REQUIRE_ROOT_TESTS is set (CI sets it), which
/// turns the skip into a failure.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, mib: u64) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Self {
                path: path.to_owned(),
            }),
            other => {
                let why = match other {
                    Ok(output) => text_of(&output).1,
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("SAFD_REQUIRE_ROOT_TESTS").is_none(),
                    "cannot mount a tmpfs: {why}"
                );
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs here ({why}); run as root to test a full disk"
                );
                None
            }
        }
    }

    fn resize(&self, mib: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The disk under the queue fills up (to `queue.min_free_mib`, 64 MiB of a
/// 72 MiB tmpfs) while the server is down: the source is held back and
/// event 2006 reported, safd keeps running; once space is freed and the
/// server is back, every event arrives, once.
#[test]
fn a_full_data_disk_holds_the_source_back_and_delivery_resumes_when_it_clears() {
    const EVENTS: u64 = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("data"), 72) else {
        return;
    };
    let logs = ems_logs(dir.path(), EVENTS);
    let server_data = dir.path().join("server");
    let server = mgmt::Server::start(&server_data, &[]);
    let authority = server.authority();
    server.kill();
    let path = config(
        dir.path(),
        &logs,
        &[("primary", &format!("http://{authority}"))],
        std::slice::from_ref(&authority),
    );
    let (mut daemon, admin, rest) = run_with_admin(&path);
    wait_for(Duration::from_secs(60), "the disk-full event", || {
        !recent(&admin, 2006).is_empty()
    });
    let report = recent(&admin, 2006).remove(0);
    assert!(report.contains("ems"), "{report}");
    assert!(daemon.try_wait().unwrap().is_none(), "safd exited");
    let stored_while_full = status(&admin)["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ems")
        .map(|s| s["next_seq"].as_u64().unwrap())
        .unwrap();
    assert!(stored_while_full < EVENTS, "the disk did not fill");

    // Refused while the reserve was still free: the store itself never
    // met a full disk.
    assert!(report.contains("min_free_mib"), "{report}");
    assert!(recent(&admin, 2007).is_empty());

    disk.resize(256);
    let server = mgmt::Server::start_on(&authority, &server_data, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while ems_stream(&server)["high_water"].as_u64() != Some(EVENTS) {
        assert!(
            Instant::now() < deadline,
            "not every event reached the server: {}\nsafd: {:#}",
            ems_stream(&server),
            status(&admin)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, stats) = server.get("stats");
    assert_eq!(stats["counters"]["rejected"], 0, "{stats}");
    assert_eq!(ems_stream(&server)["gaps"], 0);
    assert_eq!(stored_ems_events(&server), EVENTS);
    stop_cleanly(&mut daemon, rest);
}

/// Under systemd (`Type=notify`): safd says READY=1 once it runs,
/// RELOADING=1 and READY=1 around a reload, STOPPING=1 at SIGTERM, on the
/// socket `$NOTIFY_SOCKET` names.
#[test]
fn safd_tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let socket_path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 4096];
        let n = socket
            .recv(&mut buf)
            .expect("a notification within a minute");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let path = mgmt::tail_config(
        dir.path(),
        "http://127.0.0.1:9",
        &mgmt::TailConfig::default(),
    );
    let (mut daemon, admin, rest) = crate::support::safd_process::run_with_admin_env(
        &path,
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let ready = next();
    assert!(ready.starts_with("READY=1\nSTATUS=running: "), "{ready}");
    let (applied, _) = reload(&admin);
    assert!(applied);
    assert!(next().starts_with("RELOADING=1"));
    let ready = next();
    assert!(ready.starts_with("READY=1\nSTATUS="), "{ready}");
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let stopping = next();
    assert!(
        stopping.starts_with("STOPPING=1\nSTATUS=SIGTERM"),
        "{stopping}"
    );
    let mut exited = None;
    wait_for(Duration::from_secs(20), "safd to exit", || {
        exited = daemon.try_wait().unwrap();
        exited.is_some()
    });
    let log = rest.join().unwrap();
    assert!(exited.unwrap().success(), "{log}");
}

/// Routing by severity: one group takes every event, another only majors
/// and criticals (`min_severity = "major"`). The second server stores
/// exactly the first one's majors and criticals, yet holds the stream as one
/// run (the left-out seqs come as ranges); a catch-up from seq 1 replays
/// only that share; `safd verify` finds nothing missing for either group.
#[test]
fn a_group_with_min_severity_receives_exactly_its_share_and_a_catch_up_replays_only_that() {
    const EVENTS: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let logs = ems_logs(dir.path(), EVENTS);
    let all = mgmt::Server::start(&dir.path().join("all"), &[]);
    let majors = mgmt::Server::start(&dir.path().join("majors"), &[]);
    // Group `mgmt` takes everything; group `majors` is added to it.
    let path = config(dir.path(), &logs, &[("all", &all.base)], &[all.authority()]);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        r#"
[groups.majors]
mode = "failover"
plugin = "mgmt-http"
config = {{ token = "{token}" }}
grants = {{ http = ["{authority}"] }}
members = [{{ name = "majors", address = "{base}" }}]
streams = ["ems"]
min_severity = "major"
"#,
        token = mgmt::TOKEN,
        authority = majors.authority(),
        base = majors.base,
    ));
    std::fs::write(&path, text).unwrap();
    let (daemon, admin, _stderr) = run_with_admin(&path);
    wait_for(
        Duration::from_secs(60),
        "every event at both servers",
        || ems_stream(&all)["high_water"] == EVENTS && ems_stream(&majors)["high_water"] == EVENTS,
    );
    // One run at the second server: the seqs left out are held as settled.
    let held = ems_stream(&majors);
    assert_eq!(held["held"], serde_json::json!([[1, EVENTS]]), "{held}");

    let ids = |events: Vec<serde_json::Value>| -> std::collections::BTreeSet<String> {
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let share = ids(all.events("stream=ems&severity=major&limit=10000"));
    let stored = majors.events("stream=ems&limit=10000");
    assert!(
        stored
            .iter()
            .all(|e| e["severity"] == "major" || e["severity"] == "critical")
    );
    assert_eq!(ids(stored), share, "exactly the majors and criticals");
    assert!(
        !share.is_empty() && (share.len() as u64) < EVENTS,
        "{}",
        share.len()
    );

    // A catch-up from the start replays only the group's share (each one
    // recognised as held), not the events it leaves out.
    let duplicates = || {
        majors.get("stats").1["counters"]["duplicates"]
            .as_u64()
            .unwrap()
    };
    let before = duplicates();
    let asked = safd()
        .args([
            "catchup",
            "--group",
            "majors",
            "--from-seq",
            "ems=1",
            "--admin",
            &admin,
        ])
        .output()
        .unwrap();
    assert!(asked.status.success(), "{}", text_of(&asked).1);
    let lane = || {
        status(&admin)["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "majors")
            .unwrap()["lanes"][0]
            .clone()
    };
    wait_for(Duration::from_secs(60), "the catch-up to end", || {
        duplicates() >= before + share.len() as u64 && lane()["catching_up"] == false
    });
    assert_eq!(duplicates() - before, share.len() as u64);
    assert_eq!(majors.events("stream=ems&limit=10000").len(), share.len());

    // Nothing missing: the left-out seqs count as held.
    let verified = safd()
        .args(["verify", "--admin", &admin, "--server-token", mgmt::TOKEN])
        .output()
        .unwrap();
    let (said, _) = text_of(&verified);
    assert!(verified.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "majors  ems: acknowledged 1–{EVENTS}, held 1–{EVENTS}: complete"
        )),
        "{said}"
    );
    drop(daemon);
}
