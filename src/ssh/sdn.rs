//! The host-side SDN gateway probe (contract §4.3; upstream `_probe_proxmox_host_bridge_ipv4`
//! and the drift check in `proxmox_vm.py`): over node SSH, `ip -4 -o addr show dev <bridge>`
//! for each requested HybridOps bridge; at least one expected `gw/prefix` must be on each.
//! A probe that cannot run is a warning (`sdn host gateway probe skipped: …`), a drift is an
//! error with upstream's wording and its re-run hint. Knows nothing about where the expected
//! gateways come from (the SDN authority state is the caller's).

use std::collections::{BTreeMap, BTreeSet};

use super::node::{NodeSsh, NodeSshError};

/// A Linux interface name (what `ip … dev` accepts; also what may go into a command line).
pub fn valid_bridge_name(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= 15
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The `inet a.b.c.d/len` tokens of `ip -4 -o addr show` output.
pub fn parse_inet(output: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in output.lines() {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == "inet" {
                if let Some(addr) = words.next() {
                    let ok = addr.split_once('/').is_some_and(|(ip, len)| {
                        ip.parse::<std::net::Ipv4Addr>().is_ok()
                            && len.parse::<u8>().is_ok_and(|l| l <= 32)
                    });
                    if ok {
                        out.insert(addr.to_string());
                    }
                }
            }
        }
    }
    out
}

/// Observe the IPv4 addresses on each bridge of `node`. `Err` is the probe error upstream
/// turns into the "skipped" warning. A bridge that does not exist has no addresses.
pub async fn observe_bridges(
    ssh: &NodeSsh,
    node: &str,
    bridges: &[String],
) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let mut observed = BTreeMap::new();
    for b in bridges {
        if !valid_bridge_name(b) {
            return Err(format!("invalid bridge name {b:?}"));
        }
        let addrs = match ssh.run(node, &format!("ip -4 -o addr show dev {b}")).await {
            Ok(out) => parse_inet(&out.stdout),
            // `ip` fails for a missing device: upstream runs it with `|| true`.
            Err(NodeSshError::Command { .. }) => BTreeSet::new(),
            Err(e) => return Err(format!("proxmox ssh probe failed: {e}")),
        };
        observed.insert(b.clone(), addrs);
    }
    Ok(observed)
}

/// Python's `repr` of a sorted list of strings (`['a', 'b']`), as upstream prints them.
fn py_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("[{}]", inner.join(", "))
}

/// Upstream's warning when the probe cannot run.
pub fn skipped_warning(reason: &str) -> String {
    format!("sdn host gateway probe skipped: {reason}")
}

/// The drift error, or `None` when every bridge carries one of its expected gateways.
pub fn drift_error(
    bridges: &[String],
    expected: &BTreeMap<String, Vec<String>>,
    observed: &BTreeMap<String, BTreeSet<String>>,
    env_name: &str,
) -> Option<String> {
    let mut drift = Vec::new();
    for b in bridges {
        let mut exp = expected.get(b).cloned().unwrap_or_default();
        exp.sort();
        let obs: Vec<String> = observed
            .get(b)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        if exp.iter().any(|e| obs.contains(e)) {
            continue;
        }
        drift.push(format!(
            "{b} expected={} observed={}",
            py_list(&exp),
            py_list(&obs)
        ));
    }
    if drift.is_empty() {
        return None;
    }
    Some(format!(
        "host-side Proxmox SDN gateway drift detected for requested HybridOps bridge(s): {}. Re-run core/onprem/network-sdn with the same topology inputs and a fresh host_reconcile_nonce, for example: HYOPS_INPUT_host_reconcile_nonce=$(date -u +%Y%m%dT%H%M%SZ) hyops apply --env {env_name} --module core/onprem/network-sdn --inputs <network-sdn-inputs.yml>",
        drift.join("; ")
    ))
}

/// The whole check: probe `node`, then compare. `Ok(Some(warning))` when the probe could not
/// run, `Err(drift)` on drift.
pub async fn check_gateways(
    ssh: &NodeSsh,
    node: &str,
    bridges: &[String],
    expected: &BTreeMap<String, Vec<String>>,
    env_name: &str,
) -> Result<Option<String>, String> {
    match observe_bridges(ssh, node, bridges).await {
        Err(e) => Ok(Some(skipped_warning(&e))),
        Ok(observed) => match drift_error(bridges, expected, &observed, env_name) {
            Some(d) => Err(d),
            None => Ok(None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_tokens_are_read_from_ip_output() {
        let out = "5: vnetmgmt    inet 10.10.0.1/24 scope global vnetmgmt\\       valid_lft forever preferred_lft forever\n";
        assert_eq!(
            parse_inet(out),
            BTreeSet::from(["10.10.0.1/24".to_string()])
        );
        assert!(parse_inet("").is_empty());
    }

    #[test]
    fn drift_uses_upstreams_wording() {
        let bridges = vec!["vnetmgmt".to_string()];
        let expected = BTreeMap::from([("vnetmgmt".to_string(), vec!["10.10.0.1/24".to_string()])]);
        let observed = BTreeMap::from([("vnetmgmt".to_string(), BTreeSet::new())]);
        let e = drift_error(&bridges, &expected, &observed, "dev").unwrap();
        assert_eq!(
            e,
            "host-side Proxmox SDN gateway drift detected for requested HybridOps bridge(s): vnetmgmt expected=['10.10.0.1/24'] observed=[]. Re-run core/onprem/network-sdn with the same topology inputs and a fresh host_reconcile_nonce, for example: HYOPS_INPUT_host_reconcile_nonce=$(date -u +%Y%m%dT%H%M%SZ) hyops apply --env dev --module core/onprem/network-sdn --inputs <network-sdn-inputs.yml>"
        );
        let ok = BTreeMap::from([(
            "vnetmgmt".to_string(),
            BTreeSet::from(["10.10.0.1/24".to_string(), "10.10.0.2/24".to_string()]),
        )]);
        assert_eq!(drift_error(&bridges, &expected, &ok, "dev"), None);
    }

    #[test]
    fn bridge_names_cannot_inject_shell() {
        assert!(valid_bridge_name("vnetmgmt"));
        assert!(!valid_bridge_name("a;rm -rf /"));
        assert!(!valid_bridge_name("averyveryverylongname"));
    }
}
