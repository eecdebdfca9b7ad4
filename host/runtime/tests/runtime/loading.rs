//! Loading plugin directories: good plugins load, bad files are refused with
//! one clear line each, and the compile cache is used.

use crate::common::*;
use safd_runtime::{CompileOrigin, LoadErrorKind, PluginKind, Runtime, RuntimeConfig};
use std::path::Path;

/// A plugin directory with copies of the fixtures, to damage at will.
fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["fixture-source", "fixture-destination"] {
        for ext in ["wasm", "toml"] {
            std::fs::copy(
                plugin_dir().join(format!("{name}.{ext}")),
                dir.path().join(format!("{name}.{ext}")),
            )
            .unwrap();
        }
    }
    dir
}

fn add_plugin(dir: &Path, name: &str, wasm: &[u8], manifest: &str) {
    std::fs::write(dir.join(format!("{name}.wasm")), wasm).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), manifest).unwrap();
}

fn fixture_wasm() -> Vec<u8> {
    std::fs::read(plugin_dir().join("fixture-source.wasm")).unwrap()
}

fn manifest(name: &str, kind: &str, api: &str) -> String {
    format!("name = \"{name}\"\nversion = \"1.0.0\"\nkind = \"{kind}\"\napi = \"{api}\"\n")
}

#[test]
fn bad_files_are_refused_one_line_each_and_the_rest_load() {
    let dir = scratch_dir();
    let d = dir.path();
    add_plugin(
        d,
        "future-api",
        &fixture_wasm(),
        &manifest("future-api", "source", "safd:connector@0.3.0"),
    );
    add_plugin(
        d,
        "corrupt",
        b"\0asm\x0d\0\x01\0garbage",
        &manifest("corrupt", "source", "safd:connector@0.2.0"),
    );
    add_plugin(
        d,
        "not-wasm",
        b"#!/bin/sh\necho hi\n",
        &manifest("not-wasm", "source", "safd:connector@0.2.0"),
    );
    add_plugin(
        d,
        "bad-manifest",
        &fixture_wasm(),
        "name = \"bad-manifest\"\nkind = \"sorce\"\n",
    );
    add_plugin(
        d,
        "wrong-kind",
        &fixture_wasm(),
        &manifest("wrong-kind", "destination", "safd:connector@0.2.0"),
    );
    // It uses wasi:http, but its manifest does not ask for it: wasi:http is
    // not linked for it, and the refusal says what to add.
    add_plugin(
        d,
        "no-http",
        &fixture_wasm(),
        &format!(
            "{}[capabilities]\nfiles = true\ntcp = true\n",
            manifest("no-http", "source", "safd:connector@0.2.0")
        ),
    );
    std::fs::write(d.join("orphan.wasm"), fixture_wasm()).unwrap();
    std::fs::write(
        d.join("lonely.toml"),
        manifest("lonely", "source", "safd:connector@0.2.0"),
    )
    .unwrap();

    let report = runtime().load_dir(d).unwrap();
    let mut loaded: Vec<&str> = report.plugins.iter().map(|p| p.name()).collect();
    loaded.sort();
    assert_eq!(loaded, ["fixture-destination", "fixture-source"]);

    let lines: Vec<String> = report.refused.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 8, "{lines:#?}");
    for line in &lines {
        assert!(!line.contains('\n'), "not one line: {line}");
    }
    let line_for = |name: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("/{name}.")))
            .unwrap_or_else(|| panic!("no refusal for {name}: {lines:#?}"))
            .clone()
    };
    let future = line_for("future-api");
    assert!(
        future.contains("unsupported API version `safd:connector@0.3.0`"),
        "{future}"
    );
    assert!(future.contains("supports safd:connector@0.2.1"), "{future}");
    assert!(line_for("corrupt").contains("not a valid WebAssembly component"));
    assert!(line_for("not-wasm").contains("not a valid WebAssembly component"));
    let bad = line_for("bad-manifest");
    assert!(
        bad.contains("invalid manifest") && bad.contains("sorce"),
        "{bad}"
    );
    let wrong = line_for("wrong-kind");
    assert!(wrong.contains("kind = \"destination\""), "{wrong}");
    assert!(wrong.contains("source-connector"), "{wrong}");
    assert!(line_for("orphan").contains("no manifest; add `orphan.toml`"));
    assert!(line_for("lonely").contains("no component"));
    let no_http = line_for("no-http");
    assert!(
        no_http.contains("wasi:http") && no_http.contains("add `http = true` under [capabilities]"),
        "{no_http}"
    );

    let kinds: Vec<_> = report
        .refused
        .iter()
        .map(|e| std::mem::discriminant(&e.kind))
        .collect();
    assert!(
        kinds.contains(&std::mem::discriminant(&LoadErrorKind::MissingManifest(
            String::new()
        )))
    );
}

#[test]
fn compiled_code_is_cached_outside_the_plugin_directory() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = || {
        Runtime::new(RuntimeConfig {
            cache_dir: cache.path().join("compiled"),
            limits: test_limits(),
        })
        .unwrap()
    };
    let wasm = plugin_dir().join("fixture-source.wasm");
    assert!(!runtime().is_compiled(&wasm));
    let first = runtime().load(&wasm).unwrap();
    assert_eq!(first.origin, CompileOrigin::Compiled);
    assert!(runtime().is_compiled(&wasm));
    let second = runtime().load(&wasm).unwrap();
    assert_eq!(second.origin, CompileOrigin::Cached);

    // A damaged cache entry is discarded and recompiled, not trusted.
    let entries = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(cache.path().join("compiled"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    for entry in entries() {
        std::fs::write(entry, b"not machine code").unwrap();
    }
    let third = runtime().load(&wasm).unwrap();
    assert_eq!(third.origin, CompileOrigin::Compiled);
    assert_eq!(runtime().load(&wasm).unwrap().origin, CompileOrigin::Cached);

    // A tampered entry (one byte of its machine code changed, the rest
    // intact) is refused by its authentication tag, never loaded.
    for entry in entries() {
        let mut bytes = std::fs::read(&entry).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&entry, bytes).unwrap();
    }
    assert_eq!(
        runtime().load(&wasm).unwrap().origin,
        CompileOrigin::Compiled
    );
    // An entry signed with another key (the key replaced) is refused too.
    std::fs::write(cache.path().join("compiled.key"), [7u8; 32]).unwrap();
    assert_eq!(
        runtime().load(&wasm).unwrap().origin,
        CompileOrigin::Compiled
    );
    assert_eq!(runtime().load(&wasm).unwrap().origin, CompileOrigin::Cached);
}

/// A cache directory other users can write to is not used: nothing is
/// loaded from it (every load compiles), and nothing is written to it.
#[cfg(unix)]
#[test]
fn a_cache_directory_others_can_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let shared = tempfile::tempdir().unwrap();
    // Writable by everyone, not sticky: anyone could swap the cache.
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let runtime = || {
        Runtime::new(RuntimeConfig {
            cache_dir: shared.path().join("compiled"),
            limits: test_limits(),
        })
        .unwrap()
    };
    let wasm = plugin_dir().join("fixture-source.wasm");
    assert_eq!(
        runtime().load(&wasm).unwrap().origin,
        CompileOrigin::Compiled
    );
    assert_eq!(
        runtime().load(&wasm).unwrap().origin,
        CompileOrigin::Compiled
    );
    assert!(!runtime().is_compiled(&wasm));
    let written = std::fs::read_dir(shared.path().join("compiled"))
        .unwrap()
        .count();
    assert_eq!(written, 0);
}

#[tokio::test]
async fn describe_and_validate_config_need_no_session() {
    let runtime = runtime();
    let source = fixture(&runtime, "fixture-source");
    let description = source.describe().await.unwrap();
    assert_eq!(description.name, "fixture-source");
    assert_eq!(description.kind, PluginKind::Source);
    assert!(description.acknowledgement.is_none());
    let schema: serde_json::Value = serde_json::from_str(&description.config_schema).unwrap();
    assert_eq!(schema["type"], "object");

    assert!(source.validate_config("{}").await.unwrap().is_empty());
    let problems = source
        .validate_config(r#"{"events_per_poll": "many"}"#)
        .await
        .unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "events_per_poll");
    let problems = source.validate_config(r#"{"evnts": 1}"#).await.unwrap();
    assert!(
        problems[0].message.contains("unknown field `evnts`"),
        "{problems:?}"
    );

    let destination = fixture(&runtime, "fixture-destination");
    let description = destination.describe().await.unwrap();
    assert_eq!(description.kind, PluginKind::Destination);
    assert_eq!(
        description.acknowledgement,
        Some(safd_connector::Acknowledgement::DurableCommit)
    );
}

#[tokio::test]
async fn a_plugin_is_only_used_as_its_own_kind() {
    let runtime = runtime();
    let source = fixture(&runtime, "fixture-source");
    let err = source
        .destination("x", "{}".into(), &no_grants())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is a source but is used as a destination"),
        "{err}"
    );
}
