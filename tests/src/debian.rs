//! Debian packages the tests need (chromium for the dashboard, redis-server for rate limits),
//! installed on first use when missing (as root, with apt-get), so `cargo test` on a fresh
//! machine needs no manual step.

use std::process::{Command, Stdio};
use std::sync::Mutex;

/// One install at a time: apt holds a lock, and two tests may want packages at once.
static INSTALL: Mutex<()> = Mutex::new(());

/// Installs `packages` unless every path in `provides` exists. Panics with `who`'s reason
/// when apt-get cannot install them.
pub(crate) fn ensure(provides: &[&str], packages: &[&str], who: &str) {
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if provides.iter().all(|p| std::path::Path::new(p).exists()) {
        return;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut install = vec!["install", "-y", "-qq"];
    install.extend_from_slice(packages);
    if !apt(&install) {
        // A fresh machine has no package lists yet.
        let _ = apt(&["update", "-qq"]);
        assert!(
            apt(&install),
            "{who} need Debian's {}: `apt-get install {}` failed",
            packages.join(" and "),
            packages.join(" ")
        );
    }
}
