//! `nats-jetstream`: a safd destination that publishes into a NATS
//! JetStream stream with `durable-commit` acknowledgements.
//!
//! `async-nats` does not build for wasm32-wasip2, so the plugin speaks the
//! NATS client protocol itself over the sandbox's TCP socket. What it needs
//! of it is small and lives here, tested natively:
//!
//! - [`protocol`]: the server's operations read from a byte stream
//!   (`INFO`, `MSG`, `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`) and the
//!   client's written (`CONNECT`, `HPUB`, `SUB`, `PING`, `PONG`), with
//!   message headers;
//! - [`subject`]: the subject template (`safd.{agent}.{stream}`) and the
//!   characters a subject token may not hold;
//! - [`nkey`]: an nkey seed read and the server's nonce signed with it;
//! - [`ack`]: JetStream's publish acknowledgements and the window of
//!   outstanding publishes, whose unbroken run of stored events is what
//!   safd may count as acknowledged;
//! - [`client`]: one connection — the handshake, JetStream's stream API,
//!   publishes and their answers — with its errors already the WIT cases.

pub mod ack;
pub mod client;
pub mod nkey;
pub mod protocol;
pub mod subject;
