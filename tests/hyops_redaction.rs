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
    let v = st
        .persist_error("apply", &format!("{wrong}; {missing}"))
        .unwrap();
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
