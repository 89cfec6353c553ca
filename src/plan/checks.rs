//! Catch before write: every value the engine will send to Proxmox, checked against Proxmox's
//! own formats ([`crate::pve::formats`]) before the plan exists, and the pool as a whole (two
//! VMs with one physical name, one `vm_id` or one MAC). All problems are collected and
//! reported together, each naming the field, the value and the rule, so one run shows the
//! operator everything to fix. Pure: reads the validated inputs and the credentials defaults,
//! never calls Proxmox (the cluster-dependent checks are [`crate::plan::placement`]).
//!
//! These refusals go beyond upstream hyops, which lets Proxmox refuse the same values only
//! after a clone has been made; the README lists them under "Differences from hyops".

use std::collections::BTreeMap;
use std::fmt;

use crate::inputs::model::{ModuleInputs, TemplateSource, VmInputs, VmMode};
use crate::plan::desired::TargetDefaults;
use crate::pve::formats::{self, FormatViolation};

/// Highest `netN` index Proxmox has (`net0` … `net31`).
pub const MAX_NICS: usize = 32;

/// One value Proxmox would refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where the value comes from (`inputs.vms[web-01].vm_name`, `credentials proxmox_node`).
    pub field: String,
    /// The offending value, as the operator wrote it (or as it resolves).
    pub value: String,
    /// What it breaks, in words.
    pub rule: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}: {}", self.field, self.value, self.rule)
    }
}

/// Every problem found, in input order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct CheckFailure {
    pub problems: Vec<Problem>,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "input validation failed for {}: {} value(s) would be refused by Proxmox (nothing was sent to Proxmox); fix them all and run again:",
            crate::inputs::MODULE_REF,
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Collector {
    problems: Vec<Problem>,
}

impl Collector {
    fn check(&mut self, field: impl Into<String>, value: &str, r: Result<(), FormatViolation>) {
        if let Err(v) = r {
            self.push(field, value, v.to_string());
        }
    }
    fn push(&mut self, field: impl Into<String>, value: &str, rule: impl Into<String>) {
        self.problems.push(Problem {
            field: field.into(),
            value: value.to_string(),
            rule: rule.into(),
        });
    }
}

fn vm_field(inputs: &ModuleInputs, vm: &VmInputs, rest: &str) -> String {
    match inputs.mode {
        VmMode::Pool => format!("inputs.vms[{}].{rest}", vm.key),
        VmMode::Single => format!("inputs.{rest}"),
    }
}

/// Where a physical name comes from, for the message: a per-VM `vm_name`, the module
/// `name_prefix` / `context_id`, or the env name prefix (contract §1.10).
fn name_source(inputs: &ModuleInputs, vm: &VmInputs) -> String {
    let (prefix_field, prefix) = if !inputs.name_prefix.trim().is_empty() {
        ("inputs.name_prefix", inputs.name_prefix.trim())
    } else if !inputs.context_id.trim().is_empty() {
        ("inputs.context_id", inputs.context_id.trim())
    } else {
        ("", "")
    };
    let name = &vm.physical_name.0;
    let derived = if prefix.is_empty() {
        *name == vm.key.0 || name.ends_with(&format!("-{}", vm.key))
    } else {
        *name == crate::inputs::physical_name(&vm.key.0, prefix, None)
    };
    match (derived, prefix_field) {
        (false, _) if inputs.mode == VmMode::Pool => vm_field(inputs, vm, "vm_name"),
        (_, "") => format!("VM name of {} (env name prefix + key)", vm.key),
        (_, field) => format!("{field} (makes the VM name of {})", vm.key),
    }
}

/// Check everything the engine will send for `inputs` (and the credentials `defaults` the
/// inputs do not override, when known). `Ok` when Proxmox would accept every value.
pub fn check_inputs(
    inputs: &ModuleInputs,
    defaults: Option<&TargetDefaults>,
) -> Result<(), CheckFailure> {
    let mut c = Collector::default();
    if let TemplateSource::ExplicitVmId { vm_id } = &inputs.template {
        c.check(
            "inputs.template_vm_id",
            &vm_id.to_string(),
            formats::vmid(u64::from(*vm_id)),
        );
    }
    c.check(
        "inputs.cpu_cores",
        &inputs.cpu_cores.to_string(),
        formats::cores(u64::from(inputs.cpu_cores)),
    );
    c.check(
        "inputs.memory_mb",
        &inputs.memory_mb.to_string(),
        formats::memory_mib(inputs.memory_mb),
    );
    c.check(
        "inputs.disk_size_gb",
        &inputs.disk_size_gb.to_string(),
        formats::disk_gib(inputs.disk_size_gb),
    );
    c.check(
        "inputs.cpu_type",
        &inputs.cpu_type,
        formats::cpu_type(&inputs.cpu_type),
    );
    c.check(
        "inputs.os_type",
        &inputs.os_type,
        formats::os_type(&inputs.os_type),
    );
    c.check(
        "inputs.dns_domain",
        &inputs.dns_domain,
        formats::dns_name(&inputs.dns_domain),
    );
    for (i, t) in inputs.tags.iter().enumerate() {
        c.check(
            format!("inputs.tags[{}]", i + 1),
            t,
            formats::tag(&t.to_ascii_lowercase()),
        );
    }
    if !inputs.is_windows() {
        match (&inputs.ssh_username, defaults) {
            (Some(u), _) => c.check("inputs.ssh_username", u, formats::ciuser(u)),
            (None, Some(d)) => c.check(
                "credentials proxmox_ssh_username (the cloud-init user, as inputs.ssh_username is not set)",
                &d.ssh_username,
                formats::ciuser(&d.ssh_username),
            ),
            (None, None) => {}
        }
        for (i, k) in inputs.ssh_keys.iter().enumerate() {
            c.check(
                format!("inputs.ssh_keys[{}]", i + 1),
                k,
                formats::ssh_public_key(k),
            );
        }
        if inputs.ssh_keys.is_empty() {
            if let Some(k) = defaults.and_then(|d| d.ssh_public_key.as_ref()) {
                c.check("credentials ssh_public_key", k, formats::ssh_public_key(k));
            }
        }
    }
    if !["restart", "defer"].contains(&inputs.restart_policy.to_ascii_lowercase().as_str()) {
        c.push(
            "inputs.restart_policy",
            &inputs.restart_policy,
            "one of: restart (restart a running VM whose changes Proxmox keeps pending), defer (leave them pending until the VM restarts)",
        );
    }
    type Rule = fn(&str) -> Result<(), FormatViolation>;
    let opt_checks: [(&str, &Option<String>, Rule); 4] = [
        ("inputs.node_name", &inputs.node_name, formats::node_name),
        (
            "inputs.datastore_id",
            &inputs.datastore_id,
            formats::storage_id,
        ),
        (
            "inputs.snippets_datastore_id",
            &inputs.snippets_datastore_id,
            formats::storage_id,
        ),
        (
            "inputs.network_bridge",
            &inputs.network_bridge,
            formats::bridge_id,
        ),
    ];
    for (field, v, f) in opt_checks {
        if let Some(v) = v {
            c.check(field, v, f(v));
        }
    }
    if let Some(d) = defaults {
        if inputs.node_name.is_none() {
            c.check(
                "credentials proxmox_node",
                &d.node,
                formats::node_name(&d.node),
            );
        }
        if inputs.datastore_id.is_none() {
            c.check(
                "credentials storage_pool",
                &d.datastore,
                formats::storage_id(&d.datastore),
            );
        }
    }

    let mut by_name: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut by_vmid: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    let mut by_mac: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for vm in inputs.vms.values() {
        let name = &vm.physical_name.0;
        c.check(name_source(inputs, vm), name, formats::dns_name(name));
        by_name
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(&vm.key.0);
        if let Some(id) = vm.vm_id {
            c.check(
                vm_field(inputs, vm, "vm_id"),
                &id.to_string(),
                formats::vmid(u64::from(id)),
            );
            by_vmid.entry(id).or_default().push(&vm.key.0);
        }
        if let Some(n) = &vm.node_name {
            c.check(vm_field(inputs, vm, "node_name"), n, formats::node_name(n));
        }
        let role_tag = vm.role.to_ascii_lowercase();
        c.check(
            match inputs.mode {
                VmMode::Pool => vm_field(inputs, vm, "role"),
                VmMode::Single => "inputs.vm_role".into(),
            },
            &vm.role,
            formats::tag(&role_tag)
                .map_err(|v| FormatViolation {
                    rule: v.rule,
                    allows: "a role becomes a Proxmox tag: a letter, digit or '_', then letters, digits, '_', '-', '+' or '.'",
                }),
        );
        if vm.interfaces.len() > MAX_NICS {
            c.push(
                vm_field(inputs, vm, "interfaces"),
                &format!("{} interfaces", vm.interfaces.len()),
                format!(
                    "Proxmox has net0 to net{} ({MAX_NICS} NICs at most)",
                    MAX_NICS - 1
                ),
            );
        }
        for (i, nic) in vm.interfaces.iter().enumerate() {
            let f = |k: &str| format!("VM {} interfaces[{}].{k}", vm.key, i + 1);
            c.check(f("bridge"), &nic.bridge, formats::bridge_id(&nic.bridge));
            if let Some(tag) = nic.vlan_id {
                c.check(
                    f("vlan_id"),
                    &tag.to_string(),
                    formats::vlan(i128::from(tag)),
                );
            }
            if let Some(mtu) = nic.mtu {
                c.check(
                    f("mtu"),
                    &mtu.to_string(),
                    formats::mtu(i128::from(mtu), nic.model == "virtio"),
                );
            }
            if let Some(mac) = nic.mac_address {
                let field = if inputs.mode == VmMode::Single && inputs.vms.len() == 1 && i == 0 {
                    "inputs.vm_mac or inputs.interfaces[1].mac_address".to_string()
                } else {
                    f("mac_address")
                };
                c.check(field, &mac.to_string(), formats::unicast_mac(mac.0));
                by_mac.entry(mac.to_string()).or_default().push(format!(
                    "{} interfaces[{}]",
                    vm.key,
                    i + 1
                ));
            }
        }
    }
    for (name, keys) in by_name.iter().filter(|(_, k)| k.len() > 1) {
        c.push(
            "inputs.vms (VM names)",
            name,
            format!(
                "VMs {} resolve to the same Proxmox VM name; give each a distinct vm_name or key",
                keys.join(", ")
            ),
        );
    }
    for (id, keys) in by_vmid.iter().filter(|(_, k)| k.len() > 1) {
        c.push(
            "inputs.vms (vm_id)",
            &id.to_string(),
            format!(
                "VMs {} ask for the same vm_id; a VMID is unique in the cluster",
                keys.join(", ")
            ),
        );
    }
    for (mac, users) in by_mac.iter().filter(|(_, u)| u.len() > 1) {
        c.push(
            "mac_address",
            mac,
            format!(
                "used by {} NICs ({}); two NICs with one MAC break each other's traffic",
                users.len(),
                users.join(", ")
            ),
        );
    }
    if c.problems.is_empty() {
        Ok(())
    } else {
        Err(CheckFailure {
            problems: c.problems,
        })
    }
}
