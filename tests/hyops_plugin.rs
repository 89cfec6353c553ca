//! The hyops plug-in (`integrations/hyops`) on its own, with stand-in binaries: it never
//! blocks on a full pipe, and every way the binary can fail becomes one error line naming
//! `HYOPS_PVE_BIN`. The plug-in's source is imported directly (`PYTHONPATH`), so these tests
//! exercise the working tree even when an older copy is installed.

use crate::upstream_hyops;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Run `hyops_pve_driver.run(request)` with `HYOPS_PVE_BIN=bin`; returns the result.
fn run_plugin(python: &Path, bin: &Path, evidence: &Path, padding: usize) -> Value {
    run_plugin_timeout(python, bin, evidence, padding, "60")
}

/// [`run_plugin`] with `HYOPS_PVE_DRIVER_TIMEOUT_S=timeout`.
fn run_plugin_timeout(
    python: &Path,
    bin: &Path,
    evidence: &Path,
    padding: usize,
    timeout: &str,
) -> Value {
    let script = format!(
        r#"
import json, sys
import hyops_pve_driver as d
req = {{"command": "apply", "run_id": "apply-t", "evidence_dir": {ev:?},
       "inputs": {{"padding": "x" * {padding}}}}}
print(json.dumps(d.run(req)))
"#,
        ev = evidence.display().to_string()
    );
    let out = Command::new(python)
        .args(["-c", &script])
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations/hyops"),
        )
        .env("HYOPS_PVE_BIN", bin)
        .env("HYOPS_PVE_DRIVER_TIMEOUT_S", timeout)
        .env_remove("HYOPS_VERBOSE")
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("one JSON result")
}

fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn a_binary_flooding_stderr_before_reading_a_large_request_does_not_block() {
    let Some(python) = upstream_hyops::require_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 4 MiB of progress on stderr before the request is read, with a 4 MiB request: any
    // unpumped pipe (stderr, or stdin written before reading) would deadlock both sides.
    let bin = script(
        dir.path(),
        "chatty",
        r#"i=0; while [ $i -lt 65536 ]; do echo "progress: vm=app-01 step=clone status=retry detail=................................"; i=$((i+1)); done >&2
wc -c >/dev/null
echo '{"status":"ok","run_id":"apply-t","normalized_outputs":{"outputs":{}},"warnings":[]}'"#,
    );
    let ev = dir.path().join("ev");
    let r = run_plugin(&python, &bin, &ev, 4 << 20);
    assert_eq!(r["status"], "ok", "{r}");
    let log = std::fs::read_to_string(ev.join("hyops-pve.log")).unwrap();
    assert_eq!(log.matches("step=clone status=retry").count(), 65536);
    assert!(log.contains("[hyops] hyops_pve_apply end rc=0"));
}

#[test]
fn every_binary_failure_is_one_error_line_naming_hyops_pve_bin() {
    let Some(python) = upstream_hyops::require_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let not_exec = dir.path().join("not-exec");
    std::fs::write(&not_exec, "not a program").unwrap();
    let cases = [
        (dir.path().join("missing"), "is not an executable file"),
        (not_exec, "is not an executable file"),
        (
            script(
                dir.path(),
                "crash",
                "echo 'thread main panicked' >&2; exit 101",
            ),
            "exited with code 101 without a result document",
        ),
        (
            script(dir.path(), "killed", "kill -9 $$"),
            "was killed by signal 9",
        ),
        (
            script(dir.path(), "garbage", "cat >/dev/null; echo 'not json'"),
            "without a result document",
        ),
    ];
    for (bin, why) in cases {
        let ev = dir
            .path()
            .join(format!("ev-{}", bin.file_name().unwrap().to_string_lossy()));
        let r = run_plugin(&python, &bin, &ev, 0);
        assert_eq!(r["status"], "error", "{r}");
        let err = r["error"].as_str().unwrap();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("HYOPS_PVE_BIN"), "{err}");
        assert!(err.contains(why), "{bin:?}: {err}");
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(ev.join("driver_result.json")).unwrap())
                .unwrap();
        assert_eq!(written, r);
    }
}

#[test]
fn a_timeout_that_is_not_a_positive_number_is_an_error_naming_it_not_no_limit() {
    let Some(python) = upstream_hyops::require_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A binary that would answer ok: the bad setting must stop the call before it starts.
    let bin = script(
        dir.path(),
        "fine",
        r#"cat >/dev/null; echo '{"status":"ok","run_id":"apply-t","normalized_outputs":{},"warnings":[]}'"#,
    );
    for bad in ["30s", "0", "-5", "nan", "inf"] {
        let ev = dir.path().join(format!("ev-{bad}"));
        let r = run_plugin_timeout(&python, &bin, &ev, 0, bad);
        assert_eq!(r["status"], "error", "{bad}: {r}");
        let err = r["error"].as_str().unwrap();
        assert!(
            err.contains(&format!("HYOPS_PVE_DRIVER_TIMEOUT_S='{bad}'")),
            "{bad}: {err}"
        );
        assert!(
            !ev.join("hyops_pve_apply.result.json").exists(),
            "{bad}: the binary ran"
        );
    }
    let r = run_plugin_timeout(&python, &bin, &dir.path().join("ev-ok"), 0, "2.5");
    assert_eq!(r["status"], "ok", "{r}");
}
