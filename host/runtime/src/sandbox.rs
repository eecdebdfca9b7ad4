//! Turning the operator's grants into a WASI context and an HTTP policy.
//!
//! Default deny: no environment, no arguments, no stdin, no files, no
//! network. Each grant opens exactly one thing, and only if the plugin's
//! manifest asked for that capability.

use crate::config::Grants;
use crate::guest_output::GuestOutput;
use crate::http_pool::ConnectionPool;
use crate::manifest::Capabilities;
use crate::report::Reporter;
use safd_connector::{Notice, event_ids};
use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

/// A grant that cannot be put into effect.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    #[error("grants.dirs: `{path}` cannot be opened: {reason}")]
    Dir { path: PathBuf, reason: String },
    #[error("grants.dirs: `{0}` must be an absolute path")]
    RelativeDir(PathBuf),
    #[error("grants.http: `{0}` is not an authority; write host:port, e.g. 127.0.0.1:8080")]
    Authority(String),
    #[error("grants.tcp: `{entry}` does not resolve to an address: {reason}")]
    Tcp { entry: String, reason: String },
    #[error(
        "grants.listen: `{0}` is not a local address to listen on; write ip:port, e.g. \
         0.0.0.0:1514 or [::]:2514 (a port, not 0)"
    )]
    Listen(String),
    /// A `grants.tls` file that cannot be used (the message names it).
    #[error("{0}")]
    Tls(String),
}

/// The effective grants of one connector instance: requested ∩ granted.
#[derive(Clone, Debug, Default)]
pub struct Sandbox {
    pub(crate) dirs: Vec<PathBuf>,
    pub(crate) http: Arc<HashSet<Authority>>,
    pub(crate) tcp: Arc<HashSet<SocketAddr>>,
    /// The `grants.tcp` entries as written: a TLS connection (made by safd)
    /// may name one (`name:port`), to have its certificate checked for
    /// that name.
    pub(crate) tcp_entries: Arc<HashSet<String>>,
    pub(crate) listen: Arc<HashSet<SocketAddr>>,
    /// TLS for HTTPS requests and TLS connections, from `grants.tls`;
    /// without it, the public web roots and no client certificate.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    /// TLS for listeners, from `grants.tls` (the certificate and key; the
    /// CA of the clients, if they must present certificates). Without a
    /// certificate and key, a plugin cannot listen with TLS.
    pub(crate) tls_server: Option<Arc<rustls::ServerConfig>>,
    /// Accesses refused so far (any instance of this connector): a call
    /// during which it grew failed for a missing grant.
    pub(crate) denials: Arc<AtomicU64>,
    /// Where a denied access (3007) is reported.
    reporter: Reporter,
}

/// An HTTP authority with its port made explicit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    fn parse(text: &str) -> Option<Self> {
        let uri_authority: http::uri::Authority = text.parse().ok()?;
        Some(Self {
            host: uri_authority.host().to_ascii_lowercase(),
            port: uri_authority.port_u16(),
        })
    }

    /// Does this grant cover a request to `host:port`? A grant without a
    /// port covers the scheme's default port only.
    fn covers(&self, host: &str, port: u16, default_port: u16) -> bool {
        self.host == host && self.port.unwrap_or(default_port) == port
    }
}

impl Sandbox {
    /// Effective grants for `connector`, given what its plugin requested.
    /// Grants the plugin did not request are dropped with a warning, so an
    /// operator learns that the grant has no effect.
    pub fn new(
        connector: &str,
        requested: Capabilities,
        grants: &Grants,
    ) -> Result<Self, GrantError> {
        Self::reporting(connector, requested, grants, Reporter::default())
    }

    /// [`Sandbox::new`], reporting ignored grants (3006) and denied
    /// accesses (3007) to `reporter`.
    pub(crate) fn reporting(
        connector: &str,
        requested: Capabilities,
        grants: &Grants,
        reporter: Reporter,
    ) -> Result<Self, GrantError> {
        let mut sandbox = Sandbox {
            reporter,
            ..Sandbox::default()
        };
        let report = sandbox.reporter.clone();
        let ignored = |what: &str| {
            report.emit(
                Notice::new(
                    event_ids::PLUGIN_GRANT_IGNORED,
                    format!(
                        "grant `{what}` ignored: the plugin's manifest does not request this \
                         capability"
                    ),
                )
                .with("connector", connector),
            );
        };
        if !grants.dirs.is_empty() && !requested.files {
            ignored("dirs");
        } else {
            for dir in &grants.dirs {
                if !dir.is_absolute() {
                    return Err(GrantError::RelativeDir(dir.clone()));
                }
                if !dir.is_dir() {
                    return Err(GrantError::Dir {
                        path: dir.clone(),
                        reason: "not a directory".to_owned(),
                    });
                }
                sandbox.dirs.push(dir.clone());
            }
        }
        if !grants.http.is_empty() && !requested.http {
            ignored("http");
        } else {
            let mut set = HashSet::new();
            for entry in &grants.http {
                set.insert(
                    Authority::parse(entry).ok_or_else(|| GrantError::Authority(entry.clone()))?,
                );
            }
            sandbox.http = Arc::new(set);
        }
        if !grants.tcp.is_empty() && !requested.tcp {
            ignored("tcp");
        } else {
            let mut set = HashSet::new();
            for entry in &grants.tcp {
                let addrs = entry.to_socket_addrs().map_err(|e| GrantError::Tcp {
                    entry: entry.clone(),
                    reason: e.to_string(),
                })?;
                set.extend(addrs);
            }
            sandbox.tcp = Arc::new(set);
            sandbox.tcp_entries = Arc::new(grants.tcp.iter().cloned().collect());
        }
        if !grants.listen.is_empty() && !requested.listen {
            ignored("listen");
        } else {
            let mut set = HashSet::new();
            for entry in &grants.listen {
                // Literal addresses only: what a name resolves to can
                // change, and a listening socket must be exactly the one
                // the operator wrote.
                let addr: SocketAddr = entry
                    .parse()
                    .ok()
                    .filter(|a: &SocketAddr| a.port() != 0)
                    .ok_or_else(|| GrantError::Listen(entry.clone()))?;
                set.insert(addr);
            }
            sandbox.listen = Arc::new(set);
        }
        if let Some(files) = &grants.tls {
            let tls_error = |err: crate::tls::TlsError| GrantError::Tls(err.to_string());
            if requested.http || requested.tcp {
                sandbox.tls = Some(crate::tls::client_config(files).map_err(tls_error)?);
            }
            if requested.listen && files.cert_file.is_some() && files.key_file.is_some() {
                sandbox.tls_server =
                    Some(crate::tls::server_config(files, "grants.tls").map_err(tls_error)?);
            }
            if !(requested.http || requested.tcp || requested.listen) {
                ignored("tls");
            }
        }
        Ok(sandbox)
    }

    /// A WASI context that allows exactly what this sandbox grants.
    pub(crate) fn wasi_ctx(&self, connector: &Arc<str>) -> Result<WasiCtx, GrantError> {
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(GuestOutput::new(connector.clone(), "stdout"))
            .stderr(GuestOutput::new(connector.clone(), "stderr"))
            .allow_ip_name_lookup(false)
            .allow_udp(false)
            // Reads of local files on the calling thread (see `local_fs`).
            .allow_blocking_current_thread(crate::local_fs::all_local(&self.dirs));
        for dir in &self.dirs {
            let guest_path = dir.to_string_lossy();
            builder
                .preopened_dir(dir, guest_path.as_ref(), FsPerms::ReadOnly)
                .map_err(|e| GrantError::Dir {
                    path: dir.clone(),
                    reason: e.to_string(),
                })?;
        }
        builder.allow_tcp(!self.tcp.is_empty() || !self.listen.is_empty());
        let allowed = self.tcp.clone();
        let listen = self.listen.clone();
        let name = connector.clone();
        let reporter = self.reporter.clone();
        let denials = self.denials.clone();
        builder.socket_addr_check(move |addr, use_| {
            let permitted = match use_ {
                SocketAddrUse::TcpConnect => allowed.contains(&addr),
                // A connect first binds implicitly to the wildcard address;
                // allowing that reveals nothing and opens nothing (it
                // cannot listen: listening needs a port).
                SocketAddrUse::TcpBind if addr.ip().is_unspecified() && addr.port() == 0 => {
                    !allowed.is_empty()
                }
                // Listening only on the granted addresses themselves: a
                // socket bound to port 0 gets no ephemeral listener.
                SocketAddrUse::TcpBind | SocketAddrUse::TcpListen => listen.contains(&addr),
                // Whoever connects to a granted listener may be accepted.
                SocketAddrUse::TcpAccept => !listen.is_empty(),
                _ => false,
            };
            if !permitted {
                let grant = match use_ {
                    SocketAddrUse::TcpBind | SocketAddrUse::TcpListen => "grants.listen",
                    _ => "grants.tcp",
                };
                report_denial(
                    &reporter,
                    &denials,
                    &name,
                    format!("socket access denied: {use_:?} {addr} is not granted ({grant})"),
                );
            }
            Box::pin(async move { permitted })
        });
        Ok(builder.build())
    }

    /// What the instance's `tls` interface may do.
    pub(crate) fn tls_sockets(&self, connector: &Arc<str>) -> crate::tls_socket::TlsSockets {
        crate::tls_socket::TlsSockets {
            connector: connector.clone(),
            tcp: self.tcp.clone(),
            tcp_entries: self.tcp_entries.clone(),
            listen: self.listen.clone(),
            client: self.tls.clone(),
            server: self.tls_server.clone(),
            denials: self.denials.clone(),
            reporter: self.reporter.clone(),
        }
    }

    pub(crate) fn http_policy(&self, connector: &Arc<str>) -> HttpPolicy {
        HttpPolicy {
            connector: connector.clone(),
            allowed: self.http.clone(),
            pool: Arc::new(ConnectionPool::new(self.tls.clone())),
            denials: self.denials.clone(),
            reporter: self.reporter.clone(),
        }
    }
}

/// Count a refused access and report it (3007).
pub(crate) fn report_denial(
    reporter: &Reporter,
    denials: &AtomicU64,
    connector: &str,
    message: String,
) {
    denials.fetch_add(1, Ordering::Relaxed);
    reporter
        .emit(Notice::new(event_ids::PLUGIN_ACCESS_DENIED, message).with("connector", connector));
}

/// Whether `grants` let a destination reach the member `address`: a URL's
/// authority must be in `grants.http` (a grant without a port covers the
/// scheme's default port), an `ip:port` in `grants.tcp`. `Err` says which
/// grant to add — what the sandbox would otherwise refuse only at the first
/// call. Addresses of neither form are for the plugin's own check.
pub fn grant_covering(grants: &Grants, address: &str) -> Result<(), String> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        let granted = grants
            .tcp
            .iter()
            .filter_map(|entry| entry.to_socket_addrs().ok())
            .flatten()
            .any(|g| g == addr);
        return if granted {
            Ok(())
        } else {
            Err(format!(
                "`{address}` is not granted: add \"{address}\" to grants.tcp"
            ))
        };
    }
    let Ok(uri) = address.parse::<http::Uri>() else {
        return Ok(());
    };
    // `name:port`: a TLS connection safd makes, granted as written.
    if uri.scheme().is_none() && uri.authority().is_some_and(|a| a.port().is_some()) {
        return if grants.tcp.iter().any(|entry| entry == address) {
            Ok(())
        } else {
            Err(format!(
                "`{address}` is not granted: add \"{address}\" to grants.tcp"
            ))
        };
    }
    // Other schemes (a plugin's own, like `fixture://`) are its business.
    let web = [http::uri::Scheme::HTTP, http::uri::Scheme::HTTPS];
    let (Some(authority), true) = (
        uri.authority(),
        uri.scheme().is_some_and(|s| web.contains(s)),
    ) else {
        return Ok(());
    };
    let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        443
    } else {
        80
    };
    let host = authority.host().to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(default_port);
    let granted = grants
        .http
        .iter()
        .filter_map(|entry| Authority::parse(entry))
        .any(|grant| grant.covers(&host, port, default_port));
    if granted {
        Ok(())
    } else {
        Err(format!(
            "`{address}` is not granted: add \"{}\" to grants.http",
            authority.as_str()
        ))
    }
}

/// wasi:http hooks: a request leaves only for a granted authority.
pub(crate) struct HttpPolicy {
    connector: Arc<str>,
    allowed: Arc<HashSet<Authority>>,
    /// This instance's keep-alive connections.
    pool: Arc<ConnectionPool>,
    /// The sandbox's count of refused accesses.
    denials: Arc<AtomicU64>,
    reporter: Reporter,
}

impl HttpPolicy {
    fn permits(&self, uri: &http::Uri) -> bool {
        let Some(authority) = uri.authority() else {
            return false;
        };
        let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        };
        let port = authority.port_u16().unwrap_or(default_port);
        let host = authority.host().to_ascii_lowercase();
        self.allowed
            .iter()
            .any(|grant| grant.covers(&host, port, default_port))
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> ResponseFuture {
        _ = fut;
        if !self.permits(request.uri()) {
            self.denials.fetch_add(1, Ordering::Relaxed);
            self.reporter.emit(
                Notice::new(
                    event_ids::PLUGIN_ACCESS_DENIED,
                    "HTTP request denied: authority is not granted (grants.http)",
                )
                .with("connector", &self.connector)
                .with("uri", request.uri()),
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(self.pool.clone().send(request, options))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn everything() -> Capabilities {
        Capabilities {
            files: true,
            http: true,
            tcp: true,
            listen: true,
        }
    }

    #[test]
    fn http_grants_match_host_and_port() {
        let grants = Grants {
            http: vec!["127.0.0.1:8080".into(), "Mgmt.Example:443".into()],
            ..Grants::default()
        };
        let sandbox = Sandbox::new("t", everything(), &grants).unwrap();
        let policy = sandbox.http_policy(&Arc::from("t"));
        let ok = |u: &str| policy.permits(&u.parse().unwrap());
        assert!(ok("http://127.0.0.1:8080/v1/events"));
        assert!(ok("https://mgmt.example/v1"));
        assert!(!ok("http://127.0.0.1:8081/"));
        assert!(!ok("http://mgmt.example/"));
        assert!(!ok("http://evil.example:8080/"));
    }

    #[test]
    fn member_addresses_are_checked_against_the_grants() {
        let grants = Grants {
            http: vec!["10.0.0.5:8471".into(), "mgmt.example".into()],
            tcp: vec!["10.0.0.9:6514".into()],
            ..Grants::default()
        };
        assert!(grant_covering(&grants, "http://10.0.0.5:8471/safd").is_ok());
        assert!(grant_covering(&grants, "http://MGMT.example/").is_ok());
        assert!(grant_covering(&grants, "10.0.0.9:6514").is_ok());
        let err = grant_covering(&grants, "http://10.0.0.6:8471").unwrap_err();
        assert!(
            err.contains("add \"10.0.0.6:8471\" to grants.http"),
            "{err}"
        );
        // A grant without a port covers the scheme's default port only.
        assert!(grant_covering(&grants, "https://mgmt.example/").is_ok());
        assert!(grant_covering(&grants, "https://mgmt.example:8443/").is_err());
        let err = grant_covering(&grants, "10.0.0.9:6515").unwrap_err();
        assert!(err.contains("grants.tcp"), "{err}");
        assert!(grant_covering(&grants, "fixture://only").is_ok());
        // A name (for TLS made by safd) is granted as written.
        let named = Grants {
            tcp: vec!["siem.example:6514".into()],
            ..Grants::default()
        };
        assert!(grant_covering(&named, "siem.example:6514").is_ok());
        let err = grant_covering(&named, "siem.example:6515").unwrap_err();
        assert!(err.contains("grants.tcp"), "{err}");
    }

    #[test]
    fn grants_not_requested_are_not_in_effect() {
        let grants = Grants {
            dirs: vec![std::env::temp_dir()],
            http: vec!["127.0.0.1:1".into()],
            tcp: vec!["127.0.0.1:2".into()],
            listen: vec!["127.0.0.1:3".into()],
            tls: None,
        };
        let sandbox = Sandbox::new("t", Capabilities::default(), &grants).unwrap();
        assert!(sandbox.dirs.is_empty() && sandbox.http.is_empty() && sandbox.tcp.is_empty());
        assert!(sandbox.listen.is_empty());
    }

    #[test]
    fn bad_grants_name_the_key() {
        let grants = Grants {
            dirs: vec!["relative/dir".into()],
            ..Grants::default()
        };
        let err = Sandbox::new("t", everything(), &grants).unwrap_err();
        assert!(err.to_string().starts_with("grants.dirs"), "{err}");
        let grants = Grants {
            http: vec!["http://not an authority".into()],
            ..Grants::default()
        };
        let err = Sandbox::new("t", everything(), &grants).unwrap_err();
        assert!(err.to_string().starts_with("grants.http"), "{err}");
        for bad in ["localhost:1514", "0.0.0.0:0", "0.0.0.0"] {
            let grants = Grants {
                listen: vec![bad.into()],
                ..Grants::default()
            };
            let err = Sandbox::new("t", everything(), &grants).unwrap_err();
            assert!(err.to_string().starts_with("grants.listen"), "{err}");
        }
    }
}
