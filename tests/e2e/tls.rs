//! mgmt-http → safd-mgmt over TLS: the operator's CA is trusted, nothing
//! else; a handshake that never finishes, an expired certificate, a
//! certificate for another name, an unknown CA and a missing client
//! certificate (mutual TLS) each stop
//! delivery with one sentence naming the fix, and nothing is lost: the
//! events wait in the queue and arrive once the fix is reloaded.

use crate::support::certs::{Issued, TestCa};
use crate::support::mgmt;
use crate::support::safd_process::{reload, run_with_admin, safd, status, stop_cleanly, wait_for};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// safd tailing `logs/app.log` into the member `primary` at `base`, with
/// `tls` as the group's `grants.tls` (TOML inline table).
fn write_config(dir: &Path, base: &str, tls: &str) -> PathBuf {
    let grants = format!(", tls = {tls}");
    mgmt::tail_config(
        dir,
        base,
        &mgmt::TailConfig {
            grants: &grants,
            ..mgmt::TailConfig::default()
        },
    )
}

fn tls_table(ca: &Path, client: Option<&Issued>) -> String {
    match client {
        None => format!("{{ ca_file = \"{}\" }}", ca.display()),
        Some(client) => format!(
            "{{ ca_file = \"{}\", cert_file = \"{}\", key_file = \"{}\" }}",
            ca.display(),
            client.cert.display(),
            client.key.display()
        ),
    }
}

fn server_args(issued: &Issued) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        issued.cert.display().to_string(),
        "--tls-key".into(),
        issued.key.display().to_string(),
    ]
}

/// The member's last error once it holds `expected`.
fn member_error_containing(admin: &str, expected: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let member = status(admin)["groups"][0]["lanes"][0]["members"][0].clone();
        let last = member["last_error"].as_str().unwrap_or_default().to_owned();
        if last.contains(expected) {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the member's error never said `{expected}`; last: {member}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn acknowledged(admin: &str) -> u64 {
    status(admin)["groups"][0]["lanes"][0]["acknowledged"]["app"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn mgmt_http_over_tls_trusts_the_operators_ca_only_and_names_every_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    std::fs::create_dir_all(&certs).unwrap();
    let ca = TestCa::new(&certs, "site");
    let stranger = TestCa::new(&certs, "stranger");
    let names = ["127.0.0.1", "localhost"];
    let good = ca.server(&certs, "server", &names);
    let expired = ca.expired_server(&certs, "expired", &names);
    let elsewhere = ca.server(&certs, "elsewhere", &["elsewhere.example"]);
    let client = ca.client(&certs, "agent");
    let data = dir.path().join("server");

    let args = |issued: &Issued, extra: &[String]| -> Vec<String> {
        let mut args = server_args(issued);
        args.extend_from_slice(extra);
        args
    };
    let start = |listen: &str, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mgmt::Server::start_on(listen, &data, &args)
    };

    // A port that accepts and never answers the handshake.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_base = format!("https://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept() {
            open.push(stream);
            if open.len() > 20 {
                return;
            }
        }
    });
    let config = write_config(dir.path(), &silent_base, &tls_table(&ca.pem, None));
    let mut log = std::fs::File::create(dir.path().join("logs/app.log")).unwrap();
    for i in 0..50 {
        writeln!(log, "before the fix {i:03}").unwrap();
    }
    let (mut daemon, admin, rest) = run_with_admin(&config);
    let said = member_error_containing(&admin, "TLS handshake with 127.0.0.1 did not finish");
    assert!(said.contains("a TLS port"), "{said}");
    drop(held);

    // An expired certificate.
    let server = start("127.0.0.1:0", args(&expired, &[]));
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let listen = server.authority();
    write_config(dir.path(), &server.base, &tls_table(&ca.pem, None));
    assert!(reload(&admin).0);
    let said = member_error_containing(&admin, "has expired");
    assert!(said.contains("renew it on the server"), "{said}");
    assert_eq!(acknowledged(&admin), 0);

    // A certificate for another name.
    server.kill();
    let server = start(&listen, args(&elsewhere, &[]));
    let said = member_error_containing(&admin, "not issued for the name `127.0.0.1`");
    assert!(said.contains("reissue it"), "{said}");

    // A certificate from a CA safd does not trust (reloaded while no
    // server listens, so that nothing reaches the server before).
    server.kill();
    write_config(
        dir.path(),
        &format!("https://{listen}"),
        &tls_table(&stranger.pem, None),
    );
    assert!(reload(&admin).0);
    let server = start(&listen, args(&good, &[]));
    let said = member_error_containing(&admin, "signed by a CA safd does not trust");
    assert!(said.contains("grants.tls.ca_file"), "{said}");
    assert_eq!(acknowledged(&admin), 0);

    // The site's CA: everything written so far arrives.
    write_config(dir.path(), &server.base, &tls_table(&ca.pem, None));
    assert!(reload(&admin).0);
    wait_for(Duration::from_secs(60), "50 events acknowledged", || {
        acknowledged(&admin) >= 50
    });

    // Mutual TLS: without a client certificate, refused by the server.
    server.kill();
    let client_ca = vec!["--client-ca".to_owned(), ca.pem.display().to_string()];
    let server = start(&listen, args(&good, &client_ca));
    for i in 0..30 {
        writeln!(log, "mutual {i:03}").unwrap();
    }
    let said = member_error_containing(&admin, "asks for a client certificate");
    assert!(said.contains("grants.tls.cert_file"), "{said}");
    write_config(dir.path(), &server.base, &tls_table(&ca.pem, Some(&client)));
    assert!(reload(&admin).0);
    wait_for(Duration::from_secs(60), "80 events acknowledged", || {
        acknowledged(&admin) >= 80
    });
    stop_cleanly(&mut daemon, rest);

    // A TLS file that cannot serve is refused by `safd check`, by name.
    let config = write_config(
        dir.path(),
        &server.base,
        &tls_table(&certs.join("no-such-ca.pem"), None),
    );
    let output = safd().arg("check").arg("-c").arg(&config).output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("grants.tls.ca_file") && said.contains("no-such-ca.pem"),
        "{said}"
    );

    // What the server holds, read over plain HTTP from the same database:
    // every line once.
    server.kill();
    let server = mgmt::Server::start(&data, &[]);
    let mut bodies: Vec<String> = server
        .events("stream=app&limit=1000")
        .iter()
        .filter_map(|e| e["body"].as_str().map(str::to_owned))
        .collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..50)
        .map(|i| format!("before the fix {i:03}"))
        .chain((0..30).map(|i| format!("mutual {i:03}")))
        .collect();
    expected.sort();
    assert_eq!(bodies, expected);
}

/// `[admin] tls`: the admin API over HTTPS with client certificates
/// required (its `ca_file`): `safd status` with the CA and a client
/// certificate works; without the certificate, or over plain HTTP, it is
/// refused; `safd check` names a key that is not the certificate's.
#[test]
fn the_admin_api_over_tls_wants_a_client_certificate_its_ca_signed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let ca = TestCa::new(dir.path(), "ops");
    let server = ca.server(dir.path(), "admin", &["localhost", "127.0.0.1"]);
    let client = ca.client(dir.path(), "operator");
    let admin = format!(
        "tls = {{ cert_file = \"{}\", key_file = \"{}\", ca_file = \"{}\" }}",
        server.cert.display(),
        server.key.display(),
        ca.pem.display()
    );
    let path = mgmt::tail_config(
        dir.path(),
        "http://127.0.0.1:9",
        &mgmt::TailConfig {
            admin: &admin,
            ..mgmt::TailConfig::default()
        },
    );
    let (mut daemon, address, rest) = run_with_admin(&path);
    assert!(address.starts_with("https://"), "{address}");
    let status_with = |extra: &[&str]| {
        safd()
            .args(["status", "--json", "--admin", &address])
            .args(extra)
            .output()
            .unwrap()
    };
    let ca_file = ca.pem.display().to_string();
    let cert = client.cert.display().to_string();
    let key = client.key.display().to_string();
    let ok = status_with(&[
        "--admin-ca",
        &ca_file,
        "--admin-cert",
        &cert,
        "--admin-key",
        &key,
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(status["agent_id"], "tail-agent", "{status}");

    // Without the client certificate: refused in the handshake.
    let refused = status_with(&["--admin-ca", &ca_file]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("cannot reach safd's admin API"), "{said}");

    // Plain HTTP to the TLS port gets no answer it can read.
    let plain = address.replace("https://", "http://");
    let refused = safd()
        .args(["status", "--json", "--admin", &plain])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    stop_cleanly(&mut daemon, rest);

    // A key that is not the certificate's: `safd check` names it.
    let other = ca.client(dir.path(), "other");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &server.key.display().to_string(),
        &other.key.display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    let check = safd().arg("check").arg("-c").arg(&path).output().unwrap();
    assert!(!check.status.success());
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        said.contains("admin.tls.key_file") && said.contains("does not go with cert_file"),
        "{said}"
    );
}
