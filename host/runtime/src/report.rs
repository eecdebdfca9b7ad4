//! Where the runtime's numbered events (3001–3009: a plugin trapped, timed
//! out, rebuilt, disabled, refused, a grant ignored, an access denied) go:
//! the sink the daemon gives the runtime (the engine's notices, which log
//! them and inject them into the `safd` stream), or the log alone until it
//! has one (`safd plugins list`, `safd check`).

use safd_connector::{Notice, NoticeSink};
use std::sync::{Arc, PoisonError, RwLock};

#[derive(Clone, Default)]
pub(crate) struct Reporter(Arc<RwLock<Option<Arc<dyn NoticeSink>>>>);

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").finish_non_exhaustive()
    }
}

impl Reporter {
    pub(crate) fn set(&self, sink: Arc<dyn NoticeSink>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(sink);
    }

    pub(crate) fn emit(&self, notice: Notice) {
        let sink = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match sink {
            Some(sink) => sink.emit(notice),
            None => notice.log(),
        }
    }
}
