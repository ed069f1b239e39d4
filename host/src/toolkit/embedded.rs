//! The SDKs and WIT this binary carries (embedded by `host/build.rs`), written into a
//! project's `.portcullis/` directory by `plugin new`.
//!
//! The layout under `.portcullis/` mirrors the repository (`sdk/`, `sdk/harness/`, `sdk/js/`,
//! `sdk/python/`, `wit/`), so the relative paths the SDKs use (`../wit` in the Rust SDK's
//! bindings) hold as they are. The Rust crates inherit package fields from the repository's
//! workspace (`version.workspace = true`); outside it those are resolved from the embedded
//! workspace `Cargo.toml`, so a project builds without this repository.

use anyhow::Context as _;
use std::path::Path;

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// Every embedded file under `prefix` (`"sdk/"`, `"wit/"`), as (path, contents).
pub(crate) fn under(prefix: &'static str) -> impl Iterator<Item = (&'static str, &'static [u8])> {
    FILES
        .iter()
        .copied()
        .filter(move |(p, _)| p.starts_with(prefix))
}

/// Whether the binary carries anything under `prefix` (e.g. `"sdk/js/"`).
pub(crate) fn has(prefix: &'static str) -> bool {
    under(prefix).next().is_some()
}

/// Writes the SDKs and the WIT into `dest` (the project's `.portcullis/`), replacing what an
/// earlier `plugin new` or `plugin build` wrote there. Returns the number of files.
pub(crate) fn write_all(dest: &Path) -> anyhow::Result<usize> {
    let workspace = workspace_table()?;
    let mut n = 0;
    for (rel, bytes) in under("sdk/").chain(under("wit/")) {
        let path = dest.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let contents = if rel.ends_with("Cargo.toml") {
            let text = std::str::from_utf8(bytes).with_context(|| format!("{rel}: not UTF-8"))?;
            standalone_manifest(text, &workspace)
                .with_context(|| format!("{rel}: resolving workspace inheritance"))?
                .into_bytes()
        } else {
            bytes.to_vec()
        };
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        n += 1;
    }
    Ok(n)
}

fn workspace_table() -> anyhow::Result<toml::Table> {
    let (_, bytes) = FILES
        .iter()
        .find(|(p, _)| *p == "Cargo.toml")
        .context("the workspace Cargo.toml is not embedded")?;
    let root: toml::Table = toml::from_str(std::str::from_utf8(bytes)?)?;
    root.get("workspace")
        .and_then(|w| w.as_table())
        .cloned()
        .context("the embedded Cargo.toml has no [workspace]")
}

/// A crate manifest with every `workspace = true` replaced by the workspace's value
/// (`[package]` fields, dependencies, `[lints]`), so it builds outside the workspace.
pub(crate) fn standalone_manifest(text: &str, ws: &toml::Table) -> anyhow::Result<String> {
    let mut m: toml::Table = toml::from_str(text)?;
    let empty = toml::Table::new();
    let pkg_ws = ws
        .get("package")
        .and_then(|v| v.as_table())
        .unwrap_or(&empty);
    if let Some(pkg) = m.get_mut("package").and_then(|v| v.as_table_mut()) {
        for (key, value) in pkg.iter_mut() {
            if inherits(value) {
                *value = pkg_ws
                    .get(key)
                    .cloned()
                    .with_context(|| format!("package.{key}: not in [workspace.package]"))?;
            }
        }
    }
    let deps_ws = ws
        .get("dependencies")
        .and_then(|v| v.as_table())
        .unwrap_or(&empty);
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let Some(deps) = m.get_mut(section).and_then(|v| v.as_table_mut()) else {
            continue;
        };
        for (name, dep) in deps.iter_mut() {
            if inherits(dep) {
                *dep = inherited_dep(name, dep, deps_ws)?;
            }
        }
    }
    if m.get("lints").is_some_and(inherits) {
        match ws.get("lints") {
            Some(l) => m.insert("lints".into(), l.clone()),
            None => m.remove("lints"),
        };
    }
    Ok(toml::to_string(&m)?)
}

/// `x.workspace = true` or `x = { workspace = true, ... }`.
fn inherits(v: &toml::Value) -> bool {
    v.get("workspace").and_then(|w| w.as_bool()) == Some(true)
}

/// A dependency's workspace entry, with the member's own `features` and `optional` on top.
fn inherited_dep(
    name: &str,
    member: &toml::Value,
    ws: &toml::Table,
) -> anyhow::Result<toml::Value> {
    let base = ws
        .get(name)
        .with_context(|| format!("dependency {name}: not in [workspace.dependencies]"))?;
    let mut t = match base {
        toml::Value::String(v) => {
            let mut t = toml::Table::new();
            t.insert("version".into(), toml::Value::String(v.clone()));
            t
        }
        toml::Value::Table(t) => t.clone(),
        _ => anyhow::bail!("dependency {name}: unexpected workspace entry"),
    };
    if let Some(extra) = member.get("features").and_then(|f| f.as_array()) {
        let mut features = t
            .get("features")
            .and_then(|f| f.as_array())
            .cloned()
            .unwrap_or_default();
        features.extend(extra.iter().cloned());
        t.insert("features".into(), toml::Value::Array(features));
    }
    if let Some(opt) = member.get("optional") {
        t.insert("optional".into(), opt.clone());
    }
    Ok(toml::Value::Table(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_and_wit_are_embedded_and_stand_alone() {
        assert!(has("sdk/Cargo.toml"), "the Rust SDK manifest");
        assert!(has("wit/"), "the WIT");
        let (_, sdk) = under("sdk/Cargo.toml").next().expect("sdk manifest");
        let text = standalone_manifest(
            std::str::from_utf8(sdk).expect("utf-8"),
            &workspace_table().expect("workspace"),
        )
        .expect("standalone");
        assert!(!text.contains("workspace"), "{text}");
        assert!(text.contains("version = "), "{text}");
    }

    #[test]
    fn dependencies_and_lints_are_inherited() {
        let ws: toml::Table = toml::from_str(
            "[package]\nversion = '1.2.3'\n[dependencies]\nserde = { version = '1', features = ['derive'] }\n\
             [lints.clippy]\nunwrap_used = 'warn'\n",
        )
        .expect("ws");
        let out = standalone_manifest(
            "[package]\nname = 'x'\nversion.workspace = true\n\
             [dependencies]\nserde = { workspace = true, features = ['rc'] }\n[lints]\nworkspace = true\n",
            &ws,
        )
        .expect("resolved");
        let t: toml::Table = toml::from_str(&out).expect("toml");
        assert_eq!(t["package"]["version"].as_str(), Some("1.2.3"));
        let f = t["dependencies"]["serde"]["features"]
            .as_array()
            .expect("features");
        assert_eq!(f.len(), 2, "{out}");
        assert_eq!(t["lints"]["clippy"]["unwrap_used"].as_str(), Some("warn"));
        let bad = standalone_manifest("[package]\nname = 'x'\nedition.workspace = true\n", &ws);
        assert!(bad.is_err(), "a field the workspace lacks is an error");
    }
}
