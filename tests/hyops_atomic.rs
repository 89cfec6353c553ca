//! Atomic writes survive SIGKILL: a child process rewrites a large JSON file in a loop and is
//! killed at arbitrary moments; the target is always the old or the new complete content.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hyops_pve::hyops::fsio::{render_json, write_bytes_atomic};
use hyops_pve::hyops::write_json_atomic;
use serde_json::{json, Value};

const CHILD_ENV: &str = "HYOPS_ATOMIC_TEST_CHILD_TARGET";
const SIZE: usize = 3 * 1024 * 1024;

fn content(fill: char) -> Value {
    json!({"fill": fill.to_string().repeat(SIZE), "marker": fill.to_string()})
}

/// Not a test of its own: when re-executed with the env var, rewrite the target forever.
#[test]
fn zz_child_writer_helper() {
    let Ok(target) = std::env::var(CHILD_ENV) else {
        return;
    };
    // Render once so the loop spends its time writing (the window a kill must hit).
    let (a, b) = (render_json(&content('a')), render_json(&content('b')));
    let non_atomic = std::env::var("HYOPS_ATOMIC_TEST_CONTROL").is_ok();
    println!("WRITING");
    std::io::stdout().flush().unwrap();
    loop {
        for v in [&b, &a] {
            if non_atomic {
                std::fs::write(&target, v).unwrap();
            } else {
                write_bytes_atomic(Path::new(&target), v.as_bytes()).unwrap();
            }
        }
    }
}

/// Kill a writer child `rounds` times; return how many times the target was partial.
fn partial_reads(control: bool, rounds: u64) -> u64 {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("state/latest.json");
    let (a, b) = (render_json(&content('a')), render_json(&content('b')));
    write_json_atomic(&target, &content('a')).unwrap();
    let mut partial = 0;
    for round in 0..rounds {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        if control {
            cmd.env("HYOPS_ATOMIC_TEST_CONTROL", "1");
        }
        let mut child = cmd
            .args([
                "--exact",
                "zz_child_writer_helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &target)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("WRITING") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
        }
        std::thread::sleep(Duration::from_millis(5 + (round * 37) % 60));
        child.kill().unwrap();
        child.wait().unwrap();
        let now = std::fs::read_to_string(&target).unwrap_or_default();
        if now != a && now != b {
            partial += 1;
        }
    }
    partial
}

#[test]
fn sigkill_mid_write_never_leaves_a_partial_file() {
    assert_eq!(partial_reads(false, 20), 0);
}

/// The control: plain `fs::write` under the same kills does leave partial files, which shows
/// the test above can fail.
#[test]
fn control_plain_write_is_caught_partial() {
    assert!(
        partial_reads(true, 20) > 0,
        "the kill never hit a plain write"
    );
}
