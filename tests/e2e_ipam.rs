//! IPAM end to end: `plan`/`apply`/`destroy` of IPAM overlays against the Proxmox simulator
//! with a NetBox — the embedded one always, and a real NetBox 4.7.3 when the testbed is up
//! (`real_netbox::*`, required in CI). Plus the upstream messages of the NetBox and SDN
//! checks, which need only the embedded NetBox.

use crate::common;
use crate::netbox_suite::targets;

use std::collections::BTreeMap;
use std::path::Path;

use common::Harness;
use hyops_pve::commands::context::Ctx;
use hyops_pve::commands::module::{apply_inner, destroy_inner, plan_inner, validate_inner};
use hyops_pve::commands::simroot::{sim_netbox_seed, write_netbox_root, write_sdn_state};
use hyops_pve::netbox::objects::IpRecord;
use hyops_pve::netbox::{NetboxClient, NetboxConfig};
use hyops_pve::pve::TlsMode;
use hyops_pve::secret::Secret;
use hyops_pve::sim::netbox::{NetboxSim, NetboxSimConfig, NetboxSimHandle};
use hyops_pve::sim::ssh::SimSshConfig;
use hyops_pve::sim::SimConfig;
use serde_json::Value;
use targets::Kind;

/// The Proxmox simulator, a NetBox, and a root that is its own NetBox and SDN authority
/// with a zone and subnet of its own.
struct Ipam {
    h: Harness,
    netbox: Option<NetboxSimHandle>,
    url: String,
    token: Secret,
    tls: TlsMode,
    zone: String,
    /// `10.a.b` of this test's vnetmgmt subnet.
    net: String,
    /// This test's `name_prefix`, so VM names never meet another test's in a shared NetBox.
    prefix: String,
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

impl Ipam {
    async fn start(kind: Kind) -> Option<Ipam> {
        if std::env::var("E2E_TRACE").is_ok() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("hyops_pve::netbox=debug")
                .with_test_writer()
                .try_init();
        }
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // A zone and subnets of this test's own (200+n keeps clear of the suite's 10.100+).
        let a = 200 + n / 250;
        let b = n % 250;
        let mgmt = format!("10.{a}.{b}.0/24");
        let data = format!("10.{}.{b}.0/24", a + 20);
        // The simulated node carries the SDN gateways, so the host-side probe passes.
        let h = Harness::start_with(SimConfig {
            time_scale: 0.0005,
            ssh: SimSshConfig {
                bridge_addresses: BTreeMap::from([
                    ("vnetmgmt".to_string(), vec![format!("10.{a}.{b}.1/24")]),
                    (
                        "vnetdata".to_string(),
                        vec![format!("10.{}.{b}.1/24", a + 20)],
                    ),
                ]),
                ..SimSshConfig::default()
            },
            ..SimConfig::default()
        })
        .await;
        let (netbox, url, token, tls) = match kind {
            Kind::Embedded => {
                let nb =
                    NetboxSim::start_with(NetboxSimConfig::default(), sim_netbox_seed().unwrap())
                        .await
                        .unwrap();
                let (url, token) = (nb.url().to_string(), nb.token.clone());
                let tls = TlsMode::Fingerprint(nb.ca_fingerprint_sha256.clone());
                (Some(nb), url, token, tls)
            }
            Kind::Real => {
                let (url, token) = targets::real_target()?;
                (None, url, token, TlsMode::SystemRoots)
            }
        };
        let fp = match &tls {
            TlsMode::Fingerprint(f) => Some(f.clone()),
            _ => None,
        };
        write_netbox_root(&h.root(), &url, &token, fp.as_deref()).unwrap();
        let zone = format!("e2e{n}");
        write_sdn_state(
            &h.root(),
            &zone,
            &[
                ("vnetmgmt", 10, mgmt.as_str()),
                ("vnetdata", 20, data.as_str()),
            ],
        )
        .unwrap();
        Some(Ipam {
            h,
            netbox,
            url,
            token,
            tls,
            zone,
            net: format!("10.{a}.{b}"),
            prefix: format!("e2e{n}"),
        })
    }

    fn env(&self, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let root = self.h.root().display().to_string();
        let mut env = BTreeMap::from([
            ("HYOPS_ENV".to_string(), "dev".to_string()),
            ("HOME".to_string(), self.h.dir.path().display().to_string()),
            ("HYOPS_NETBOX_AUTHORITY_ROOT".to_string(), root.clone()),
            ("HYOPS_SDN_AUTHORITY_ROOT".to_string(), root),
            ("HYOPS_NETBOX_API_PROBE_WAIT_S".to_string(), "0".to_string()),
        ]);
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        env
    }

    async fn ctx(&self, overlay: &Path, extra: &[(&str, &str)]) -> Ctx {
        let mut ctx = Ctx::build(&self.h.args(overlay), self.env(extra))
            .await
            .unwrap();
        // SSH (snippets, readiness gate, SDN probe) goes to the simulator's network.
        ctx.ssh_dialer = Some(std::sync::Arc::new(self.h.sim.ssh()));
        ctx
    }

    async fn ctx_instance(&self, overlay: &Path, instance: &str) -> Ctx {
        let mut args = self.h.args(overlay);
        args.state_instance = Some(instance.to_string());
        let mut ctx = Ctx::build(&args, self.env(&[])).await.unwrap();
        ctx.ssh_dialer = Some(std::sync::Arc::new(self.h.sim.ssh()));
        ctx
    }

    /// The physical VM name of logical key `key`.
    fn name(&self, key: &str) -> String {
        format!("{}-{key}", self.prefix)
    }

    /// An overlay for this test (its own name prefix).
    fn overlay(&self, file: &str, vms: &[&str], extra: &str) -> std::path::PathBuf {
        let text = overlay(vms, &format!("name_prefix: {}\n{extra}", self.prefix));
        self.h.overlay(file, &text)
    }

    fn client(&self) -> NetboxClient {
        let mut cfg = NetboxConfig::new(self.url.clone(), self.token.clone());
        cfg.tls = self.tls.clone();
        NetboxClient::new(cfg).unwrap()
    }

    async fn ips(&self) -> Vec<IpRecord> {
        let parent = format!("{}.0/24", self.net);
        self.client()
            .list(
                "/api/ipam/ip-addresses/",
                &[("parent".into(), parent.clone())],
            )
            .await
            .unwrap()
            .iter()
            .filter_map(IpRecord::from_value)
            .filter(|r| r.address.starts_with(&format!("{}.", self.net)))
            .collect()
    }

    async fn vm(&self, name: &str) -> Option<Value> {
        self.client()
            .list(
                "/api/virtualization/virtual-machines/",
                &[("name".into(), name.into())],
            )
            .await
            .unwrap()
            .into_iter()
            .find(|v| v["name"] == name)
    }

    fn latest_evidence(&self, prefix: &str) -> std::path::PathBuf {
        let dir = self
            .h
            .root()
            .join("logs/module/platform__onprem__platform-vm");
        let mut runs: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .collect();
        // Run ids share a second-resolution stamp: order by when each run last wrote.
        runs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        runs.pop().unwrap()
    }

    fn evidence_json(&self, prefix: &str, file: &str) -> Value {
        let p = self.latest_evidence(prefix).join(file);
        serde_json::from_str(
            &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    }
}

fn overlay(vms: &[&str], extra: &str) -> String {
    let mut s = String::from(
        "ssh_username: opsadmin\ntemplate_state_ref: core/onprem/template-image\ntemplate_key: ubuntu-24.04\nrequire_ipam: true\naddressing:\n  mode: ipam\n  ipam:\n    provider: netbox\npost_apply_ssh_readiness:\n  connectivity_wait_s: 30\n",
    );
    s.push_str(extra);
    s.push_str("vms:\n");
    for vm in vms {
        s.push_str(&format!(
            "  {vm}:\n    role: app\n    interfaces:\n      - bridge: vnetmgmt\n"
        ));
    }
    s
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod embedded_netbox {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(t) = super::Ipam::start(super::Kind::Embedded).await {
                        super::$case(t).await;
                    }
                }
            )*
        }
        mod real_netbox {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(t) = super::Ipam::start(super::Kind::Real).await {
                        super::$case(t).await;
                    }
                }
            )*
        }
    };
}

both!(
    ipam_apply_allocates_syncs_and_a_second_apply_writes_nothing_anywhere,
    plan_shows_pending_allocations_writes_nothing_and_its_plan_file_applies,
    destroy_soft_retires_and_the_rebuild_gets_the_same_addresses,
    hard_delete_on_destroy_keeps_the_reservations,
    a_vm_dropped_from_one_slot_is_retired_without_touching_another_slot,
);

async fn ipam_apply_allocates_syncs_and_a_second_apply_writes_nothing_anywhere(t: Ipam) {
    let o = t.overlay(
        "o.yml",
        &["app-01", "app-02", "db-01"],
        "dns_servers: [10.0.0.53]\n",
    );
    let ctx = t.ctx(&o, &[]).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let st = t.h.state_json();
    for (k, last) in [("app-01", 2), ("app-02", 3), ("db-01", 4)] {
        assert_eq!(
            st["outputs"]["vms"][k]["interfaces_configured"][0]["ipv4"],
            serde_json::json!({"address": format!("{}.{last}/24", t.net), "gateway": format!("{}.1", t.net)}),
            "{k}"
        );
    }
    let cfg = t.h.config_of(&t.name("app-02"));
    assert_eq!(
        cfg["ipconfig0"],
        format!("ip={}.3/24,gw={}.1", t.net, t.net)
    );
    let alloc = t.evidence_json("apply-", "ipam_allocations.json");
    assert_eq!(alloc["status"], "ok");
    assert_eq!(alloc["netbox"]["api_version"], "4.7");
    let ips = t.ips().await;
    assert_eq!(ips.len(), 3);
    assert!(ips
        .iter()
        .all(|r| r.description.starts_with(&format!("hyops:{}:", t.zone))));
    let sync = t.evidence_json("apply-", "hook_netbox_sync.json");
    let vm = t
        .vm(&t.name("app-01"))
        .await
        .unwrap_or_else(|| panic!("synced VM: {sync:#}"));
    assert_eq!(vm["primary_ip4"]["address"], format!("{}.2/24", t.net));
    assert_eq!(vm["role"]["name"], "app");
    let sync = t.evidence_json("apply-", "hook_netbox_sync.json");
    assert_eq!(sync["rc"], 0, "{sync}");

    let pve_before = t.h.sim.counters();
    let nb_before = t.netbox.as_ref().map(|n| n.counters());
    apply_inner(&ctx, None, None).await.unwrap();
    assert_eq!(
        t.h.sim.counters().writes,
        pve_before.writes,
        "Proxmox writes on re-apply"
    );
    if let (Some(nb), Some(before)) = (&t.netbox, nb_before) {
        assert_eq!(
            nb.counters().writes,
            before.writes,
            "NetBox writes on re-apply"
        );
    }
    assert_eq!(
        t.evidence_json("apply-", "ipam_allocations.json")["requests"]["writes"],
        0
    );
    let sync = t.evidence_json("apply-", "hook_netbox_sync.json");
    assert_eq!(sync["summary"]["writes"], 0, "{sync:#}");
}

async fn plan_shows_pending_allocations_writes_nothing_and_its_plan_file_applies(t: Ipam) {
    let o = t.overlay("o.yml", &["app-01", "app-02"], "");
    let ctx = t.ctx(&o, &[]).await;
    let nb_before = t.netbox.as_ref().map(|n| n.counters().writes);
    let saved = t.h.dir.path().join("saved-plan.json");
    assert_eq!(plan_inner(&ctx, true, Some(&saved)).await.unwrap(), 2);
    if let (Some(nb), Some(before)) = (&t.netbox, nb_before) {
        assert_eq!(nb.counters().writes, before, "plan wrote to NetBox");
    }
    assert!(t.ips().await.is_empty(), "plan reserved an address");
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert_eq!(plan["ipam"][0]["action"], "allocate");
    let text = std::fs::read_to_string(t.latest_evidence("plan-").join("plan.txt")).unwrap();
    assert!(
        text.contains(&format!(
            "nic0 vnetmgmt: allocate (first free in {n}.2-{n}.119)",
            n = t.net
        )),
        "{text}"
    );
    // The saved plan (pending allocations) is still valid for the apply that allocates.
    apply_inner(&ctx, None, Some(&saved)).await.unwrap();
    assert_eq!(t.ips().await.len(), 2);
    assert_eq!(
        plan_inner(&ctx, true, None).await.unwrap(),
        0,
        "no changes after apply"
    );
}

async fn destroy_soft_retires_and_the_rebuild_gets_the_same_addresses(t: Ipam) {
    let o = t.overlay("o.yml", &["app-01", "app-02"], "");
    let ctx = t.ctx(&o, &[]).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let before = t.h.state_json()["outputs"]["vms"].clone();
    destroy_inner(&ctx, None).await.unwrap();
    let sync = t.evidence_json("destroy-", "hook_netbox_sync.json");
    let vm = t.vm(&t.name("app-01")).await.expect("kept in NetBox");
    assert_eq!(vm["status"]["value"], "offline", "{sync:#}");
    let tags: Vec<&str> = vm["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert!(
        tags.contains(&"stale:infra-csv") && tags.contains(&"managed:infra-csv"),
        "{tags:?}"
    );
    let sync = t.evidence_json("destroy-", "hook_netbox_sync.json");
    assert_eq!(sync["summary"]["retired"], 2, "{sync}");
    assert!(t
        .latest_evidence("destroy-")
        .join("hook_netbox_destroy_vms.dataset.json")
        .exists());
    assert_eq!(t.ips().await.len(), 2, "reservations are never released");
    apply_inner(&ctx, None, None).await.unwrap();
    let after = t.h.state_json()["outputs"]["vms"].clone();
    for k in ["app-01", "app-02"] {
        assert_eq!(
            after[k]["interfaces_configured"], before[k]["interfaces_configured"],
            "{k}"
        );
    }
    let vm = t.vm(&t.name("app-01")).await.unwrap();
    assert_eq!(
        vm["status"]["value"], "active",
        "the rebuild revives the NetBox VM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroy_retried_after_a_failed_one_still_retires_the_netbox_vms() {
    let t = embedded().await;
    let o = t.overlay("o.yml", &["app-01"], "");
    let ctx = t.ctx(&o, &[]).await;
    apply_inner(&ctx, None, None).await.unwrap();
    // A destroy that failed (or was cancelled) leaves the state `error` with the outputs of
    // the last good apply, as persist_error writes it.
    let path =
        t.h.root()
            .join("state/modules/platform__onprem__platform-vm/latest.json");
    let mut st = t.h.state_json();
    st["status"] = "error".into();
    st["failed_command"] = "destroy".into();
    std::fs::write(&path, serde_json::to_vec(&st).unwrap()).unwrap();
    destroy_inner(&ctx, None).await.unwrap();
    let sync = t.evidence_json("destroy-", "hook_netbox_sync.json");
    assert_eq!(sync["summary"]["retired"], 1, "{sync:#}");
    let vm = t.vm(&t.name("app-01")).await.expect("kept in NetBox");
    assert_eq!(vm["status"]["value"], "offline");
}

async fn hard_delete_on_destroy_keeps_the_reservations(t: Ipam) {
    let o = t.overlay("o.yml", &["app-01"], "");
    let ctx = t
        .ctx(&o, &[("HYOPS_NETBOX_SYNC_DESTROY_HARD_DELETE", "yes")])
        .await;
    apply_inner(&ctx, None, None).await.unwrap();
    destroy_inner(&ctx, None).await.unwrap();
    assert!(
        t.vm(&t.name("app-01")).await.is_none(),
        "hard delete removes the NetBox VM"
    );
    let ips = t.ips().await;
    assert_eq!(ips.len(), 1, "the reservation survived the delete cascade");
    assert_eq!(ips[0].assigned_object_id, None);
    let sync = t.evidence_json("destroy-", "hook_netbox_sync.json");
    assert!(sync["command"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "--hard-delete"));
}

async fn a_vm_dropped_from_one_slot_is_retired_without_touching_another_slot(t: Ipam) {
    let a = t.overlay(
        "a.yml",
        &["app-01", "app-02"],
        "allow_vm_set_replace: true\n",
    );
    let b = t.overlay("b.yml", &["other-01"], "");
    let ctx_a = t.ctx(&a, &[]).await;
    let ctx_b = t.ctx_instance(&b, "b").await;
    apply_inner(&ctx_a, None, None).await.unwrap();
    apply_inner(&ctx_b, None, None).await.unwrap();
    let a2 = t.overlay("a2.yml", &["app-01"], "allow_vm_set_replace: true\n");
    let ctx_a2 = t.ctx(&a2, &[]).await;
    apply_inner(&ctx_a2, None, None).await.unwrap();
    let sync = t.evidence_json("apply-", "hook_netbox_sync.json");
    let gone = t.vm(&t.name("app-02")).await.unwrap();
    assert_eq!(
        gone["status"]["value"], "offline",
        "the slot's dropped VM is retired: {sync:#}"
    );
    let other = t.vm(&t.name("other-01")).await.unwrap();
    assert_eq!(
        other["status"]["value"], "active",
        "another slot's VM is untouched"
    );
    let kept = t.vm(&t.name("app-01")).await.unwrap();
    assert_eq!(kept["status"]["value"], "active");
}

// ---- messages (embedded NetBox only) ----

async fn embedded() -> Ipam {
    Ipam::start(Kind::Embedded).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_runs_the_ipam_checks_and_writes_nothing() {
    let t = embedded().await;
    let o = t.overlay("o.yml", &["app-01"], "");
    let before = t.netbox.as_ref().unwrap().counters();
    validate_inner(&t.ctx(&o, &[]).await).await.unwrap();
    let after = t.netbox.as_ref().unwrap().counters();
    assert_eq!(after.writes, before.writes);
    assert!(after.total > before.total, "validate probed NetBox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_vnet_gets_the_managed_bridge_message() {
    let t = embedded().await;
    let o = t.h.overlay(
        "o.yml",
        &overlay(&["app-01"], "").replace("vnetmgmt", "vnetfoo"),
    );
    let e = plan_inner(&t.ctx(&o, &[]).await, false, None)
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        "requested HybridOps SDN bridge(s) are not present in network_sdn state outputs: [vnetfoo]. Known vnets: [vnetdata, vnetmgmt]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_netbox_without_a_jump_host_gets_the_upstream_message() {
    let t = embedded().await;
    write_netbox_root(&t.h.root(), "http://127.0.0.1:9", &Secret::new("x"), None).unwrap();
    write_sdn_state(
        &t.h.root(),
        &t.zone,
        &[("vnetmgmt", 10, &format!("{}.0/24", t.net))],
    )
    .unwrap();
    // No proxmox.ready.json api_ip and no ssh_proxy_jump_host: no tunnel to try.
    std::fs::remove_file(t.h.root().join("meta/proxmox.ready.json")).unwrap();
    let o = t.overlay("o.yml", &["app-01"], "");
    let e = plan_inner(&t.ctx(&o, &[]).await, false, None)
        .await
        .unwrap_err();
    assert!(
        e.message.starts_with("NetBox API unreachable: "),
        "{}",
        e.message
    );
    assert!(
        e.message.ends_with(". Ensure your workstation has L3 access to the management network, or configure a bastion/tunnel."),
        "{}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_that_cannot_reach_netbox_gets_the_tunnel_probe_message() {
    let t = embedded().await;
    write_netbox_root(&t.h.root(), "http://127.0.0.1:9", &Secret::new("x"), None).unwrap();
    write_sdn_state(
        &t.h.root(),
        &t.zone,
        &[("vnetmgmt", 10, &format!("{}.0/24", t.net))],
    )
    .unwrap();
    let o = t.overlay("o.yml", &["app-01"], "");
    let e = plan_inner(&t.ctx(&o, &[]).await, false, None)
        .await
        .unwrap_err();
    assert!(
        e.message.starts_with("NetBox API unreachable (")
            && e.message.contains("); tunnel probe failed: "),
        "{}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_netbox_only_the_proxmox_host_reaches_is_used_through_the_ssh_tunnel() {
    let t = embedded().await;
    let nb = t.netbox.as_ref().unwrap();
    // NetBox answers only on the management network: 127.0.0.2:<port> from the node.
    let port = nb.addr.port();
    t.h.sim
        .ssh()
        .add_service("127.0.0.2", port, nb.addr)
        .unwrap();
    write_netbox_root(
        &t.h.root(),
        &format!("https://127.0.0.2:{port}"),
        &t.token,
        Some(&nb.ca_fingerprint_sha256),
    )
    .unwrap();
    write_sdn_state(
        &t.h.root(),
        &t.zone,
        &[("vnetmgmt", 10, &format!("{}.0/24", t.net))],
    )
    .unwrap();
    let o = t.overlay("o.yml", &["app-01"], "");
    apply_inner(&t.ctx(&o, &[]).await, None, None)
        .await
        .unwrap();
    let alloc = t.evidence_json("apply-", "ipam_allocations.json");
    assert_eq!(
        alloc["allocations"][0]["address"],
        format!("{}.2/24", t.net)
    );
    let result = t.evidence_json("apply-", "driver_result.json");
    assert!(
        result["warnings"]
            .to_string()
            .contains("netbox api unreachable directly; using ssh tunnel via root@127.0.0.1"),
        "{}",
        result["warnings"]
    );
    assert!(t.h.sim.ssh().counters().direct_tcpip > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_gets_the_upstream_message() {
    let t = embedded().await;
    write_netbox_root(
        &t.h.root(),
        &t.url,
        &Secret::new("nbt_wrongwrongwr.nope"),
        match &t.tls {
            TlsMode::Fingerprint(f) => Some(f.as_str()),
            _ => None,
        },
    )
    .unwrap();
    write_sdn_state(
        &t.h.root(),
        &t.zone,
        &[("vnetmgmt", 10, &format!("{}.0/24", t.net))],
    )
    .unwrap();
    let o = t.overlay("o.yml", &["app-01"], "");
    let e = plan_inner(&t.ctx(&o, &[]).await, false, None)
        .await
        .unwrap_err();
    assert_eq!(e.message, "NETBOX_API_TOKEN is rejected by NetBox API");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_netbox_credentials_get_the_upstream_message() {
    let t = embedded().await;
    std::fs::remove_file(t.h.root().join("credentials/netbox.env")).unwrap();
    // The NetBox state without a URL.
    std::fs::write(
        t.h.root()
            .join("state/modules/platform__onprem__netbox/latest.json"),
        r#"{"status": "ok", "outputs": {}}"#,
    )
    .unwrap();
    let o = t.overlay("o.yml", &["app-01"], "");
    let e = plan_inner(&t.ctx(&o, &[]).await, false, None)
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        "inputs.addressing.mode=ipam requires NETBOX_API_URL, NETBOX_API_TOKEN. Run: hyops secrets ensure --env dev NETBOX_API_TOKEN (and ensure NETBOX_API_URL is set via NetBox state or credentials/netbox.env)."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_address_must_be_reserved_for_its_identity() {
    let t = embedded().await;
    let o = t.h.overlay(
        "o.yml",
        &overlay(&[], "").replace(
            "vms:\n",
            &format!(
                "vms:\n  app-01:\n    role: app\n    interfaces:\n      - bridge: vnetmgmt\n        ipv4: {{address: {}.50/24, gateway: {}.1}}\n",
                t.net, t.net
            ),
        ),
    );
    let e = plan_inner(&t.ctx(&o, &[]).await, false, None)
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "explicit IPAM address {}.50/24 is not reserved in NetBox for hyops:{}:app-01:vnetmgmt:1. Remove ipv4.address and let HybridOps allocate it, or create the reservation through HybridOps first.",
            t.net, t.zone
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_is_a_warning_by_default_and_fails_the_apply_when_strict() {
    let t = embedded().await;
    // A static overlay: no IPAM, but the sync after apply still talks to NetBox.
    let o = t.h.overlay("o.yml", common::DEMO);
    write_netbox_root(&t.h.root(), "http://127.0.0.1:9", &Secret::new("x"), None).unwrap();
    apply_inner(&t.ctx(&o, &[]).await, None, None)
        .await
        .unwrap();
    let result = t.evidence_json("apply-", "driver_result.json");
    let warnings = result["warnings"].to_string();
    assert!(
        warnings.contains("netbox sync failed (non-strict) with rc=3"),
        "{warnings}"
    );
    assert_eq!(t.h.state_json()["status"], "ok");
    let e = apply_inner(
        &t.ctx(&o, &[("HYOPS_NETBOX_SYNC_STRICT", "1")]).await,
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        e.message.contains("netbox sync failed with rc=3"),
        "{}",
        e.message
    );
    assert_eq!(t.h.state_json()["status"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_netbox_settings_the_sync_is_disabled_with_upstreams_warning() {
    let t = embedded().await;
    std::fs::remove_file(t.h.root().join("credentials/netbox.env")).unwrap();
    std::fs::remove_file(
        t.h.root()
            .join("state/modules/platform__onprem__netbox/latest.json"),
    )
    .unwrap();
    let o = t.h.overlay("o.yml", common::DEMO);
    apply_inner(&t.ctx(&o, &[]).await, None, None)
        .await
        .unwrap();
    let warnings = t.evidence_json("apply-", "driver_result.json")["warnings"].to_string();
    assert!(
        warnings.contains("push_to_netbox disabled (non-strict): push_to_netbox requires NETBOX_API_URL, NETBOX_API_TOKEN. Generate/store NETBOX_API_TOKEN in runtime vault via: hyops secrets ensure --env dev NETBOX_API_TOKEN."),
        "{warnings}"
    );
}

/// Writes of `name` under the root fail as on a full disk (`hyops::fsio::faults`).
fn full_disk(t: &Ipam, name: &str) -> hyops_pve::hyops::fsio::faults::FaultGuard {
    hyops_pve::hyops::fsio::faults::inject(hyops_pve::hyops::fsio::faults::WriteFault {
        under: t.h.root(),
        file_name: Some(name.to_string()),
        armed_by: None,
        after: 0,
        failures: None,
        errno: libc::ENOSPC,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_record_that_cannot_be_written_stops_the_apply_before_any_vm_and_the_rerun_reuses_the_addresses(
) {
    let t = embedded().await;
    let o = t.overlay("o.yml", &["app-01", "app-02"], "");
    let ctx = t.ctx(&o, &[]).await;
    {
        let _full = full_disk(&t, "ipam_allocations.json");
        let e = apply_inner(&ctx, None, None).await.unwrap_err();
        assert!(
            e.message.starts_with(
                "cannot record the NetBox IPAM allocations, so no VM was changed: cannot write "
            ),
            "{}",
            e.message
        );
        assert!(
            e.message.ends_with(
                "the addresses reserved in NetBox keep this slot's identities and the next apply reuses them"
            ),
            "{}",
            e.message
        );
        assert!(t.h.vms().is_empty());
        assert_eq!(t.h.state_json()["status"], "error");
    }
    let reserved: Vec<String> = t.ips().await.into_iter().map(|r| r.address).collect();
    assert_eq!(reserved.len(), 2);
    apply_inner(&ctx, None, None).await.unwrap();
    let mut after: Vec<String> = t.ips().await.into_iter().map(|r| r.address).collect();
    after.sort();
    let mut reserved = reserved;
    reserved.sort();
    assert_eq!(after, reserved, "the rerun reused the reservations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_netbox_sync_record_that_cannot_be_written_still_syncs_netbox_and_records_the_state_as_error(
) {
    let t = embedded().await;
    let o = t.overlay("o.yml", &["app-01"], "");
    let ctx = t.ctx(&o, &[]).await;
    let _full = full_disk(&t, "hook_netbox_sync.json");
    let e = apply_inner(&ctx, None, None).await.unwrap_err();
    assert!(
        e.message
            .starts_with("apply changed Proxmox but its evidence is incomplete: cannot write "),
        "{}",
        e.message
    );
    assert!(e
        .message
        .contains("hook_netbox_sync.json: No space left on device"));
    assert!(
        e.message.contains("VMs: 1 created (app-01 vmid "),
        "{}",
        e.message
    );
    t.vm(&t.name("app-01")).await.expect("NetBox was synced");
    let st = t.h.state_json();
    assert_eq!(st["status"], "error");
    assert_eq!(st["outputs"], serde_json::json!({}));
}
