//! The run lock across processes: the test binary re-executes itself as the holder.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use hyops_pve::hyops::*;

const CHILD_ENV: &str = "HYOPS_LOCK_TEST_CHILD_ROOT";

/// The harness name of `test` in this file: its module path without the crate
/// (`hyops_lock::zz_child_process_helper` in the suite), for `--exact`.
fn harness_name(test: &str) -> String {
    match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::{test}"),
        None => test.to_string(),
    }
}
fn mref() -> ModuleRef {
    ModuleRef::parse(MODULE_REF).unwrap()
}

/// Not a test of its own: when re-executed with `HYOPS_LOCK_TEST_CHILD_ROOT`, hold the lock
/// until stdin closes. Without the variable it does nothing.
#[test]
fn zz_child_process_helper() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let r = RuntimeRoot::at(Path::new(&root));
    let _lock = acquire_lock(
        &r,
        &mref(),
        None,
        "apply-20260101T000000Z-c0ffee00",
        Duration::from_secs(5),
    )
    .unwrap();
    println!("LOCKED");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn spawn_holder(root: &Path) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &harness_name("zz_child_process_helper"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child exited before locking"
        );
        if line.contains("LOCKED") {
            break;
        }
        assert!(Instant::now() < deadline, "child never locked");
    }
    (child, out)
}

#[test]
fn second_process_is_refused_with_holder_run_id_and_pid() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    let (mut child, _out) = spawn_holder(d.path());
    let e = acquire_lock(
        &r,
        &mref(),
        None,
        "apply-parent",
        Duration::from_millis(300),
    )
    .unwrap_err()
    .to_string();
    let path = r.lock_file(&mref(), None);
    assert!(e.contains("another hyops-pve run holds the lock for platform/onprem/platform-vm (slot latest): run_id=apply-20260101T000000Z-c0ffee00"), "{e}");
    assert!(e.contains(&format!("pid={}", child.id())), "{e}");
    assert!(e.contains(&format!("remove {}", path.display())), "{e}");
    // Release: close the child's stdin, it exits, and a waiting acquire then succeeds.
    drop(child.stdin.take());
    let lock = acquire_lock(&r, &mref(), None, "apply-parent", Duration::from_secs(20)).unwrap();
    assert_eq!(lock.path(), path);
    child.wait().unwrap();
}

#[test]
fn killed_holder_lock_is_released_by_the_kernel_and_reported_stale() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    let (mut child, _out) = spawn_holder(d.path());
    let pid = child.id();
    child.kill().unwrap(); // SIGKILL: no Drop runs, the lock file stays behind
    child.wait().unwrap();
    assert!(r.lock_file(&mref(), None).exists());
    let lock = acquire_lock(&r, &mref(), None, "apply-parent", Duration::from_secs(2)).unwrap();
    let stale = lock
        .stale_previous
        .clone()
        .expect("previous holder recorded");
    assert_eq!(
        (stale.run_id.as_str(), stale.pid),
        ("apply-20260101T000000Z-c0ffee00", pid)
    );
}

#[test]
fn slots_lock_independently_and_release_on_drop() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    let inst = StateInstance::parse("pool").unwrap();
    let a = acquire_lock(&r, &mref(), None, "apply-a", Duration::ZERO).unwrap();
    let b = acquire_lock(&r, &mref(), Some(&inst), "apply-b", Duration::ZERO).unwrap();
    let e = acquire_lock(&r, &mref(), Some(&inst), "apply-c", Duration::ZERO)
        .unwrap_err()
        .to_string();
    assert!(e.contains("(slot instance:pool): run_id=apply-b"), "{e}");
    drop(b);
    assert!(!r.lock_file(&mref(), Some(&inst)).exists());
    assert!(acquire_lock(&r, &mref(), Some(&inst), "apply-c", Duration::ZERO).is_ok());
    drop(a);
}
