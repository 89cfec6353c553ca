//! The NetBox targets the shared suite runs against:
//! * `embedded` — the simulator's in-process NetBox (HTTPS, certificate pinned), a fresh one
//!   per test, always;
//! * `real` — a real NetBox 4.7.3 named by `HYOPS_TEST_NETBOX_URL` and
//!   `HYOPS_TEST_NETBOX_TOKEN` (`tests/netbox/testbed.sh start` prints them). Its database is
//!   reset once per test binary with `HYOPS_TEST_NETBOX_RESET`; tests then share it and stay
//!   apart by their own zone and subnet. Missing: `SKIPPED real NetBox` (or a failure with
//!   `HYOPS_REQUIRE_NETBOX=1`).

#![allow(dead_code)] // shared by netbox_suite.rs and e2e_ipam.rs, which use different parts

use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use hyops_pve::netbox::ipam::Pool;
use hyops_pve::netbox::{NetboxClient, NetboxConfig};
use hyops_pve::pve::TlsMode;
use hyops_pve::secret::Secret;
use hyops_pve::sim::netbox::{NetboxSim, NetboxSimConfig, NetboxSimHandle};

use crate::optional;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Real,
}

/// One test's view of a NetBox: how to reach it and a namespace of its own.
pub struct Target {
    pub kind: Kind,
    pub url: String,
    pub token: Secret,
    pub tls: TlsMode,
    /// The embedded server (for fault injection and counters).
    pub sim: Option<NetboxSimHandle>,
    /// Unique per test in this process: zone `t<n>-…`, subnet `10.(100+n/250).(n%250).0/24`.
    pub n: u32,
}

static NEXT: AtomicU32 = AtomicU32::new(1);

impl Target {
    /// A client with quick retries (tests only wait when NetBox asks them to).
    pub fn client(&self) -> NetboxClient {
        self.client_with(|_| {})
    }

    pub fn client_with(&self, f: impl FnOnce(&mut NetboxConfig)) -> NetboxClient {
        let mut cfg = NetboxConfig::new(self.url.clone(), self.token.clone());
        cfg.tls = self.tls.clone();
        cfg.retry = hyops_pve::netbox::default_policy().scaled(0.1);
        f(&mut cfg);
        NetboxClient::new(cfg).expect("client")
    }

    /// This test's zone name (a valid site slug).
    pub fn zone(&self, label: &str) -> String {
        format!("t{}-{label}", self.n)
    }

    /// This test's `/24`, `10.(100+n/250).(n%250).0/24`.
    pub fn subnet(&self) -> (u8, u8) {
        ((100 + self.n / 250) as u8, (self.n % 250) as u8)
    }

    /// A pool of `size` hosts from `.2`, gateway `.1`.
    pub fn pool(&self, size: u8) -> Pool {
        let (a, b) = self.subnet();
        Pool {
            network: format!("10.{a}.{b}.0/24").parse().unwrap(),
            gateway: Ipv4Addr::new(10, a, b, 1),
            start: Ipv4Addr::new(10, a, b, 2),
            end: Ipv4Addr::new(10, a, b, 1 + size),
        }
    }

    pub fn host(&self, last: u8) -> Ipv4Addr {
        let (a, b) = self.subnet();
        Ipv4Addr::new(10, a, b, last)
    }
}

fn real_env() -> Result<(String, Secret), String> {
    let url = std::env::var("HYOPS_TEST_NETBOX_URL").unwrap_or_default();
    let token = std::env::var("HYOPS_TEST_NETBOX_TOKEN").unwrap_or_default();
    if url.trim().is_empty() || token.trim().is_empty() {
        return Err(
            "HYOPS_TEST_NETBOX_URL / HYOPS_TEST_NETBOX_TOKEN are not set (run tests/netbox/testbed.sh build && start, then export its env file)"
                .into(),
        );
    }
    let addr = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| format!("HYOPS_TEST_NETBOX_URL={url}: not host:port on loopback: {e}"))?;
    if !sock.ip().is_loopback() {
        return Err(format!(
            "HYOPS_TEST_NETBOX_URL={url} is not a loopback address"
        ));
    }
    std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2))
        .map_err(|e| format!("NetBox at {url} is not reachable: {e}"))?;
    Ok((url.trim().to_string(), Secret::new(token.trim())))
}

/// Reset the real NetBox's database once per test binary.
fn reset_once() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let Ok(cmd) = std::env::var("HYOPS_TEST_NETBOX_RESET") else {
            return Ok(());
        };
        if cmd.trim().is_empty() {
            return Ok(());
        }
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .map_err(|e| format!("cannot run HYOPS_TEST_NETBOX_RESET ({cmd}): {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "HYOPS_TEST_NETBOX_RESET ({cmd}) failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
    .clone()
}

/// The real target, or `None` (skipped) — shared with other NetBox test files.
pub fn real_target() -> Option<(String, Secret)> {
    let (url, token) = optional::require("real NetBox 4.7.3", "NETBOX", real_env)?;
    if let Err(e) = reset_once() {
        panic!("{e}");
    }
    Some((url, token))
}

/// Build the target of `kind` and run `body` against it.
pub async fn run<F>(kind: Kind, _name: &str, body: F)
where
    F: FnOnce(Target) -> Pin<Box<dyn Future<Output = ()> + Send>>,
{
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let target = match kind {
        Kind::Embedded => {
            let sim = NetboxSim::start(NetboxSimConfig::default())
                .await
                .expect("embedded NetBox starts");
            Target {
                kind,
                url: sim.url().to_string(),
                token: sim.token.clone(),
                tls: TlsMode::Fingerprint(sim.ca_fingerprint_sha256.clone()),
                sim: Some(sim),
                n,
            }
        }
        Kind::Real => {
            let Some((url, token)) = real_target() else {
                return;
            };
            Target {
                kind,
                url,
                token,
                tls: TlsMode::SystemRoots,
                sim: None,
                n,
            }
        }
    };
    body(target).await;
}
