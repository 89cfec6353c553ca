//! Converge after (issue 8): over random valid overlays on the simulator, an apply is
//! followed by a plan with no changes; then a second random overlay for the same VMs (cores,
//! memory, disks, NICs added, removed or moved, nodes, clone mode, restart policy, cloud-init
//! delivery) is applied
//! over the first, and the plan after it is empty too. The apply's own post-apply
//! verification must agree (an apply that leaves differences fails).

use crate::common;

use common::Harness;
use hyops_pve::commands::module::{apply_inner, plan_inner};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(Clone, Debug)]
struct Nic {
    bridge: &'static str,
    vlan: Option<u16>,
    mtu: Option<u16>,
    e1000: bool,
    dhcp: bool,
}

#[derive(Clone, Debug)]
struct Vm {
    node: Option<&'static str>,
    role: &'static str,
    nics: Vec<Nic>,
}

#[derive(Clone, Debug)]
struct Overlay {
    cores: u32,
    memory: u32,
    disk: u32,
    linked: bool,
    defer: bool,
    native: bool,
    tags: Vec<&'static str>,
    vms: Vec<Vm>,
}

fn nic() -> impl Strategy<Value = Nic> {
    (
        prop::sample::select(vec!["vmbr0", "vmbr1", "vnetmgmt"]),
        prop::option::of(1u16..4095),
        prop::option::of(prop::sample::select(vec![1u16, 1400, 1500])),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(bridge, vlan, mtu, e1000, dhcp)| Nic {
            bridge,
            vlan,
            mtu: if e1000 { None } else { mtu },
            e1000,
            dhcp,
        })
}

fn vm() -> impl Strategy<Value = Vm> {
    (
        prop::option::of(prop::sample::select(vec!["pve1", "pve2", "pve3"])),
        prop::sample::select(vec!["app", "db", "web"]),
        prop::collection::vec(nic(), 1..=3),
    )
        .prop_map(|(node, role, nics)| Vm { node, role, nics })
}

/// A valid overlay for exactly `n` VMs (keys vm-1 …).
fn overlay(n: usize) -> impl Strategy<Value = Overlay> {
    (
        1u32..=4,
        prop::sample::select(vec![1024u32, 2048, 4096]),
        prop::sample::select(vec![20u32, 32, 40, 48]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::sample::subsequence(vec!["platform", "onprem", "blue", "green"], 1..=3),
        prop::collection::vec(vm(), n..=n),
    )
        .prop_map(
            |(cores, memory, disk, linked, defer, native, tags, mut vms)| {
                if linked {
                    // a linked clone of the local template lives on the template's node
                    for v in &mut vms {
                        v.node = None;
                    }
                }
                Overlay {
                    cores,
                    memory,
                    disk,
                    linked,
                    defer,
                    native,
                    tags,
                    vms,
                }
            },
        )
}

fn yaml(o: &Overlay, subnet: u8) -> String {
    let mut s = format!(
        "require_ipam: false\nssh_username: opsadmin\nallow_vm_set_replace: true\ntemplate_state_ref: core/onprem/template-image\ntemplate_key: ubuntu-24.04\ncpu_cores: {}\nmemory_mb: {}\ndisk_size_gb: {}\nclone_mode: {}\nrestart_policy: {}\ncloud_init_mode: {}\ntags: [{}]\npost_apply_ssh_readiness:\n  connectivity_wait_s: 30\nvms:\n",
        o.cores,
        o.memory,
        o.disk,
        if o.linked { "linked" } else { "full" },
        if o.defer { "defer" } else { "restart" },
        if o.native { "native" } else { "snippets" },
        o.tags.join(", ")
    );
    for (i, v) in o.vms.iter().enumerate() {
        s.push_str(&format!("  vm-{}:\n    role: {}\n", i + 1, v.role));
        if let Some(n) = v.node {
            s.push_str(&format!("    node_name: {n}\n"));
        }
        s.push_str("    interfaces:\n");
        for (j, n) in v.nics.iter().enumerate() {
            s.push_str(&format!("      - bridge: {}\n", n.bridge));
            if let Some(t) = n.vlan {
                s.push_str(&format!("        vlan_id: {t}\n"));
            }
            if let Some(m) = n.mtu {
                s.push_str(&format!("        mtu: {m}\n"));
            }
            if n.e1000 {
                s.push_str("        model: e1000\n");
            }
            if n.dhcp {
                s.push_str("        ipv4: {address: dhcp}\n");
            } else if j == 0 {
                s.push_str(&format!(
                    "        ipv4: {{address: 10.{subnet}.{}.10/24, gateway: 10.{subnet}.{}.1}}\n",
                    i + 1,
                    i + 1
                ));
            } else {
                s.push_str(&format!(
                    "        ipv4: {{address: 10.{subnet}.{}.{}/24}}\n",
                    i + 1,
                    10 + j
                ));
            }
        }
    }
    s
}

async fn apply_then_plan_is_empty(h: &Harness, name: &str, text: &str) -> Result<(), String> {
    let ctx = h.ctx(&h.overlay(name, text)).await;
    apply_inner(&ctx, None, None)
        .await
        .map_err(|e| format!("apply failed: {}\n{text}", e.message))?;
    match plan_inner(&ctx, true, None).await {
        Ok(0) => Ok(()),
        Ok(code) => Err(format!(
            "plan after apply has changes (exit {code}):\n{text}"
        )),
        Err(e) => Err(format!("plan after apply failed: {}\n{text}", e.message)),
    }
}

#[test]
fn apply_then_plan_is_empty_over_random_valid_overlays() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cases: u32 = std::env::var("HYOPS_CONVERGE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // each shrink step is two applies; a handful is enough to make a case readable
        max_shrink_iters: 24,
        ..Config::default()
    });
    let strategy = (1usize..=3).prop_flat_map(|n| (overlay(n), overlay(n)));
    let result = runner.run(&strategy, |(first, second)| {
        rt.block_on(async {
            // vnetmgmt is SDN-managed: the runner has a network-sdn state for it.
            let h = Harness::start_with_sdn().await;
            apply_then_plan_is_empty(&h, "first.yml", &yaml(&first, 20)).await?;
            apply_then_plan_is_empty(&h, "second.yml", &yaml(&second, 30)).await
        })
        .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
