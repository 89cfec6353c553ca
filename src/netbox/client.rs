//! The NetBox 4.x REST client: token auth (v1 `Token <40 hex>` and v2
//! `Bearer nbt_<key>.<secret>`), TLS through the same rustls modes as the Proxmox client,
//! per-request and connect timeouts, pagination, the `API-Version` the server reports, a
//! request counter, and the retry rules:
//! - reads (GET), PATCHes of fixed values and DELETEs are idempotent: retried on transport
//!   errors and 429/5xx with the engine's [`RetryPolicy`] (a 429's `Retry-After` is the least
//!   wait);
//! - creates (POST) are retried only when NetBox certainly did not act: 429, or a connection
//!   that was never made. Any other failure after the request left returns an error whose
//!   [`NetboxError::outcome_unknown`] is true, and the caller re-reads by identity.
//!
//! Knows nothing about HyOps, Proxmox or IPAM; never logs or formats the token.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use super::error::{body_summary, NetboxError};
use super::retry::{default_policy, parse_retry_after, CallError};
use crate::pve::TlsMode;
use crate::retry::{RetryError, RetryPolicy};
use crate::secret::Secret;

/// Largest page NetBox serves by default (`MAX_PAGE_SIZE`); larger limits are clamped.
pub const PAGE_SIZE: usize = 1000;

/// Test hook: decides, per sent request (method, path template), whether its reply is
/// thrown away as if the connection broke after the server acted ("lost reply").
pub type LostReplyInjector = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Everything needed to build a [`NetboxClient`].
#[derive(Clone)]
pub struct NetboxConfig {
    /// `http(s)://host[:port][/prefix]`; a trailing `/api` or `/` is removed.
    pub base_url: String,
    /// The raw token: `nbt_<key>.<secret>` (v2) or a 40-character v1 token.
    pub token: Secret,
    /// Certificate checking for https URLs.
    pub tls: TlsMode,
    /// TCP (+TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout (upstream: 30 s).
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Sent as `changelog_message` on every write (NetBox 4.4+ records it in the change log).
    pub changelog_message: Option<String>,
    /// Fault injection for tests; `None` in production.
    pub lost_reply: Option<LostReplyInjector>,
    /// Resolve this host name to this address (an SSH tunnel's local end for a named https
    /// NetBox, so TLS still checks the real name).
    pub resolve: Option<(String, std::net::SocketAddr)>,
}

impl std::fmt::Debug for NetboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetboxConfig")
            .field("base_url", &self.base_url)
            .field("tls", &self.tls)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl NetboxConfig {
    /// Defaults: system roots, 5 s connect and 30 s request timeouts, upstream's retry
    /// schedule ([`default_policy`]).
    pub fn new(base_url: impl Into<String>, token: Secret) -> Self {
        NetboxConfig {
            base_url: base_url.into(),
            token,
            tls: TlsMode::SystemRoots,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: default_policy(),
            changelog_message: None,
            lost_reply: None,
            resolve: None,
        }
    }
}

/// Which token scheme the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVersion {
    /// `Authorization: Token <token>` (deprecated in NetBox 4.6, still accepted by 4.7).
    V1,
    /// `Authorization: Bearer nbt_<key>.<secret>` (NetBox 4.5+).
    V2,
}

/// v2 when the token has the `nbt_` prefix and a `.` between key and secret (the server
/// decides the version the same way); v1 otherwise.
pub fn token_version(token: &str) -> TokenVersion {
    let t = token.trim();
    if t.starts_with("nbt_") && t.contains('.') {
        TokenVersion::V2
    } else {
        TokenVersion::V1
    }
}

/// Request counts (each attempt counts), total, writes, and per `METHOD /template`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub total: u64,
    pub writes: u64,
    pub calls: BTreeMap<String, u64>,
}

impl Metrics {
    /// Requests made since `earlier` (a snapshot of the same client).
    pub fn since(&self, earlier: &Metrics) -> Metrics {
        let mut calls = BTreeMap::new();
        for (k, v) in &self.calls {
            let d = v.saturating_sub(earlier.calls.get(k).copied().unwrap_or(0));
            if d > 0 {
                calls.insert(k.clone(), d);
            }
        }
        Metrics {
            total: self.total.saturating_sub(earlier.total),
            writes: self.writes.saturating_sub(earlier.writes),
            calls,
        }
    }
}

struct Inner {
    http: reqwest::Client,
    base: String,
    auth: reqwest::header::HeaderValue,
    retry: RetryPolicy,
    changelog: Option<String>,
    lost_reply: Option<LostReplyInjector>,
    api_version: Mutex<Option<String>>,
    metrics: Mutex<Metrics>,
}

/// A NetBox REST client. Cheap to clone; share it.
#[derive(Clone)]
pub struct NetboxClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NetboxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetboxClient")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

/// `http(s)://host[:port][/prefix]` with any trailing `/` and `/api` removed.
pub fn normalize_base_url(raw: &str) -> Result<String, NetboxError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/api").unwrap_or(trimmed);
    let url = url::Url::parse(trimmed).map_err(|e| NetboxError::Config {
        field: "NETBOX_API_URL",
        detail: format!("{raw:?} is not a URL: {e}"),
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(NetboxError::Config {
            field: "NETBOX_API_URL",
            detail: format!("{raw:?}: the scheme must be http or https"),
        });
    }
    if url.host_str().is_none() {
        return Err(NetboxError::Config {
            field: "NETBOX_API_URL",
            detail: format!("{raw:?} has no host"),
        });
    }
    Ok(trimmed.to_string())
}

/// `/api/ipam/ip-addresses/12/` → `/api/ipam/ip-addresses/{id}/` (for counters and errors).
pub fn path_template(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl NetboxClient {
    /// Build a client. Fails on a bad URL, token or TLS setting; does not contact NetBox.
    pub fn new(cfg: NetboxConfig) -> Result<Self, NetboxError> {
        let base = normalize_base_url(&cfg.base_url)?;
        let token = cfg.token.expose().trim();
        if token.is_empty() {
            return Err(NetboxError::Config {
                field: "NETBOX_API_TOKEN",
                detail: "the token is empty".into(),
            });
        }
        let scheme = match token_version(token) {
            TokenVersion::V2 => "Bearer",
            TokenVersion::V1 => "Token",
        };
        let mut auth = reqwest::header::HeaderValue::from_str(&format!("{scheme} {token}"))
            .map_err(|_| NetboxError::Config {
                field: "NETBOX_API_TOKEN",
                detail: "the token contains characters that cannot go into an HTTP header".into(),
            })?;
        auth.set_sensitive(true);
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            // NetBox answers a URL without its trailing slash with a redirect that drops the
            // body of a write; every path here ends in `/`, so a redirect is an error.
            .redirect(reqwest::redirect::Policy::none());
        if let Some((host, addr)) = &cfg.resolve {
            builder = builder.resolve(host, *addr);
        }
        if base.starts_with("https://") {
            let tls = crate::pve::client_config(&cfg.tls).map_err(|e| NetboxError::Config {
                field: "tls",
                detail: e.to_string(),
            })?;
            builder = builder.use_preconfigured_tls(tls);
        }
        let http = builder.build().map_err(|e| NetboxError::Config {
            field: "http client",
            detail: e.to_string(),
        })?;
        Ok(NetboxClient {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                retry: cfg.retry,
                changelog: cfg.changelog_message,
                lost_reply: cfg.lost_reply,
                api_version: Mutex::new(None),
                metrics: Mutex::new(Metrics::default()),
            }),
        })
    }

    /// The base URL (without `/api`).
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The `API-Version` header of the last reply (`4.7` on NetBox 4.7.x).
    pub fn api_version(&self) -> Option<String> {
        lock(&self.inner.api_version).clone()
    }

    /// A snapshot of the request counters.
    pub fn metrics(&self) -> Metrics {
        lock(&self.inner.metrics).clone()
    }

    fn count(&self, method: &Method, template: &str) {
        let mut m = lock(&self.inner.metrics);
        m.total += 1;
        if method != Method::GET {
            m.writes += 1;
        }
        *m.calls.entry(format!("{method} {template}")).or_insert(0) += 1;
    }

    /// One attempt. Returns the status and the decoded body (`Null` for an empty body).
    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        template: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<(u16, Value, Option<Duration>), NetboxError> {
        let write = method != Method::GET;
        let url = format!("{}{}", self.inner.base, path);
        let mut req = self
            .inner
            .http
            .request(method.clone(), url)
            .header(reqwest::header::AUTHORIZATION, self.inner.auth.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.count(method, template);
        let started = Instant::now();
        let transport = |e: reqwest::Error, connect: bool| NetboxError::Transport {
            method: method.to_string(),
            path: template.to_string(),
            connect,
            write,
            detail: error_chain(e.without_url()),
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let connect = e.is_connect();
                tracing::debug!(method = %method, path = %template, error = "transport",
                    duration_ms = started.elapsed().as_millis() as u64, "netbox call");
                return Err(transport(e, connect));
            }
        };
        let status = resp.status().as_u16();
        if let Some(v) = resp
            .headers()
            .get("API-Version")
            .and_then(|v| v.to_str().ok())
        {
            *lock(&self.inner.api_version) = Some(v.trim().to_string());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = resp.bytes().await.map_err(|e| transport(e, false))?;
        tracing::debug!(method = %method, path = %path, status,
            duration_ms = started.elapsed().as_millis() as u64, "netbox call");
        if let Some(inject) = &self.inner.lost_reply {
            if inject(method.as_str(), template) {
                return Err(NetboxError::Transport {
                    method: method.to_string(),
                    path: template.to_string(),
                    connect: false,
                    write,
                    detail: "connection reset before the reply arrived (injected)".into(),
                });
            }
        }
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => v,
                Err(_) if !(200..300).contains(&status) => {
                    Value::String(String::from_utf8_lossy(&bytes).chars().take(300).collect())
                }
                Err(e) => {
                    return Err(NetboxError::Decode {
                        method: method.to_string(),
                        path: template.to_string(),
                        detail: format!("HTTP {status} body is not JSON: {e}"),
                    })
                }
            }
        };
        Ok((status, value, retry_after))
    }

    /// Send with the engine's retry policy; `idempotent` says whether resending is
    /// harmless (see [`CallError`]). A non-2xx final status becomes an API error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<(u16, Value), NetboxError> {
        let template = path_template(path);
        // A 429's Retry-After is honoured as the least wait before the next attempt.
        let retry_after: Mutex<Option<(Duration, Instant)>> = Mutex::new(None);
        let outcome = self
            .inner
            .retry
            .retry(|| async {
                let pending = lock(&retry_after).take();
                if let Some((ra, at)) = pending {
                    let waited = at.elapsed();
                    if ra > waited {
                        tokio::time::sleep((ra - waited).min(self.inner.retry.max_interval)).await;
                    }
                }
                let (status, value, ra) = self
                    .attempt(&method, path, &template, query, body)
                    .await
                    .map_err(|error| CallError { error, idempotent })?;
                if (200..300).contains(&status) {
                    return Ok((status, value));
                }
                if status == 429 {
                    *lock(&retry_after) = ra.map(|d| (d, Instant::now()));
                }
                Err(CallError {
                    error: NetboxError::Api {
                        method: method.to_string(),
                        path: template.clone(),
                        status,
                        detail: body_summary(&value),
                        body: Box::new(value),
                    },
                    idempotent,
                })
            })
            .await;
        match outcome {
            Ok(a) => Ok(a.value),
            Err(e) => {
                Err(match e {
                    RetryError::Final { error, .. } => error.error,
                    other => other.into_last().map(|c| c.error).unwrap_or_else(|| {
                        NetboxError::Transport {
                            method: method.to_string(),
                            path: template.clone(),
                            connect: false,
                            write: method != Method::GET,
                            detail: "the retry budget ended before any attempt".into(),
                        }
                    }),
                })
            }
        }
    }

    fn with_changelog(&self, body: &Value) -> Value {
        match (&self.inner.changelog, body) {
            (Some(msg), Value::Object(m)) => {
                let mut m = m.clone();
                m.entry("changelog_message")
                    .or_insert_with(|| Value::String(msg.clone()));
                Value::Object(m)
            }
            (Some(msg), Value::Array(items)) => Value::Array(
                items
                    .iter()
                    .map(|i| match i {
                        Value::Object(m) => {
                            let mut m = m.clone();
                            m.entry("changelog_message")
                                .or_insert_with(|| Value::String(msg.clone()));
                            Value::Object(m)
                        }
                        other => other.clone(),
                    })
                    .collect(),
            ),
            _ => body.clone(),
        }
    }

    /// GET one resource or list page, retried. `query` pairs may repeat a key.
    pub async fn get(&self, path: &str, query: &[(String, String)]) -> Result<Value, NetboxError> {
        self.call(Method::GET, path, query, None, true)
            .await
            .map(|(_, v)| v)
    }

    /// GET every page of a list endpoint (`limit`/`offset`; `next` only says whether to
    /// continue, so a proxy that rewrites absolute URLs does not matter).
    pub async fn list(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Vec<Value>, NetboxError> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            let mut q: Vec<(String, String)> = query
                .iter()
                .filter(|(k, _)| k != "limit" && k != "offset")
                .cloned()
                .collect();
            q.push(("limit".into(), PAGE_SIZE.to_string()));
            q.push(("offset".into(), offset.to_string()));
            let page = self.get(path, &q).await?;
            let results = page
                .get("results")
                .and_then(Value::as_array)
                .ok_or_else(|| NetboxError::Decode {
                    method: "GET".into(),
                    path: path_template(path),
                    detail: "a list reply has no results array".into(),
                })?;
            let n = results.len();
            out.extend(results.iter().cloned());
            let count = page.get("count").and_then(Value::as_u64);
            let more = page.get("next").map(|v| !v.is_null()).unwrap_or(false);
            offset += n;
            if n == 0 || !more || count.is_some_and(|c| offset as u64 >= c) {
                break;
            }
        }
        Ok(out)
    }

    /// POST (create), retried only when NetBox certainly did not act (429, refused
    /// connection). On [`NetboxError::outcome_unknown`] the caller must re-read by identity.
    pub async fn create(&self, path: &str, body: &Value) -> Result<Value, NetboxError> {
        let body = self.with_changelog(body);
        self.call(Method::POST, path, &[], Some(&body), false)
            .await
            .map(|(_, v)| v)
    }

    /// PATCH fixed values (idempotent, so retried).
    pub async fn update(&self, path: &str, body: &Value) -> Result<Value, NetboxError> {
        let body = self.with_changelog(body);
        self.call(Method::PATCH, path, &[], Some(&body), true)
            .await
            .map(|(_, v)| v)
    }

    /// DELETE one object (idempotent: a 404, also after a retry, counts as done).
    pub async fn delete(&self, path: &str) -> Result<(), NetboxError> {
        match self.call(Method::DELETE, path, &[], None, true).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /api/status/` (NetBox version, Python version, workers).
    pub async fn status(&self) -> Result<Value, NetboxError> {
        self.get("/api/status/", &[]).await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// An error and its sources joined with `: `; URLs are stripped by the caller.
fn error_chain(e: reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(src) = cur {
        let text = src.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = src.source();
    }
    out
}

/// `key=value` query pairs from string slices.
pub fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_tokens_are_detected_by_prefix_and_dot() {
        assert_eq!(token_version("nbt_abcdefABCDEF.0123"), TokenVersion::V2);
        assert_eq!(
            token_version("0123456789abcdef0123456789abcdef01234567"),
            TokenVersion::V1
        );
        assert_eq!(token_version("nbt_nodot"), TokenVersion::V1);
    }

    #[test]
    fn base_url_loses_api_suffix_and_slashes() {
        assert_eq!(
            normalize_base_url("https://nb.example/api/").unwrap(),
            "https://nb.example"
        );
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8000").unwrap(),
            "http://127.0.0.1:8000"
        );
        assert!(normalize_base_url("ftp://x").is_err());
        assert!(normalize_base_url("not a url").is_err());
    }

    #[test]
    fn numeric_segments_become_id_in_templates() {
        assert_eq!(
            path_template("/api/ipam/ip-ranges/12/available-ips/"),
            "/api/ipam/ip-ranges/{id}/available-ips/"
        );
    }

    #[test]
    fn the_token_never_appears_in_debug_output() {
        let c = NetboxClient::new(NetboxConfig::new(
            "http://127.0.0.1:1",
            Secret::new("nbt_abcdefabcdef.supersecretvalue"),
        ))
        .unwrap();
        assert!(!format!("{c:?}").contains("supersecret"));
        let cfg = NetboxConfig::new("http://x", Secret::new("supersecret"));
        assert!(!format!("{cfg:?}").contains("supersecret"));
    }
}
