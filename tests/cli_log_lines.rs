//! Log lines on stderr (found by the tester): the log subscriber wrote ANSI colour codes
//! whatever stderr was, so files, CI logs and the plug-in's `hyops-pve.log` held
//! `\x1b[2m…\x1b[33m WARN\x1b[0m …`, and a log warning did not read `WARN: <warning>` as the
//! README's stderr format (and every other warning) does.

use crate::cli_support;

use std::path::Path;

use cli_support::*;

const ESC: u8 = 0x1b;

fn apply_demo(home: &Path) {
    let mut c = bin(home);
    c.args(["apply", "--sim", "--env", "dev", "--inputs"])
        .arg(example("inputs.sim-demo.yml"));
    let o = run_sync(c);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Put the simulated VM `vmid` under `lock: clone`, as a clone interrupted by a node crash
/// leaves it; observing the pool then waits for it with a log warning.
fn lock_for_clone(home: &Path, vmid: &str) {
    let file = home.join("sim-home/envs/dev/sim/cluster-state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    state["vms"][vmid]["config"]["lock"] = "clone".into();
    std::fs::write(&file, state.to_string()).unwrap();
}

#[test]
fn a_log_warning_on_a_pipe_reads_warn_colon_without_colour_codes() {
    let home = tempfile::tempdir().unwrap();
    apply_demo(home.path());
    lock_for_clone(home.path(), "100");
    let mut c = bin(home.path());
    c.args(["plan", "--sim", "--env", "dev", "--inputs"])
        .arg(example("inputs.sim-demo.yml"));
    let o = run_sync(c); // stderr is a pipe
    let err = stderr(&o);
    assert!(
        err.lines().any(|l| l.starts_with(
            "WARN: VM 100 on node pve1 is under lock: clone (a clone in flight); waiting up to"
        )),
        "{err}"
    );
    assert!(!o.stderr.contains(&ESC), "escape codes on a pipe: {err:?}");
}

#[test]
fn verbose_log_lines_on_a_pipe_carry_no_colour_codes() {
    let home = tempfile::tempdir().unwrap();
    let mut c = bin(home.path());
    c.args(["apply", "--sim", "--env", "dev", "--verbose", "--inputs"])
        .arg(example("inputs.sim-demo.yml"));
    let o = run_sync(c);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.lines().any(|l| l.starts_with("DEBUG: ")), "{err}");
    assert!(!o.stderr.contains(&ESC), "escape codes on a pipe: {err:?}");
}
