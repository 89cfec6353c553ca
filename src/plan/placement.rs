//! Placement Proxmox would refuse, caught at plan time (item 3 of issue 8): every VM's node
//! must be an online cluster node, its bridges must exist there (`GET /nodes/{node}/network`),
//! its target storage must hold VM images there (`GET /nodes/{node}/storage`), and its CPU
//! model must be one the node knows (`GET /nodes/{node}/capabilities/qemu/cpu`). The rules a
//! VM start applies to the node (qemu-server `config_to_command`, which a clone and a config
//! write never check) are checked too: at most the node's CPUs as vCPUs (`maxcpu` of
//! `GET /nodes`: "MAX n vcpus allowed per VM on this node") and no NIC MTU above its bridge's
//! (`print_netdevice_full`: "MTU '…' is bigger than the bridge MTU '…'"). It also
//! decides how a VM reaches a node other than its template's, the one behaviour a careful
//! operator expects and bpg's provider implements: Proxmox clones straight to another node
//! only when every template volume and the target storage are shared (`target`, qemu-server
//! `clone_vm`); otherwise the clone is made on the template's node and then migrated offline
//! (`migrate` with `targetstorage`). A linked clone of a template on local storage can live
//! only on the template's node. Every problem is listed at once.
//!
//! The facts are read by [`gather`]; [`place`] is pure.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::inputs::model::{CloneMode, LogicalVmKey};
use crate::plan::desired::{DesiredVm, TemplateRef};
use crate::pve::{ErrorClass, NodeStorage, PveClient, PveError};

/// After the clone: move the VM to its node, copying its disks to `targetstorage`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateStep {
    pub node: String,
    pub targetstorage: Option<String>,
}

/// How a new VM gets made and placed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneRoute {
    /// The node the clone call goes to (always the template's node).
    pub clone_node: String,
    /// `target` of the clone: the VM's node, when Proxmox can clone straight there.
    pub target: Option<String>,
    /// `storage` of the clone (full clones only).
    pub storage: Option<String>,
    /// An offline migration after the clone.
    pub migrate: Option<MigrateStep>,
}

impl CloneRoute {
    /// The node the VM ends up on.
    pub fn final_node(&self) -> &str {
        self.migrate
            .as_ref()
            .map(|m| m.node.as_str())
            .or(self.target.as_deref())
            .unwrap_or(&self.clone_node)
    }
}

/// What one node offers. A list the node answered empty is kept as `None` (unknown): a real
/// node always has an interface and a storage, so an empty answer means the API could not
/// tell, and that check is skipped with a warning instead of refusing everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub online: bool,
    pub bridges: Option<BTreeSet<String>>,
    /// The MTU of each bridge that reports one (`mtu` of `GET /nodes/{node}/network`).
    pub bridge_mtus: BTreeMap<String, u32>,
    pub storages: Option<Vec<NodeStorage>>,
    pub cpu_models: Option<BTreeSet<String>>,
    /// The node's CPU count (`maxcpu` of `GET /nodes`), when it reports one.
    pub max_cpus: Option<u64>,
}

/// The facts of every node the plan touches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    /// Every cluster node (`GET /nodes`).
    pub nodes: BTreeSet<String>,
    pub by_node: BTreeMap<String, NodeFacts>,
}

/// Reading the facts failed.
#[derive(Debug, thiserror::Error)]
#[error("placement check: {what} failed: {source}")]
pub struct GatherError {
    pub what: String,
    #[source]
    pub source: PveError,
}

/// Read the facts of `nodes` (the VMs' nodes and the template's node); one call per list
/// per node.
pub async fn gather(
    client: &PveClient,
    nodes: &BTreeSet<String>,
) -> Result<ClusterFacts, GatherError> {
    let all = client.nodes().await.map_err(|source| GatherError {
        what: "GET /nodes".into(),
        source,
    })?;
    let mut facts = ClusterFacts {
        nodes: all.iter().map(|n| n.node.clone()).collect(),
        ..Default::default()
    };
    // Every node's three lists are read at once (a storage listing makes Proxmox stat each
    // storage); their answers are then taken in node order, so the first error reported is
    // the one a sequential read would have met.
    let online: Vec<(&String, &crate::pve::NodeInfo)> = nodes
        .iter()
        .filter_map(|n| all.iter().find(|x| &x.node == n).map(|info| (n, info)))
        .collect();
    let answers = futures::future::join_all(online.iter().map(|(n, info)| async move {
        if !info.is_online() {
            return None;
        }
        Some(tokio::join!(
            client.node_bridges(n),
            client.node_storages(n, None),
            client.cpu_models(n)
        ))
    }))
    .await;
    for ((n, info), answer) in online.into_iter().zip(answers) {
        let Some((bridges, storages, cpus)) = answer else {
            facts.by_node.insert(n.clone(), NodeFacts::default());
            continue;
        };
        // A list the token may not read (403) or the server does not have (501) is unknown:
        // that check is skipped with a warning rather than refusing the plan.
        let bridges = lenient_list(n, "GET /nodes/{node}/network", bridges)?;
        let storages = lenient_list(n, "GET /nodes/{node}/storage", storages)?;
        let cpus = lenient_list(n, "GET /nodes/{node}/capabilities/qemu/cpu", cpus)?;
        let bridge_mtus = bridges
            .iter()
            .flatten()
            .filter_map(|b| Some((b.iface.clone(), b.mtu?)))
            .collect();
        facts.by_node.insert(
            n.clone(),
            NodeFacts {
                online: true,
                bridges: bridges
                    .filter(|b| !b.is_empty())
                    .map(|b| b.into_iter().map(|b| b.iface).collect()),
                bridge_mtus,
                max_cpus: info.maxcpu.filter(|c| *c > 0),
                storages: storages.filter(|s| !s.is_empty()),
                cpu_models: cpus
                    .filter(|c| !c.is_empty())
                    .map(|c| c.into_iter().map(|c| c.name).collect()),
            },
        );
    }
    Ok(facts)
}

/// A listing the token may not read (403) or the server does not offer (501) is `None`
/// (unknown: its check is skipped with a warning); other errors fail the plan.
fn lenient_list<T>(
    node: &str,
    what: &str,
    r: Result<Vec<T>, PveError>,
) -> Result<Option<Vec<T>>, GatherError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e)
            if matches!(
                e.classify(),
                ErrorClass::Permission | ErrorClass::NotImplemented
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(GatherError {
            what: format!("{what} on node {node}"),
            source,
        }),
    }
}

/// Every placement problem, in VM order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PlacementFailure {
    pub problems: Vec<String>,
}

impl fmt::Display for PlacementFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plan refused before any write: {} placement problem(s) Proxmox would refuse; fix them all and run again:",
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

fn storage_on<'a>(facts: &'a NodeFacts, id: &str) -> Option<&'a NodeStorage> {
    facts
        .storages
        .as_ref()?
        .iter()
        .find(|s| s.storage == id && s.usable())
}

fn list<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> String {
    let v: Vec<String> = items.into_iter().map(|s| s.as_ref().to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Check every desired VM against the facts and choose its [`CloneRoute`]. Returns the
/// warnings (checks that could not run). `storage_field` names where the datastore comes
/// from, for messages.
pub fn place(
    desired: &mut BTreeMap<LogicalVmKey, DesiredVm>,
    template: &TemplateRef,
    facts: &ClusterFacts,
    storage_field: &str,
) -> Result<Vec<String>, PlacementFailure> {
    let mut problems = Vec::new();
    let mut warnings = BTreeSet::new();
    let tfacts = facts.by_node.get(&template.node);
    let template_shared = tfacts.and_then(|t| t.storages.as_ref()).is_some_and(|_| {
        template.storages.iter().all(|sid| {
            tfacts
                .and_then(|t| storage_on(t, sid))
                .is_some_and(|s| s.shared)
        })
    });
    for (key, vm) in desired.iter_mut() {
        let node = vm.node.clone();
        if !facts.nodes.contains(&node) {
            problems.push(format!(
                "VM {key}: node '{node}' is not a node of this cluster (nodes: {})",
                list(&facts.nodes)
            ));
            continue;
        }
        let Some(nf) = facts.by_node.get(&node) else {
            continue;
        };
        if !nf.online {
            problems.push(format!(
                "VM {key}: node '{node}' is not online; wait for it or place the VM elsewhere"
            ));
            continue;
        }
        match &nf.bridges {
            Some(bridges) => {
                for nic in &vm.nics {
                    if !bridges.contains(&nic.bridge) {
                        problems.push(format!(
                            "VM {key}: bridge '{}' of interfaces[{}] does not exist on node {node} (bridges there: {}); a start would fail with \"bridge '{}' does not exist\"",
                            nic.bridge,
                            nic.index + 1,
                            list(bridges),
                            nic.bridge
                        ));
                        continue;
                    }
                    // `mtu: 1` means "the bridge's MTU"; a larger MTU than the bridge's is
                    // refused by the start, after the clone and the config write.
                    if let (Some(mtu), Some(bridge_mtu)) =
                        (nic.mtu, nf.bridge_mtus.get(&nic.bridge))
                    {
                        if mtu != 1 && u32::from(mtu) > *bridge_mtu {
                            problems.push(format!(
                                "VM {key}: mtu {mtu} of interfaces[{}] is above the MTU {bridge_mtu} of bridge '{}' on node {node}; Proxmox refuses to start it (\"netdev net{}: MTU '{mtu}' is bigger than the bridge MTU '{bridge_mtu}'\"): lower mtu (1 = the bridge's) or raise the bridge's MTU",
                                nic.index + 1,
                                nic.bridge,
                                nic.index
                            ));
                        }
                    }
                }
            }
            None => {
                warnings.insert(format!(
                    "node {node} listed no bridges (GET /nodes/{node}/network); the bridge check was skipped"
                ));
            }
        }
        if let Some(max) = nf.max_cpus {
            let sockets = template.sockets.unwrap_or(1).max(1);
            let vcpus = u64::from(sockets) * u64::from(vm.cores);
            if vcpus > max {
                let how = if sockets > 1 {
                    format!(
                        "cpu_cores {} × {sockets} sockets of template {} = {vcpus} vCPUs",
                        vm.cores, template.vmid
                    )
                } else {
                    format!("cpu_cores {} = {vcpus} vCPUs", vm.cores)
                };
                problems.push(format!(
                    "VM {key}: {how}, but node {node} has {max} CPUs; Proxmox refuses to start it (\"MAX {max} vcpus allowed per VM on this node\"): lower cpu_cores to at most {}",
                    max / u64::from(sockets)
                ));
            }
        }
        if vm.cpu_type != "host" {
            match &nf.cpu_models {
                Some(models) if !models.contains(&vm.cpu_type) => problems.push(format!(
                    "VM {key}: CPU model '{}' (inputs.cpu_type) is not known on node {node}; Proxmox refuses it (\"Built-in cputype '{}' is not defined\")",
                    vm.cpu_type, vm.cpu_type
                )),
                Some(_) => {}
                None => {
                    warnings.insert(format!(
                        "node {node} listed no CPU models; the cpu_type check was skipped"
                    ));
                }
            }
        }
        // how the VM is made
        let same_node = node == template.node;
        match vm.clone_mode {
            CloneMode::Linked => {
                if !same_node && !template_shared {
                    problems.push(format!(
                        "VM {key}: clone_mode linked on node {node} needs the template on that node, but template {} is on {} with local storage ({}); use clone_mode: full (clone on {} and migrate), node_name {}, or a template on shared storage",
                        template.vmid, template.node, list(&template.storages), template.node, template.node
                    ));
                    continue;
                }
                vm.route = CloneRoute {
                    clone_node: template.node.clone(),
                    target: (!same_node).then(|| node.clone()),
                    storage: None,
                    migrate: None,
                };
            }
            CloneMode::Full => {
                let sid = vm.storage.clone();
                let on_target = match &nf.storages {
                    Some(_) => storage_on(nf, &sid),
                    None => {
                        warnings.insert(format!(
                            "node {node} listed no storages (GET /nodes/{node}/storage); the storage check was skipped"
                        ));
                        None
                    }
                };
                if nf.storages.is_some() {
                    match on_target {
                        None => {
                            problems.push(format!(
                                "VM {key}: storage '{sid}' ({storage_field}) is not available on node {node} (storages with VM images there: {})",
                                list(nf.storages.iter().flatten().filter(|s| s.has_content("images") && s.usable()).map(|s| &s.storage))
                            ));
                            continue;
                        }
                        Some(s) if !s.has_content("images") => {
                            problems.push(format!(
                                "VM {key}: storage '{sid}' ({storage_field}) on node {node} does not hold VM images (content: {})",
                                s.content.clone().unwrap_or_default()
                            ));
                            continue;
                        }
                        Some(_) => {}
                    }
                }
                let target_shared = on_target.is_some_and(|s| s.shared);
                let on_template_node = tfacts.and_then(|t| storage_on(t, &sid)).is_some();
                vm.route = if same_node {
                    CloneRoute {
                        clone_node: node.clone(),
                        target: None,
                        storage: Some(sid),
                        migrate: None,
                    }
                } else if template_shared && target_shared && on_template_node {
                    CloneRoute {
                        clone_node: template.node.clone(),
                        target: Some(node.clone()),
                        storage: Some(sid),
                        migrate: None,
                    }
                } else {
                    CloneRoute {
                        clone_node: template.node.clone(),
                        target: None,
                        storage: on_template_node.then(|| sid.clone()),
                        migrate: Some(MigrateStep {
                            node: node.clone(),
                            targetstorage: Some(sid),
                        }),
                    }
                };
            }
        }
    }
    if problems.is_empty() {
        Ok(warnings.into_iter().collect())
    } else {
        Err(PlacementFailure { problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(id: &str, shared: bool) -> NodeStorage {
        NodeStorage {
            storage: id.into(),
            kind: None,
            content: Some("images".into()),
            shared,
            active: Some(true),
            enabled: Some(true),
            avail: None,
        }
    }

    fn facts(storages: Vec<NodeStorage>) -> ClusterFacts {
        let nf = NodeFacts {
            online: true,
            bridges: Some(["vmbr0".to_string()].into()),
            bridge_mtus: [("vmbr0".to_string(), 1500)].into(),
            storages: Some(storages),
            cpu_models: None,
            max_cpus: Some(8),
        };
        ClusterFacts {
            nodes: ["pve1".to_string(), "pve2".to_string()].into(),
            by_node: [("pve1".to_string(), nf.clone()), ("pve2".to_string(), nf)].into(),
        }
    }

    fn vm(node: &str, storage: &str) -> BTreeMap<LogicalVmKey, DesiredVm> {
        use crate::inputs::{resolve_inputs_with_overlay, LifecycleCommand, ResolveRequest};
        let overlay = serde_json::json!({
            "require_ipam": false, "template_vm_id": 9000, "datastore_id": storage,
            "vms": {"a": {"node_name": node, "interfaces": [{"bridge": "vmbr0"}]}}
        });
        let mut req = ResolveRequest::new(LifecycleCommand::Plan);
        req.runtime_env = Some("dev".into());
        let model = resolve_inputs_with_overlay(&req, &overlay).unwrap().model;
        let defaults = crate::plan::desired::TargetDefaults {
            node: "pve1".into(),
            datastore: "local-lvm".into(),
            snippets_datastore: "local".into(),
            network_bridge: "vmbr0".into(),
            ssh_username: "ops".into(),
            ssh_public_key: None,
        };
        let marker = crate::plan::marker::OwnershipMarker {
            env: "dev".into(),
            slot: "latest".into(),
            module_ref: crate::inputs::MODULE_REF.into(),
            key: "a".into(),
            template_vmid: 9000,
            clone_mode: CloneMode::Full,
        };
        model
            .vms
            .iter()
            .map(|(k, v)| {
                let d = crate::plan::desired::desired_vm(
                    &model,
                    v,
                    &defaults,
                    &template(&[storage]),
                    marker.clone(),
                    &Default::default(),
                )
                .unwrap();
                (k.clone(), d)
            })
            .collect()
    }

    fn template(storages: &[&str]) -> TemplateRef {
        TemplateRef {
            vmid: 9000,
            node: "pve1".into(),
            boot_disk: "scsi0".into(),
            disk_bytes: None,
            storages: storages.iter().map(|s| s.to_string()).collect(),
            sockets: None,
        }
    }

    #[test]
    fn a_template_on_shared_storage_clones_straight_to_another_node() {
        let mut d = vm("pve2", "ceph");
        place(
            &mut d,
            &template(&["ceph"]),
            &facts(vec![storage("ceph", true)]),
            "x",
        )
        .unwrap();
        let r = &d.values().next().unwrap().route;
        assert_eq!(
            (r.target.as_deref(), r.migrate.is_none()),
            (Some("pve2"), true)
        );
    }

    #[test]
    fn a_template_on_local_storage_clones_at_home_and_migrates() {
        let mut d = vm("pve2", "local-lvm");
        place(
            &mut d,
            &template(&["local-lvm"]),
            &facts(vec![storage("local-lvm", false)]),
            "x",
        )
        .unwrap();
        let r = &d.values().next().unwrap().route;
        assert_eq!(r.clone_node, "pve1");
        assert_eq!(r.target, None);
        assert_eq!(
            r.migrate,
            Some(MigrateStep {
                node: "pve2".into(),
                targetstorage: Some("local-lvm".into())
            })
        );
    }

    #[test]
    fn unknown_lists_skip_their_check_with_a_warning() {
        let mut f = facts(vec![storage("local-lvm", false)]);
        for nf in f.by_node.values_mut() {
            nf.bridges = None;
        }
        let mut d = vm("pve1", "local-lvm");
        let warnings = place(&mut d, &template(&["local-lvm"]), &f, "x").unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("bridge check was skipped")),
            "{warnings:?}"
        );
    }

    fn problems(d: &mut BTreeMap<LogicalVmKey, DesiredVm>, t: &TemplateRef) -> Vec<String> {
        let f = facts(vec![storage("local-lvm", false)]);
        place(d, t, &f, "x").unwrap_err().problems
    }

    #[test]
    fn more_vcpus_than_the_node_has_cpus_are_refused_before_the_clone() {
        let mut d = vm("pve1", "local-lvm");
        for v in d.values_mut() {
            v.cores = 16;
        }
        let p = problems(&mut d, &template(&["local-lvm"]));
        assert!(
            p.len() == 1
                && p[0].contains("cpu_cores 16")
                && p[0].contains("MAX 8 vcpus allowed per VM on this node"),
            "{p:?}"
        );
    }

    #[test]
    fn the_template_sockets_multiply_the_vcpus() {
        let mut d = vm("pve1", "local-lvm");
        for v in d.values_mut() {
            v.cores = 4;
        }
        let mut t = template(&["local-lvm"]);
        t.sockets = Some(4);
        let p = problems(&mut d, &t);
        assert!(
            p.len() == 1 && p[0].contains("4 sockets of template 9000 = 16 vCPUs"),
            "{p:?}"
        );
        t.sockets = Some(2);
        assert!(place(&mut d, &t, &facts(vec![storage("local-lvm", false)]), "x").is_ok());
    }

    #[test]
    fn a_nic_mtu_above_its_bridge_mtu_is_refused_before_the_clone() {
        let mut d = vm("pve1", "local-lvm");
        for v in d.values_mut() {
            v.nics[0].mtu = Some(9000);
        }
        let p = problems(&mut d, &template(&["local-lvm"]));
        assert!(
            p.len() == 1 && p[0].contains("MTU '9000' is bigger than the bridge MTU '1500'"),
            "{p:?}"
        );
        for v in d.values_mut() {
            v.nics[0].mtu = Some(1);
        }
        assert!(place(
            &mut d,
            &template(&["local-lvm"]),
            &facts(vec![storage("local-lvm", false)]),
            "x"
        )
        .is_ok());
    }
}
