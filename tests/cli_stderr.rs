//! Progress output never blocks the engine (issue 9): hyops runs the binary as a subprocess,
//! and a parent that does not read stderr fills the pipe (64 KiB on Linux). Before, the next
//! progress line blocked the runtime's workers and the apply stalled for ever; now progress
//! lines that find no room are dropped and the apply finishes.

use crate::common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn an_apply_whose_stderr_nobody_reads_still_finishes() {
    let home = tempfile::tempdir().unwrap();
    let overlay = home.path().join("pool.yml");
    // 300 VMs print ~80 KiB of progress lines: more than the pipe holds
    std::fs::write(
        &overlay,
        common::pool::pool_overlay(
            300,
            "disk_size_gb: 40\npost_apply_ssh_readiness: {connectivity_wait_s: 30}\n",
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyops-pve"))
        .args(["apply", "--sim", "--env", "dev", "--inputs"])
        .arg(&overlay)
        .env_remove("HYOPS_ENV")
        .env_remove("HYOPS_RUNTIME_ROOT")
        .env("HYOPS_PVE_SIM_HOME", home.path())
        .env("HYOPS_PVE_SIM_TIME_SCALE", "0.0005")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()) // never read while it runs
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the apply stalled on its undrained stderr");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = reader.join().unwrap();
    assert!(status.success(), "exit {status:?}; stdout: {out}");
    assert!(out.contains("apply ok: 300 created"), "{out}");
    // what the pipe kept is the start of the run, in order
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("progress: phase=apply"), "{err}");
}
