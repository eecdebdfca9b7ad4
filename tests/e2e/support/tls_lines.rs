//! A receiver of JSON lines over TLS, as Vector's `socket` source or
//! Logstash's `tcp` input with `json_lines` take them: rustls with a
//! certificate of the test's CA, one thread per connection, every line
//! kept.

use super::certs::TestCa;
use safd_runtime::TlsFiles;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct LineReceiver {
    /// `127.0.0.1:PORT`, as `members` and `grants.tcp` name it.
    pub address: String,
    /// The CA that signed its certificate (`grants.tls.ca_file`).
    pub ca: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LineReceiver {
    /// Listen on a free loopback port with a certificate for 127.0.0.1,
    /// made in `dir`.
    pub fn start(dir: &Path, name: &str) -> Self {
        let ca = TestCa::new(dir, name);
        let issued = ca.server(dir, name, &["127.0.0.1"]);
        let config = safd_runtime::server_config(
            &TlsFiles {
                ca_file: None,
                cert_file: Some(issued.cert),
                key_file: Some(issued.key),
            },
            "test",
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let config = config.clone();
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let Ok(tls) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let reader = BufReader::new(rustls::StreamOwned::new(tls, tcp));
                    for line in reader.lines() {
                        let Ok(line) = line else { return };
                        kept.lock().unwrap().push(line);
                    }
                });
            }
        });
        Self {
            address,
            ca: ca.pem,
            lines,
        }
    }

    /// Every line received so far, parsed.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|line| serde_json::from_str(line).expect("a line that is not JSON"))
            .collect()
    }
}
