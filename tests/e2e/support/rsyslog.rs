//! A real rsyslog server for tests: `rsyslogd -n` with its own config on
//! free loopback ports, `imtcp` (octet-counting or newline framing) and
//! `imrelp`, writing every message it takes as one JSON line with the
//! structured data parsed by rsyslog itself (`mmpstrucdata`).
//!
//! The ruleset runs in `direct` mode and the file is written per message,
//! so what rsyslog acknowledges over RELP is in the file before the ack
//! leaves: a `kill -9` loses nothing it acknowledged.
//!
//! [`Rsyslog::start_tls`] is the same server with TLS on both ports
//! (rsyslog's GnuTLS driver: RFC 5425 on imtcp, RELP over TLS on imrelp,
//! where a client certificate signed by the CA is required).
//!
//! [`Rsyslog::forwarder`] is the other side: an rsyslog that takes lines
//! on `imtcp` and forwards them with `omrelp` (RFC 5424), holding what is
//! not acknowledged in its queue and sending it again after a reconnect.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Rsyslog {
    dir: PathBuf,
    pub tcp: SocketAddr,
    pub relp: SocketAddr,
    /// What `restart` waits for.
    listening: Vec<SocketAddr>,
    child: Option<Child>,
    tls: Option<ServerTls>,
}

/// The TLS of a forwarder: the CA its server's certificate must come from,
/// and its own certificate and key, if it has one.
#[derive(Clone, Debug)]
pub struct ForwardTls {
    pub ca: PathBuf,
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The files of a TLS rsyslog: its certificate and key, and the CA whose
/// client certificates RELP accepts.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

fn rsyslogd() -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/local/sbin"] {
        let path = Path::new(dir).join("rsyslogd");
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "rsyslogd is not installed: `cargo xtask test` installs the Debian packages rsyslog and \
         rsyslog-relp (or: apt-get install rsyslog rsyslog-relp)"
    );
}

impl Rsyslog {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, None)
    }

    /// The server with TLS on both ports.
    pub fn start_tls(dir: &Path, tls: ServerTls) -> Self {
        Self::start_with(dir, Some(tls))
    }

    fn start_with(dir: &Path, tls: Option<ServerTls>) -> Self {
        let mut server = Self {
            dir: dir.to_owned(),
            tcp: free_port(),
            relp: free_port(),
            listening: Vec::new(),
            child: None,
            tls,
        };
        server.listening = vec![server.tcp, server.relp];
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::write(dir.join("rsyslog.conf"), server.config()).unwrap();
        server.restart();
        server
    }

    /// An rsyslog that forwards every line written to its `tcp` port to
    /// `target` over RELP, retrying forever while `target` is down (its
    /// queue in memory, as large as a test needs).
    pub fn forwarder(dir: &Path, target: SocketAddr) -> Self {
        Self::forwarder_with(dir, target, None)
    }

    /// The same over RELP inside TLS: the server's certificate must be
    /// for `localhost` and signed by `tls.ca`; rsyslog presents
    /// `tls.client` (certificate, key) when given.
    pub fn tls_forwarder(dir: &Path, target: SocketAddr, tls: ForwardTls) -> Self {
        Self::forwarder_with(dir, target, Some(tls))
    }

    fn forwarder_with(dir: &Path, target: SocketAddr, tls: Option<ForwardTls>) -> Self {
        let mut forwarder = Self {
            dir: dir.to_owned(),
            tcp: free_port(),
            relp: target,
            listening: Vec::new(),
            child: None,
            tls: None,
        };
        forwarder.listening = vec![forwarder.tcp];
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let tls = match tls {
            None => String::new(),
            Some(tls) => {
                let mut text = format!(
                    r#" tls="on" tls.caCert="{}" tls.authMode="name" tls.permittedPeer="localhost""#,
                    tls.ca.display()
                );
                if let Some((cert, key)) = &tls.client {
                    text.push_str(&format!(
                        r#" tls.myCert="{}" tls.myPrivKey="{}""#,
                        cert.display(),
                        key.display()
                    ));
                }
                text
            }
        };
        let config = format!(
            r#"global(workDirectory="{dir}/work" maxMessageSize="64k")
module(load="imtcp")
module(load="omrelp")
ruleset(name="forward") {{
  action(type="omrelp" target="{host}" port="{port}" template="RSYSLOG_SyslogProtocol23Format"{tls}
         timeout="5" conn.timeout="2" windowSize="128"
         action.resumeRetryCount="-1" action.resumeInterval="1"
         queue.type="LinkedList" queue.size="1000000" queue.dequeueBatchSize="256")
}}
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="forward")
"#,
            dir = dir.display(),
            host = target.ip(),
            port = target.port(),
            tcp = forwarder.tcp.port(),
        );
        std::fs::write(dir.join("rsyslog.conf"), config).unwrap();
        forwarder.restart();
        forwarder
    }

    fn config(&self) -> String {
        let dir = self.dir.display();
        let (global_tls, imtcp_tls, imrelp_tls) = match &self.tls {
            None => Default::default(),
            Some(tls) => (
                format!(
                    r#" DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}""#,
                    ca = tls.ca.display(),
                    cert = tls.cert.display(),
                    key = tls.key.display(),
                ),
                r#" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon""#
                    .to_owned(),
                format!(
                    r#" tls="on" tls.caCert="{ca}" tls.myCert="{cert}" tls.myPrivKey="{key}"
       tls.authMode="certvalid""#,
                    ca = tls.ca.display(),
                    cert = tls.cert.display(),
                    key = tls.key.display(),
                ),
            ),
        };
        format!(
            r#"global(workDirectory="{dir}/work" maxMessageSize="64k"{global_tls})
module(load="imtcp"{imtcp_tls})
module(load="imrelp")
module(load="mmpstrucdata")
template(name="json" type="list" option.jsonf="on") {{
  property(outname="pri" name="pri" format="jsonf")
  property(outname="time" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="$!rfc5424-sd" format="jsonf")
  property(outname="msg" name="msg" format="jsonf" droplastlf="on")
}}
ruleset(name="store" queue.type="direct") {{
  action(type="mmpstrucdata")
  action(type="omfile" file="{dir}/messages.jsonl" template="json" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="store" supportOctetCountedFraming="on")
input(type="imrelp" address="127.0.0.1" port="{relp}" ruleset="store" maxDataSize="64k"{imrelp_tls})
"#,
            tcp = self.tcp.port(),
            relp = self.relp.port(),
        )
    }

    /// Start (again) on the same ports; returns once both accept.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "rsyslog is already running");
        let child = Command::new(rsyslogd())
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("rsyslogd.stderr")).unwrap())
            .spawn()
            .expect("rsyslogd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        for &address in &self.listening {
            while TcpStream::connect(address).is_err() {
                if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!(
                        "rsyslogd exited ({status}): {}",
                        std::fs::read_to_string(self.dir.join("rsyslogd.stderr"))
                            .unwrap_or_default()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "rsyslogd did not listen on {address}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGSTOP: it stops reading; what safd writes piles up in its socket
    /// buffer (and is lost with a `kill` that follows).
    pub fn freeze(&mut self) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args(["-STOP", &child.id().to_string()])
                .status()
                .expect("kill -STOP runs");
            assert!(status.success());
        }
    }

    /// `kill -9`: no chance to flush anything it has not written.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("rsyslogd.pid"));
    }

    /// Every message written so far, parsed.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("messages.jsonl")).unwrap_or_default();
        text.lines()
            // A kill -9 may leave a last line half written.
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Wait until at least `n` messages are in the file.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let messages = self.messages();
            if messages.len() >= n || Instant::now() > deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}
