//! Hostile and careless input to `safd check`, `safd run` and the admin
//! API: every configuration `run` would refuse or misuse at start is
//! refused by `check` with its line, key and fix; `check` reads neither an
//! endless file nor a plugin per section; the admin API names what it does
//! not know. (safd-mgmt's side: examples/mgmt-server/tests/server/hostile.rs.)

use super::{config_to_nowhere, ems_logs, ems_stream, one_server, plugin_dir, text_of};
use crate::support::safd_process::{run_with_admin, safd, stop_cleanly, wait_for};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `safd check` (and, for `run` too, `safd run`) on the good configuration
/// with `from` replaced by `to`: fails with one line `FILE:LINE: KEY: …`
/// containing `expect`, and shows no raw control character.
fn refused(path: &Path, good: &str, from: &str, to: &str, key: &str, expect: &str, run: bool) {
    assert!(good.contains(from), "{from} not in the configuration");
    std::fs::write(path, good.replacen(from, to, 1)).unwrap();
    let commands: &[&str] = if run { &["check", "run"] } else { &["check"] };
    for command in commands {
        // From an empty working directory, which must stay empty: a
        // refused `run` writes nothing.
        let cwd = tempfile::tempdir().unwrap();
        let output = safd()
            .current_dir(cwd.path())
            .arg(command)
            .arg("-c")
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let (stdout, stderr) = text_of(&output);
        assert!(
            !output.status.success(),
            "{command} accepted `{to}`:\n{stdout}{stderr}"
        );
        let line = stderr
            .lines()
            .find(|l| l.contains("safd.toml:") && l.contains(expect))
            .unwrap_or_else(|| panic!("{command} `{to}`: no line with {expect:?}:\n{stderr}"));
        assert!(line.contains(&format!(": {key}: ")), "{line}");
        assert!(!stderr.contains(['\0', '\r', '\u{1b}']), "{stderr:?}");
        assert_eq!(
            std::fs::read_dir(cwd.path()).unwrap().count(),
            0,
            "{command} wrote into its working directory"
        );
    }
}

#[test]
fn check_refuses_at_start_what_run_would_refuse_or_misuse() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = config_to_nowhere(dir.path());
    let good = std::fs::read_to_string(&path).unwrap();
    let data = dir.path().join("data").display().to_string();
    let agent = "agent_id = \"test-safd\"";
    // Names (TOML escapes: the file itself is plain text).
    refused(
        &path,
        &good,
        agent,
        "agent_id = \"x\\u0000y\"",
        "agent_id",
        "U+0000",
        true,
    );
    refused(
        &path,
        &good,
        agent,
        "agent_id = \"x\\u001b[2J\"",
        "agent_id",
        "U+001B",
        false,
    );
    refused(
        &path,
        &good,
        agent,
        "agent_id = \"x\\u202e\"",
        "agent_id",
        "U+202E",
        false,
    );
    refused(
        &path,
        &good,
        agent,
        &format!("agent_id = \"{}\"", "a".repeat(129)),
        "agent_id",
        "at most 128 bytes",
        false,
    );
    refused(
        &path,
        &good,
        "[sources.ems]",
        "[sources.\"ems\\n\"]",
        "sources.ems\\u{a}",
        "the source name",
        false,
    );
    refused(
        &path,
        &good,
        "[groups.mgmt]",
        "[groups.\" mgmt\"]",
        "groups. mgmt",
        "white space",
        false,
    );
    refused(
        &path,
        &good,
        "name = \"primary\"",
        "name = \"pri\\tmary\"",
        "groups.mgmt.members",
        "U+0009",
        false,
    );
    // The data directory.
    let data_dir = format!("data_dir = \"{data}\"");
    refused(
        &path,
        &good,
        &data_dir,
        "data_dir = \"\"",
        "data_dir",
        "is empty",
        true,
    );
    refused(
        &path,
        &good,
        &data_dir,
        "data_dir = \"/dev/zero\"",
        "data_dir",
        "is not a directory (it is a device)",
        true,
    );
    refused(
        &path,
        &good,
        &data_dir,
        "data_dir = \"/proc/self\"",
        "data_dir",
        "cannot create files in it",
        true,
    );
    refused(
        &path,
        &good,
        &data_dir,
        "data_dir = \"/dev/null/q\"",
        "data_dir",
        "is not a directory",
        false,
    );
    // Member addresses of the plugin's form, header-safe tokens.
    refused(
        &path,
        &good,
        "address = \"http://127.0.0.1:9\"",
        "address = \"ftp://127.0.0.1:9\"",
        "groups.mgmt.members",
        "http://host[:port] or https://host[:port]",
        true,
    );
    refused(
        &path,
        &good,
        "token = \"test-token\"",
        "token = \"t\\r\\nX-Evil: 1\"",
        "groups.mgmt.config.token",
        "cannot travel in an HTTP header",
        true,
    );
    refused(
        &path,
        &good,
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\ntoken = \"a\\nb\"",
        "admin.token",
        "cannot travel in an HTTP header",
        false,
    );
    // An admin API beyond loopback needs a token, at check and at run.
    refused(
        &path,
        &good,
        "listen = \"127.0.0.1:0\"",
        "listen = \"0.0.0.0:0\"",
        "admin.listen",
        "set admin.token, or listen on 127.0.0.1",
        true,
    );
    // Sizes and times: the range in the message, safd's and the plugin's.
    refused(
        &path,
        &good,
        "timeout_ms = 3000",
        "timeout_ms = 4294967295",
        "groups.mgmt.config.timeout_ms",
        "is 4294967295; give 1 to 3600000 (milliseconds)",
        false,
    );
    refused(
        &path,
        &good,
        "probe_interval_ms = 200",
        "probe_interval_ms = 0",
        "groups.mgmt.probe_interval_ms",
        "give 10 to 3600000 (milliseconds)",
        false,
    );
    refused(
        &path,
        &good,
        "probe_interval_ms = 200",
        "probe_interval_ms = 200\nrequest_timeout_ms = 99999999",
        "groups.mgmt.request_timeout_ms",
        "give 10 to 600000",
        false,
    );
    refused(
        &path,
        &good,
        "probe_interval_ms = 200",
        "probe_interval_ms = 200\nbatch_max_bytes = 12",
        "groups.mgmt.batch_max_bytes",
        "give 1024 to 67108864 (bytes)",
        false,
    );
    refused(
        &path,
        &good,
        "probe_interval_ms = 200",
        "probe_interval_ms = 200\nfailback_after = 0",
        "groups.mgmt.failback_after",
        "give 1 to 10000",
        false,
    );
    refused(
        &path,
        &good,
        "[sources.ems]",
        "[queue]\ncapacity_mib = 0\n\n[sources.ems]",
        "queue.capacity_mib",
        "give 1 to 16777216 (MiB)",
        false,
    );
    refused(
        &path,
        &good,
        "[sources.ems]",
        "[queue]\nmin_free_mib = 16000000\n\n[sources.ems]",
        "queue.min_free_mib",
        "no event could ever be stored",
        true,
    );
    refused(
        &path,
        &good,
        "[sources.ems]",
        "[queue]\nretention_hours = 999999\n\n[sources.ems]",
        "queue.retention_hours",
        "give 0 to 87600 (hours)",
        false,
    );
    // Type errors and duplicate keys name the key.
    refused(
        &path,
        &good,
        "probe_interval_ms = 200",
        "probe_interval_ms = \"fast\"",
        "groups.mgmt.probe_interval_ms",
        "invalid type: string",
        false,
    );
    refused(
        &path,
        &good,
        "probe_interval_ms = 200",
        "probe_interval_ms = 200\nprobe_interval_ms = 300",
        "groups.mgmt.probe_interval_ms",
        "duplicate key",
        false,
    );

    // A plugin file that is a link to a device.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for name in ["ems-reader", "mgmt-http"] {
        for ext in ["wasm", "toml"] {
            let file = format!("{name}.{ext}");
            std::fs::copy(plugin_dir().join(&file), plugins.join(&file)).unwrap();
        }
    }
    std::os::unix::fs::symlink("/dev/zero", plugins.join("zero.wasm")).unwrap();
    std::fs::copy(plugins.join("ems-reader.toml"), plugins.join("zero.toml")).unwrap();
    let private = good.replace(
        &plugin_dir().display().to_string(),
        &plugins.display().to_string(),
    );
    refused(
        &path,
        &private,
        "plugin = \"ems-reader\"",
        "plugin = \"zero\"",
        "sources.ems.plugin",
        "is not a regular file (it is a device, through a link to /dev/zero)",
        true,
    );

    // A file that never ends, or is too large.
    for (file, expect) in [
        (Path::new("/dev/zero"), "not a regular file"),
        (&dir.path().join("huge.toml"), "larger than 1024 KiB"),
    ] {
        if file.starts_with(dir.path()) {
            std::fs::write(file, "#".repeat(2 << 20)).unwrap();
        }
        let output = safd().arg("check").arg("-c").arg(file).output().unwrap();
        let (_, stderr) = text_of(&output);
        assert!(!output.status.success());
        assert!(stderr.contains(expect), "{stderr}");
    }
}

/// Peak resident memory of `safd check -c path`, in KiB: its VmHWM (which
/// only grows), read every 2 ms until the process ends.
fn check_peak_kib(path: &Path) -> u64 {
    let mut child = safd()
        .arg("check")
        .arg("-c")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "safd check took over a minute");
        if let Some(kib) = crate::support::mgmt::memory_kib(child.id(), "VmHWM") {
            peak = peak.max(kib);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        child.wait().unwrap().success(),
        "check failed on {}",
        path.display()
    );
    peak
}

/// The report: `safd check` cost ~3 MB per source section (2 000: 6 GB,
/// 20 000: over 11 GB). Now each plugin is loaded once and each distinct
/// config checked once.
#[test]
fn check_memory_does_not_grow_with_the_number_of_sections() {
    const BOUND_KIB: u64 = 128 << 10;
    let dir = tempfile::tempdir().unwrap();
    let (logs, path) = config_to_nowhere(dir.path());
    let mut text = std::fs::read_to_string(&path).unwrap();
    for i in 0..2_000 {
        text.push_str(&format!(
            "\n[sources.s{i}]\nplugin = \"ems-reader\"\nconfig = {{ directory = \"{logs}\", \
             format = \"b\", system = \"\\\\SYS{i}\" }}\ngrants = {{ dirs = [\"{logs}\"] }}\n",
            logs = logs.display()
        ));
    }
    std::fs::write(&path, text).unwrap();
    let peak = check_peak_kib(&path);
    eprintln!("safd check, 2 001 sources: {peak} KiB at peak");
    // Below this, what was read is not safd (the child before its exec).
    assert!(peak > 8 << 10, "no reading of safd's memory: {peak} KiB");
    assert!(
        peak < BOUND_KIB,
        "2 001 sources: {peak} KiB at peak; the bound is {BOUND_KIB} KiB"
    );
}

#[test]
fn the_admin_api_names_what_it_does_not_know() {
    const EVENTS: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let logs = ems_logs(dir.path(), EVENTS);
    let (server, path) = one_server(dir.path(), &logs);
    let (mut daemon, admin, rest) = run_with_admin(&path);
    wait_for(Duration::from_secs(60), "every event at the server", || {
        ems_stream(&server)["high_water"].as_u64().unwrap_or(0) >= EVENTS
    });
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |body: &str| {
        let mut response = agent
            .post(&format!("http://{admin}/catchup"))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    };
    let huge = "x".repeat(1 << 20);
    for (body, expect) in [
        (
            r#"{"group": "mgmt", "member": "nobody", "from_seq": {"ems": 1}}"#.to_owned(),
            "no member `nobody` (its members: primary)",
        ),
        (
            r#"{"group": "mgmt", "member": "primary", "from_seq": {"ems": 1}}"#.to_owned(),
            "failover group",
        ),
        (
            r#"{"group": "mgmt", "from_seq": {"nothing": 1}}"#.to_owned(),
            "no stream `nothing`",
        ),
        (
            r#"{"group": "nogroup", "from_seq": {"ems": 1}}"#.to_owned(),
            "unknown group `nogroup`",
        ),
        (r#"{"group": "mgmt"}"#.to_owned(), "either from_seq"),
        (
            format!(r#"{{"group": "{huge}", "from_seq": {{"ems": 1}}}}"#),
            "unknown group",
        ),
        (
            format!(r#"{{"group": 5, "x": "{huge}"}}"#),
            "malformed request",
        ),
        ("\u{0}\u{1}".to_owned(), "malformed request"),
    ] {
        let (status, answer) = post(&body);
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains(expect), "{answer}");
        assert!(answer.len() < 1_024, "{} bytes", answer.len());
    }
    // What a web page could make a browser send is refused before it does
    // anything: a form's content type, another site's Host (DNS rebinding).
    let mut form = agent
        .post(&format!("http://{admin}/reload"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send("group=mgmt")
        .unwrap();
    assert_eq!(form.status(), 415);
    let said = form.body_mut().read_to_string().unwrap();
    assert!(said.contains("application/json"), "{said}");
    let mut plain = agent
        .post(&format!("http://{admin}/dlq/replay?group=mgmt"))
        .header("Content-Type", "text/plain")
        .send("x")
        .unwrap();
    assert_eq!(
        plain.status(),
        415,
        "{}",
        plain.body_mut().read_to_string().unwrap()
    );
    for host in ["rebound.example", "rebound.example:8470", "10.1.2.3:8470"] {
        let mut rebound = agent
            .get(&format!("http://{admin}/status"))
            .header("Host", host)
            .call()
            .unwrap();
        assert_eq!(rebound.status(), 403, "Host {host}");
        let said = rebound.body_mut().read_to_string().unwrap();
        assert!(said.contains("not a loopback name"), "{said}");
    }
    let mut local = agent
        .get(&format!("http://{admin}/status"))
        .header("Host", "localhost")
        .call()
        .unwrap();
    assert_eq!(
        local.status(),
        200,
        "{}",
        local.body_mut().read_to_string().unwrap()
    );
    assert!(
        recent_reloads(&admin) == 0,
        "a refused request reloaded safd"
    );
    // Nothing was replayed: the server holds each event once, and a real
    // catch-up still works.
    let (_, stats) = server.get("stats");
    assert_eq!(stats["counters"]["duplicates"], 0, "{stats}");
    let (status, answer) = post(r#"{"group": "mgmt", "from_seq": {"ems": 1}}"#);
    assert_eq!(status, 200, "{answer}");
    wait_for(Duration::from_secs(30), "the replay at the server", || {
        server.get("stats").1["counters"]["duplicates"].as_u64() >= Some(EVENTS)
    });
    assert_eq!(ems_stream(&server)["high_water"], EVENTS);
    let rss_kib = crate::support::mgmt::memory_kib(daemon.id(), "VmRSS").unwrap();
    assert!(rss_kib < 512 << 10, "safd's RSS: {rss_kib} KiB");
    stop_cleanly(&mut daemon, rest);
}

/// Reloads safd reported among its recent events.
fn recent_reloads(admin: &str) -> usize {
    crate::support::safd_process::status(admin)["recent_events"]
        .as_array()
        .map_or(0, |events| {
            events
                .iter()
                .filter(|e| {
                    e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("reloaded"))
                })
                .count()
        })
}
