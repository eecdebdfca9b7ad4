//! What plugins that speak syslog share: the facility names of RFC 5424
//! (§6.2.1), by number.

/// Facility 0 to 23 by name, as rsyslog and syslog-ng name them.
pub const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// The facility named `name`, or given by its number (`"16"`).
pub fn facility(name: &str) -> Option<u8> {
    if let Ok(n) = name.parse::<u8>() {
        return (n < 24).then_some(n);
    }
    FACILITIES.iter().position(|f| *f == name).map(|n| n as u8)
}
