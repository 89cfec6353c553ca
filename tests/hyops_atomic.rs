//! Atomic writes survive SIGKILL: a child process rewrites a large JSON file in a loop and is
//! killed at arbitrary moments; the target is always the old or the new complete content, and
//! the temp files the kills leave are removed by the next run's recovery.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hyops_pve::hyops::fsio::{remove_stale_temps, render_json, write_bytes_atomic};
use hyops_pve::hyops::write_json_atomic;
use serde_json::{json, Value};

const CHILD_ENV: &str = "HYOPS_ATOMIC_TEST_CHILD_TARGET";
const SIZE: usize = 3 * 1024 * 1024;

/// The harness name of `test` in this file: its module path without the crate
/// (`hyops_atomic::zz_child_writer_helper` in the suite), for `--exact`.
fn harness_name(test: &str) -> String {
    match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::{test}"),
        None => test.to_string(),
    }
}
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

/// The temp files beside `target` (`.<name>.tmp-<pid>-<hex>`).
fn temps_beside(target: &Path) -> Vec<String> {
    std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// Kill a writer child `rounds` times; return how many times the target was partial.
fn partial_reads(control: bool, rounds: u64) -> u64 {
    let d = tempfile::tempdir().unwrap();
    partial_reads_in(d.path(), control, rounds)
}

fn partial_reads_in(dir: &Path, control: bool, rounds: u64) -> u64 {
    let target = dir.join("state/latest.json");
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
                &harness_name("zz_child_writer_helper"),
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
fn sigkill_mid_write_never_leaves_a_partial_file_and_recovery_removes_the_temp_files() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(partial_reads_in(d.path(), false, 20), 0);
    let target = d.path().join("state/latest.json");
    let left = temps_beside(&target);
    // Kills land mid-write nearly always (the write and fsync of 3 MB is the loop's time), so
    // 20 kills leave temp files: what the recovery must clean.
    assert!(
        !left.is_empty(),
        "no kill left a temp file; the test proves nothing"
    );
    let removed = remove_stale_temps(&target);
    assert_eq!(removed.len(), left.len(), "{left:?}");
    assert_eq!(temps_beside(&target), Vec::<String>::new());
}

/// A dead process's pid (a child that has exited and been reaped).
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn recovery_keeps_the_temp_file_of_a_live_writer_and_other_targets() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("latest.json");
    let stale = d
        .path()
        .join(format!(".latest.json.tmp-{}-00000000000000aa", dead_pid()));
    let live = d.path().join(".latest.json.tmp-1-00000000000000bb"); // pid 1 is always alive
    let other = d
        .path()
        .join(format!(".other.json.tmp-{}-00000000000000cc", dead_pid()));
    for f in [&stale, &live, &other] {
        std::fs::write(f, "x").unwrap();
    }
    assert_eq!(remove_stale_temps(&target), vec![stale.clone()]);
    assert!(!stale.exists() && live.exists() && other.exists());
}

/// The recovery runs where it matters: a mutating run's start, under the slot lock, for the
/// slot's state file and rerun inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_removes_the_temp_files_a_killed_run_left_in_its_slot() {
    let h = common::Harness::start().await;
    let state_dir = h.root().join("state/modules/platform__onprem__platform-vm");
    let rerun_dir = h
        .root()
        .join("config/modules/platform__onprem__platform-vm");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::create_dir_all(&rerun_dir).unwrap();
    let stale_state = state_dir.join(format!(".latest.json.tmp-{}-0123456789abcdef", dead_pid()));
    let stale_rerun = rerun_dir.join(format!(
        ".latest.inputs.yml.tmp-{}-0123456789abcdef",
        dead_pid()
    ));
    std::fs::write(&stale_state, "{\"half\": ").unwrap();
    std::fs::write(&stale_rerun, "vms:").unwrap();
    let ctx = h.ctx(&h.overlay("o.yml", common::DEMO)).await;
    hyops_pve::commands::module::apply_inner(&ctx, None, None)
        .await
        .unwrap();
    assert!(!stale_state.exists(), "state temp file left");
    assert!(!stale_rerun.exists(), "rerun temp file left");
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
