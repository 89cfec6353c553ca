//! A pool overlay of `n` VMs with static addresses, shared by the scale tests, the chaos
//! suite and the benchmarks (which include this file by path).

/// `header` is YAML placed before `vms:` (clone mode, readiness, limits, disk size…). The
/// guest user is `opsadmin`, the readiness gate's default `target_user`.
pub fn pool_overlay(n: usize, header: &str) -> String {
    let mut s = format!(
        "require_ipam: false\ntemplate_state_ref: core/onprem/template-image\ntemplate_key: ubuntu-24.04\nssh_username: opsadmin\n{header}vms:\n"
    );
    for i in 0..n {
        s.push_str(&format!(
            "  vm-{i:03}:\n    role: app\n    interfaces:\n      - bridge: vmbr0\n        ipv4: {{address: 10.40.{}.{}/16, gateway: 10.40.0.1}}\n",
            i / 200,
            10 + i % 200
        ));
    }
    s
}
