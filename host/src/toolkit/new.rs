//! `portcullis plugin new NAME --lang L --kind K`: a project that builds as generated, with
//! the SDK and WIT this binary carries written into `.portcullis/`.

use super::embedded;
use super::project::{self, Kind, Lang, ProjectFile, META_DIR};
use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// One file of a template: where it goes in the project and its text, with `{{...}}`
/// placeholders.
struct File {
    path: String,
    text: &'static str,
}

fn file(path: impl Into<String>, text: &'static str) -> File {
    File {
        path: path.into(),
        text,
    }
}

macro_rules! tpl {
    ($p:literal) => {
        include_str!(concat!("templates/", $p))
    };
}

/// The files of a `lang` × `kind` project (the manifest, requests and README are shared).
fn template(lang: Lang, kind: Kind) -> Vec<File> {
    let mut files = vec![
        file(
            "{{name}}.toml",
            match kind {
                Kind::Inbound => tpl!("common/inbound.toml"),
                Kind::Outbound => tpl!("common/outbound.toml"),
                Kind::Endpoint => tpl!("common/endpoint.toml"),
            },
        ),
        file(
            "requests.toml",
            match kind {
                Kind::Inbound => tpl!("common/requests_inbound.toml"),
                Kind::Outbound => tpl!("common/requests_outbound.toml"),
                Kind::Endpoint => tpl!("common/requests_endpoint.toml"),
            },
        ),
        file("README.md", tpl!("common/README.md")),
    ];
    files.extend(
        super::langs::files(lang, kind)
            .into_iter()
            .map(|(p, t)| file(p, t)),
    );
    files
}

/// Placeholder values for one project.
fn vars(name: &str, lang: Lang, kind: Kind) -> Vec<(&'static str, String)> {
    let l = super::langs::info(lang);
    let files: String = l
        .files
        .iter()
        .map(|(f, what)| format!("| `{f}` | {what} |\n"))
        .collect();
    let mount = match kind {
        Kind::Endpoint => format!(
            "Mount it with a route in the gateway's config:\n\n```toml\n[[route]]\nname = \"{name}\"\n\
             match = {{ path_prefix = \"/api/{name}\" }}\nendpoint = \"{name}\"\n```\n\n"
        ),
        _ => String::new(),
    };
    vec![
        ("name", name.to_string()),
        ("crate", name.replace('-', "_")),
        ("kind", kind.as_str().to_string()),
        ("world", kind.world().to_string()),
        ("lang_name", l.display.to_string()),
        ("toolchain", l.toolchain.to_string()),
        ("unit_test", l.unit_test.to_string()),
        ("files", files),
        ("mount", mount),
        ("cpu_ms", l.cpu_ms.to_string()),
        ("timeout_ms", l.timeout_ms.to_string()),
        ("memory_mb", l.memory_mb.to_string()),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
    ]
}

fn render(text: &str, vars: &[(&'static str, String)]) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

/// What `plugin new` was asked for.
pub(crate) struct NewArgs {
    pub(crate) name: String,
    pub(crate) lang: Lang,
    pub(crate) kind: Kind,
    /// The project directory (default `./NAME`).
    pub(crate) dir: Option<PathBuf>,
    /// Rewrite only `.portcullis/` (the SDK and WIT) of an existing project.
    pub(crate) refresh: bool,
}

pub(crate) fn run(args: NewArgs) -> anyhow::Result<()> {
    project::check_new_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if args.refresh {
        let p = project::read_project(&dir)?
            .with_context(|| format!("{}: not a project made by `plugin new`", dir.display()))?;
        let n = write_meta(&dir, &p)?;
        println!(
            "{}: rewrote {n} SDK and WIT files in {META_DIR}/",
            dir.display()
        );
        return Ok(());
    }
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        anyhow::bail!(
            "{}: exists and is not empty (choose another --dir, or remove it)",
            dir.display()
        );
    }
    if !embedded::has(super::langs::info(args.lang).sdk_prefix) {
        anyhow::bail!(
            "this portcullis binary carries no {} SDK ({} is missing from the build)",
            args.lang.as_str(),
            super::langs::info(args.lang).sdk_prefix
        );
    }
    let vars = vars(&args.name, args.lang, args.kind);
    for f in template(args.lang, args.kind) {
        let path = dir.join(render(&f.path, &vars));
        write_new(&path, render(f.text, &vars).as_bytes())?;
    }
    let p = ProjectFile {
        name: args.name.clone(),
        lang: args.lang,
        kind: args.kind,
        toolkit: env!("CARGO_PKG_VERSION").to_string(),
    };
    write_meta(&dir, &p)?;
    let l = super::langs::info(args.lang);
    println!(
        "created {} ({} {} plugin {})\n\nnext:\n  cd {}\n  portcullis plugin build\n  \
         portcullis plugin test --request requests.toml\n\nSee README.md for more ({}).",
        dir.display(),
        l.display,
        args.kind.as_str(),
        args.name,
        dir.display(),
        l.toolchain
    );
    Ok(())
}

/// `.portcullis/`: the project file, the SDKs and the WIT.
fn write_meta(dir: &Path, p: &ProjectFile) -> anyhow::Result<usize> {
    let meta = dir.join(META_DIR);
    // Old SDK files (a refresh to a newer gateway may drop some) go; caches and installed
    // toolchains stay.
    for sub in ["sdk", "wit"] {
        let d = meta.join(sub);
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    let n = embedded::write_all(&meta)?;
    let text = format!(
        "# Written by `portcullis plugin new`: what `plugin build` and `plugin test` read.\n{}",
        toml::to_string(p)?
    );
    std::fs::write(meta.join("project.toml"), text)?;
    Ok(n)
}

fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_all_filled() {
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            for kind in [Kind::Inbound, Kind::Outbound, Kind::Endpoint] {
                let vars = vars("my-plugin", lang, kind);
                for f in template(lang, kind) {
                    let text = render(f.text, &vars);
                    assert!(
                        !text.contains("{{"),
                        "{lang:?}/{kind:?} {}: unfilled placeholder in\n{text}",
                        f.path
                    );
                }
            }
        }
    }
}
