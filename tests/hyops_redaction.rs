//! Secrets planted in credentials, the vault and the process env never reach any file the
//! runtime-root layer writes (state, evidence, rerun inputs, lock, error records).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyops_pve::hyops::vault::{read_vault_env, write_vault_env};
use hyops_pve::hyops::*;
use hyops_pve::secret::Secret;
use serde_json::{json, Map, Value};

const PVE_SECRET: &str = "pve-secret-7f3a9c2e-41d8";
const NETBOX_TOKEN: &str = "nbtok-0a1b2c3d4e5f60718293";
const VAULT_PASSWORD: &str = "vault-pw-Zq8Lr2Xk";
const ENV_PVE_SECRET: &str = "env-pve-secret-55aa55aa";

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn planted_secrets_never_appear_in_written_files() {
    let d = tempfile::tempdir().unwrap();
    let pwdir = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    let m = ModuleRef::parse(MODULE_REF).unwrap();

    // Plant the inputs.
    let tfvars = r.proxmox_tfvars();
    std::fs::create_dir_all(tfvars.parent().unwrap()).unwrap();
    std::fs::write(&tfvars, format!("proxmox_url = \"https://10.0.0.5:8006/api2/json\"\nproxmox_token_id = \"a@pam!t\"\nproxmox_token_secret = \"{PVE_SECRET}\"\nproxmox_node = \"pve1\"\n")).unwrap();
    let netbox_env = r.credentials_dir().join("netbox.env");
    std::fs::write(
        &netbox_env,
        format!("NETBOX_API_URL=http://nb/api/\nNETBOX_API_TOKEN={NETBOX_TOKEN}\n"),
    )
    .unwrap();
    let pw = Secret::new(VAULT_PASSWORD);
    let vault_entries = BTreeMap::from([
        ("PROXMOX_TOKEN_SECRET".to_string(), Secret::new(PVE_SECRET)),
        ("NETBOX_API_TOKEN".to_string(), Secret::new(NETBOX_TOKEN)),
    ]);
    write_vault_env(&r.vault_file(), &vault_entries, &pw).unwrap();
    let pwfile = pwdir.path().join("pw");
    std::fs::write(&pwfile, VAULT_PASSWORD).unwrap();
    let env: BTreeMap<String, String> = [
        ("PROXMOX_TOKEN_SECRET", ENV_PVE_SECRET),
        ("HYOPS_VAULT_PASSWORD_FILE", pwfile.to_str().unwrap()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    // Resolve everything the way a run would.
    let src = password_source(&env).unwrap();
    let password = read_password(&src, Duration::from_secs(2)).unwrap();
    let vault = read_vault_env(&r.vault_file(), &password).unwrap();
    let creds = load_proxmox_credentials(&r, &env, Some(&vault)).unwrap();
    let nb = hydrate_netbox_env(&r, r.path(), &BTreeMap::new(), Some(&password)).unwrap();
    let wrong =
        read_vault_env(&r.vault_file(), &Secret::new(format!("{VAULT_PASSWORD}x"))).unwrap_err();
    let missing = load_proxmox_credentials(&RuntimeRoot::at(pwdir.path()), &env, None).unwrap_err();

    // Write state and evidence, feeding them every message and debug rendering we have.
    let run_id = new_run_id(RunPrefix::Apply);
    let ev = evidence_dir(&r, None, &m, &run_id);
    let _lock = acquire_lock(&r, &m, None, &run_id, Duration::ZERO).unwrap();
    let inputs = json!({"vms": {"app-01": {}}, "addressing": {"mode": "ipam", "ipam": {"provider": "netbox"}}});
    write_meta(&ev, "apply", &run_id, &m, &r, &json!({"status": "ok"})).unwrap();
    write_inputs_resolved(&ev, &m, None, &inputs).unwrap();
    let rerun = write_rerun_inputs(&r, &m, None, &inputs).unwrap();
    let st = ModuleState::new(&r, &m, None);
    st.persist_running(&RunningRecord {
        run_id: run_id.clone(),
        command: "apply".into(),
        evidence_dir: ev.clone(),
        input_contract: build_input_contract(&inputs),
        rerun_inputs_file: Some(rerun.clone()),
        resolved_inputs_file: Some(ev.join("resolved.inputs.yml")),
    })
    .unwrap();
    let diagnostics = format!("{creds:?}\n{nb:?}\n{vault:?}\n{password:?}\n{wrong}\n{missing}\n");
    write_text_atomic(&ev.join("diagnostics.txt"), &diagnostics).unwrap();
    st.persist_error("apply", &format!("{wrong}; {missing}"))
        .unwrap();
    let v = serde_json::Value::Object(st.read().unwrap().unwrap());
    write_module_state_record(&ev, st.path(), &v, Some(("error", &wrong.to_string()))).unwrap();
    let mut outputs = Map::new();
    outputs.insert(
        "vms".into(),
        json!({"app-01": {"vm_name": "dev-app-01", "vm_id": 4101}}),
    );
    let published = publish_outputs(&outputs);
    let ok = st
        .persist_ok(&OkRecord {
            run_id: run_id.clone(),
            evidence_dir: ev.clone(),
            outputs: published,
            input_contract: build_input_contract(&inputs),
            rerun_inputs_file: rerun,
            resolved_inputs_file: ev.join("resolved.inputs.yml"),
            backend_binding: None,
        })
        .unwrap();
    write_module_state_record(&ev, st.path(), &ok, None).unwrap();
    let mut result = DriverResult::error(&run_id, "apply", missing.to_string());
    result.warnings = nb.warnings.clone();
    write_driver_result(&ev, &result).unwrap();
    append_jsonl(
        &ev.join("journal.jsonl"),
        &json!({"event": "done", "creds": format!("{creds:?}")}),
    )
    .unwrap();
    let lock_body = std::fs::read_to_string(r.lock_file(&m, None)).unwrap();
    assert!(lock_body.contains(&run_id));

    // The values really were resolved (so absence below is meaningful).
    assert_eq!(creds.token_secret.expose(), PVE_SECRET);
    assert_eq!(nb.api_token.as_ref().unwrap().expose(), NETBOX_TOKEN);

    let mut files = Vec::new();
    files_under(d.path(), &mut files);
    let planted = [tfvars, netbox_env];
    let mut checked = 0;
    for f in files.iter().filter(|f| !planted.contains(f)) {
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        for secret in [PVE_SECRET, NETBOX_TOKEN, VAULT_PASSWORD, ENV_PVE_SECRET] {
            assert!(
                !text.contains(secret),
                "{} contains a planted secret",
                f.display()
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 9,
        "expected the state, evidence, rerun, vault and lock files; checked {checked}"
    );
    let _: Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("driver_result.json")).unwrap())
            .unwrap();
}

// ------------------------------------------------------------------------ failure paths

use crate::cli_support;
use crate::common;

use hyops_pve::hyops::ReadyRootSeed;
use hyops_pve::sim::{FaultAction, FaultRule, SimConfig};

/// The planted secrets of the failure-path runs (each distinct, none a substring of another).
const FP_PVE_SECRET: &str = "fp-pve-secret-0c7e61a2b9";
const FP_WRONG_SECRET: &str = "fp-wrong-secret-93d1f0aa7c";
const FP_VAULT_PASSWORD: &str = "fp-vault-pw-4bb2e907";
const FP_NETBOX_TOKEN: &str = "fp-nbtok-6e0f22c1d3";
const FP_ENV_SECRET: &str = "fp-env-secret-1f9ad5c3";

/// One failing run: what it is, the tfvars it uses (`None`: the vault holds the secret), the
/// fault it meets and extra env.
struct Scenario {
    name: &'static str,
    tfvars_secret: Option<&'static str>,
    fingerprint_ok: bool,
    fault: Option<FaultRule>,
    env: Vec<(&'static str, String)>,
    json: bool,
}

/// Drive apply through the binary at the most verbose logging (`-v`, `HYOPS_PVE_LOG=trace`, so
/// every crate's trace output too) into a 401, a task error, a bad TLS pin, connection resets
/// on writes, a failing vault password command and a wrong vault password; then grep every
/// file written and every byte of stdout and stderr for every planted secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_never_appear_on_failure_paths_at_trace_logging() {
    let h = common::Harness::start_with(SimConfig {
        time_scale: 0.0005,
        token: ("root@pam!hyops".into(), Secret::new(FP_PVE_SECRET)),
        ..SimConfig::default()
    })
    .await;
    let root = h.root();
    let r = RuntimeRoot::at(&root);
    let pwfile = h.dir.path().join("vault-pw");
    std::fs::write(&pwfile, FP_VAULT_PASSWORD).unwrap();
    let netbox_env = r.credentials_dir().join("netbox.env");
    std::fs::write(
        &netbox_env,
        format!("NETBOX_API_URL=https://127.0.0.1:9/api/\nNETBOX_API_TOKEN={FP_NETBOX_TOKEN}\n"),
    )
    .unwrap();
    write_vault_env(
        &r.vault_file(),
        &BTreeMap::from([
            (
                "PROXMOX_TOKEN_SECRET".to_string(),
                Secret::new(FP_PVE_SECRET),
            ),
            ("NETBOX_API_TOKEN".to_string(), Secret::new(FP_NETBOX_TOKEN)),
        ]),
        &Secret::new(FP_VAULT_PASSWORD),
    )
    .unwrap();
    let overlay = h.overlay("o.yml", common::DEMO);
    let write_tfvars = |secret: Option<&str>, fingerprint_ok: bool| {
        let fp = if fingerprint_ok {
            h.sim.ca_fingerprint_sha256.clone()
        } else {
            "00".repeat(32)
        };
        seed_ready_root(
            &r,
            &ReadyRootSeed {
                url: h.sim.url().to_string(),
                token_id: h.sim.token_id.clone(),
                token_secret: Secret::new(secret.unwrap_or("")),
                node: "pve1".into(),
                tls_fingerprint: Some(fp),
                ..ReadyRootSeed::default()
            },
        )
        .unwrap();
        if secret.is_none() {
            // The secret lives only in the vault: drop the (empty) tfvars line.
            let p = r.proxmox_tfvars();
            let t = std::fs::read_to_string(&p).unwrap();
            let kept: Vec<&str> = t
                .lines()
                .filter(|l| !l.starts_with("proxmox_token_secret"))
                .collect();
            std::fs::write(&p, kept.join("\n") + "\n").unwrap();
        }
    };
    let pw_env = ("HYOPS_VAULT_PASSWORD_FILE", pwfile.display().to_string());
    let clone = "/nodes/{node}/qemu/{vmid}/clone";
    let config = "/nodes/{node}/qemu/{vmid}/config";
    let scenarios = vec![
        Scenario {
            name: "task error (clone fails in its task), secret from the vault",
            tfvars_secret: None,
            fingerprint_ok: true,
            fault: Some(FaultRule::on(
                "POST",
                clone,
                FaultAction::TaskFail {
                    message: "storage 'local-lvm' is not online".into(),
                },
            )),
            env: vec![pw_env.clone()],
            json: false,
        },
        Scenario {
            name: "task error, --json",
            tfvars_secret: None,
            fingerprint_ok: true,
            fault: Some(FaultRule::on(
                "POST",
                clone,
                FaultAction::TaskFail {
                    message: "storage 'local-lvm' is not online".into(),
                },
            )),
            env: vec![pw_env.clone()],
            json: true,
        },
        Scenario {
            name: "401: a wrong token secret in the tfvars",
            tfvars_secret: Some(FP_WRONG_SECRET),
            fingerprint_ok: true,
            fault: None,
            env: vec![pw_env.clone()],
            json: true,
        },
        Scenario {
            name: "bad TLS: the pinned fingerprint does not match",
            tfvars_secret: Some(FP_PVE_SECRET),
            fingerprint_ok: false,
            fault: None,
            env: vec![pw_env.clone()],
            json: false,
        },
        Scenario {
            name: "connection reset on every config write (unknown outcome, re-read)",
            tfvars_secret: Some(FP_PVE_SECRET),
            fingerprint_ok: true,
            fault: Some(FaultRule::on("POST", config, FaultAction::Reset)),
            env: vec![pw_env.clone()],
            json: true,
        },
        Scenario {
            name: "the vault password command fails after printing the password on stderr",
            tfvars_secret: None,
            fingerprint_ok: true,
            fault: None,
            env: vec![(
                "HYOPS_VAULT_PASSWORD_COMMAND",
                format!("echo {FP_VAULT_PASSWORD} >&2; exit 3"),
            )],
            json: true,
        },
        Scenario {
            name: "a wrong vault password",
            tfvars_secret: None,
            fingerprint_ok: true,
            fault: None,
            env: vec![(
                "HYOPS_VAULT_PASSWORD_COMMAND",
                format!("echo {FP_VAULT_PASSWORD}-wrong"),
            )],
            json: false,
        },
    ];
    let mut outputs = Vec::new();
    for sc in &scenarios {
        write_tfvars(sc.tfvars_secret, sc.fingerprint_ok);
        h.sim.faults().clear();
        if let Some(f) = &sc.fault {
            h.sim.faults().add(f.clone());
        }
        let mut c = cli_support::bin(h.dir.path());
        c.env("HYOPS_PVE_LOG", "trace")
            .env("PROXMOX_TOKEN_SECRET", FP_ENV_SECRET)
            .env("NETBOX_API_TOKEN", FP_NETBOX_TOKEN)
            .args(["apply", "-v", "--lock-wait-s", "5", "--root"])
            .arg(&root)
            .arg("--inputs")
            .arg(&overlay);
        if sc.json {
            c.arg("--json");
        }
        for (k, v) in &sc.env {
            c.env(k, v);
        }
        let o = cli_support::run(c).await;
        assert_ne!(
            o.status.code(),
            Some(0),
            "{}: the run was meant to fail",
            sc.name
        );
        assert!(
            !cli_support::stderr(&o).contains("panicked"),
            "{}: {}",
            sc.name,
            cli_support::stderr(&o)
        );
        outputs.push((sc.name, o));
    }
    let planted = [
        FP_PVE_SECRET,
        FP_WRONG_SECRET,
        FP_VAULT_PASSWORD,
        FP_NETBOX_TOKEN,
        FP_ENV_SECRET,
    ];
    for (name, o) in &outputs {
        for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            for s in planted {
                assert!(
                    !text.contains(s),
                    "{name}: {stream} contains a planted secret"
                );
            }
        }
    }
    // Every trace run did log (so the grep above looked at real output).
    // Every run that reached the network logged at trace (so the grep looked at real output).
    for (name, o) in outputs
        .iter()
        .filter(|(n, _)| !n.contains("vault password"))
    {
        let err = cli_support::stderr(o);
        assert!(
            err.contains("TRACE") || err.contains("DEBUG"),
            "{name}: no trace output: {err}"
        );
    }
    let inputs_planted = [
        r.proxmox_tfvars(),
        r.vault_file(),
        netbox_env.clone(),
        pwfile.clone(),
    ];
    let mut checked = 0;
    for f in cli_support::files_under(h.dir.path()) {
        if inputs_planted.contains(&f) || f.ends_with("o.yml") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        for s in planted {
            assert!(
                !text.contains(s),
                "{} contains a planted secret",
                f.display()
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 20,
        "expected the evidence of every run; checked {checked}"
    );
}
