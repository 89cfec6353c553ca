//! The saved plan (`plan.json`, versioned schema) and its staleness check. `apply --plan`
//! applies a saved plan only if a fresh plan computed from the current observed state is the
//! same plan. Knows nothing about HTTP.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plan::desired::TemplateRef;
use crate::plan::diff::{PlanSummary, VmAction, VmPlan};

/// Bump when the shape of `plan.json` changes incompatibly.
pub const PLAN_SCHEMA_VERSION: u32 = 1;
pub const PLAN_KIND: &str = "hyops-pve/plan";

/// `plan.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanArtifact {
    pub schema_version: u32,
    pub kind: String,
    pub run_id: String,
    pub created_at: String,
    pub module_ref: String,
    pub env: Option<String>,
    pub slot: String,
    pub state_instance: Option<String>,
    /// SHA-256 of the desired model, so a changed overlay invalidates a saved plan.
    pub inputs_digest: String,
    pub template: TemplateRef,
    pub summary: PlanSummary,
    pub vms: Vec<VmPlan>,
    pub warnings: Vec<String>,
    /// IPAM decision per NIC (IPAM overlays): reuse, allocate (plan), allocated (apply),
    /// or an explicit address checked against NetBox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipam: Vec<crate::netbox::ipam::NicDecision>,
}

/// Why a saved plan cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StalePlan {
    #[error("plan file {path} is not a hyops-pve plan (kind={kind:?}, schema_version={version}); expected kind={PLAN_KIND:?} schema_version={PLAN_SCHEMA_VERSION}")]
    WrongKind {
        path: String,
        kind: String,
        version: u32,
    },
    #[error(
        "saved plan {run_id} no longer matches Proxmox and the inputs: {details}. Run plan again"
    )]
    Drifted { run_id: String, details: String },
    /// The plan was made for another target (env, module, slot or state instance; only the
    /// differing ones are named): its VM differences would only repeat that, so none are
    /// listed.
    #[error(
        "saved plan {run_id} was made for {planned}, but this run is for {now}: a plan applies only where it was made. Run plan again for this target, or apply the plan where it was made"
    )]
    OtherTarget {
        run_id: String,
        planned: String,
        now: String,
    },
}

/// Digest of the desired VMs (canonical JSON, keys in BTreeMap order).
pub fn desired_digest<V: serde::Serialize>(
    desired: &BTreeMap<crate::inputs::model::LogicalVmKey, V>,
) -> String {
    let bytes = serde_json::to_vec(desired).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

impl PlanArtifact {
    /// True when a NIC still waits for a NetBox address (a `plan` in IPAM mode). Such a
    /// plan is shown, never executed.
    pub fn has_pending_ipam(&self) -> bool {
        self.vms.iter().any(|v| {
            v.desired
                .as_ref()
                .is_some_and(|d| d.nics.iter().any(|n| n.ipam_pending.is_some()))
                || v.config_set
                    .values()
                    .any(|val| val.starts_with(crate::plan::desired::PENDING_IPCONFIG))
        })
    }

    /// This plan with the NICs allocated in this run shown as pending, as a `plan` made
    /// before the allocation shows them (so `apply --plan` can compare the two).
    pub fn with_allocations_pending(&self, decisions: &[crate::netbox::ipam::NicDecision]) -> Self {
        use crate::netbox::ipam::IpamAction;
        let mut out = self.clone();
        for d in decisions
            .iter()
            .filter(|d| d.action == IpamAction::Allocated)
        {
            let idx = d.nic_index.saturating_sub(1);
            for vm in out.vms.iter_mut().filter(|v| v.key.0 == d.vm_key) {
                let Some(want) = vm.desired.as_mut().map(std::sync::Arc::make_mut) else {
                    continue;
                };
                let Some(nic) = want.nics.get_mut(idx) else {
                    continue;
                };
                let gateway = match &nic.ipv4 {
                    crate::inputs::model::Ipv4Config::Static { gateway, .. } => *gateway,
                    _ => None,
                };
                nic.ipam_pending = Some(crate::plan::desired::PendingIpam {
                    range: d.range.clone(),
                    gateway,
                });
                nic.ipv4 = crate::inputs::model::Ipv4Config::Dhcp;
                let key = format!("ipconfig{idx}");
                let value = nic.ipconfig_value();
                if let Some(v) = vm.config_set.get_mut(&key) {
                    *v = value;
                }
            }
        }
        let desired: BTreeMap<_, _> = out
            .vms
            .iter()
            .filter(|v| v.action != VmAction::Delete)
            .filter_map(|v| v.desired.clone().map(|d| (v.key.clone(), d)))
            .collect();
        out.inputs_digest = desired_digest(&desired);
        out
    }

    /// Where this plan applies, as `(what, value)` pairs: the env, module, slot and state
    /// instance.
    fn target(&self) -> [(&'static str, String); 4] {
        [
            (
                "env",
                self.env
                    .clone()
                    .unwrap_or_else(|| "(none: an explicit --root)".into()),
            ),
            ("module", self.module_ref.clone()),
            ("slot", self.slot.clone()),
            (
                "state instance",
                self.state_instance
                    .clone()
                    .unwrap_or_else(|| "(none)".into()),
            ),
        ]
    }

    /// Check a plan loaded from disk against a fresh one. Every VM must have the same action,
    /// the same VMID, the same writes, and the same observed config digest.
    pub fn check_still_valid(&self, fresh: &PlanArtifact, path: &str) -> Result<(), StalePlan> {
        if self.kind != PLAN_KIND || self.schema_version != PLAN_SCHEMA_VERSION {
            return Err(StalePlan::WrongKind {
                path: path.to_string(),
                kind: self.kind.clone(),
                version: self.schema_version,
            });
        }
        let differing: Vec<_> = self
            .target()
            .into_iter()
            .zip(fresh.target())
            .filter(|(a, b)| a != b)
            .collect();
        if !differing.is_empty() {
            let (planned, now): (Vec<String>, Vec<String>) = differing
                .iter()
                .map(|((what, a), (_, b))| (format!("{what} {a}"), format!("{what} {b}")))
                .unzip();
            return Err(StalePlan::OtherTarget {
                run_id: self.run_id.clone(),
                planned: planned.join(", "),
                now: now.join(", "),
            });
        }
        let mut details = Vec::new();
        if self.inputs_digest != fresh.inputs_digest {
            details.push("the inputs changed since the plan was made".to_string());
        }
        let saved: BTreeMap<_, _> = self.vms.iter().map(|v| (&v.key, v)).collect();
        let now: BTreeMap<_, _> = fresh.vms.iter().map(|v| (&v.key, v)).collect();
        for key in saved
            .keys()
            .chain(now.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            match (saved.get(key), now.get(key)) {
                (Some(a), Some(b)) => {
                    if a.action != b.action {
                        details.push(format!("{key}: planned {:?}, now {:?}", a.action, b.action));
                    } else if a.observed_digest != b.observed_digest {
                        details.push(format!("{key}: the VM config changed on Proxmox"));
                    } else if a.vmid != b.vmid && a.action != VmAction::Create {
                        details.push(format!("{key}: VMID changed"));
                    } else if a.config_set != b.config_set
                        || a.config_delete != b.config_delete
                        || a.resize != b.resize
                        || a.start != b.start
                        || a.restart != b.restart
                    {
                        details.push(format!("{key}: the changes differ"));
                    }
                }
                (Some(_), None) => details.push(format!("{key}: no longer part of the plan")),
                (None, Some(_)) => details.push(format!("{key}: new since the plan was made")),
                (None, None) => {}
            }
        }
        if details.is_empty() {
            Ok(())
        } else {
            Err(StalePlan::Drifted {
                run_id: self.run_id.clone(),
                details: details.join("; "),
            })
        }
    }
}
