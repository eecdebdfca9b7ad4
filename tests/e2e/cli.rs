//! The `safd` binary, run as a process.

use crate::support::binary;
use crate::support::plugins::plugin_dir;

use std::path::Path;
use std::process::{Command, Output};

fn safd(args: &[&str], cache: &Path) -> Output {
    run_binary(&binary("safd"), args, cache)
}

/// The benchmarks and the soak live in `safd-tools`, not the daemon.
fn safd_tools(args: &[&str], cache: &Path) -> Output {
    run_binary(&binary("safd-tools"), args, cache)
}

fn run_binary(binary: &Path, args: &[&str], cache: &Path) -> Output {
    Command::new(binary)
        .args(args)
        .env("SAFD_CACHE_DIR", cache)
        .env_remove("SAFD_PLUGIN_DIR")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn plugins_list_shows_the_built_plugins_and_caches_them() {
    let cache = tempfile::tempdir().unwrap();
    let dir = plugin_dir();
    let out = safd(
        &["plugins", "list", "--dir", dir.to_str().unwrap()],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let header = stdout.lines().next().unwrap();
    for column in [
        "NAME",
        "VERSION",
        "KIND",
        "API",
        "CAPABILITIES",
        "COMPILED",
        "SHA256",
    ] {
        assert!(header.contains(column), "{header}");
    }
    for name in [
        "fixture-source",
        "fixture-destination",
        "hello-source",
        "log-destination",
        "ems-reader",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{stdout}"));
        assert!(row.contains("safd:connector@0.2.1"), "{row}");
        assert!(row.contains("compiled now"), "{row}");
        // The digest sha256sum gives of the file.
        let digest = crate::support::sha256_of(&dir.join(format!("{name}.wasm")));
        assert!(row.ends_with(&digest), "{row} / {digest}");
    }
    let again = safd(
        &["plugins", "list", "--dir", dir.to_str().unwrap()],
        cache.path(),
    );
    assert!(text(&again.stdout).contains("yes (cached)"));
}

#[test]
fn plugins_list_reports_a_corrupt_plugin_in_one_line_and_loads_the_rest() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for ext in ["wasm", "toml"] {
        std::fs::copy(
            plugin_dir().join(format!("hello-source.{ext}")),
            dir.path().join(format!("hello-source.{ext}")),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("broken.wasm"), b"\0asmnot really").unwrap();
    std::fs::write(
        dir.path().join("broken.toml"),
        "name = \"broken\"\nversion = \"1.0.0\"\nkind = \"source\"\napi = \"safd:connector@0.2.0\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("typo.toml"),
        "name = \"typo\"\nkind = \"source\"\n",
    )
    .unwrap();
    std::fs::copy(
        plugin_dir().join("hello-source.wasm"),
        dir.path().join("typo.wasm"),
    )
    .unwrap();

    let out = safd(
        &["plugins", "list", "--dir", dir.path().to_str().unwrap()],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("hello-source"));
    let refused: Vec<String> = text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("refused: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(refused.len(), 2, "{}", text(&out.stderr));
    assert!(
        refused
            .iter()
            .any(|l| l.contains("broken.wasm") && l.contains("not a valid WebAssembly component"))
    );
    assert!(
        refused
            .iter()
            .any(|l| l.contains("typo.toml") && l.contains("missing field"))
    );
}

#[test]
fn plugins_inspect_shows_description_and_schema() {
    let cache = tempfile::tempdir().unwrap();
    let file = plugin_dir().join("log-destination.wasm");
    let out = safd(
        &["plugins", "inspect", file.to_str().unwrap()],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("name:          log-destination"),
        "{stdout}"
    );
    assert!(stdout.contains("kind:          destination"));
    assert!(stdout.contains("transport-write (WARNING"));
    assert!(stdout.contains("\"prefix\""), "schema missing:\n{stdout}");

    let file = plugin_dir().join("ems-reader.wasm");
    let out = safd(
        &["plugins", "inspect", file.to_str().unwrap()],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("name:          ems-reader"), "{stdout}");
    assert!(stdout.contains("kind:          source"), "{stdout}");
    assert!(stdout.contains("NonStop EMS"), "{stdout}");
    for key in [
        "\"directory\"",
        "\"time_zone\"",
        "\"severity_overrides\"",
        "\"go_back_secs\"",
    ] {
        assert!(stdout.contains(key), "schema lacks {key}:\n{stdout}");
    }
}

#[test]
fn help_reads_well() {
    let cache = tempfile::tempdir().unwrap();
    let out = safd(&["--help"], cache.path());
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(help.contains("without losing any"));
    assert!(help.contains("plugins") && help.contains("demo"));
    // The benchmarks are developer tools, not commands of the daemon.
    assert!(!help.contains("bench") && !help.contains("soak"), "{help}");
    let out = safd(&["plugins", "list", "--help"], cache.path());
    assert!(text(&out.stdout).contains("--dir"));
}

/// `safd demo` (what `cargo xtask demo` runs): the simulator, two real
/// servers killed and restarted, safd in between; nothing lost.
#[test]
fn demo_moves_every_event_through_failover_failback_and_catch_up_without_loss() {
    let cache = tempfile::tempdir().unwrap();
    let dir = plugin_dir();
    let out = safd(
        &[
            "demo",
            "--plugins",
            dir.to_str().unwrap(),
            "--phase-secs",
            "1",
            "--rate",
            "1000",
            "--keep-servers",
            "false",
        ],
        cache.path(),
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    let summary = stdout
        .split_once("summary:")
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"))
        .1;
    let value = |label: &str| {
        summary
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {label} in:\n{stdout}"))
    };
    let generated: u64 = value("generated ")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(generated > 0, "{stdout}");
    assert!(
        value("delivered ").starts_with(&generated.to_string()),
        "{stdout}"
    );
    assert_eq!(value("lost "), "0");
    assert!(
        value("duplicates ").starts_with("0 stored twice"),
        "{stdout}"
    );
    assert!(
        value("failover ").ends_with("after the primary was killed"),
        "{stdout}"
    );
    assert!(
        value("failback ").ends_with("after the primary was back"),
        "{stdout}"
    );
    assert!(value("catch-up ").starts_with("by primary"), "{stdout}");
    assert!(
        stdout.contains("[1002] group `mgmt` failed over from `primary` to `backup`"),
        "{stdout}"
    );
    assert!(stdout.contains("[1003]"), "{stdout}");
    assert!(stdout.contains("/console#token=demo"), "{stdout}");
}

/// `safd-tools bench` at a tiny size (what `cargo xtask bench-pipeline` runs at
/// full size), so it cannot rot: it completes, and what it counts — by
/// event id at the servers — shows nothing lost or stored twice.
#[test]
fn bench_runs_at_a_tiny_size_and_counts_by_event_id() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("report");
    let dir = plugin_dir();
    let cache = crate::support::plugin_cache();
    let cache = cache.as_path();
    let output = safd_tools(
        &[
            "bench",
            "--plugins",
            dir.to_str().unwrap(),
            "--events",
            "3000",
            "--backlog",
            "3000",
            "--rate",
            "2000",
            "--latency-secs",
            "2",
            "--runs",
            "1",
            "--out",
            out.to_str().unwrap(),
            "--work-dir",
            work.path().join("work").to_str().unwrap(),
        ],
        cache,
    );
    // 1: a target missed (expected of a debug build); anything else failed.
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{:?}\n{}\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    let median = crate::support::bench::medians(report.clone());
    assert_eq!(median("events lost across both failovers"), 0.0);
    assert_eq!(median("events a server stored twice"), 0.0);
    for rate in ["end to end", "ingest with no server up", "backlog replay"] {
        assert!(median(rate) > 0.0, "{rate}: {report}");
    }
    assert!(out.join("bench.md").is_file());
}

/// `safd top` in a real terminal (tmux): the stream of a running safd fed
/// by a log being written shows an ingest rate and a count that moves, the
/// member its state; `q` quits.
#[test]
fn top_shows_live_rates_in_a_terminal_and_quits_on_q() {
    use crate::support::mgmt;
    use crate::support::safd_process::{run_with_admin, stop_cleanly, wait_for};
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let server = mgmt::Server::start(&dir.path().join("server"), &[]);
    let path = mgmt::tail_config(dir.path(), &server.base, &mgmt::TailConfig::default());
    let (mut daemon, admin, rest) = run_with_admin(&path);
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        let log = logs.join("app.log");
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&log).unwrap();
            let mut n = 0;
            while writing.load(Ordering::SeqCst) {
                for _ in 0..50 {
                    n += 1;
                    writeln!(file, "line {n}").unwrap();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let session = format!("safd-top-{}", std::process::id());
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().unwrap();
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "40",
        &format!("{} top --admin {admin}", binary("safd").display()),
    ]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    let screen = || text(&tmux(&["capture-pane", "-p", "-t", &session]).stdout);
    // The `app` row: STREAM, IN/S, STORED, …
    let app_row = |screen: &str| -> Option<(u64, u64)> {
        screen.lines().find_map(|line| {
            let cells: Vec<&str> = line
                .trim_matches(|c: char| c == '│' || c.is_whitespace())
                .split_whitespace()
                .collect();
            (cells.first() == Some(&"app"))
                .then(|| Some((cells.get(1)?.parse().ok()?, cells.get(2)?.parse().ok()?)))
                .flatten()
        })
    };
    let mut first = (0, 0);
    let mut last = String::new();
    wait_for(Duration::from_secs(30), "an ingest rate for `app`", || {
        last = screen();
        app_row(&last).is_some_and(|(rate, stored)| {
            first = (rate, stored);
            rate > 0
        })
    });
    assert!(last.contains("safd top — agent tail-agent"), "{last}");
    assert!(last.contains("primary") && last.contains("ready"), "{last}");
    wait_for(Duration::from_secs(30), "the stored count moving", || {
        last = screen();
        app_row(&last).is_some_and(|(_, stored)| stored > first.1)
    });

    tmux(&["send-keys", "-t", &session, "q"]);
    wait_for(Duration::from_secs(10), "safd top to quit on q", || {
        !tmux(&["has-session", "-t", &session]).status.success()
    });
    writing.store(false, Ordering::SeqCst);
    writer.join().unwrap();
    stop_cleanly(&mut daemon, rest);
}

/// `safd plugins new` for both kinds: each crate passes its own native
/// test, `safd plugins build` builds it for wasm32-wasip2 unchanged into a
/// plugin directory (printing the digest to pin), and safd loads it; bad
/// names and an existing directory are refused.
#[test]
fn plugins_new_makes_crates_that_test_build_and_load_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let made = dir.path().join("crates");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // One target directory for both crates and every run: the SDK and its
    // dependencies compile once.
    let target = crate::support::target_dir().join("scaffold-test");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for (name, kind) in [("new-src", "source"), ("new-dest", "destination")] {
        let out = safd(
            &[
                "plugins",
                "new",
                name,
                "--kind",
                kind,
                "--dir",
                made.to_str().unwrap(),
            ],
            &cache,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let crate_dir = made.join(name);
        let tested = Command::new(&cargo)
            .args(["test", "--quiet"])
            .current_dir(&crate_dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        assert!(tested.status.success(), "{name}: {}", text(&tested.stderr));
        // `safd plugins build`: the component and its manifest where safd
        // looks for plugins, loaded once, its digest printed.
        let built = Command::new(binary("safd"))
            .args(["plugins", "build"])
            .arg(&crate_dir)
            .arg("--out")
            .arg(&plugins)
            .env("SAFD_CACHE_DIR", &cache)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        let said = text(&built.stdout);
        assert!(
            built.status.success(),
            "{name}: {said}{}",
            text(&built.stderr)
        );
        let digest = crate::support::sha256_of(&plugins.join(format!("{name}.wasm")));
        assert!(said.contains(&format!("sha256 = \"{digest}\"")), "{said}");
        assert!(plugins.join(format!("{name}.toml")).is_file());
        // And it passes the conformance suite as generated.
        let wasm = plugins.join(format!("{name}.wasm"));
        let config = if kind == "source" {
            r#"{"count": 100}"#
        } else {
            "{}"
        };
        let suite = safd(
            &[
                "plugins",
                "test",
                wasm.to_str().unwrap(),
                "--config",
                config,
                "--address",
                "log",
            ],
            &cache,
        );
        let report = text(&suite.stdout);
        assert!(
            suite.status.success(),
            "{name}: {report}{}",
            text(&suite.stderr)
        );
        assert!(report.contains("PASSED"), "{report}");
    }
    let list = safd(
        &["plugins", "list", "--dir", plugins.to_str().unwrap()],
        &cache,
    );
    let listed = text(&list.stdout);
    assert!(list.status.success(), "{listed}{}", text(&list.stderr));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("new-src ") && l.contains(" source ")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("new-dest ") && l.contains(" destination ")),
        "{listed}"
    );

    let refused = safd(&["plugins", "new", "Bad_Name", "--kind", "source"], &cache);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("lowercase letters"),
        "{}",
        text(&refused.stderr)
    );
    let again = safd(
        &[
            "plugins",
            "new",
            "new-src",
            "--kind",
            "source",
            "--dir",
            made.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("exists already"),
        "{}",
        text(&again.stderr)
    );
}

/// `safd plugins try`: ems-reader on ems-sim logs prints every event as a
/// JSON line and restarts from its cursor without reading one again;
/// mgmt-http against a safd-mgmt registers, delivers and probes, and a
/// wrong token comes back as the error case the plugin chose.
#[test]
fn plugins_try_runs_a_source_through_a_restart_and_a_destination_against_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let cache = crate::support::plugin_cache();
    let logs = dir.path().join("logs");
    crate::support::ems_sim_logs(&logs, 1200);
    let reader = plugin_dir().join("ems-reader.wasm");
    let config = serde_json::json!({"directory": logs, "format": "a", "system": "\\PROD1"});
    let out = safd(
        &[
            "plugins",
            "try",
            reader.to_str().unwrap(),
            "--config",
            &config.to_string(),
            "--grant-dir",
            logs.to_str().unwrap(),
        ],
        &cache,
    );
    let said = text(&out.stderr);
    assert!(out.status.success(), "{said}");
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // The last record is held until the reader knows it is complete.
    assert!((1199..=1200).contains(&events.len()), "{}", events.len());
    let ids: std::collections::HashSet<&str> =
        events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "an event printed twice");
    assert!(
        events[0]["attributes"]["system"] == "\\PROD1",
        "{}",
        events[0]
    );
    assert!(
        said.contains("restarted from the committed cursor: nothing read again"),
        "{said}"
    );

    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::mgmt::Server::start(dir.path(), &[]);
    let http = plugin_dir().join("mgmt-http.wasm");
    let try_with = |token: &str| {
        safd(
            &[
                "plugins",
                "try",
                http.to_str().unwrap(),
                "--config",
                &serde_json::json!({"token": token}).to_string(),
                "--grant-http",
                &server.authority(),
                "--address",
                &server.base,
                "--count",
                "7",
            ],
            &cache,
        )
    };
    let out = try_with(crate::support::mgmt::TOKEN);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("register: service ready true"), "{said}");
    assert!(said.contains("acknowledged try through 7"), "{said}");
    assert!(said.contains("probe: service ready true"), "{said}");
    assert_eq!(server.stored(), 7);
    let out = try_with("wrong");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("register: error: unauthorized"),
        "{}",
        text(&out.stdout)
    );
}
