//! Placement Proxmox would refuse, caught at plan time (item 3 of issue 8): every VM's node
//! must be an online cluster node, its bridges must exist there (`GET /nodes/{node}/network`),
//! its target storage must hold VM images there (`GET /nodes/{node}/storage`), and its CPU
//! model must be one the node knows (`GET /nodes/{node}/capabilities/qemu/cpu`). It also
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
use crate::pve::{NodeStorage, PveClient, PveError};

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
    pub storages: Option<Vec<NodeStorage>>,
    pub cpu_models: Option<BTreeSet<String>>,
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
    for n in nodes {
        let Some(info) = all.iter().find(|x| &x.node == n) else {
            continue;
        };
        if !info.is_online() {
            facts.by_node.insert(n.clone(), NodeFacts::default());
            continue;
        }
        let err = |what: &str| {
            let what = format!("{what} on node {n}");
            move |source| GatherError { what, source }
        };
        let bridges = client
            .node_bridges(n)
            .await
            .map_err(err("GET /nodes/{node}/network"))?;
        let storages = client
            .node_storages(n, None)
            .await
            .map_err(err("GET /nodes/{node}/storage"))?;
        let cpus = client
            .cpu_models(n)
            .await
            .map_err(err("GET /nodes/{node}/capabilities/qemu/cpu"))?;
        facts.by_node.insert(
            n.clone(),
            NodeFacts {
                online: true,
                bridges: (!bridges.is_empty())
                    .then(|| bridges.into_iter().map(|b| b.iface).collect()),
                storages: (!storages.is_empty()).then_some(storages),
                cpu_models: (!cpus.is_empty()).then(|| cpus.into_iter().map(|c| c.name).collect()),
            },
        );
    }
    Ok(facts)
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
                    }
                }
            }
            None => {
                warnings.insert(format!(
                    "node {node} listed no bridges (GET /nodes/{node}/network); the bridge check was skipped"
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
