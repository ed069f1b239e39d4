//! Configuration: parse, validate, defaults.
//!
//! Why two passes: `toml` + serde with `deny_unknown_fields` catches typos and type errors
//! (the first one, with its key path), then `validate` walks the whole tree and collects
//! *every* semantic problem, so an operator fixes a config in one round, not ten.

mod model;
pub mod validate;

pub use model::*;

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a config: where (file and dotted key) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A config that failed to load: the file and every problem found in it.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}: {}", self.file.display(), p.key, p.reason)?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it (certificates,
    /// plugin directory) are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |problems| ConfigError {
            file: path.to_path_buf(),
            problems,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(vec![Problem::new("(file)", format!("cannot read: {e}"))]))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Config::parse(&text, &base).map_err(err)
    }

    /// Parses and validates config text; `base` resolves relative paths.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<Problem>> {
        let mut cfg: Config = match toml::from_str(text) {
            Ok(c) => c,
            Err(e) => return Err(vec![parse_problem(text, &e)]),
        };
        cfg.resolve_paths(base);
        let mut problems = Vec::new();
        validate::validate(&cfg, &mut problems);
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(problems)
        }
    }
}

/// Turns a toml/serde error into a `Problem` naming the key (from the span) and line.
fn parse_problem(text: &str, e: &toml::de::Error) -> Problem {
    let msg = e.message().trim().to_string();
    let (line, key) = match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let snippet = text
                .get(span.clone())
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .trim();
            (line, snippet.to_string())
        }
        None => (0, String::new()),
    };
    let key = if key.is_empty() {
        format!("line {line}")
    } else {
        format!("line {line} `{key}`")
    };
    Problem::new(key, msg)
}
