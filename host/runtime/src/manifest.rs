//! The `<name>.toml` manifest that accompanies every `<name>.wasm`.

use serde::Deserialize;
use std::fmt;

/// The WIT package version this host implements.
pub const API_PACKAGE: &str = "safd:connector";
pub const API_VERSION: (u64, u64, u64) = (0, 2, 1);

/// The API version string this host implements, e.g. `safd:connector@0.2.1`.
pub fn supported_api() -> String {
    let (major, minor, patch) = API_VERSION;
    format!("{API_PACKAGE}@{major}.{minor}.{patch}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Source,
    Destination,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Source => "source",
            Self::Destination => "destination",
        })
    }
}

/// Capabilities a plugin asks for. The operator's grants decide what it
/// gets; the effective set is the intersection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Read-only access to directories the operator grants.
    #[serde(default)]
    pub files: bool,
    /// Outbound HTTP to authorities the operator grants.
    #[serde(default)]
    pub http: bool,
    /// Outbound TCP to addresses the operator grants.
    #[serde(default)]
    pub tcp: bool,
    /// Listening for TCP connections on addresses the operator grants
    /// (sources that receive events over the network).
    #[serde(default)]
    pub listen: bool,
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.files, "files"),
            (self.http, "http"),
            (self.tcp, "tcp"),
            (self.listen, "listen"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if names.is_empty() {
            f.write_str("-")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub kind: PluginKind,
    /// The WIT package the plugin was built against, e.g.
    /// `safd:connector@0.2.0`.
    pub api: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Destinations: what a member address looks like, so that `safd
    /// check` refuses one the plugin would refuse at its first call.
    #[serde(default)]
    pub endpoint: Option<EndpointForm>,
}

/// The form of a destination's member addresses (`[endpoint]` in the
/// manifest): URLs of given schemes, or a literal `ip:port`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointForm {
    /// URL schemes the plugin speaks, e.g. `["http", "https"]`: an address
    /// is `scheme://host[:port][/path]`.
    #[serde(default)]
    pub schemes: Vec<String>,
    /// An address is an IP address and a port (`10.0.0.9:6514`,
    /// `[::1]:2514`); the sandbox resolves no names.
    #[serde(default)]
    pub socket_address: bool,
}

impl fmt::Display for EndpointForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut forms: Vec<String> = self
            .schemes
            .iter()
            .map(|scheme| format!("{scheme}://host[:port]"))
            .collect();
        if self.socket_address {
            forms.push("ip:port".to_owned());
        }
        if forms.is_empty() {
            f.write_str("any address")
        } else {
            f.write_str(&forms.join(" or "))
        }
    }
}

impl EndpointForm {
    /// Why `address` is not of this form, if it is not.
    pub fn check(&self, address: &str) -> Result<(), String> {
        if let Some((at, c)) = address.char_indices().find(|&(_, c)| c.is_control()) {
            return Err(format!(
                "the address holds the control character U+{:04X} at byte {at}",
                u32::from(c)
            ));
        }
        if self.schemes.is_empty() && !self.socket_address {
            return Ok(());
        }
        if self.socket_address && address.parse::<std::net::SocketAddr>().is_ok() {
            return Ok(());
        }
        if let Some((scheme, rest)) = address.split_once("://")
            && self.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme))
        {
            let authority = rest.split('/').next().unwrap_or_default();
            if authority.is_empty() || authority.contains(char::is_whitespace) {
                return Err(format!("address `{address}` has no valid host"));
            }
            return Ok(());
        }
        Err(format!("address `{address}` is not of the plugin's form"))
    }
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("invalid manifest: {0}")]
    Syntax(String),
    #[error("manifest name `{manifest}` does not match the file name `{file}`; rename one of them")]
    NameMismatch { manifest: String, file: String },
    #[error(
        "unsupported API version `{found}`: this safd supports {supported}; rebuild the plugin against a matching safd-plugin-sdk"
    )]
    UnsupportedApi { found: String, supported: String },
}

impl Manifest {
    /// Parse and check a manifest for the plugin file named `file_stem`.
    pub fn parse(text: &str, file_stem: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestError::Syntax(one_line(&e.to_string())))?;
        if manifest.name != file_stem {
            return Err(ManifestError::NameMismatch {
                manifest: manifest.name,
                file: file_stem.to_owned(),
            });
        }
        if !api_supported(&manifest.api) {
            return Err(ManifestError::UnsupportedApi {
                found: manifest.api,
                supported: supported_api(),
            });
        }
        Ok(manifest)
    }
}

/// Within 0.2.x new interfaces may be added, so a plugin built against a
/// newer patch release might import one this host lacks: accept the same
/// major.minor with a patch no newer than ours.
fn api_supported(api: &str) -> bool {
    api_supported_by(api, API_VERSION)
}

/// Whether a host implementing contract version `host` runs a plugin built
/// for `api`.
fn api_supported_by(api: &str, host: (u64, u64, u64)) -> bool {
    let Some((package, version)) = api.split_once('@') else {
        return false;
    };
    let parts: Vec<Option<u64>> = version.split('.').map(|p| p.parse().ok()).collect();
    let [Some(major), Some(minor), Some(patch)] = parts[..] else {
        return false;
    };
    let (our_major, our_minor, our_patch) = host;
    package == API_PACKAGE && major == our_major && minor == our_minor && patch <= our_patch
}

/// TOML errors span several lines with a source excerpt; the operator gets
/// one line per refused plugin.
fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^'))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "ems-reader"
        version = "0.1.0"
        kind = "source"
        api = "safd:connector@0.2.0"
        [capabilities]
        files = true
    "#;

    #[test]
    fn accepts_a_good_manifest() {
        let m = Manifest::parse(GOOD, "ems-reader").unwrap();
        assert_eq!(m.kind, PluginKind::Source);
        assert!(m.capabilities.files && !m.capabilities.http);
        assert_eq!(m.capabilities.to_string(), "files");
    }

    #[test]
    fn refuses_other_api_versions() {
        for api in [
            "safd:connector@0.3.0",
            "safd:connector@0.2.9",
            // Built for the contract before `left-out`: rebuilt, not loaded.
            "safd:connector@0.1.0",
            "safd:connector@1.0.0",
            "other:pkg@0.2.0",
            "safd:connector",
            "safd:connector@0.2",
        ] {
            let text = GOOD.replace("safd:connector@0.2.0", api);
            let err = Manifest::parse(&text, "ems-reader").unwrap_err();
            assert!(
                matches!(err, ManifestError::UnsupportedApi { .. }),
                "{api}: {err}"
            );
            assert!(err.to_string().contains("safd:connector@0.2.1"));
        }
    }

    #[test]
    fn a_host_runs_plugins_of_its_minor_version_up_to_its_own_patch() {
        let host = (0, 2, 3);
        for built_for in ["0.2.0", "0.2.1", "0.2.3"] {
            let api = format!("safd:connector@{built_for}");
            assert!(api_supported_by(&api, host), "{api}");
        }
        for built_for in ["0.2.4", "0.1.0", "0.3.0", "1.2.0", "2.0.0"] {
            let api = format!("safd:connector@{built_for}");
            assert!(!api_supported_by(&api, host), "{api}");
        }
    }

    #[test]
    fn refuses_name_mismatch_and_unknown_keys() {
        assert!(matches!(
            Manifest::parse(GOOD, "other"),
            Err(ManifestError::NameMismatch { .. })
        ));
        let text = format!("{GOOD}\nsurprise = 1\n");
        let err = Manifest::parse(&text, "ems-reader").unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
        assert!(!err.to_string().contains('\n'));
    }
}
