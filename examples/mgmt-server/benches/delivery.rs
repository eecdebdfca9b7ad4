//! Events per second the management server accepts from the `mgmt-http`
//! plugin through safd's runtime over loopback, at batch 256 and 1024
//! (realistic events: six attributes, 200-byte body) in the binary body
//! the plugin and server agree on by default; at 1024 with the JSON body
//! (`mgmt_delivery_json`: the server with `--body-formats json`); and at
//! 1024 over TLS (`mgmt_delivery_tls`: the server with `--tls-cert`, safd
//! trusting its CA through `grants.tls`). Each delivery is answered only
//! after the server's durable commit.
//!
//! Run with `cargo xtask bench -p safd-mgmt --bench delivery`.
#![allow(clippy::unwrap_used)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use safd_connector::{
    Attribute, DestinationConnector, Endpoint, Event, MemberRole, SequencedEvent, SessionInfo,
    Severity, StreamBatch,
};
use safd_runtime::{Grants, Limits, Runtime, RuntimeConfig};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn event(seq: u64) -> SequencedEvent {
    let text = "LDEV 123 $LHNY1: LINE NOT READY, ERROR 140 ";
    SequencedEvent {
        seq,
        event: Event {
            id: format!("bench-{seq}"),
            time: 1_710_119_830_000_000 + seq as i64,
            severity: Severity::Critical,
            attributes: vec![
                Attribute::new("system", "\\PROD1"),
                Attribute::new("process", "$LHNY1"),
                Attribute::new("subsystem", "TANDEM.EXPAND.H01"),
                Attribute::new("event_number", "45"),
                Attribute::new("collector", "$0"),
                Attribute::new("log_file", "ZZEV0001"),
            ],
            body: text.chars().cycle().take(200).collect(),
        },
    }
}

/// A running `safd-mgmt` (killed on drop) and its base URL.
struct Server {
    process: std::process::Child,
    base: String,
}

impl Server {
    fn start(data: &std::path::Path, extra: &[&std::ffi::OsStr]) -> Self {
        let mut process = Command::new(env!("CARGO_BIN_EXE_safd-mgmt"))
            .args(["--listen", "127.0.0.1:0", "--token", "bench", "--data"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(process.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .to_owned();
        Self { process, base }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A test CA and a certificate it signed for 127.0.0.1, as files in `dir`:
/// (CA, certificate, key).
fn certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &*ca)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// Deliveries of `sizes` events to `server` through mgmt-http, as the
/// benchmark group `name`.
fn bench_server(
    c: &mut Criterion,
    name: &str,
    server: &Server,
    tls: Option<safd_runtime::TlsFiles>,
    sizes: &[u64],
) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plugins = std::env::var_os("SAFD_PLUGIN_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/plugins")),
        PathBuf::from,
    );
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/bench-plugin-cache"
        )),
        limits: Limits::default(),
    })
    .unwrap();
    let plugin = runtime.load(&plugins.join("mgmt-http.wasm")).unwrap();
    let grants = Grants {
        http: vec![
            server
                .base
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .to_owned(),
        ],
        tls,
        ..Grants::default()
    };
    let destination = rt
        .block_on(plugin.destination("bench", r#"{"token":"bench"}"#.into(), &grants))
        .unwrap();
    let mut session = rt
        .block_on(destination.open(Endpoint {
            member: "primary".into(),
            address: server.base.clone(),
            role: MemberRole::Primary,
        }))
        .unwrap();
    rt.block_on(session.register(&SessionInfo {
        agent_id: "bench".into(),
        group: "mgmt".into(),
        epoch: 1,
        active: true,
        stored: Vec::new(),
        acknowledged: Vec::new(),
    }))
    .unwrap();

    let mut next_seq = 1u64;
    let mut group = c.benchmark_group(name);
    for &size in sizes {
        group.throughput(Throughput::Elements(size));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|iters| {
                let mut busy = Duration::ZERO;
                for _ in 0..iters {
                    // Fresh seqs and ids: every event is stored, none deduplicated.
                    let batch = [StreamBatch {
                        stream: "ems".into(),
                        events: (next_seq..next_seq + size).map(event).collect(),
                        left_out: Vec::new(),
                    }];
                    next_seq += size;
                    let started = Instant::now();
                    let report = rt.block_on(session.deliver(&batch)).unwrap();
                    busy += started.elapsed();
                    assert_eq!(report.acknowledged[0].seq, next_seq - 1);
                }
                busy
            })
        });
    }
    group.finish();
}

fn bench_delivery(c: &mut Criterion) {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&data.path().join("plain"), &[]);
    bench_server(c, "mgmt_delivery", &server, None, &[256, 1024]);
    drop(server);
    let server = Server::start(
        &data.path().join("json"),
        &["--body-formats".as_ref(), "json".as_ref()],
    );
    bench_server(c, "mgmt_delivery_json", &server, None, &[1024]);
    drop(server);

    // The same over TLS (keep-alive connections: the handshake is rare).
    let (ca, cert, key) = certificates(data.path());
    let server = Server::start(
        &data.path().join("tls"),
        &[
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let tls = safd_runtime::TlsFiles {
        ca_file: Some(ca),
        ..safd_runtime::TlsFiles::default()
    };
    bench_server(c, "mgmt_delivery_tls", &server, Some(tls), &[1024]);
}

criterion_group! {
    name = delivery;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = bench_delivery
}
criterion_main!(delivery);
