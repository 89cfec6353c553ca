//! The module spec's `inputs.defaults` (contract §1.1) as a JSON value tree: the base every
//! overlay is merged onto. Knows nothing about overlays, env or validation.

use serde_json::{json, Value};

/// `spec.inputs.defaults` of `platform/onprem/platform-vm`, in spec order.
pub fn spec_defaults() -> Value {
    json!({
        "name_prefix": "",
        "context_id": "",
        "vm_role": "platform-vm",
        "template_state_ref": "core/onprem/template-image",
        "template_key": "ubuntu-24.04",
        "build_image": false,
        "cpu_cores": 2,
        "memory_mb": 4096,
        "disk_size_gb": 40,
        "guest_agent_enabled": true,
        "cpu_type": "host",
        "os_type": "l26",
        "on_boot": true,
        "dns_domain": "hybzone.local",
        "dns_servers": ["8.8.8.8"],
        "tags": ["platform", "onprem", "custom-vm"],
        "require_ipam": true,
        "allow_vm_set_replace": false,
        "post_apply_ssh_readiness": {
            "enabled": true,
            "required": true,
            "connectivity_timeout_s": 5,
            "connectivity_wait_s": 300
        }
    })
}
