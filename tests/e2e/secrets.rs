//! Secrets out of the configuration file: mgmt-http's token from safd's
//! environment (`${NAME}`) or a file (`token_file`), the admin token from a
//! file; delivery works, and neither secret appears in what `safd check`,
//! `safd status`, the logs, `/status` or `/metrics` show.

use crate::support::mgmt;
use crate::support::safd_process::{run_with_admin_env, safd, stop_cleanly, wait_for};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ADMIN_SECRET: &str = "admin-secret-4242";
const VARIABLE: &str = "SAFD_E2E_MGMT_TOKEN";

fn write_config(dir: &Path, server: &mgmt::Server, mgmt_token: &str) -> PathBuf {
    let admin_token = dir.join("admin.token");
    std::fs::write(&admin_token, format!("{ADMIN_SECRET}\n")).unwrap();
    let admin = format!("token_file = \"{}\"", admin_token.display());
    let mgmt = format!("{mgmt_token},");
    mgmt::tail_config(
        dir,
        &server.base,
        &mgmt::TailConfig {
            admin: &admin,
            mgmt: &mgmt,
            ..mgmt::TailConfig::default()
        },
    )
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [mgmt::TOKEN, ADMIN_SECRET] {
        assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
    }
}

fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn secrets_come_from_the_environment_and_files_and_are_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let server = mgmt::Server::start(&dir.path().join("server"), &[]);
    let env = [(VARIABLE, mgmt::TOKEN)];

    // The token from a file: check accepts it and shows it nowhere.
    let token_file = dir.path().join("mgmt.token");
    std::fs::write(&token_file, mgmt::TOKEN).unwrap();
    let config = write_config(
        dir.path(),
        &server,
        &format!("token_file = \"{}\"", token_file.display()),
    );
    let output = safd().arg("check").arg("-c").arg(&config).output().unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    assert_no_secret("safd check", &output_text(&output));

    // A variable that is not set: named, with the fix.
    let config = write_config(dir.path(), &server, &format!("token = \"${{{VARIABLE}}}\""));
    let output = safd().arg("check").arg("-c").arg(&config).output().unwrap();
    let said = output_text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("groups.mgmt.config.token") && said.contains(VARIABLE),
        "{said}"
    );
    let output = safd()
        .arg("check")
        .arg("-c")
        .arg(&config)
        .envs(env)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    assert_no_secret("safd check", &output_text(&output));

    // The token from the environment: delivered.
    let mut log = std::fs::File::create(dir.path().join("logs/app.log")).unwrap();
    for i in 0..20 {
        writeln!(log, "line {i}").unwrap();
    }
    let (mut daemon, admin, rest) = run_with_admin_env(&config, &env);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str| -> (u16, String) {
        let mut response = agent
            .get(&format!("http://{admin}{path}"))
            .header("Authorization", &format!("Bearer {ADMIN_SECRET}"))
            .call()
            .unwrap();
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap(),
        )
    };
    wait_for(Duration::from_secs(60), "20 events acknowledged", || {
        let (_, body) = get("/status");
        serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|status| {
            status["groups"][0]["lanes"][0]["acknowledged"]["app"].as_u64() >= Some(20)
        })
    });
    // The admin token from the file is the one asked for.
    let refused = agent
        .get(&format!("http://{admin}/status"))
        .call()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(refused, 401);
    for path in ["/status", "/metrics", "/health"] {
        let (status, body) = get(path);
        assert_eq!(status, 200, "{path}: {body}");
        assert_no_secret(path, &body);
    }
    for args in [&["status"][..], &["status", "--json"][..]] {
        let output = safd()
            .args(args)
            .args(["--admin", &admin])
            .env("SAFD_ADMIN_TOKEN", ADMIN_SECRET)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", output_text(&output));
        assert_no_secret("safd status", &output_text(&output));
    }
    let logs = stop_cleanly(&mut daemon, rest);
    assert_no_secret("safd's log", &logs);
    assert_eq!(
        server.events("stream=app&limit=100").len(),
        20,
        "every line delivered"
    );
}
