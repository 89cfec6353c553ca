//! The CLI edge in a hostile environment (found by the hostile test pass on issues 7 and 14):
//! a closed stderr with verbose logging, absurd flag values, `--sim` env names that leave the
//! simulator's home, credentials carrying a password in the URL, an untrusted certificate,
//! and an oversized answer: each gets a clear error or is survived, never a panic, a leak or
//! an error that does not say what to do.

use crate::cli_support;
use crate::common;

use std::path::Path;
use std::process::Stdio;

use cli_support::*;
use common::Harness;

/// A pipe whose reader is already gone: every write fails with EPIPE.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

fn latest_state(root: &Path) -> serde_json::Value {
    let p = root.join("state/modules/platform__onprem__platform-vm/latest.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

#[test]
fn a_verbose_apply_finishes_and_records_its_state_when_stderr_is_closed() {
    // `hyops-pve apply --verbose … 2>&1 | head`: the log subscriber reported its own failed
    // write with eprintln!, which panics on a closed stderr: exit 70 half-way through the
    // apply, state left `running`, the simulated cluster not saved.
    let home = tempfile::tempdir().unwrap();
    for extra in [&["--verbose"][..], &["--json", "--verbose"][..]] {
        let mut c = bin(home.path());
        c.args(["apply", "--sim", "--env", "dev", "--inputs"])
            .arg(example("inputs.sim-demo.yml"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(closed_pipe());
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{extra:?}");
    }
    let root = home.path().join("sim-home/envs/dev");
    assert_eq!(latest_state(&root)["status"], "ok");
    assert!(
        root.join("sim/cluster-state.json").is_file(),
        "the simulated cluster was saved"
    );
}

#[test]
fn an_endless_file_named_as_input_is_refused_at_the_bound_not_read_whole() {
    // /dev/zero reports 0 bytes in its metadata: `--inputs /dev/urandom` read gigabytes
    // (7 GB resident before it was killed) because only regular files were size-checked.
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["validate", "--sim", "--env", "dev", "--inputs", "/dev/zero"][..],
        &[
            "plan",
            "--sim",
            "--env",
            "dev",
            "--sim-cluster",
            "/dev/zero",
        ][..],
        &["plan", "--sim", "--env", "dev", "--sim-faults", "/dev/zero"][..],
    ] {
        let o = run_sync({
            let mut c = bin(home.path());
            c.args(args);
            if !args.contains(&"--inputs") {
                c.arg("--inputs").arg(example("inputs.sim-demo.yml"));
            }
            c
        });
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("more than"), "{args:?}: {err}");
    }
}

#[test]
fn a_lock_wait_beyond_the_end_of_time_is_a_long_wait_not_a_panic() {
    let home = tempfile::tempdir().unwrap();
    let o = run_sync({
        let mut c = bin(home.path());
        c.args(["plan", "--sim", "--env", "dev", "--inputs"])
            .arg(example("inputs.sim-demo.yml"))
            .args(["--lock-wait-s", &u64::MAX.to_string()]);
        c
    });
    let err = stderr(&o);
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    assert_eq!(o.status.code(), Some(0), "{err}");
}

#[test]
fn sim_refuses_an_env_name_that_would_leave_the_simulator_home() {
    // `--sim --env ../../x` used to make `<sim home>/envs/../../x` the runtime root (any
    // directory, e.g. one inside ~/.hybridops) and `../../x-app-01` a VM name.
    let home = tempfile::tempdir().unwrap();
    for (env_flag, hyops_env) in [
        (Some("../../escaped"), None),
        (Some("a/b"), None),
        (None, Some("../../escaped")),
    ] {
        for command in ["plan", "apply"] {
            let mut c = bin(home.path());
            c.args([command, "--sim", "--inputs"])
                .arg(example("inputs.sim-demo.yml"));
            if let Some(e) = env_flag {
                c.args(["--env", e]);
            }
            if let Some(e) = hyops_env {
                c.env("HYOPS_ENV", e);
            }
            let o = run_sync(c);
            let err = stderr(&o);
            assert_eq!(
                o.status.code(),
                Some(1),
                "{command} {env_flag:?} {hyops_env:?}: {err}"
            );
            assert!(err.contains("not a valid env name"), "{err}");
        }
    }
    let o = run_sync({
        let mut c = bin(home.path());
        c.args(["state", "show", "--sim", "--env", "../../escaped"]);
        c
    });
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a valid env name"),
        "{}",
        stderr(&o)
    );
    assert!(!home.path().join("escaped").exists(), "nothing was created");
    assert!(!home.path().join("sim-home/escaped").exists());
}

/// Replace the `proxmox_url` line of the harness root's credentials.
fn set_url(h: &Harness, edit: impl Fn(&str) -> String) {
    let f = h.root().join("credentials/proxmox.credentials.tfvars");
    let text = std::fs::read_to_string(&f).unwrap();
    let out: Vec<String> = text
        .lines()
        .map(|l| match l.strip_prefix("proxmox_url = ") {
            Some(v) => format!("proxmox_url = \"{}\"", edit(v.trim_matches('"'))),
            None => l.to_string(),
        })
        .collect();
    std::fs::write(&f, out.join("\n") + "\n").unwrap();
}

/// Drop the certificate pin of the harness root's credentials (verification then uses the
/// system roots, which do not trust the simulator's self-signed CA, as with a fresh PVE).
fn unpin(h: &Harness) {
    let f = h.root().join("credentials/proxmox.credentials.tfvars");
    let text = std::fs::read_to_string(&f).unwrap();
    let out: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("proxmox_tls_fingerprint"))
        .collect();
    std::fs::write(&f, out.join("\n") + "\n").unwrap();
}

async fn plan_on(h: &Harness) -> std::process::Output {
    let overlay = example("inputs.sim-demo.yml");
    let mut c = bin(h.dir.path());
    c.args(["plan", "--json", "--root"])
        .arg(h.root())
        .args(["--inputs", &overlay]);
    run(c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxmox_url_carrying_a_password_is_refused_without_echoing_it() {
    let h = Harness::start().await;
    set_url(&h, |u| {
        u.replacen("https://", "https://admin:hunter2-url-pw@", 1)
    });
    let o = plan_on(&h).await;
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("proxmox_url"), "names the key: {err}");
    assert!(
        !out.contains("hunter2-url-pw") && !err.contains("hunter2-url-pw"),
        "{err}"
    );
    for f in files_under(&h.root().join("logs")) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains("hunter2-url-pw"), "{}", f.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_says_how_to_trust_it() {
    // A fresh Proxmox VE serves a self-signed certificate: the first thing a new operator
    // meets. "invalid peer certificate: UnknownIssuer" alone does not say what to do.
    let h = Harness::start().await;
    unpin(&h);
    let o = plan_on(&h).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for needle in [
        "proxmox_tls_fingerprint",
        "proxmox_ca_file",
        "pvenode cert info",
    ] {
        assert!(err.contains(needle), "names {needle}: {err}");
    }
    let doc = one_doc(&o);
    assert!(doc["error"]
        .as_str()
        .unwrap()
        .contains("proxmox_tls_fingerprint"));
}

#[test]
fn an_oversized_answer_names_the_setting_that_raises_the_bound() {
    let home = tempfile::tempdir().unwrap();
    let faults = write(
        home.path(),
        "faults.yml",
        "rules:\n  - method: GET\n    path: /cluster/resources\n    action: {kind: oversized, bytes: 20000000}\n",
    );
    let o = run_sync({
        let mut c = bin(home.path());
        c.args(["plan", "--sim", "--env", "dev", "--inputs"])
            .arg(example("inputs.sim-demo.yml"))
            .arg("--sim-faults")
            .arg(&faults);
        c
    });
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("GET /cluster/resources") && err.contains("HYOPS_PVE_MAX_RESPONSE_MIB"),
        "{err}"
    );
}

#[test]
fn sim_never_makes_its_root_inside_the_real_hyops_envs() {
    // `--sim --root ~/.hybridops/envs/<new>` (or HYOPS_PVE_SIM_HOME=~/.hybridops) used to be
    // accepted because the directory did not exist yet: the simulator then wrote its
    // credentials (a localhost URL and token) where `hyops init proxmox` and every real run
    // of that env look for them.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".hybridops/envs/prod")).unwrap();
    let cases: Vec<(Vec<String>, Option<String>)> = vec![
        (
            vec![
                "--root".into(),
                home.path()
                    .join(".hybridops/envs/newenv")
                    .display()
                    .to_string(),
            ],
            None,
        ),
        (
            vec![
                "--root".into(),
                home.path()
                    .join("elsewhere/../.hybridops/envs/other")
                    .display()
                    .to_string(),
            ],
            None,
        ),
        (
            vec!["--env".into(), "dev".into()],
            Some(home.path().join(".hybridops").display().to_string()),
        ),
    ];
    for (args, sim_home) in cases {
        let mut c = bin(home.path());
        c.args(["apply", "--sim", "--inputs"])
            .arg(example("inputs.sim-demo.yml"))
            .args(&args);
        if let Some(h) = &sim_home {
            c.env("HYOPS_PVE_SIM_HOME", h);
        }
        let o = run_sync(c);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?} {sim_home:?}: {err}");
        assert!(err.contains(".hybridops"), "{err}");
    }
    let mut envs: Vec<String> = std::fs::read_dir(home.path().join(".hybridops/envs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    envs.sort();
    assert_eq!(envs, vec!["prod".to_string()], "nothing was created");
    assert!(files_under(&home.path().join(".hybridops")).is_empty());
}
