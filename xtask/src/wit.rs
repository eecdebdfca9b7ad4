//! The connector contract as a binary WIT package: what `wasm-tools
//! component wit --wasm` writes, for tools of other languages that take a
//! package rather than a directory of `.wit` files. Made here with the
//! libraries wasm-tools itself uses, so no tool has to be installed.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The WIT package's directory (the SDK carries it; `wit/` at the top of
/// the repository points there).
pub fn wit_dir(root: &Path) -> PathBuf {
    root.join("plugins/sdk/wit")
}

/// Encode the package in `dir` (with its `deps/`): its file name
/// (`safd-connector-0.2.1.wasm`) and bytes.
pub fn binary_package(dir: &Path) -> Result<(String, Vec<u8>)> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _files) = resolve
        .push_dir(dir)
        .with_context(|| format!("reading the WIT package in {}", dir.display()))?;
    let name = &resolve.packages[package].name;
    let Some(version) = &name.version else {
        bail!("the WIT package {name} has no version");
    };
    let file = format!("{}-{}-{version}.wasm", name.namespace, name.name);
    let bytes = wit_component::encode(&resolve, package)
        .with_context(|| format!("encoding the WIT package {name}"))?;
    Ok((file, bytes))
}

/// Write the binary package into `out`; returns its path.
pub fn write(root: &Path, out: &Path) -> Result<PathBuf> {
    let (file, bytes) = binary_package(&wit_dir(root))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(file);
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_binary_package_decodes_to_the_contract_with_both_worlds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (file, bytes) = binary_package(&wit_dir(&root)).unwrap();
        assert!(file.starts_with("safd-connector-"), "{file}");
        let wit_component::DecodedWasm::WitPackage(resolve, package) =
            wit_component::decode(&bytes).unwrap()
        else {
            panic!("not a WIT package");
        };
        let package = &resolve.packages[package];
        assert_eq!(package.name.to_string(), "safd:connector@0.2.1");
        for world in ["source", "destination"] {
            assert!(package.worlds.contains_key(world), "{world}");
        }
        for interface in [
            "types",
            "log",
            "source-connector",
            "destination-connector",
            "tls",
        ] {
            assert!(package.interfaces.contains_key(interface), "{interface}");
        }
    }
}
