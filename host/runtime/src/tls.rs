//! TLS for a connector instance's outgoing connections, done by the host.
//!
//! The operator's trust (a CA bundle) and identity (a client certificate
//! and its key) are read by safd from files named in the instance's grants
//! (`grants.tls`); the plugin never sees the files, so a plugin cannot leak
//! the private key, and every plugin gets the same verification (rustls,
//! certificates and names checked, no way to turn it off).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `grants.tls`: the files TLS uses for one connector instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM bundle of the CAs whose certificates are trusted; without it,
    /// the public web roots (Mozilla's, built in).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to servers that ask for one
    /// (mutual TLS); needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// A TLS file that cannot be used, with what to do about it. `at` is the
/// place in the configuration (`grants.tls`, `admin.tls`).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{at}.{key} `{}`: cannot read it: {source}", path.display())]
    Read {
        at: &'static str,
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}.{key} `{}`: {problem}", path.display())]
    Content {
        at: &'static str,
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "{at}: cert_file and key_file go together (a certificate and its key); set both or \
         neither"
    )]
    HalfIdentity { at: &'static str },
    #[error("{at}: a TLS listener needs its certificate: set cert_file and key_file")]
    NoIdentity { at: &'static str },
    #[error("{at}: {reason}")]
    Rejected { at: &'static str, reason: String },
}

/// Where a plugin's TLS files are configured.
const GRANTS: &str = "grants.tls";

impl TlsError {
    /// The same error, said of `at` instead.
    fn placed(self, at: &'static str) -> Self {
        match self {
            Self::Read {
                key, path, source, ..
            } => Self::Read {
                at,
                key,
                path,
                source,
            },
            Self::Content {
                key, path, problem, ..
            } => Self::Content {
                at,
                key,
                path,
                problem,
            },
            Self::HalfIdentity { .. } => Self::HalfIdentity { at },
            Self::NoIdentity { .. } => Self::NoIdentity { at },
            Self::Rejected { reason, .. } => Self::Rejected { at, reason },
        }
    }
}

/// The client configuration for `files` (without a `ca_file`, the public
/// web roots are trusted).
pub(crate) fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = match &files.ca_file {
        Some(path) => trust_anchors(path)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Rejected {
            at: GRANTS,
            reason: err.to_string(),
        })?
        .with_root_certificates(roots);
    let config = match (&files.cert_file, &files.key_file) {
        (Some(cert_path), Some(key_path)) => {
            let chain = certificates("cert_file", cert_path)?;
            let key = private_key(key_path)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| mismatched_key(cert_path, key_path, &err))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::HalfIdentity { at: GRANTS }),
    };
    Ok(Arc::new(config))
}

/// The client configuration without `grants.tls`: the public web roots,
/// no client certificate (built once).
pub(crate) fn public_roots() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| client_config(&TlsFiles::default()).map_err(|e| e.to_string()))
        .clone()
}

/// The server configuration of a TLS listener: `cert_file` and `key_file`
/// are its identity; with `ca_file`, every client must present a
/// certificate that CA signed (mutual TLS). Errors name `at`, where the
/// files are configured.
pub fn server_config(
    files: &TlsFiles,
    at: &'static str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    build_server_config(files).map_err(|err| err.placed(at))
}

fn build_server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (Some(cert_path), Some(key_path)) = (&files.cert_file, &files.key_file) else {
        return Err(match (&files.cert_file, &files.key_file) {
            (None, None) => TlsError::NoIdentity { at: GRANTS },
            _ => TlsError::HalfIdentity { at: GRANTS },
        });
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Rejected {
            at: GRANTS,
            reason: err.to_string(),
        })?;
    let builder = match &files.ca_file {
        Some(path) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                trust_anchors(path)?.into(),
                provider(),
            )
            .build()
            .map_err(|err| TlsError::Content {
                at: GRANTS,
                key: "ca_file",
                path: path.clone(),
                problem: format!("cannot check client certificates with it: {err}"),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = certificates("cert_file", cert_path)?;
    let key = private_key(key_path)?;
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|err| mismatched_key(cert_path, key_path, &err))?;
    Ok(Arc::new(config))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CAs of a `ca_file`: at least one usable.
fn trust_anchors(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certificates("ca_file", path)?);
    if added == 0 {
        return Err(TlsError::Content {
            at: GRANTS,
            key: "ca_file",
            path: path.to_owned(),
            problem: format!(
                "none of its {ignored} certificates can be a trust anchor; give the CA's \
                 certificate (PEM)"
            ),
        });
    }
    Ok(roots)
}

fn mismatched_key(cert_path: &Path, key_path: &Path, err: &rustls::Error) -> TlsError {
    TlsError::Content {
        at: GRANTS,
        key: "key_file",
        path: key_path.to_owned(),
        problem: format!(
            "does not go with cert_file `{}` ({err}); give the key the certificate was issued \
             for",
            cert_path.display()
        ),
    }
}

/// The certificates of a PEM file; at least one.
pub fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(key, path)?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Content {
            at: GRANTS,
            key,
            path: path.to_owned(),
            problem: format!("not a PEM certificate file ({err})"),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Content {
            at: GRANTS,
            key,
            path: path.to_owned(),
            problem: "holds no certificate (no `-----BEGIN CERTIFICATE-----` block)".into(),
        });
    }
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|err| TlsError::Content {
        at: GRANTS,
        key: "key_file",
        path: path.to_owned(),
        problem: format!("holds no usable private key in PEM ({err})"),
    })
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        at: GRANTS,
        key,
        path: path.to_owned(),
        source,
    })
}

/// Stands in for "no client certificate" and notes whether the server
/// asked for one: a server that requires one (mutual TLS) refuses the
/// connection only after the client's side of a TLS 1.3 handshake is done,
/// and the refusal would otherwise arrive as a broken response.
#[derive(Debug, Default)]
pub(crate) struct NoClientCertificate {
    asked: std::sync::atomic::AtomicBool,
}

impl NoClientCertificate {
    /// `config` as it is when it has a client certificate; else with a
    /// fresh watcher as its (empty) one.
    pub(crate) fn watching(
        config: Arc<rustls::ClientConfig>,
    ) -> (Arc<rustls::ClientConfig>, Option<Arc<Self>>) {
        if config.client_auth_cert_resolver.has_certs() {
            return (config, None);
        }
        let watcher = Arc::new(Self::default());
        let mut config = (*config).clone();
        config.client_auth_cert_resolver = watcher.clone();
        (Arc::new(config), Some(watcher))
    }

    pub(crate) fn was_asked(&self) -> bool {
        self.asked.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl rustls::client::ResolvesClientCert for NoClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, std::sync::atomic::Ordering::Release);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// What a failed handshake means for the operator, from the error rustls
/// gave; `host` is the name safd connected to.
pub(crate) fn explain_handshake_error(host: &str, err: &std::io::Error) -> String {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls) => explain(host, tls),
        None => format!("TLS handshake with {host} failed: {err}"),
    }
}

/// The TLS error somewhere in `err`'s sources, explained: with TLS 1.3 a
/// server refuses a client certificate only after the client finished its
/// handshake, so the refusal arrives while the first response is read.
pub(crate) fn explain_in_sources(
    host: &str,
    err: &(dyn std::error::Error + 'static),
) -> Option<String> {
    let mut source = Some(err);
    while let Some(current) = source {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(explain(host, tls));
        }
        if let Some(tls) = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(explain(host, tls));
        }
        source = current.source();
    }
    None
}

fn explain(host: &str, tls: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError, Error};
    match tls {
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => format!(
            "the TLS certificate of {host} has expired: renew it on the server (or correct \
             this machine's clock)"
        ),
        Error::InvalidCertificate(CertificateError::NotValidYet)
        | Error::InvalidCertificate(CertificateError::NotValidYetContext { .. }) => format!(
            "the TLS certificate of {host} is not valid yet: check the clocks of both machines"
        ),
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the TLS certificate of {host} is signed by a CA safd does not trust: set \
             grants.tls.ca_file to the CA bundle that signed it"
        ),
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => format!(
            "the TLS certificate of {host} is not issued for the name `{host}`: use the name \
             the certificate holds in the member's address, or reissue it for `{host}`"
        ),
        Error::InvalidCertificate(other) => {
            format!("the TLS certificate of {host} is refused: {other:?}")
        }
        Error::AlertReceived(
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
        ) => format!(
            "{host} refused the TLS handshake ({tls}): it may require a client certificate: \
             set grants.tls.cert_file and key_file"
        ),
        Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown,
        ) => {
            format!(
                "{host} refused safd's client certificate ({tls}): give a certificate issued \
                 by the CA the server trusts (grants.tls.cert_file)"
            )
        }
        other => format!("TLS handshake with {host} failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_cannot_serve_are_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles {
            ca_file: Some(dir.path().join("nope.pem")),
            ..TlsFiles::default()
        };
        let err = client_config(&missing).unwrap_err().to_string();
        assert!(
            err.contains("grants.tls.ca_file") && err.contains("nope.pem"),
            "{err}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello").unwrap();
        let err = client_config(&TlsFiles {
            ca_file: Some(garbage.clone()),
            ..TlsFiles::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("holds no certificate"), "{err}");

        let err = client_config(&TlsFiles {
            cert_file: Some(garbage),
            ..TlsFiles::default()
        })
        .unwrap_err();
        assert!(matches!(err, TlsError::HalfIdentity { .. }), "{err}");

        // A key that is not the certificate's.
        let key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_file = dir.path().join("client.pem");
        let key_file = dir.path().join("client.key");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, other.serialize_pem()).unwrap();
        let err = client_config(&TlsFiles {
            ca_file: None,
            cert_file: Some(cert_file.clone()),
            key_file: Some(key_file.clone()),
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not go with cert_file"), "{err}");
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        client_config(&TlsFiles {
            ca_file: None,
            cert_file: Some(cert_file.clone()),
            key_file: Some(key_file.clone()),
        })
        .unwrap();

        // A listener needs its certificate and key; a CA makes client
        // certificates required.
        let err = server_config(&TlsFiles::default(), "admin.tls").unwrap_err();
        assert!(err.to_string().starts_with("admin.tls:"), "{err}");
        assert!(matches!(err, TlsError::NoIdentity { .. }), "{err}");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, cert.pem()).unwrap();
        server_config(
            &TlsFiles {
                ca_file: Some(ca_file),
                cert_file: Some(cert_file),
                key_file: Some(key_file),
            },
            "admin.tls",
        )
        .unwrap();
    }
}
