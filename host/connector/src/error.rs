use std::time::Duration;

/// An error a connector itself reported; the WIT `connector-error` variant.
/// See `wit/connector.wit` for what the host does with each case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    #[error("transient failure: {0}")]
    Transient(String),
    #[error("endpoint unavailable: {0}")]
    Unavailable(String),
    #[error("backpressure, retry after {} ms: {message}", retry_after.as_millis())]
    Backpressure {
        retry_after: Duration,
        message: String,
    },
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("fatal: {0}")]
    Fatal(String),
    #[error("bad cursor: {0}")]
    BadCursor(String),
}

/// Why a session call did not return a result.
///
/// Besides what the connector reported, the runtime adds what happened to the
/// sandboxed instance. After `Trapped`, `TimedOut` or a `Fatal` connector
/// error the instance has been discarded: the next call runs on a fresh one
/// (after a backoff), which for a source resumes from the last committed
/// cursor and for a destination must be registered again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("plugin trapped: {0}")]
    Trapped(String),
    #[error("plugin call exceeded its {} ms limit", .0.as_millis())]
    TimedOut(Duration),
    #[error("plugin disabled after {restarts} restarts within {} s; fix the plugin or its config and reload", window.as_secs())]
    Disabled { restarts: u32, window: Duration },
    #[error("plugin could not be started: {0}")]
    Start(String),
    /// The plugin answered `unauthorized` after safd's sandbox refused one
    /// of its accesses during the call: a missing grant, not a credential
    /// the receiver turned down.
    #[error("{0}")]
    NotGranted(String),
}

impl SessionError {
    /// True when the instance behind the session was discarded and the next
    /// call will run on a fresh one.
    pub fn instance_was_reset(&self) -> bool {
        matches!(
            self,
            Self::Trapped(_) | Self::TimedOut(_) | Self::Connector(ConnectorError::Fatal(_))
        )
    }
}
