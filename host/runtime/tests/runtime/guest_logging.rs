//! Guest output reaches the host's log, tagged with the connector instance.

use crate::common::*;
use safd_connector::{
    DestinationConnector, PollLimits, SequencedEvent, SessionInfo, SourceConnector, StreamBatch,
};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// current_thread: the subscriber set below is thread-local, and every guest
// call must run on this thread for its records to be captured.
#[tokio::test(flavor = "current_thread")]
async fn log_import_and_stdout_are_tagged_with_the_instance() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let runtime = runtime();
    let hello = fixture(&runtime, "hello-source")
        .source(
            "greeter",
            r#"{"count": 3, "name": "NonStop"}"#.into(),
            &no_grants(),
        )
        .unwrap();
    let mut reader = hello.open(None).await.unwrap();
    let batch = reader.poll(PollLimits::default()).await.unwrap();
    assert_eq!(batch.events.len(), 3);
    assert!(!batch.more);

    let sink = fixture(&runtime, "log-destination")
        .destination("audit-log", r#"{"prefix": "EMS> "}"#.into(), &no_grants())
        .await
        .unwrap();
    assert_eq!(
        sink.acknowledgement(),
        safd_connector::Acknowledgement::TransportWrite
    );
    let mut writer = sink.open(primary("-")).await.unwrap();
    writer.register(&SessionInfo::default()).await.unwrap();
    let events = batch
        .events
        .to_events()
        .into_iter()
        .zip(1..)
        .map(|(event, seq)| SequencedEvent { seq, event })
        .collect();
    let report = writer
        .deliver(&[StreamBatch {
            stream: "hello".into(),
            events,
            left_out: Vec::new(),
        }])
        .await
        .unwrap();
    assert_eq!(report.acknowledged[0].seq, 3);
    drop(writer);

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let logged = lines
        .iter()
        .find(|l| l.contains("EMS> hello, NonStop (#2)"))
        .unwrap_or_else(|| panic!("log import not routed:\n{text}"));
    assert!(logged.contains("INFO"), "{logged}");
    assert!(
        logged.contains("connector=\"audit-log\"") || logged.contains("connector=audit-log"),
        "{logged}"
    );
    assert!(
        logged.contains("seq=3") && logged.contains("stream=hello"),
        "{logged}"
    );
    let printed = lines
        .iter()
        .find(|l| l.contains("delivered 1 streams"))
        .unwrap_or_else(|| panic!("stdout not routed:\n{text}"));
    assert!(
        printed.contains("audit-log") && printed.contains("stdout"),
        "{printed}"
    );
}
