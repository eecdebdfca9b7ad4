use crate::manifest::{ManifestError, PluginKind};
use crate::sandbox::GrantError;
use std::fmt;
use std::path::PathBuf;

/// The runtime itself could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    #[error("compiled-code cache `{path}`: {source}; point cache_dir at a writable directory")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin directory `{path}`: {source}")]
    PluginDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One plugin file was refused. Displayed as one line naming the file.
#[derive(Debug)]
pub struct LoadError {
    pub path: PathBuf,
    pub kind: LoadErrorKind,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)
    }
}

impl std::error::Error for LoadError {}

#[derive(Debug, thiserror::Error)]
pub enum LoadErrorKind {
    #[error("no manifest; add `{0}` beside it (name, version, kind, api, capabilities)")]
    MissingManifest(String),
    #[error("no component; build the plugin and place `{0}` beside its manifest")]
    MissingComponent(String),
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("not a valid WebAssembly component ({0}); rebuild it for wasm32-wasip2")]
    Corrupt(String),
    #[error(
        "manifest says kind = \"{declared}\" but the component does not export the {declared} interface{found}"
    )]
    WrongKind { declared: PluginKind, found: String },
    #[error("needs imports safd does not provide: {0}")]
    Imports(String),
}

/// A connector instance could not be set up from a loaded plugin.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("plugin `{plugin}` is a {actual} but is used as a {expected}")]
    WrongKind {
        plugin: String,
        actual: PluginKind,
        expected: PluginKind,
    },
    #[error(transparent)]
    Session(#[from] safd_connector::SessionError),
}
