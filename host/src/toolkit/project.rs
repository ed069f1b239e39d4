//! A plugin project on disk: `NAME.toml` (the manifest), `NAME.wasm` (what `plugin build`
//! makes) and `.portcullis/project.toml` (name and language, written by `plugin new`).
//!
//! `plugin test` also works on a directory that is not a project: one with exactly one
//! `NAME.wasm` next to its `NAME.toml`.

use anyhow::Context as _;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where `plugin new` records the project, and keeps the SDKs, WIT and caches.
pub(crate) const META_DIR: &str = ".portcullis";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Lang {
    Rust,
    Js,
    Python,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Inbound,
    Outbound,
    Endpoint,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Inbound => "inbound",
            Kind::Outbound => "outbound",
            Kind::Endpoint => "endpoint",
        }
    }
    /// The WIT world a plugin of this kind implements.
    pub(crate) fn world(self) -> &'static str {
        match self {
            Kind::Endpoint => "endpoint",
            _ => "filter",
        }
    }
}

impl Lang {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
        }
    }
}

/// `.portcullis/project.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProjectFile {
    pub(crate) name: String,
    pub(crate) lang: Lang,
    pub(crate) kind: Kind,
    /// The `portcullis` version that wrote the SDKs into `.portcullis/`.
    pub(crate) toolkit: String,
}

/// A plugin found in a directory.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub(crate) dir: PathBuf,
    pub(crate) name: String,
    /// Present for projects made by `plugin new`.
    pub(crate) project: Option<ProjectFile>,
}

impl Located {
    pub(crate) fn manifest(&self) -> PathBuf {
        self.dir.join(format!("{}.toml", self.name))
    }
    pub(crate) fn wasm(&self) -> PathBuf {
        self.dir.join(format!("{}.wasm", self.name))
    }
}

/// The gateway's rule for plugin names (`plugin::registry`): 1-64 of a-z, 0-9, `-`, `_`.
/// New projects also start with a letter, so the name is a valid crate and package name.
pub(crate) fn check_new_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    anyhow::ensure!(
        ok,
        "plugin name {name:?}: 1-64 characters of a-z, 0-9, `-` and `_`, starting with a letter \
         (the gateway loads it as NAME.wasm + NAME.toml)"
    );
    Ok(())
}

pub(crate) fn read_project(dir: &Path) -> anyhow::Result<Option<ProjectFile>> {
    let path = dir.join(META_DIR).join("project.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

/// Finds the plugin in `dir`: the project `plugin new` made, or the one `NAME.wasm` with a
/// `NAME.toml` beside it.
pub(crate) fn locate(dir: &Path) -> anyhow::Result<Located> {
    anyhow::ensure!(dir.is_dir(), "{}: not a directory", dir.display());
    if let Some(p) = read_project(dir)? {
        return Ok(Located {
            dir: dir.to_path_buf(),
            name: p.name.clone(),
            project: Some(p),
        });
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            let stem = n.strip_suffix(".wasm")?.to_string();
            dir.join(format!("{stem}.toml")).is_file().then_some(stem)
        })
        .collect();
    names.sort();
    match names.len() {
        1 => Ok(Located {
            dir: dir.to_path_buf(),
            name: names.remove(0),
            project: None,
        }),
        0 => anyhow::bail!(
            "{}: no plugin here: neither {META_DIR}/project.toml (made by `portcullis plugin new`) \
             nor a NAME.wasm with its NAME.toml",
            dir.display()
        ),
        _ => anyhow::bail!(
            "{}: several plugins ({}): pass --dir to a directory with one",
            dir.display(),
            names.join(", ")
        ),
    }
}
