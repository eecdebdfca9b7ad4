//! Loading plugin files and creating connector instances from them.

use crate::bindings::destination_world::{Destination, DestinationPre};
use crate::bindings::source_world::{Source, SourcePre};
use crate::bindings::{self, ConnectorKind};
use crate::cache::{CompileCache, CompileOrigin};
use crate::call::{CallOutcome, arm, bounded, trap_summary};
use crate::config::{Limits, RuntimeConfig};
use crate::error::{LoadError, LoadErrorKind, RuntimeError};
use crate::manifest::{Manifest, PluginKind};
use crate::report::Reporter;
use crate::sandbox::Sandbox;
use crate::state::InstanceState;
use safd_connector::{Acknowledgement, Notice, NoticeSink, SessionError, event_ids};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store};

/// How often the epoch advances; the granularity of call deadlines and of
/// the cooperative yields of long-running guest code.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The wasmtime engine, the linker with everything safd offers plugins, and
/// the compiled-code cache. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache", &self.inner.cache)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

struct RuntimeInner {
    engine: Engine,
    /// WASI and safd's own interfaces.
    linker: Linker<InstanceState>,
    /// The same with wasi:http, for plugins that request `http`.
    http_linker: Linker<InstanceState>,
    cache: CompileCache,
    limits: Limits,
    reporter: Reporter,
}

/// The outcome of loading a plugin directory: what loaded and what was
/// refused (one error per file).
#[derive(Debug, Default)]
pub struct LoadReport {
    pub plugins: Vec<Arc<Plugin>>,
    pub refused: Vec<LoadError>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut wasm_config = wasmtime::Config::new();
        wasm_config
            .wasm_component_model(true)
            .epoch_interruption(true);
        // A developer's switch: `perf` then names guest functions
        // (/tmp/perf-PID.map) instead of showing anonymous JIT addresses.
        if std::env::var_os("SAFD_WASM_PERFMAP").is_some() {
            wasm_config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine =
            Engine::new(&wasm_config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        spawn_epoch_ticker(&engine);

        let link = |result: wasmtime::Result<()>| {
            result.map_err(|e| RuntimeError::Engine(format!("linking host interfaces: {e:#}")))
        };
        let mut linker = Linker::new(&engine);
        link(wasmtime_wasi::p2::add_to_linker_async(&mut linker))?;
        link(
            bindings::source_world::safd::connector::log::add_to_linker::<_, HasSelf<_>>(
                &mut linker,
                |state| state,
            ),
        )?;
        link(
            bindings::source_world::safd::connector::types::add_to_linker::<_, HasSelf<_>>(
                &mut linker,
                |state| state,
            ),
        )?;
        link(
            bindings::source_world::safd::connector::tls::add_to_linker::<_, HasSelf<_>>(
                &mut linker,
                |state| state,
            ),
        )?;
        // Only destinations import it (0.2.1); an unused definition costs a
        // source nothing.
        link(
            bindings::destination_world::safd::connector::receiver_notice::add_to_linker::<
                _,
                HasSelf<_>,
            >(&mut linker, |state| state),
        )?;
        // wasi:http only for plugins whose manifest asks for it: the rest
        // cannot even create its resources (header fields, bodies).
        let mut http_linker = linker.clone();
        link(crate::http_link::add_to_linker(&mut http_linker))?;

        let cache = CompileCache::new(config.cache_dir.clone(), &engine).map_err(|source| {
            RuntimeError::Cache {
                path: config.cache_dir.clone(),
                source,
            }
        })?;
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                http_linker,
                cache,
                limits: config.limits,
                reporter: Reporter::default(),
            }),
        })
    }

    /// Load every plugin in `dir`. A file that cannot be used is refused
    /// (and logged) without stopping the others.
    pub fn load_dir(&self, dir: &Path) -> Result<LoadReport, RuntimeError> {
        let dir_error = |source| RuntimeError::PluginDir {
            path: dir.to_owned(),
            source,
        };
        let mut stems = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(dir).map_err(dir_error)? {
            let path = entry.map_err(dir_error)?.path();
            let is_plugin_file = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("wasm" | "toml")
            );
            if is_plugin_file && let Some(stem) = path.file_stem() {
                stems.insert(dir.join(stem));
            }
        }
        let mut report = LoadReport::default();
        for stem in stems {
            match self.load(&stem.with_extension("wasm")) {
                Ok(plugin) => report.plugins.push(plugin),
                Err(err) => {
                    self.inner.reporter.emit(Notice::new(
                        event_ids::PLUGIN_REFUSED,
                        format!("plugin refused: {err}"),
                    ));
                    report.refused.push(err);
                }
            }
        }
        Ok(report)
    }

    /// Load one plugin, given its `.wasm` (or its `.toml`) path.
    pub fn load(&self, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        let wasm_path = path.with_extension("wasm");
        let manifest_path = path.with_extension("toml");
        let file_name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let fail = |path: &Path, kind| LoadError {
            path: path.to_owned(),
            kind,
        };
        if !manifest_path.is_file() {
            return Err(fail(
                &wasm_path,
                LoadErrorKind::MissingManifest(file_name(&manifest_path)),
            ));
        }
        if !wasm_path.is_file() {
            return Err(fail(
                &manifest_path,
                LoadErrorKind::MissingComponent(file_name(&wasm_path)),
            ));
        }
        let stem = wasm_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| fail(&manifest_path, LoadErrorKind::Read(e)))?;
        let manifest = Manifest::parse(&text, &stem).map_err(|e| fail(&manifest_path, e.into()))?;
        let wasm =
            std::fs::read(&wasm_path).map_err(|e| fail(&wasm_path, LoadErrorKind::Read(e)))?;
        let (component, origin) = self
            .inner
            .cache
            .load(&self.inner.engine, &wasm)
            .map_err(|e| fail(&wasm_path, LoadErrorKind::Corrupt(root_cause(&e))))?;

        let expected_export = match manifest.kind {
            PluginKind::Source => "safd:connector/source-connector@",
            PluginKind::Destination => "safd:connector/destination-connector@",
        };
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.inner.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        if !exports.iter().any(|e| e.starts_with(expected_export)) {
            let found = if exports.is_empty() {
                " (it exports nothing)".to_owned()
            } else {
                format!(" (it exports {})", exports.join(", "))
            };
            return Err(fail(
                &wasm_path,
                LoadErrorKind::WrongKind {
                    declared: manifest.kind,
                    found,
                },
            ));
        }
        let linker = if manifest.capabilities.http {
            &self.inner.http_linker
        } else {
            &self.inner.linker
        };
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
            let mut cause = root_cause(&e);
            if !manifest.capabilities.http && cause.contains("wasi:http") {
                cause.push_str(
                    "; the plugin uses wasi:http but its manifest does not request it: add \
                     `http = true` under [capabilities]",
                );
            }
            fail(&wasm_path, LoadErrorKind::Imports(cause))
        })?;
        let pre = match manifest.kind {
            PluginKind::Source => SourcePre::new(instance_pre).map(PluginPre::Source),
            PluginKind::Destination => {
                DestinationPre::new(instance_pre).map(PluginPre::Destination)
            }
        }
        .map_err(|e| fail(&wasm_path, LoadErrorKind::Corrupt(root_cause(&e))))?;
        let fingerprint = {
            use sha2::Digest;
            let mut hasher = sha2::Sha256::new();
            hasher.update(text.as_bytes());
            hasher.update(&wasm);
            hex::encode(&hasher.finalize()[..16])
        };
        let sha256 = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&wasm))
        };
        Ok(Arc::new(Plugin {
            manifest,
            wasm_path,
            fingerprint,
            sha256,
            origin,
            pre,
            runtime: self.inner.clone(),
        }))
    }

    /// True when compiled code for the component at `wasm_path` is cached.
    pub fn is_compiled(&self, wasm_path: &Path) -> bool {
        std::fs::read(wasm_path).is_ok_and(|bytes| self.inner.cache.contains(&bytes))
    }

    /// From now on the runtime's numbered events (3xxx) go to `sink`
    /// (which logs them) instead of only to the log.
    pub fn report_to(&self, sink: Arc<dyn NoticeSink>) {
        self.inner.reporter.set(sink);
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }
}

fn root_cause(err: &wasmtime::Error) -> String {
    err.chain()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

/// Advance the engine's epoch on a plain thread for as long as the engine
/// lives; deadlines are counted in these ticks.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("safd-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        });
    if let Err(err) = spawned {
        tracing::error!("cannot start the epoch thread; plugin calls will not time out: {err}");
    }
}

enum PluginPre {
    Source(SourcePre<InstanceState>),
    Destination(DestinationPre<InstanceState>),
}

/// A loaded, compiled plugin file, ready to instantiate.
pub struct Plugin {
    pub manifest: Manifest,
    pub wasm_path: PathBuf,
    /// Changes whenever the component or its manifest does: how a reload
    /// tells a replaced plugin file from the one running.
    pub fingerprint: String,
    /// SHA-256 of the `.wasm` file, in hex (what `sha256sum` prints): what
    /// a configuration pins.
    pub sha256: String,
    /// Whether the component came from the compiled-code cache.
    pub origin: CompileOrigin,
    pre: PluginPre,
    runtime: Arc<RuntimeInner>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("manifest", &self.manifest)
            .field("wasm_path", &self.wasm_path)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// What a plugin says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginDescription {
    pub name: String,
    pub version: String,
    pub kind: PluginKind,
    pub summary: String,
    /// JSON Schema of the plugin's config, as text.
    pub config_schema: String,
    /// Destinations only.
    pub acknowledgement: Option<Acknowledgement>,
}

/// One problem in a connector's config, as the plugin reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path into the config; empty for the whole text.
    pub path: String,
    pub message: String,
}

/// Instances created only to ask a plugin about itself get no grants and
/// this much time.
const ONE_SHOT_TIMEOUT: Duration = Duration::from_secs(10);

impl Plugin {
    /// Where this plugin's instances report their numbered events.
    pub(crate) fn reporter(&self) -> &Reporter {
        &self.runtime.reporter
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn kind(&self) -> PluginKind {
        self.manifest.kind
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.runtime.engine
    }

    /// The limits every instance of this plugin runs under.
    pub(crate) fn limits(&self) -> &Limits {
        &self.runtime.limits
    }

    fn one_shot_store(&self) -> Result<Store<InstanceState>, SessionError> {
        let name: Arc<str> = Arc::from(format!("{}(inspect)", self.name()));
        let state = InstanceState::new(
            name,
            &Sandbox::default(),
            self.runtime.limits.memory_bytes,
            self.runtime.reporter.clone(),
        )
        .map_err(|e| SessionError::Start(e.to_string()))?;
        let mut store = state.into_store(&self.runtime.engine);
        arm(&mut store, ONE_SHOT_TIMEOUT);
        Ok(store)
    }

    pub(crate) async fn instantiate_source(
        &self,
        store: &mut Store<InstanceState>,
    ) -> wasmtime::Result<Source> {
        match &self.pre {
            PluginPre::Source(pre) => pre.instantiate_async(store).await,
            PluginPre::Destination(_) => Err(wasmtime::format_err!("not a source plugin")),
        }
    }

    pub(crate) async fn instantiate_destination(
        &self,
        store: &mut Store<InstanceState>,
    ) -> wasmtime::Result<Destination> {
        match &self.pre {
            PluginPre::Destination(pre) => pre.instantiate_async(store).await,
            PluginPre::Source(_) => Err(wasmtime::format_err!("not a destination plugin")),
        }
    }

    /// Ask the plugin to describe itself (no session, no grants).
    pub async fn describe(&self) -> Result<PluginDescription, SessionError> {
        let mut store = self.one_shot_store()?;
        let outcome = bounded(ONE_SHOT_TIMEOUT, async {
            Ok(match self.kind() {
                PluginKind::Source => {
                    let instance = self.instantiate_source(&mut store).await?;
                    let iface = instance.safd_connector_source_connector();
                    (iface.call_describe(&mut store).await?, None)
                }
                PluginKind::Destination => {
                    let instance = self.instantiate_destination(&mut store).await?;
                    let iface = instance.safd_connector_destination_connector();
                    let description = iface.call_describe(&mut store).await?;
                    let ack = iface.call_acknowledgement_kind(&mut store).await?;
                    (description, Some(bindings::acknowledgement_from_wit(ack)))
                }
            })
        })
        .await;
        let (description, acknowledgement) = one_shot_result(outcome)?;
        Ok(PluginDescription {
            name: description.name,
            version: description.version,
            kind: match description.kind {
                ConnectorKind::Source => PluginKind::Source,
                ConnectorKind::Destination => PluginKind::Destination,
            },
            summary: description.summary,
            config_schema: description.config_schema,
            acknowledgement,
        })
    }

    /// Ask the plugin to check `config` (JSON text); an empty list means it
    /// is valid.
    pub async fn validate_config(&self, config: &str) -> Result<Vec<ConfigProblem>, SessionError> {
        let mut store = self.one_shot_store()?;
        let outcome = bounded(ONE_SHOT_TIMEOUT, async {
            match self.kind() {
                PluginKind::Source => {
                    let instance = self.instantiate_source(&mut store).await?;
                    instance
                        .safd_connector_source_connector()
                        .call_validate_config(&mut store, config)
                        .await
                }
                PluginKind::Destination => {
                    let instance = self.instantiate_destination(&mut store).await?;
                    instance
                        .safd_connector_destination_connector()
                        .call_validate_config(&mut store, config)
                        .await
                }
            }
        })
        .await;
        Ok(match one_shot_result(outcome)? {
            Ok(()) => Vec::new(),
            Err(problems) => bindings::config_problems_from_wit(problems),
        })
    }
}

fn one_shot_result<T>(outcome: CallOutcome<T>) -> Result<T, SessionError> {
    match outcome {
        CallOutcome::Returned(value) => Ok(value),
        CallOutcome::Trapped(trap) => Err(SessionError::Trapped(trap_summary(&trap))),
        CallOutcome::Elapsed => Err(SessionError::TimedOut(ONE_SHOT_TIMEOUT)),
    }
}
