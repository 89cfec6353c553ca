//! One mechanism for tests that need something outside the crate (the shared reference files,
//! fakepve, upstream hyops, a real NetBox, OpenSSH's sshd, ansible-vault, a real PVE).
//!
//! A target that is missing either
//! - fails the test, when its switch `HYOPS_REQUIRE_<NAME>=1` is set (CI sets the switch for
//!   every target it installs, so a broken install can never pass as a skip), or
//! - prints `SKIPPED <target>: <why> (set HYOPS_REQUIRE_<NAME>=1 to make it required)` once per
//!   test process, written straight to the process's stderr so the test harness's output
//!   capture cannot hide it, and the test returns without asserting anything.
//!
//! Use: `let Some(x) = optional::require("upstream hyops", "UPSTREAM", probe) else { return };`
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Mutex;

/// The environment variable that makes `name` required: `HYOPS_REQUIRE_<NAME>`.
pub fn switch_var(name: &str) -> String {
    format!("HYOPS_REQUIRE_{}", name.to_ascii_uppercase())
}

/// True when the switch for `name` is set to `1` (or `true`/`yes`).
pub fn is_required(name: &str) -> bool {
    matches!(
        std::env::var(switch_var(name)).as_deref().map(str::trim),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// Run `probe`; on `Ok` hand its value back, on `Err(why)` fail (required) or skip visibly.
/// `target` is the human label (`"fakepve"`), `name` the switch suffix (`"FAKEPVE"`).
pub fn require<T>(
    target: &str,
    name: &str,
    probe: impl FnOnce() -> Result<T, String>,
) -> Option<T> {
    match probe() {
        Ok(v) => Some(v),
        Err(why) => {
            if is_required(name) {
                panic!(
                    "{target} is required here ({}=1) but unavailable: {why}",
                    switch_var(name)
                );
            }
            skipped(
                target,
                &format!("{why} (set {}=1 to make it required)", switch_var(name)),
            );
            None
        }
    }
}

/// Print one `SKIPPED <target>: <why>` line per target and process, past output capture.
pub fn skipped(target: &str, why: &str) {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let first = SEEN
        .lock()
        .map(|mut s| s.insert(target.to_string()))
        .unwrap_or(true);
    if first {
        let _ = writeln!(std::io::stderr().lock(), "SKIPPED {target}: {why}");
    }
}
