//! safd-mgmt against the real process: the command line, protocol version
//! 1, hostile input, the console in a real browser, and the mgmt-http
//! plugin through safd's runtime.

/// Each named test — a `fn name(body: Body)` — run once with each delivery
/// body, as `name::json` and `name::binary` (`async` before the names for
/// async tests).
macro_rules! with_each_body {
    (async: $($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn json() {
                super::$name(crate::support::mgmt::Body::Json).await
            }
            #[tokio::test]
            async fn binary() {
                super::$name(crate::support::mgmt::Body::Binary).await
            }
        }
    )*};
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn json() {
                super::$name(crate::support::mgmt::Body::Json)
            }
            #[test]
            fn binary() {
                super::$name(crate::support::mgmt::Body::Binary)
            }
        }
    )*};
}

mod cli;
mod console;
mod hostile;
mod plugin;
mod protocol;
