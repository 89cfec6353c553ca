//! Human rendering of a plan: a colored diff on a TTY, plain text otherwise. Never prints
//! secrets (sshkeys are shown as a count). Knows nothing about HTTP or files.

use std::fmt::Write as _;

use crate::plan::artifact::PlanArtifact;
use crate::plan::diff::VmAction;

/// Render the plan. `color` adds ANSI colors.
pub fn render(plan: &PlanArtifact, color: bool) -> String {
    let paint = |code: &str, s: &str| -> String {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hyops-pve plan for {} (slot {}), template {} on {}",
        plan.module_ref, plan.slot, plan.template.vmid, plan.template.node
    );
    for vm in &plan.vms {
        let (sym, code) = match vm.action {
            VmAction::Create => ("+", "32"),
            VmAction::Update => ("~", "33"),
            VmAction::Replace => ("-/+", "35"),
            VmAction::Delete => ("-", "31"),
            VmAction::Noop => ("=", "2"),
        };
        let vmid = vm
            .vmid
            .map(|v| v.to_string())
            .unwrap_or_else(|| "new".to_string());
        let _ = writeln!(
            out,
            "{} {} ({}, vmid {}, node {}): {:?}",
            paint(code, sym),
            vm.key,
            vm.physical_name,
            vmid,
            vm.node,
            vm.action
        );
        for d in plan.ipam.iter().filter(|d| d.vm_key == vm.key.0) {
            let _ = writeln!(
                out,
                "    nic{} {}: {}",
                d.nic_index.saturating_sub(1),
                d.bridge,
                d.describe()
            );
        }
        if !vm.replace_reasons.is_empty() {
            let _ = writeln!(
                out,
                "    replace because: {}",
                vm.replace_reasons.join(", ")
            );
        }
        if vm.action == VmAction::Update {
            for c in &vm.changes {
                let before = c.before.as_deref().unwrap_or("(unset)");
                let after = c.after.as_deref().unwrap_or("(deleted)");
                let _ = writeln!(
                    out,
                    "    {}: {} -> {}{}",
                    c.field,
                    paint("31", before),
                    paint("32", after),
                    if c.needs_restart {
                        " (needs restart)"
                    } else {
                        ""
                    }
                );
            }
        }
        if let Some(r) = &vm.resize {
            if vm.action == VmAction::Update {
                let from = r
                    .from_bytes
                    .map(|b| format!("{}G", b / (1024 * 1024 * 1024)))
                    .unwrap_or_else(|| "?".into());
                let _ = writeln!(
                    out,
                    "    resize {}: {} -> {}G",
                    r.disk,
                    from,
                    r.to_bytes / (1024 * 1024 * 1024)
                );
            }
        }
        if vm.start && vm.action == VmAction::Update {
            let _ = writeln!(out, "    start (VM is stopped)");
        }
        if let Some(r) = &vm.restart {
            let _ = writeln!(
                out,
                "    restart (shutdown, then start) so it runs {}",
                r.keys.join(", ")
            );
        }
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "{} {w}", paint("33", "warning:"));
    }
    let s = &plan.summary;
    if s.has_changes() {
        let _ = writeln!(
            out,
            "Plan: {} to create, {} to update, {} to replace, {} to delete, {} unchanged{}.",
            s.create,
            s.update,
            s.replace,
            s.delete,
            s.noop,
            if s.restart > 0 {
                format!(" ({} running VM(s) to restart)", s.restart)
            } else {
                String::new()
            }
        );
    } else {
        let _ = writeln!(out, "No changes. {} VM(s) match the inputs.", s.noop);
    }
    out
}
