//! safd-mgmt against the real process: the command line, protocol version
//! 1, hostile input, the console in a real browser, and the mgmt-http
//! plugin through safd's runtime.

mod cli;
mod console;
mod hostile;
mod plugin;
mod protocol;
