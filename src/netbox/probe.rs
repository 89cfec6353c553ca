//! NetBox reachability probes with upstream's messages:
//! - the addressing-contract probe (`hyops/runtime/addressing_contract.py`), one
//!   `GET /api/dcim/sites/?limit=1` when `NETBOX_API_URL`/`NETBOX_API_TOKEN` are in the
//!   process env;
//! - the IPAM probe (contract §4.2, `_probe_netbox_api_with_retry`): the same GET with a 5 s
//!   timeout, retried every 2 s for up to `HYOPS_NETBOX_API_PROBE_WAIT_S` (30 s); a rejected
//!   token fails at once; when NetBox stays unreachable the caller tries the SSH tunnel
//!   through a [`TunnelOpener`].
//!
//! Knows nothing about HyOps state; the caller builds the clients.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use super::client::{q, NetboxClient};

/// `GET {base}/api/dcim/sites/?limit=1` once (the client should have no retries and the
/// probe timeout). Upstream `_probe_netbox_api`: `""` on success, else the error text.
pub async fn probe_once(client: &NetboxClient) -> Result<(), String> {
    match client.get("/api/dcim/sites/", &q(&[("limit", "1")])).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_auth() => Err("NETBOX_API_TOKEN is rejected by NetBox API".into()),
        Err(e) => match e.status() {
            Some(code) => Err(format!("HTTP {code}")),
            None => Err(e.to_string()),
        },
    }
}

/// The addressing-contract probe's messages (`_probe_netbox_api` of
/// `addressing_contract.py`).
pub async fn addressing_probe(client: &NetboxClient) -> Result<(), String> {
    match client.get("/api/dcim/sites/", &q(&[("limit", "1")])).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_auth() => Err("NETBOX_API_TOKEN is rejected by NetBox API".into()),
        Err(e) => match e.status() {
            Some(code) => Err(format!("NetBox API probe failed with HTTP {code}")),
            None if e.to_string().to_ascii_lowercase().contains("timed out") => {
                Err("NetBox API probe timed out".into())
            }
            None => Err(format!("NetBox API probe failed: {e}")),
        },
    }
}

/// `_probe_netbox_api_with_retry`: probe until ok, a rejected token, or `wait` has passed
/// (retrying every `interval`). Returns the error (if any) and the time spent.
pub async fn probe_with_retry<F, Fut>(
    mut probe: F,
    wait: Duration,
    interval: Duration,
) -> (Result<(), String>, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let deadline = started + wait;
    let interval = interval.max(Duration::from_millis(200));
    loop {
        let err = match probe().await {
            Ok(()) => return (Ok(()), started.elapsed()),
            Err(e) => e,
        };
        if err.to_ascii_lowercase().contains("token is rejected") {
            return (Err(err), started.elapsed());
        }
        let now = Instant::now();
        if now >= deadline {
            return (Err(err), started.elapsed());
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
}

/// Where an SSH local forward to NetBox would go through (contract §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpSpec {
    pub host: String,
    pub user: String,
    pub key_file: String,
}

/// An open tunnel: the base URL to use, a host to pin to the local end (a named https
/// host keeps its name for TLS), and whatever keeps it open (dropping it closes it).
pub struct Tunnel {
    pub base_url: String,
    pub resolve: Option<(String, std::net::SocketAddr)>,
    pub guard: Box<dyn Send + Sync>,
}

/// The SSH tunnel fallback of §4.2: the module commands open it over the engine's SSH
/// (`crate::commands::ipam::SshTunnel`); tests may plug in another.
pub trait TunnelOpener: Send + Sync {
    /// Forward a free local port to `remote_host:remote_port` through `jump`.
    fn open<'a>(
        &'a self,
        jump: &'a JumpSpec,
        remote_host: &'a str,
        remote_port: u16,
    ) -> Pin<Box<dyn Future<Output = Result<Tunnel, String>> + Send + 'a>>;
}

/// `netbox api became ready after retry wait (N.Ns)` when the probe needed more than 1 s.
pub fn ready_after_wait_warning(elapsed: Duration, tunnel: bool) -> Option<String> {
    (elapsed > Duration::from_secs(1)).then(|| {
        format!(
            "netbox api {}became ready after retry wait ({:.1}s)",
            if tunnel { "tunnel " } else { "" },
            elapsed.as_secs_f64()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rejected_token_stops_the_retry_loop_at_once() {
        let mut calls = 0;
        let (r, _) = probe_with_retry(
            || {
                calls += 1;
                async { Err("NETBOX_API_TOKEN is rejected by NetBox API".to_string()) }
            },
            Duration::from_secs(30),
            Duration::from_millis(200),
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn an_unreachable_netbox_is_retried_until_the_wait_ends() {
        let mut calls = 0;
        let (r, elapsed) = probe_with_retry(
            || {
                calls += 1;
                async { Err("connection refused".to_string()) }
            },
            Duration::from_millis(500),
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(r.unwrap_err(), "connection refused");
        assert!(calls >= 3, "{calls}");
        assert!(elapsed >= Duration::from_millis(500));
    }
}
