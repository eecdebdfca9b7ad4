use serde::{Deserialize, Serialize};

/// Subsystem id (`ZSPI-TKN-SSID`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ssid {
    /// Owner, e.g. `TANDEM`.
    pub owner: String,
    /// Subsystem number; format A does not print it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u16>,
    /// Version, e.g. `H01`.
    pub version: String,
    /// Subsystem name, e.g. `EXPAND`.
    pub name: String,
}

/// The originating process: a name, a cpu,pin pair, or both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<u16>,
}

impl std::fmt::Display for Process {
    /// As format A prints it: the name if known, else `cpu,pin`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.name, self.cpu, self.pin) {
            (Some(name), _, _) => f.write_str(name),
            (None, Some(cpu), Some(pin)) => write!(f, "{cpu},{pin}"),
            _ => f.write_str("?"),
        }
    }
}

/// A subject token of the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub token: String,
    pub value: String,
}

/// One EMS event, as far as the logs carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmsEvent {
    pub ssid: Ssid,
    /// `ZEMS-TKN-EVENTNUMBER` (unique only within its subsystem).
    pub event_number: u32,
    /// `ZEMS-TKN-GENTIME`, microseconds since the Unix epoch (UTC).
    pub gentime: i64,
    /// `ZEMS-TKN-LOGTIME`, microseconds since the Unix epoch (UTC). Format A
    /// prints one time only; there it equals `gentime`.
    pub logtime: i64,
    /// The node, e.g. `\PROD1`.
    pub system: String,
    pub process: Process,
    /// `ZEMS-TKN-EMPHASIS`: a critical event.
    pub emphasis: bool,
    /// `ZEMS-TKN-ACTION-NEEDED`.
    pub action_needed: bool,
    pub subjects: Vec<Subject>,
    /// `ZEMS-TKN-TEXT`; continuation lines joined with `\n`.
    pub text: String,
}
