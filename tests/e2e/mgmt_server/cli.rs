//! The `safd-mgmt` command line.

use std::process::Command;

fn safd_mgmt(args: &[&str]) -> std::process::Output {
    Command::new(crate::support::binary("safd-mgmt"))
        .args(args)
        .env_remove("SAFD_MGMT_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn help_documents_every_flag() {
    let output = safd_mgmt(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "--data",
        "--token",
        "--service-down",
        "--service-up",
        "--tokens",
        "--tls-cert",
        "--tls-key",
        "--client-ca",
        "--max-connections",
        "--header-timeout-secs",
        "--request-timeout-secs",
        "--body-formats",
        "SAFD_MGMT_TOKEN",
    ] {
        assert!(help.contains(flag), "{flag} not in:\n{help}");
    }
}

#[test]
fn a_missing_token_or_a_busy_port_is_one_clear_error() {
    let output = safd_mgmt(&[]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--token"));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = safd_mgmt(&[
        "--token",
        "t",
        "--listen",
        &addr,
        "--data",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn a_data_directory_in_use_is_named_not_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let running = crate::support::mgmt::Server::start(dir.path(), &[]);
    running.deliver("a1", "ems", &[(1, "e1")]);
    let output = safd_mgmt(&[
        "--token",
        "t",
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
    // The running server is unharmed.
    assert_eq!(running.stored(), 1);
}
