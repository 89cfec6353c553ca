//! Whole-process behaviour: `hyops-pve sim serve` as a standalone HTTPS server that another
//! client uses with its CA, and Ctrl-C during an apply (exit 130, the state says why).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hyops-pve"));
    c.env_remove("HYOPS_ENV").env_remove("HYOPS_RUNTIME_ROOT");
    c
}

fn sigint(child: &Child) {
    // SAFETY: kill(2) with a pid we spawned and own; no memory is touched.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
}

/// Read stdout lines until `pred` matches one (bounded), returning all lines read.
fn read_until(child: &mut Child, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let out = child.stdout.take().unwrap();
    read_lines_until(out, pred)
}

/// [`read_until`] on any pipe (progress lines are on stderr).
fn read_lines_until(
    out: impl std::io::Read + Send + 'static,
    pred: impl Fn(&str) -> bool,
) -> Vec<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // keep draining after the test stopped listening, so the child never writes into
        // a closed pipe
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            let done = pred(&l);
            lines.push(l);
            if done {
                return lines;
            }
        }
    }
    panic!("expected output never came; got {lines:#?}");
}

#[tokio::test]
async fn sim_serve_answers_another_client_over_verified_https() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let ca = dir.path().join("ca.pem");
    let mut child = bin()
        .args([
            "sim",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--time-scale",
            "0.001",
            "--state",
        ])
        .arg(&state)
        .env("TMPDIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = read_until(&mut child, |l| l.starts_with("templates:"));
    let url = lines
        .iter()
        .find_map(|l| l.strip_prefix("Proxmox VE simulator listening on "))
        .unwrap()
        .trim()
        .to_string();
    let auth = lines
        .iter()
        .find_map(|l| l.strip_prefix("Authorization: "))
        .unwrap()
        .trim()
        .to_string();
    let pem_path = lines
        .iter()
        .find_map(|l| l.strip_prefix("CA PEM written to "))
        .unwrap()
        .trim()
        .to_string();
    std::fs::copy(&pem_path, &ca).unwrap();
    let cert = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(cert)
        .build()
        .unwrap();
    let res: serde_json::Value = client
        .get(format!("{url}/cluster/resources?type=vm"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let templates: Vec<&serde_json::Value> = res["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["template"] == 1)
        .collect();
    assert!(!templates.is_empty(), "{res}");
    let denied = client.get(format!("{url}/version")).send().await.unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    sigint(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(state.exists(), "the state is saved on Ctrl-C");
}

#[test]
fn ctrl_c_during_apply_exits_130_and_records_the_cancellation() {
    let home = tempfile::tempdir().unwrap();
    let demo = format!(
        "{}/examples/inputs.sim-demo.yml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = bin()
        .args(["apply", "--sim", "--env", "dev", "--inputs", &demo])
        .env("HYOPS_PVE_SIM_HOME", home.path())
        // slow clones: the apply is still running when the signal arrives
        .env("HYOPS_PVE_SIM_TIME_SCALE", "0.05")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `run record:` and `progress:` are human progress: stderr.
    let err = child.stderr.take().unwrap();
    let lines = read_lines_until(err, |l| l.starts_with("progress: phase=apply"));
    std::thread::sleep(Duration::from_millis(500));
    sigint(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{lines:#?}");
    let root = home.path().join("envs/dev");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            root.join("state/modules/platform__onprem__platform-vm/latest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(state["status"], "error");
    assert!(state["last_error"].as_str().unwrap().contains("cancelled"));
    let run = lines
        .iter()
        .find_map(|l| l.strip_prefix("run record: "))
        .unwrap();
    assert!(std::path::Path::new(run.trim())
        .join("cancelled.json")
        .exists());
    // Every journalled step that started has its end line, most of them `cancelled`.
    let journal =
        std::fs::read_to_string(std::path::Path::new(run.trim()).join("apply_journal.jsonl"))
            .unwrap();
    let mut open: std::collections::BTreeMap<(String, String), i32> = Default::default();
    let mut cancelled = 0;
    for line in journal.lines() {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (
            ev["vm"].as_str().unwrap().to_string(),
            ev["action"].as_str().unwrap().to_string(),
        );
        match ev["event"].as_str().unwrap() {
            "start" => *open.entry(key).or_default() += 1,
            _ => {
                *open.entry(key).or_default() -= 1;
                if ev["result"] == "cancelled" {
                    cancelled += 1;
                }
            }
        }
    }
    assert!(
        open.values().all(|n| *n == 0),
        "a step without its end line: {open:?}\n{journal}"
    );
    assert!(cancelled > 0, "{journal}");
}

#[test]
fn a_fault_file_with_an_unknown_key_is_refused_by_sim_serve_and_apply() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("faults.yml");
    std::fs::write(&bad, "rules:\n  - rate: 0.1\n    actoin: {kind: reset}\n").unwrap();
    let serve = bin()
        .args(["sim", "serve", "--listen", "127.0.0.1:0", "--faults"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(serve.status.code(), Some(1));
    let err = String::from_utf8_lossy(&serve.stderr);
    assert!(
        err.contains("actoin") && err.contains("faults.yml"),
        "{err}"
    );
    let demo = format!(
        "{}/examples/inputs.sim-demo.yml",
        env!("CARGO_MANIFEST_DIR")
    );
    let apply = bin()
        .args([
            "apply",
            "--sim",
            "--env",
            "dev",
            "--inputs",
            &demo,
            "--sim-faults",
        ])
        .arg(&bad)
        .env("HYOPS_PVE_SIM_HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(apply.status.code(), Some(1));
    let err = String::from_utf8_lossy(&apply.stderr);
    assert!(err.contains("actoin"), "{err}");
}

#[test]
fn apply_with_the_chaos_fault_file_converges_on_the_simulator() {
    let home = tempfile::tempdir().unwrap();
    let dir = env!("CARGO_MANIFEST_DIR");
    let demo = format!("{dir}/examples/inputs.sim-demo.yml");
    let faults = format!("{dir}/examples/faults.chaos.yml");
    let run = |cmd: &str| {
        bin()
            .args([
                cmd,
                "--sim",
                "--env",
                "dev",
                "--inputs",
                &demo,
                "--sim-faults",
                &faults,
            ])
            .env("HYOPS_PVE_SIM_HOME", home.path())
            .env("HYOPS_PVE_SIM_TIME_SCALE", "0.002")
            .output()
            .unwrap()
    };
    let first = run("apply");
    let ok = first.status.success() || run("apply").status.success();
    assert!(ok, "{}", String::from_utf8_lossy(&first.stderr));
    let mut plan = bin();
    plan.args([
        "plan",
        "--sim",
        "--env",
        "dev",
        "--inputs",
        &demo,
        "--detailed-exitcode",
    ])
    .env("HYOPS_PVE_SIM_HOME", home.path())
    .env("HYOPS_PVE_SIM_TIME_SCALE", "0.002");
    assert_eq!(plan.output().unwrap().status.code(), Some(0));
}
