//! What the engine's benchmarks share: a realistic EMS event.

use safd_connector::{Attribute, Event, Severity};

/// Event number `n`: three attributes and a 200-byte body, like a real
/// EMS event.
pub fn event(n: usize) -> Event {
    Event {
        id: format!("ems-prod1-ZZEV0001-{n:012}"),
        time: 1_710_119_830_000_000 + n as i64,
        severity: Severity::Critical,
        attributes: vec![
            Attribute::new("system", "\\PROD1"),
            Attribute::new("process", "$LHNY1"),
            Attribute::new("subsystem", "TANDEM.EXPAND.H01"),
        ],
        body: "LDEV 123 $LHNY1: LINE NOT READY, ERROR 140 ".repeat(5)[..200].to_owned(),
    }
}
