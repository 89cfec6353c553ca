//! The operator's first hour, as issue 14 found it: `--sim` never touches a real root, errors
//! that say what to do, the vault in preflight, no clear-text token, and the small things
//! (`deploy` in `--help`, `state show`, closed pipes, temp files, the README's file list).

use crate::cli_support;
use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use cli_support::*;
use common::Harness;
use hyops_pve::hyops::{seed_ready_root, ReadyRootSeed, RuntimeRoot};
use hyops_pve::secret::Secret;
use hyops_pve::sim::{FaultAction, FaultRule, SimConfig};

/// Path → content of every file under `dir`.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let c = std::fs::read(&p).unwrap();
            (p.display().to_string(), c)
        })
        .collect()
}

/// A runtime root as `hyops init proxmox` and one apply leave it.
fn real_root(dir: &Path) {
    write(
        dir,
        "credentials/proxmox.credentials.tfvars",
        "proxmox_url = \"https://10.9.8.7:8006/api2/json\"\nproxmox_token_id = \"automation@pam!infra-token\"\nproxmox_token_secret = \"real-secret-123\"\nproxmox_node = \"pve-prod\"\n",
    );
    write(
        dir,
        "state/modules/platform__onprem__platform-vm/latest.json",
        "{\"status\": \"ok\", \"outputs\": {}}\n",
    );
}

// ------------------------------------------------------------------ 1. --sim and real roots

#[test]
fn sim_refuses_a_real_root_and_writes_nothing_into_it() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join(".hybridops/envs/dev");
    real_root(&root);
    let before = snapshot(&root);
    for command in ["apply", "plan", "destroy", "validate", "preflight"] {
        let o = run_sync({
            let mut c = bin(home.path());
            c.args([command, "--sim", "--root"])
                .arg(&root)
                .args(["--inputs", &example("inputs.sim-demo.yml")]);
            c
        });
        assert_eq!(o.status.code(), Some(1), "{command}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--sim refuses runtime root")
                && stderr(&o).contains("credentials/proxmox.credentials.tfvars"),
            "{command}: {}",
            stderr(&o)
        );
        assert_eq!(snapshot(&root), before, "{command} changed the real root");
    }
}

#[test]
fn sim_refuses_a_sim_home_that_is_a_real_hyops_home() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join(".hybridops/envs/dev");
    real_root(&root);
    let before = snapshot(&root);
    let o = run_sync({
        let mut c = bin(home.path());
        c.env("HYOPS_PVE_SIM_HOME", home.path().join(".hybridops"))
            .args([
                "apply",
                "--sim",
                "--env",
                "dev",
                "--inputs",
                &example("inputs.sim-demo.yml"),
            ]);
        c
    });
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(snapshot(&root), before);
}

#[test]
fn sim_accepts_a_new_root_and_reuses_it() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("my-sim-root");
    for _ in 0..2 {
        let o = run_sync({
            let mut c = bin(home.path());
            c.args(["apply", "--sim", "--root"])
                .arg(&root)
                .args(["--inputs", &example("inputs.sim-demo.yml")]);
            c
        });
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
}

#[test]
fn sim_ignores_variables_that_point_at_real_credentials() {
    let home = tempfile::tempdir().unwrap();
    let real = write(
        home.path(),
        "real.tfvars",
        "proxmox_url = \"https://127.0.0.1:9/api2/json\"\nproxmox_token_id = \"a@pam!t\"\nproxmox_token_secret = \"s\"\nproxmox_node = \"pve9\"\n",
    );
    let before = std::fs::read(&real).unwrap();
    let o = run_sync({
        let mut c = bin(home.path());
        c.env("HYOPS_PROXMOX_TFVARS", &real)
            .env("PROXMOX_URL", "https://127.0.0.1:9/api2/json")
            .env("PROXMOX_STORAGE_POOL", "real-pool")
            .args([
                "apply",
                "--sim",
                "--env",
                "dev",
                "--inputs",
                &example("inputs.sim-demo.yml"),
            ]);
        c
    });
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("--sim ignores HYOPS_PROXMOX_TFVARS, PROXMOX_STORAGE_POOL, PROXMOX_URL"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&real).unwrap(), before);
}

// ------------------------------------------------------------ 4. errors that say what to do

#[test]
fn missing_credentials_name_the_file_the_variables_and_hyops_init() {
    let (home, root) = home_with_root();
    let o = run_sync({
        let mut c = bin(home.path());
        c.args(["plan", "--root"])
            .arg(&root)
            .args(["--inputs", &example("inputs.sim-demo.yml")]);
        c
    });
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    for needle in [
        "missing required credentials: proxmox (expected credentials in",
        &root
            .join("credentials/proxmox.credentials.tfvars")
            .display()
            .to_string(),
        "HYOPS_PROXMOX_TFVARS",
        "PROXMOX_URL",
        "PROXMOX_TOKEN_SECRET",
        "hyops init proxmox",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn a_missing_inputs_flag_is_said_before_any_validation_message() {
    let (home, root) = home_with_root();
    for command in ["plan", "apply", "validate", "preflight"] {
        let o = run_sync({
            let mut c = bin(home.path());
            c.args([command, "--root"]).arg(&root);
            c
        });
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{command}: {err}");
        assert!(
            err.contains("needs the operator inputs: add --inputs FILE"),
            "{command}: {err}"
        );
        assert!(!err.contains("input validation failed"), "{command}: {err}");
    }
}

#[test]
fn a_mistyped_env_creates_nothing_and_names_the_envs_that_exist() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".hybridops/envs/dev")).unwrap();
    std::fs::create_dir_all(home.path().join(".hybridops/envs/prod")).unwrap();
    let demo = example("inputs.sim-demo.yml");
    for args in [
        vec!["plan", "--env", "dve", "--inputs", &demo],
        vec!["preflight", "--env", "dve", "--inputs", &demo],
        vec!["validate", "--env", "dve", "--inputs", &demo],
        vec!["apply", "--env", "dve", "--inputs", &demo],
        vec!["destroy", "--env", "dve", "--inputs", &demo],
        vec!["state", "show", "--env", "dve"],
    ] {
        let o = run_sync({
            let mut c = bin(home.path());
            c.args(&args);
            c
        });
        assert!(
            !home.path().join(".hybridops/envs/dve").exists(),
            "{args:?} created the typo's root"
        );
        let err = stderr(&o);
        assert!(
            err.contains("envs/dve does not exist") && err.contains("dev, prod"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_verbatim_key_regex_message_gets_a_second_line_naming_the_key() {
    let (home, root) = home_with_root();
    let overlay = write(
        home.path(),
        "o.yml",
        "require_ipam: false\ntemplate_vm_id: 9000\nvms:\n  App_02:\n    role: app\n  app-01:\n    role: app\n",
    );
    let o = run_sync({
        let mut c = bin(home.path());
        c.args(["validate", "--root"])
            .arg(&root)
            .arg("--inputs")
            .arg(&overlay);
        c
    });
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    let i = lines
        .iter()
        .position(|l| {
            l.ends_with("inputs.vms.<name> must match ^[a-z0-9][a-z0-9-]{0,62}$")
                && l.starts_with("ERR: input validation failed for platform/onprem/platform-vm: ")
        })
        .unwrap_or_else(|| panic!("verbatim line missing: {err}"));
    assert!(
        lines
            .get(i + 1)
            .is_some_and(|l| l.contains("offending key: inputs.vms[\"App_02\"]")),
        "{err}"
    );
}

/// 30 VMs whose clones all fail: one short ERR line, each VM's error once on stderr, every
/// error in apply_report.json and the envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_failed_vms_give_one_summary_line_and_each_error_once() {
    const FAULT: &str = "storage 'local-lvm' is not online (injected)";
    let h = Harness::start_with(SimConfig {
        time_scale: 0.0005,
        ..SimConfig::default()
    })
    .await;
    h.sim.faults().add(FaultRule::on(
        "POST",
        "/nodes/{node}/qemu/{vmid}/clone",
        FaultAction::TaskFail {
            message: FAULT.into(),
        },
    ));
    let mut yaml = String::from(
        // native cloud-init: this process cannot reach the in-process simulator's node SSH
        "require_ipam: false\ntemplate_vm_id: 9000\ncloud_init_mode: native\npost_apply_ssh_readiness: {connectivity_wait_s: 5}\nvms:\n",
    );
    for i in 0..30 {
        yaml.push_str(&format!(
            "  vm-{i:02}:\n    role: app\n    interfaces: [{{bridge: vmbr0, ipv4: {{address: 10.30.0.{}/24, gateway: 10.30.0.1}}}}]\n",
            i + 10
        ));
    }
    let overlay = h.overlay("many.yml", &yaml);
    let o = run({
        let mut c = bin(h.dir.path());
        c.args(["apply", "--json", "--root"])
            .arg(h.root())
            .arg("--inputs")
            .arg(&overlay)
            // The engine's retries and deadlines run at the simulator's pace.
            .env("HYOPS_PVE_ENGINE_TIME_SCALE", "0.0005");
        c
    })
    .await;
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let err_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("ERR:")).collect();
    assert_eq!(err_lines.len(), 1, "{err}");
    assert!(
        err_lines[0].len() < 800,
        "ERR line of {} bytes",
        err_lines[0].len()
    );
    assert!(
        err_lines[0].contains("30 of 30 VM(s) failed"),
        "{}",
        err_lines[0]
    );
    // The injected failure is retried (new VMID each time); each VM's error text is on one
    // progress line, not repeated per retry, per failed step and again in a list.
    for i in 0..30 {
        let vm = format!("vm=vm-{i:02} ");
        let lines = err
            .lines()
            .filter(|l| l.contains(&vm) && l.contains(FAULT))
            .count();
        assert_eq!(lines, 1, "{vm}: {err}");
    }
    assert!(!err.lines().any(|l| l.starts_with("failed: ")), "{err}");
    let doc = one_doc(&o);
    let vms = doc["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 30);
    assert!(vms
        .iter()
        .all(|v| v["status"] == "error" && !v["error"].as_str().unwrap().is_empty()));
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(doc["evidence_dir"].as_str().unwrap()).join("apply_report.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(report["vms"].as_array().unwrap().len(), 30);
}

// ----------------------------------------------------------------- 5. the vault in preflight

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_secret_kept_only_in_the_vault_passes_preflight() {
    let h = Harness::start().await;
    let root = h.root();
    std::fs::remove_file(root.join("credentials/proxmox.credentials.tfvars")).unwrap();
    seed_ready_root(
        &RuntimeRoot::at(&root),
        &ReadyRootSeed {
            url: h.sim.url().to_string(),
            token_id: h.sim.token_id.clone(),
            token_secret: h.sim.token_secret.clone(),
            node: "pve1".into(),
            tls_fingerprint: Some(h.sim.ca_fingerprint_sha256.clone()),
            vault_password: Some(Secret::new("vault-pw")),
            ..ReadyRootSeed::default()
        },
    )
    .unwrap();
    let tfvars =
        std::fs::read_to_string(root.join("credentials/proxmox.credentials.tfvars")).unwrap();
    assert!(!tfvars.contains("proxmox_token_secret"));
    let pw = write(h.dir.path(), "pw", "vault-pw\n");
    let overlay = h.overlay("o.yml", common::DEMO);
    let o = run({
        let mut c = bin(h.dir.path());
        c.env("HYOPS_VAULT_PASSWORD_FILE", &pw)
            .args(["preflight", "--root"])
            .arg(&root)
            .arg("--inputs")
            .arg(&overlay);
        c
    })
    .await;
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("ok   credentials:proxmox"),
        "{}",
        stdout(&o)
    );
}

// --------------------------------------------------------------------- 6. transport safety

fn http_root(dir: &Path, allow: bool) {
    write(
        dir,
        "credentials/proxmox.credentials.tfvars",
        &format!(
            "proxmox_url = \"http://127.0.0.1:9/api2/json\"\nproxmox_token_id = \"a@pam!t\"\nproxmox_token_secret = \"s3cr3t-over-http\"\nproxmox_node = \"pve1\"\n{}",
            if allow { "proxmox_allow_http = true\n" } else { "" }
        ),
    );
}

#[test]
fn an_http_proxmox_url_is_refused_unless_allowed() {
    let (home, root) = home_with_root();
    http_root(&root, false);
    let plan = || {
        let mut c = bin(home.path());
        c.args(["plan", "--root"])
            .arg(&root)
            .args(["--inputs", &example("inputs.sim-demo.yml")]);
        run_sync(c)
    };
    let o = plan();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("uses http://")
            && err.contains("proxmox_allow_http = true")
            && err.contains("PROXMOX_ALLOW_HTTP"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t-over-http"));
    http_root(&root, true);
    let o = plan();
    let err = stderr(&o);
    assert!(!err.contains("is refused"), "{err}");
    assert!(
        err.contains("WARN: proxmox_url=") && err.contains("clear text"),
        "{err}"
    );
}

// ------------------------------------------------------------------------ 7. small things

#[test]
fn help_lists_deploy() {
    let home = tempfile::tempdir().unwrap();
    let o = run_sync({
        let mut c = bin(home.path());
        c.arg("--help");
        c
    });
    assert!(stdout(&o).contains("deploy"), "{}", stdout(&o));
}

#[test]
fn state_show_lists_only_its_own_flags() {
    let home = tempfile::tempdir().unwrap();
    let o = run_sync({
        let mut c = bin(home.path());
        c.args(["state", "show", "--help"]);
        c
    });
    let help = stdout(&o);
    for own in ["--env", "--root", "--module", "--state-instance", "--json"] {
        assert!(help.contains(own), "{own} missing: {help}");
    }
    for foreign in [
        "--inputs",
        "--out-dir",
        "--sim-cluster",
        "--max-parallel",
        "--lock-wait-s",
        "--module-root",
    ] {
        assert!(!help.contains(foreign), "{foreign} listed: {help}");
    }
}

#[test]
fn state_show_never_starts_the_simulator() {
    let home = tempfile::tempdir().unwrap();
    let o = run_sync({
        let mut c = bin(home.path());
        c.args(["state", "show", "--sim", "--env", "dev"]);
        c
    });
    assert_eq!(o.status.code(), Some(1));
    assert!(!stderr(&o).contains("simulator:"), "{}", stderr(&o));
    assert!(
        !home.path().join("sim-home").exists(),
        "state show created the sim home"
    );
}

/// A stdout whose reader is already gone: every write fails with EPIPE.
fn closed_stdout() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

#[test]
fn no_command_panics_on_a_closed_stdout() {
    let (home, root) = home_with_root();
    let root = root.to_str().unwrap().to_string();
    let demo = example("inputs.sim-demo.yml");
    let cases: Vec<Vec<&str>> = vec![
        vec!["completions", "zsh"],
        vec!["completions", "bash"],
        vec!["version"],
        vec!["version", "--json"],
        vec!["--help"],
        vec!["validate", "--root", &root, "--inputs", &demo],
        vec!["validate", "--json", "--root", &root, "--inputs", &demo],
        vec!["plan", "--sim", "--env", "pipe", "--inputs", &demo],
        vec!["apply", "--sim", "--env", "pipe", "--inputs", &demo],
        vec!["state", "show", "--sim", "--env", "pipe"],
    ];
    for args in cases {
        let mut c = bin(home.path());
        c.args(&args).stdout(closed_stdout());
        let o = c.output().unwrap();
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
    }
    let state = home
        .path()
        .join("sim-home/envs/pipe/state/modules/platform__onprem__platform-vm/latest.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    assert_eq!(v["status"], "ok", "the apply finished its state writes");
}

#[test]
fn sim_serve_leaves_no_temp_files() {
    let home = tempfile::tempdir().unwrap();
    let tmp = home.path().join("tmp");
    let mut child = bin(home.path())
        .args([
            "sim",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--time-scale",
            "0.001",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut pem = None;
    for line in out.lines().map_while(Result::ok) {
        if let Some(p) = line.strip_prefix("CA PEM written to ") {
            pem = Some(std::path::PathBuf::from(p.trim()));
        }
        if line.starts_with("templates:") {
            break;
        }
    }
    let pem = pem.expect("PEM path printed");
    assert!(pem.starts_with(&tmp) && pem.exists(), "{}", pem.display());
    assert_ne!(
        pem.parent(),
        Some(tmp.as_path()),
        "the PEM lives in a private directory"
    );
    // SAFETY: kill(2) on the child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(files_under(&tmp), Vec::<std::path::PathBuf>::new());
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "no directory left in TMPDIR"
    );
}

#[test]
fn the_readme_lists_every_evidence_file_an_apply_writes() {
    let home = tempfile::tempdir().unwrap();
    let demo = example("inputs.sim-demo.yml");
    for command in ["preflight", "apply", "destroy"] {
        let o = run_sync({
            let mut c = bin(home.path());
            c.args([command, "--sim", "--env", "dev", "--inputs", &demo]);
            c
        });
        assert_eq!(o.status.code(), Some(0), "{command}: {}", stderr(&o));
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let logs = home.path().join("sim-home/envs/dev/logs");
    let mut names: Vec<String> = files_under(&logs)
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "{names:?}");
    // The readiness gate's files carry the VM label and attempt (upstream's names): the README
    // lists them by pattern, `connectivity_<probe>.<label>[.tryN]…`.
    let listed = |n: &str| match n.strip_prefix("connectivity_") {
        Some(rest) => {
            let probe = rest.split('.').next().unwrap_or_default();
            readme.contains(&format!("`connectivity_{probe}.<label>[.tryN]"))
        }
        None => readme.contains(&format!("`{n}`")),
    };
    let unlisted: Vec<&String> = names.iter().filter(|n| !listed(n)).collect();
    assert!(unlisted.is_empty(), "README does not list {unlisted:?}");
}

/// The README's Troubleshooting section quotes the exact message of each of the five mistakes;
/// this replays them and checks every quoted line (paths written as `<root>` and `~`).
#[test]
fn the_readme_troubleshooting_messages_are_the_real_ones() {
    let home = tempfile::tempdir().unwrap();
    let envs = home.path().join(".hybridops/envs");
    let dev = envs.join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::create_dir_all(envs.join("prod")).unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let troubleshooting = &readme[readme.find("## Troubleshooting").expect("section")..];
    let demo = example("inputs.sim-demo.yml");
    let plan = |args: &[&str]| {
        let mut c = bin(home.path());
        c.arg("plan").args(args);
        let o = run_sync(c);
        stderr(&o)
            .replace(&dev.display().to_string(), "<root>")
            .replace(&home.path().display().to_string(), "~")
    };
    let check = |mistake: &str, err: String| {
        let lines: Vec<&str> = err
            .lines()
            .skip_while(|l| !l.starts_with("ERR: "))
            .collect();
        assert!(!lines.is_empty(), "{mistake}: no ERR line in {err}");
        for l in lines {
            assert!(
                troubleshooting.contains(l),
                "{mistake}: README Troubleshooting lacks the line\n{l}"
            );
        }
    };
    // 1. no credentials
    check("no credentials", plan(&["--env", "dev", "--inputs", &demo]));
    // 2. token secret in the vault, no password source
    write(
        &dev,
        "credentials/proxmox.credentials.tfvars",
        "proxmox_url = \"https://10.0.0.5:8006/api2/json\"\nproxmox_token_id = \"automation@pam!infra-token\"\nproxmox_node = \"pve1\"\n",
    );
    write(
        &dev,
        "vault/bootstrap.vault.env",
        "$ANSIBLE_VAULT;1.1;AES256\n",
    );
    check(
        "vault without password",
        plan(&["--env", "dev", "--inputs", &demo]),
    );
    // 3. mistyped --env
    check("mistyped env", plan(&["--env", "dve", "--inputs", &demo]));
    // 4. --inputs forgotten
    check("no --inputs", plan(&["--env", "dev"]));
    // 5. no template image state
    std::fs::remove_dir_all(dev.join("vault")).unwrap();
    write(
        &dev,
        "credentials/proxmox.credentials.tfvars",
        "proxmox_url = \"https://10.0.0.5:8006/api2/json\"\nproxmox_token_id = \"automation@pam!infra-token\"\nproxmox_token_secret = \"x\"\nproxmox_node = \"pve1\"\n",
    );
    check("no template", plan(&["--env", "dev", "--inputs", &demo]));
}
