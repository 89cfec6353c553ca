//! NetBox helpers for end-to-end tests against the embedded NetBox: the IPAM pool overlay and
//! lookups of what an apply left in NetBox.

use hyops_pve::netbox::{NetboxClient, NetboxConfig};
use hyops_pve::pve::TlsMode;
use hyops_pve::sim::netbox::NetboxSimHandle;
use serde_json::Value;

/// Two IPAM VMs on `vnetmgmt` (10.10.0.0/24 in the simulated root's SDN state, static range
/// .2–.119), NetBox the address source.
pub const IPAM_POOL: &str = "\
ssh_username: opsadmin
template_state_ref: core/onprem/template-image
template_key: ubuntu-24.04
require_ipam: true
addressing:
  mode: ipam
  ipam:
    provider: netbox
post_apply_ssh_readiness:
  connectivity_wait_s: 30
vms:
  app-01:
    role: app
    interfaces:
      - bridge: vnetmgmt
  app-02:
    role: app
    interfaces:
      - bridge: vnetmgmt
";

/// A client for the embedded NetBox (its certificate pinned).
pub fn client(nb: &NetboxSimHandle) -> NetboxClient {
    let mut cfg = NetboxConfig::new(nb.url().to_string(), nb.token.clone());
    cfg.tls = TlsMode::Fingerprint(nb.ca_fingerprint_sha256.clone());
    NetboxClient::new(cfg).expect("netbox client")
}

/// The NetBox VM named `name`, if any (exact name, re-checked: NetBox filters are loose).
pub async fn vm(nb: &NetboxSimHandle, name: &str) -> Option<Value> {
    client(nb)
        .list(
            "/api/virtualization/virtual-machines/",
            &[("name".into(), name.into())],
        )
        .await
        .expect("list VMs")
        .into_iter()
        .find(|v| v["name"] == name)
}

/// The addresses in `parent` reserved under identities of `zone` (`hyops:<zone>:…`), sorted.
pub async fn reservations(nb: &NetboxSimHandle, parent: &str, zone: &str) -> Vec<String> {
    let prefix = format!("hyops:{zone}:");
    let mut out: Vec<String> = client(nb)
        .list(
            "/api/ipam/ip-addresses/",
            &[("parent".into(), parent.into())],
        )
        .await
        .expect("list IPs")
        .into_iter()
        .filter(|ip| {
            ip["description"]
                .as_str()
                .is_some_and(|d| d.starts_with(&prefix))
        })
        .filter_map(|ip| ip["address"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}
