//! A real `nats-server` with JetStream on a loopback port (the Debian
//! package, installed by `cargo xtask test`), and what a stream holds, read
//! with the official Rust client — a second implementation of the protocol
//! beside the plugin's own.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct NatsServer {
    child: Child,
    pub address: String,
    port: u16,
    store: PathBuf,
    extra: Vec<String>,
}

impl NatsServer {
    /// JetStream on, its files under `store`; `extra` arguments as given
    /// (e.g. `--auth TOKEN`, `-c FILE`).
    pub fn start(store: &Path, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        Self::start_on(free_port(), store, extra)
    }

    /// A JetStream cluster of `size` servers on loopback, R3 streams
    /// possible once they found each other.
    pub fn cluster(dir: &Path, size: usize) -> Vec<Self> {
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let servers: Vec<Self> = routes
            .iter()
            .enumerate()
            .map(|(n, route)| {
                let extra = vec![
                    "-n".to_owned(),
                    format!("n{n}"),
                    "--cluster_name".to_owned(),
                    "safd-test".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{route}"),
                    "--routes".to_owned(),
                    route_list.clone(),
                ];
                Self::start_on(free_port(), &dir.join(format!("n{n}")), extra)
            })
            .collect();
        // JetStream answers once the cluster elected its meta leader.
        super::safd_process::wait_for(Duration::from_secs(60), "the JetStream cluster", || {
            jetstream_ready(&servers[0].address)
        });
        servers
    }

    fn start_on(port: u16, store: &Path, extra: Vec<String>) -> Self {
        let child = spawn(port, store, &extra);
        let server = Self {
            child,
            address: format!("127.0.0.1:{port}"),
            port,
            store: store.to_owned(),
            extra,
        };
        server.wait_listening();
        server
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `kill -9`, then the same server again on the same port and store.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.restart();
    }

    /// The same server again on the same port and store (after `kill`).
    pub fn restart(&mut self) {
        self.child = spawn(self.port, &self.store, &self.extra);
        self.wait_listening();
    }

    fn wait_listening(&self) {
        super::safd_process::wait_for(Duration::from_secs(20), "nats-server to listen", || {
            TcpStream::connect(&self.address).is_ok()
        });
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// JetStream answers account information (a cluster: its meta leader is
/// elected and it can place streams).
fn jetstream_ready(address: &str) -> bool {
    runtime().block_on(async {
        let Ok(client) = async_nats::connect(address).await else {
            return false;
        };
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            client.request("$JS.API.INFO", "".into()),
        )
        .await;
        let Ok(Ok(message)) = answer else {
            return false;
        };
        serde_json::from_slice::<serde_json::Value>(&message.payload)
            .is_ok_and(|info| info.get("error").is_none())
    })
}

fn spawn(port: u16, store: &Path, extra: &[String]) -> Child {
    Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server is needed (cargo xtask test installs the Debian package)")
}

/// One message of a stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub stream_seq: u64,
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Stored {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The number of messages in `stream`, 0 while it does not exist or the
/// server is down.
pub fn count(address: &str, stream: &str) -> u64 {
    runtime().block_on(async {
        let Ok(client) = async_nats::connect(address).await else {
            return 0;
        };
        let js = async_nats::jetstream::new(client);
        match js.get_stream(stream).await {
            Ok(mut found) => found.info().await.map_or(0, |i| i.state.messages),
            Err(_) => 0,
        }
    })
}

/// Create `stream` (file storage) taking `subjects`, with `replicas`.
pub fn create_stream(address: &str, stream: &str, subjects: &[&str], replicas: usize) {
    runtime().block_on(async {
        let client = async_nats::connect(address).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            num_replicas: replicas,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    });
}

/// The server name (`-n`) of `stream`'s leader in a cluster.
pub fn stream_leader(address: &str, stream: &str) -> Option<String> {
    runtime().block_on(async {
        let client = async_nats::connect(address).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let mut found = js.get_stream(stream).await.ok()?;
        found.info().await.ok()?.cluster.as_ref()?.leader.clone()
    })
}

/// Every replica of `stream` is online and current (a restarted server
/// has caught up).
pub fn replicas_current(address: &str, stream: &str) -> bool {
    runtime().block_on(async {
        let Ok(client) = async_nats::connect(address).await else {
            return false;
        };
        let js = async_nats::jetstream::new(client);
        let Ok(mut found) = js.get_stream(stream).await else {
            return false;
        };
        let Ok(info) = found.info().await else {
            return false;
        };
        info.cluster.as_ref().is_some_and(|cluster| {
            cluster.leader.is_some() && cluster.replicas.iter().all(|r| r.current && !r.offline)
        })
    })
}

/// Every message of `stream`, in stream order.
pub fn messages(address: &str, stream: &str) -> Vec<Stored> {
    runtime().block_on(async {
        let client = async_nats::connect(address).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut found = js.get_stream(stream).await.unwrap();
        let state = found.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        for seq in state.first_sequence..=state.last_sequence {
            let Ok(message) = found.get_raw_message(seq).await else {
                continue;
            };
            let headers = message
                .headers
                .iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| (name.to_string(), v.as_str().to_owned()))
                })
                .collect();
            out.push(Stored {
                stream_seq: message.sequence,
                subject: message.subject.to_string(),
                headers,
                payload: message.payload.to_vec(),
            });
        }
        out
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
