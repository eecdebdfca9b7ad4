//! The runtime announces plugin failures (events 3001–3008: trapped, timed
//! out, rebuilt, disabled, …) through `tracing`, since it knows nothing of
//! the engine. This layer hands them to the engine's notices so they reach
//! the management servers like every other numbered event (they are part
//! of the agent's health an operator watches there).

use safd_connector::Severity;
use safd_engine::{Notice, Notices};
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

static SINK: OnceLock<Notices> = OnceLock::new();

/// From now on, the runtime's numbered events go to `notices` too.
pub fn forward_to(notices: Notices) {
    let _ = SINK.set(notices);
}

/// The layer; installed with the log subscriber, idle until
/// [`forward_to`] is called.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeEvents;

#[derive(Default)]
struct Fields {
    event_id: Option<u64>,
    message: String,
    extra: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "event_id" => self.event_id = Some(value),
            name => self.extra.push((name, value.to_string())),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match field.name() {
            "event_id" => self.event_id = u64::try_from(value).ok(),
            name => self.extra.push((name, value.to_string())),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            name => self.extra.push((name, value.to_owned())),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%value` fields arrive here too, printing as Display.
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            name => self.extra.push((name, format!("{value:?}"))),
        }
    }
}

impl<S: Subscriber> Layer<S> for RuntimeEvents {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !event.metadata().target().starts_with("safd_runtime") {
            return;
        }
        let Some(sink) = SINK.get() else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(id) = fields.event_id.and_then(|id| u32::try_from(id).ok()) else {
            return;
        };
        let severity = match *event.metadata().level() {
            Level::ERROR => Severity::Major,
            Level::WARN => Severity::Warning,
            _ => Severity::Info,
        };
        let notice = fields
            .extra
            .into_iter()
            .fold(Notice::new(id, severity, fields.message), |n, (k, v)| {
                n.with(k, v)
            });
        // Already logged by the runtime: keep and inject, do not log twice.
        sink.forward(notice);
    }
}
