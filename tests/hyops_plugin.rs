//! The hyops plug-in (`integrations/hyops`) on its own, with stand-in binaries: it never
//! blocks on a full pipe, and every way the binary can fail becomes one error line naming
//! `HYOPS_PVE_BIN`. The plug-in's source is imported directly (`PYTHONPATH`), so these tests
//! exercise the working tree even when an older copy is installed. A full disk under the
//! evidence (RLIMIT_FSIZE, /dev/full) raises nothing, truncates nothing and loses no result.

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

/// Lines of progress the full-disk stand-in prints on stderr (~40 KB, under one pipe buffer
/// so even a dead pump would not block it) and the size of its result document (~40 KB).
const FULL_DISK_LINES: usize = 800;

/// What one plug-in call on a full disk left behind.
struct FullDisk {
    /// `{"result": …, "raised": …, "thread_errors": […]}` printed by the driving script.
    report: Value,
    /// The driving script's stderr (hyops' stderr: the `hyops -v` relay and loss lines).
    stderr: String,
    evidence: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Run `hyops_pve_driver.run` with a stand-in binary whose stderr and stdout are larger
/// than the disk allows. `fault` is Python run before the call that makes the evidence
/// disk fail: `fsize` caps every file the plug-in writes at 16 KiB (RLIMIT_FSIZE, EFBIG
/// past it, as a disk filling mid-call), `dev_full` makes every temp file /dev/full
/// (ENOSPC on the first write). The evidence dir holds a previous `hyops-pve.log` and
/// `hyops_pve_apply.stdout.txt`. Any exception in any thread is recorded, not printed.
fn run_on_full_disk(python: &Path, fault: &str, verbose: bool) -> FullDisk {
    let dir = tempfile::tempdir().unwrap();
    let bin = script(
        dir.path(),
        "bigresult",
        &format!(
            r#"cat >/dev/null
i=0; while [ $i -lt {FULL_DISK_LINES} ]; do echo "progress: vm=app-01 line=$i step=clone status=retry detail=..........."; i=$((i+1)); done >&2
pad=$(head -c 40000 /dev/zero | tr '\0' 'x')
echo "{{\"status\":\"ok\",\"run_id\":\"apply-t\",\"normalized_outputs\":{{\"vm_ids\":{{\"app-01\":101}},\"pad\":\"$pad\"}},\"warnings\":[\"from the engine\"]}}""#
        ),
    );
    let ev = dir.path().join("ev");
    std::fs::create_dir(&ev).unwrap();
    std::fs::write(ev.join("hyops-pve.log"), "previous call\n").unwrap();
    std::fs::write(ev.join("hyops_pve_apply.stdout.txt"), "previous stdout\n").unwrap();
    let faults = r#"
def fsize():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, hard))

def dev_full():
    def mkstemp(prefix="", suffix="", dir=None, text=False):
        return os.open("/dev/full", os.O_WRONLY), os.path.join(dir, prefix + "devfull" + suffix)
    tempfile.mkstemp = mkstemp
    d._open_append = lambda path: os.open("/dev/full", os.O_WRONLY)
"#;
    let script_text = format!(
        r#"
import json, os, resource, signal, sys, tempfile, threading
import hyops_pve_driver as d
thread_errors = []
threading.excepthook = lambda a: thread_errors.append(f"{{a.thread.name}}: {{a.exc_type.__name__}}: {{a.exc_value}}")
{faults}
{fault}()
req = {{"command": "apply", "run_id": "apply-t", "evidence_dir": {ev:?}, "inputs": {{}}}}
try:
    r, raised = d.run(req), None
except BaseException as e:
    r, raised = None, f"{{type(e).__name__}}: {{e}}"
print(json.dumps({{"result": r, "raised": raised, "thread_errors": thread_errors}}))
"#,
        ev = ev.display().to_string()
    );
    let mut cmd = Command::new(python);
    cmd.args(["-c", &script_text])
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations/hyops"),
        )
        .env("HYOPS_PVE_BIN", &bin)
        .env("HYOPS_PVE_DRIVER_TIMEOUT_S", "60");
    if verbose {
        cmd.env("HYOPS_VERBOSE", "1");
    } else {
        cmd.env_remove("HYOPS_VERBOSE");
    }
    let out = cmd.output().expect("python runs");
    assert!(out.status.success(), "{out:?}");
    FullDisk {
        report: serde_json::from_slice(&out.stdout).expect("one JSON report"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        evidence: ev,
        _dir: dir,
    }
}

#[test]
fn a_full_disk_under_the_evidence_raises_nothing_from_any_plugin_thread_or_into_hyops() {
    let Some(python) = upstream_hyops::require_python() else {
        return;
    };
    for fault in ["fsize", "dev_full"] {
        let run = run_on_full_disk(&python, fault, false);
        assert_eq!(
            run.report["thread_errors"],
            serde_json::json!([]),
            "{fault}"
        );
        assert_eq!(run.report["raised"], Value::Null, "{fault}");
    }
}

#[test]
fn evidence_files_on_a_full_disk_are_whole_or_as_before_never_truncated() {
    let Some(python) = upstream_hyops::require_python() else {
        return;
    };
    for fault in ["fsize", "dev_full"] {
        let run = run_on_full_disk(&python, fault, false);
        let ev = &run.evidence;
        let read = |name: &str| std::fs::read_to_string(ev.join(name)).ok();
        // Too large for the disk: left as they were (previous content, or absent).
        // The live log: its earlier lines kept, then whole lines only.
        let log = read("hyops-pve.log").unwrap();
        assert!(log.starts_with("previous call\n"), "{fault}");
        assert!(log.ends_with('\n'), "{fault}: ends in half a line");
        for line in log.lines().skip(1).filter(|l| !l.is_empty()) {
            assert!(
                line.starts_with("[hyops] hyops_pve_apply start")
                    || (line.starts_with("progress: vm=app-01 line=")
                        && line.ends_with("...........")),
                "{fault}: {line:?}"
            );
        }
        assert_eq!(
            read("hyops_pve_apply.stdout.txt").as_deref(),
            Some("previous stdout\n"),
            "{fault}"
        );
        assert_eq!(read("hyops_pve_apply.stderr.txt"), None, "{fault}");
        // Small enough to fit under the 16 KiB cap: written whole; on /dev/full: absent.
        match read("hyops_pve_apply.result.json") {
            Some(text) => {
                assert_eq!(fault, "fsize", "{text}");
                let v: Value = serde_json::from_str(&text).expect("whole JSON");
                assert_eq!(v["rc"], 0);
            }
            None => assert_eq!(fault, "dev_full"),
        }
        // No temp file is left behind.
        let mut names: Vec<String> = std::fs::read_dir(ev)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(
            names.iter().all(|n| !n.ends_with(".tmp")),
            "{fault}: {names:?}"
        );
        // Private, as before.
        for n in &names {
            let mode = std::fs::metadata(ev.join(n)).unwrap().permissions().mode() & 0o777;
            if n.starts_with("hyops_pve_apply.result") {
                assert_eq!(mode, 0o600, "{fault}: {n}");
            }
        }
    }
}

#[test]
fn the_engine_result_reaches_hyops_whole_with_one_warning_per_lost_evidence_file() {
    let Some(python) = upstream_hyops::require_python() else {
        return;
    };
    for (fault, why) in [
        ("fsize", "File too large (errno 27)"),
        ("dev_full", "No space left on device (errno 28)"),
    ] {
        let run = run_on_full_disk(&python, fault, false);
        let r = &run.report["result"];
        assert_eq!(r["status"], "ok", "{fault}: {r}");
        assert_eq!(r["normalized_outputs"]["vm_ids"]["app-01"], 101, "{fault}");
        assert_eq!(
            r["normalized_outputs"]["pad"].as_str().map(str::len),
            Some(40000),
            "{fault}"
        );
        let warnings: Vec<&str> = r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        assert_eq!(warnings[0], "from the engine", "{fault}: {warnings:?}");
        let mut lost = vec![
            "hyops-pve.log",
            "hyops_pve_apply.stderr.txt",
            "hyops_pve_apply.stdout.txt",
        ];
        if fault == "dev_full" {
            lost.push("hyops_pve_apply.result.json");
        }
        assert_eq!(warnings.len(), 1 + lost.len(), "{fault}: {warnings:?}");
        for name in lost {
            let path = run.evidence.join(name).display().to_string();
            let hits: Vec<&&str> = warnings
                .iter()
                .filter(|w| w.contains(&format!("evidence file not written: {path}: {why}")))
                .collect();
            assert_eq!(hits.len(), 1, "{fault}: {name}: {warnings:?}");
            // And once on hyops' stderr, for when hyops cannot record the result either.
            assert_eq!(
                run.stderr.matches(hits[0]).count(),
                1,
                "{fault}: {}",
                run.stderr
            );
        }
    }
}

#[test]
fn the_stderr_relay_to_hyops_goes_on_after_the_evidence_copy_fails() {
    let Some(python) = upstream_hyops::require_python() else {
        return;
    };
    let run = run_on_full_disk(&python, "fsize", true);
    assert_eq!(run.report["thread_errors"], serde_json::json!([]));
    for i in [0, FULL_DISK_LINES / 2, FULL_DISK_LINES - 1] {
        assert!(
            run.stderr
                .contains(&format!("progress: vm=app-01 line={i} step=clone")),
            "line {i} not relayed: {}",
            &run.stderr[run.stderr.len().saturating_sub(2000)..]
        );
    }
    assert_eq!(
        run.stderr.matches("step=clone status=retry").count(),
        FULL_DISK_LINES
    );
}
