//! The SSH parts of an apply, end to end against the in-process simulator: the readiness gate
//! by default (through the Proxmox host), its required / warn-only / disabled behaviour,
//! content-addressed cloud-init snippets (delivery, in-place change, nothing written on
//! re-apply, removal on destroy), the per-VM overrides, and `cloud_init_mode: native`.

use crate::common;

use std::time::Duration;

use common::{Harness, DEMO};
use hyops_pve::commands::module::{apply_inner, destroy_inner, plan_inner};
use hyops_pve::sim::{LatencyModel, SimConfig};
use serde_json::Value;

const OTHER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDKsxUuHAa1XHdN9+bYr5PJ5qtKjrGf1lsVgG7Uwx0D3 other@elsewhere";

fn latest_run_dir(h: &Harness) -> std::path::PathBuf {
    let logs = h.root().join("logs/module/platform__onprem__platform-vm");
    let mut runs: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("apply-")
        })
        .collect();
    runs.sort();
    runs.pop().expect("an apply run dir")
}

fn json(p: &std::path::Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

fn snippets(h: &Harness) -> Vec<String> {
    let st = h.sim.state();
    let mut v: Vec<String> = st
        .snippets
        .values()
        .flat_map(|files| files.keys().cloned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_runs_the_gate_through_the_proxmox_host_by_default() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let run = latest_run_dir(&h);
    let s = json(&run.join("post_apply_ssh_readiness.json"));
    assert_eq!(s["status"], "ok", "{s}");
    assert_eq!(s["effective_proxy"]["host"], "127.0.0.1");
    for label in ["connectivity_proxy_nc", "connectivity_ssh_auth"] {
        for vm in ["app-01", "app-02", "db-01"] {
            let f = run.join(format!("{label}.platform_vm_targets.{vm}.result.json"));
            assert!(f.exists(), "{}", f.display());
        }
    }
    let dr = json(&run.join("driver_result.json"));
    assert_eq!(
        dr["normalized_outputs"]["post_apply_ssh_readiness"]["status"],
        "ok"
    );
    assert!(dr["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w == "auto-enabled ssh proxy jump via root@127.0.0.1 from proxmox init metadata"));
    assert_eq!(h.state_json()["status"], "ok");
    // Not published into the module state (§5.7).
    assert!(h.state_json()["outputs"]
        .get("post_apply_ssh_readiness")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_whose_keys_do_not_match_fails_with_the_auth_message_and_state_error() {
    let h = Harness::start().await;
    let overlay = DEMO
        .replace(
            "ssh_username: opsadmin",
            &format!("ssh_username: opsadmin\nssh_keys: [\"{OTHER_KEY}\"]"),
        )
        .replace("connectivity_wait_s: 30", "connectivity_wait_s: 1");
    let ctx = h.ctx(&h.overlay("o.yml", &overlay)).await;
    let err = apply_inner(&ctx, None, None).await.unwrap_err().message;
    assert!(
        err.starts_with("post-apply SSH readiness failed: connectivity check failed: target is reachable via proxy, but SSH authentication failed for platform_vm_targets.app-01 (host=10.20.0.11). Confirm target_user=opsadmin and key injection. ssh authentication failed (see connectivity_ssh_auth.platform_vm_targets.app-01"),
        "{err}"
    );
    assert!(
        err.ends_with("(see post_apply_ssh_readiness.json and connectivity_* evidence)"),
        "{err}"
    );
    let st = h.state_json();
    assert_eq!(st["status"], "error");
    assert_eq!(st["last_error"], Value::String(err.clone()));
    // The new outputs are not published.
    assert!(
        st.get("outputs").is_none_or(|o| o.get("vms").is_none()),
        "{st}"
    );
    let dr = json(&latest_run_dir(&h).join("driver_result.json"));
    assert_eq!(dr["status"], "error");
    assert_eq!(
        dr["normalized_outputs"]["post_apply_ssh_readiness"]["status"],
        "error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_false_publishes_with_the_warn_only_message() {
    let h = Harness::start().await;
    let overlay = DEMO
        .replace(
            "ssh_username: opsadmin",
            &format!("ssh_username: opsadmin\nssh_keys: [\"{OTHER_KEY}\"]"),
        )
        .replace(
            "connectivity_wait_s: 30",
            "connectivity_wait_s: 1\n  required: false",
        );
    let ctx = h.ctx(&h.overlay("o.yml", &overlay)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let st = h.state_json();
    assert_eq!(st["status"], "ok");
    assert!(st["outputs"]["vms"]["app-01"].is_object());
    let dr = json(&latest_run_dir(&h).join("driver_result.json"));
    assert!(dr["warnings"].as_array().unwrap().iter().any(|w| w
        .as_str()
        .unwrap()
        .starts_with("post-apply SSH readiness failed (warn-only): connectivity check failed: target is reachable via proxy, but SSH authentication failed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabled_false_waits_for_neither_the_agent_nor_ssh() {
    // A guest agent that never answers: with the gate enabled the apply would wait the whole
    // connectivity_wait_s (300 s) for an address.
    let h = Harness::start_with(SimConfig {
        time_scale: 0.0005,
        latency: LatencyModel {
            boot_delay_ms: u64::MAX / 8,
            ..LatencyModel::default()
        },
        ..SimConfig::default()
    })
    .await;
    let overlay = DEMO.replace(
        "post_apply_ssh_readiness:\n  connectivity_wait_s: 30",
        "post_apply_ssh_readiness:\n  enabled: false\n  connectivity_wait_s: 300",
    );
    assert!(overlay.contains("enabled: false"));
    let ctx = h.ctx(&h.overlay("o.yml", &overlay)).await;
    tokio::time::timeout(Duration::from_secs(120), apply_inner(&ctx, None, None))
        .await
        .expect("apply must not wait for readiness when it is disabled")
        .unwrap();
    let run = latest_run_dir(&h);
    assert_eq!(
        json(&run.join("post_apply_ssh_readiness.json"))["status"],
        "skipped"
    );
    assert!(!run
        .join("connectivity_ssh_auth.platform_vm_targets.app-01.result.json")
        .exists());
    assert_eq!(h.sim.ssh().counters().guest_sessions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippets_are_uploaded_attached_and_read_by_the_guest() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let files = snippets(&h);
    assert_eq!(files.len(), 3, "{files:?}");
    let cfg = h.config_of("dev-app-01");
    let cc = &cfg["cicustom"];
    assert!(
        cc.starts_with("user=local:snippets/dev-app-01-cloud-init-user-"),
        "{cc}"
    );
    let st = h.sim.state();
    let vmid = st
        .vms
        .values()
        .find(|v| v.name() == "dev-app-01")
        .unwrap()
        .vmid;
    let baked = &st.cloudinit_custom[&vmid]["user"];
    assert!(
        baked.starts_with("#cloud-config\nhostname: app-01\n"),
        "{baked}"
    );
    assert!(baked.contains("\"name\": \"opsadmin\""), "{baked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_one_vms_user_data_changes_only_its_snippet_in_place_and_reapply_writes_nothing() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let ids = h.vms();
    let before_files = snippets(&h);
    let other_cfg = h.config_of("dev-db-01");
    let changed = DEMO.replacen(
        "  app-01:\n    role: app\n",
        "  app-01:\n    role: app\n    cloud_init_user_data: \"#cloud-config\\nhostname: app-01\\npackages: [htop]\\n\"\n",
        1,
    );
    assert_ne!(changed, DEMO);
    let ctx2 = h.ctx(&h.overlay("o2.yml", &changed)).await;
    let api_before = h.sim.counters();
    apply_inner(&ctx2, None, None).await.unwrap();
    let api_after = h.sim.counters();
    assert_eq!(h.vms(), ids, "no VM was replaced");
    let clone = "/nodes/{node}/qemu/{vmid}/clone";
    assert_eq!(api_after.get("POST", clone), api_before.get("POST", clone));
    // The drive was regenerated in place.
    let regen = "/nodes/{node}/qemu/{vmid}/cloudinit";
    assert_eq!(
        api_after.get("PUT", regen),
        api_before.get("PUT", regen) + 1
    );
    let after_files = snippets(&h);
    let gone: Vec<_> = before_files
        .iter()
        .filter(|f| !after_files.contains(f))
        .collect();
    let new: Vec<_> = after_files
        .iter()
        .filter(|f| !before_files.contains(f))
        .collect();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert!(gone[0].starts_with("dev-app-01-cloud-init-user-"));
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].starts_with("dev-app-01-cloud-init-user-"));
    assert_eq!(h.config_of("dev-db-01"), other_cfg, "other VMs untouched");
    {
        let st = h.sim.state();
        let vm = st.vms.values().find(|v| v.name() == "dev-app-01").unwrap();
        let baked = &st.cloudinit_custom[&vm.vmid]["user"];
        assert!(baked.contains("packages: [htop]"), "{baked}");
        // The users block is still appended to the operator's base (contract §2.6).
        assert!(baked.contains("\"ssh_authorized_keys\""), "{baked}");
    }
    // Re-apply: no API write, no snippet write.
    let ssh_before = h.sim.ssh().counters();
    let api_before = h.sim.counters();
    apply_inner(&ctx2, None, None).await.unwrap();
    assert_eq!(h.sim.counters().writes, api_before.writes);
    assert_eq!(h.sim.ssh().counters().sftp_writes, ssh_before.sftp_writes);
    assert_eq!(plan_inner(&ctx2, true, None).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_and_meta_overrides_are_delivered_and_replace_the_ipconfig() {
    let h = Harness::start().await;
    let changed = DEMO.replacen(
        "  app-01:\n    role: app\n",
        "  app-01:\n    role: app\n    cloud_init_network_data: \"version: 2\\nethernets: {}\\n\"\n    cloud_init_meta_data: \"instance-id: app-01-v1\\n\"\n",
        1,
    );
    let ctx = h.ctx(&h.overlay("o.yml", &changed)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let cfg = h.config_of("dev-app-01");
    let cc = &cfg["cicustom"];
    assert!(
        cc.contains(",network=local:snippets/dev-app-01-cloud-init-network-"),
        "{cc}"
    );
    assert!(
        cc.contains(",meta=local:snippets/dev-app-01-cloud-init-meta-"),
        "{cc}"
    );
    assert!(!cfg.contains_key("ipconfig0"), "{cfg:?}");
    let st = h.sim.state();
    let vm = st.vms.values().find(|v| v.name() == "dev-app-01").unwrap();
    assert_eq!(
        st.cloudinit_custom[&vm.vmid]["meta"].trim_end(),
        "instance-id: app-01-v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_removes_the_snippets_and_host_keys_of_the_destroyed_vms() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let kh = h.root().join("state/ssh/known_hosts");
    let before = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(
        before.lines().filter(|l| l.contains("vmid=")).count(),
        3,
        "{before}"
    );
    destroy_inner(&ctx, None).await.unwrap();
    assert!(snippets(&h).is_empty(), "{:?}", snippets(&h));
    let after = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(
        after.lines().filter(|l| l.contains("vmid=")).count(),
        0,
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippet_cleanup_keeps_the_files_a_namesake_vm_of_someone_else_uses() {
    // Proxmox allows two VMs with one name (another env with the same name_prefix, a
    // hand-made VM). Snippet files are found by VM name, so a cleanup must not delete a file
    // that such a namesake points at: its next cloud-init rebuild would fail.
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let cc = h.config_of("dev-app-01")["cicustom"].clone();
    let file = cc
        .strip_prefix("user=local:snippets/")
        .expect("user snippet")
        .to_string();
    h.clone_raw(500, "dev-app-01").await;
    h.settle().await;
    let r = h
        .raw_client()
        .put(format!("{}/nodes/pve1/qemu/500/config", h.sim.url()))
        .header("Authorization", h.sim.token_header())
        .form(&[("cicustom", cc.as_str())])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    // Our app-01 gets new user-data: its old file is stale for us, not for VM 500.
    let changed = DEMO.replacen(
        "  app-01:\n    role: app\n",
        "  app-01:\n    role: app\n    cloud_init_user_data: \"#cloud-config\\npackages: [htop]\\n\"\n",
        1,
    );
    let ctx2 = h.ctx(&h.overlay("o2.yml", &changed)).await;
    apply_inner(&ctx2, None, None).await.unwrap();
    assert!(
        snippets(&h).contains(&file),
        "{file} was removed: {:?}",
        snippets(&h)
    );
    destroy_inner(&ctx2, None).await.unwrap();
    assert_eq!(snippets(&h), [file], "only the namesake's file is left");
    assert_eq!(
        h.config_of("dev-app-01")["cicustom"],
        cc,
        "VM 500 untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_mode_uses_native_keys_and_drops_our_cicustom() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    assert!(h.config_of("dev-app-01").contains_key("cicustom"));
    let native = DEMO.replace(
        "require_ipam: false",
        "require_ipam: false\ncloud_init_mode: native",
    );
    let ctx2 = h.ctx(&h.overlay("o2.yml", &native)).await;
    apply_inner(&ctx2, None, None).await.unwrap();
    let cfg = h.config_of("dev-app-01");
    assert!(!cfg.contains_key("cicustom"), "{cfg:?}");
    assert_eq!(cfg["ciuser"], "opsadmin");
    assert_eq!(plan_inner(&ctx2, true, None).await.unwrap(), 0);
    // The gate still passes: the guest got the keys natively after the regenerate.
    let s = json(&latest_run_dir(&h).join("post_apply_ssh_readiness.json"));
    assert_eq!(s["status"], "ok", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_mode_says_which_per_vm_overrides_it_cannot_deliver() {
    let h = Harness::start().await;
    let overlay = DEMO
        .replace("require_ipam: false", "require_ipam: false\ncloud_init_mode: native")
        .replacen(
            "  app-01:\n    role: app\n",
            "  app-01:\n    role: app\n    cloud_init_user_data: \"#cloud-config\\nhostname: x\\n\"\n",
            1,
        );
    let ctx = h.ctx(&h.overlay("o.yml", &overlay)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let dr = json(&latest_run_dir(&h).join("driver_result.json"));
    assert!(dr["warnings"].as_array().unwrap().iter().any(|w| w
        == "VM app-01: inputs.vms.app-01.cloud_init_user_data is not delivered with cloud_init_mode: native (only Proxmox's native cloud-init keys are set); use cloud_init_mode: snippets (the default) to deliver it"),
        "{dr}");
    assert!(snippets(&h).is_empty());
}
