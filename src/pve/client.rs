//! The HTTP core of the Proxmox client: configuration, authentication (API token or ticket with
//! CSRF, renewal and one re-login on 401), TLS, rate limiting, the `{data}` envelope and error
//! body, bounded retries for reads only, and the call counter. Endpoints live in `api.rs`.
//! Knows nothing about HyOps; never logs or formats a secret or a request body.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use reqwest::Method;
use serde_json::Value;

use super::error::{CallContext, PveError, PveResult};
use super::tls::{client_config, TlsMode};
use crate::retry::{Classify, Disposition, RetryError, RetryPolicy};
use crate::secret::Secret;

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum PveAuth {
    /// API token: `id` is `user@realm!tokenid`, `secret` the UUID.
    Token {
        /// `user@realm!tokenid`.
        id: String,
        /// The token UUID; only ever put in the `Authorization` header.
        secret: Secret,
    },
    /// Ticket login with user name (`root@pam`) and password.
    Ticket {
        /// `user@realm`, e.g. `root@pam`.
        username: String,
        /// Only ever put in the `/access/ticket` form body.
        password: Secret,
    },
}

/// Client-side request rate limit.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests allowed back to back.
    pub burst: NonZeroU32,
}

/// Default bound on a response body: the largest real answer (`/cluster/resources` of a big
/// cluster) is a few MiB, so 16 MiB leaves room without letting one answer exhaust memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// Everything needed to build a [`PveClient`].
#[derive(Debug, Clone)]
pub struct PveConfig {
    /// `https://host:8006` or `https://host:8006/api2/json`.
    pub base_url: String,
    /// Token or ticket credentials.
    pub auth: PveAuth,
    /// Certificate verification mode.
    pub tls: TlsMode,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Optional client-side rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Backoff for idempotent reads (the one [`RetryPolicy`], classified by
    /// [`super::policy::disposition`]).
    pub read_retry: RetryPolicy,
    /// Largest response body read; a larger one is [`PveError::TooLarge`] naming the call.
    pub max_response_bytes: u64,
    /// Renew a ticket once it is older than this (tickets live 2 h).
    pub ticket_renew_after: Duration,
}

impl PveConfig {
    /// Defaults: system roots, 10 s connect / 60 s request timeout, no rate limit,
    /// reads retried for up to 30 s, bodies up to 16 MiB, tickets renewed after 90 min.
    pub fn new(base_url: impl Into<String>, auth: PveAuth) -> Self {
        PveConfig {
            base_url: base_url.into(),
            auth,
            tls: TlsMode::SystemRoots,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            rate_limit: None,
            read_retry: RetryPolicy::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            ticket_renew_after: Duration::from_secs(90 * 60),
        }
    }
}

/// Counts of HTTP requests made (each attempt counts), total and per `METHOD /path/{template}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// All requests.
    pub total: u64,
    /// Requests per `METHOD /template`.
    pub calls: BTreeMap<String, u64>,
}

impl Metrics {
    /// Count for one `METHOD /template`, e.g. `"POST /nodes/{node}/qemu/{vmid}/clone"`.
    pub fn count(&self, key: &str) -> u64 {
        self.calls.get(key).copied().unwrap_or(0)
    }
}

/// Ordered request parameters, already in wire form (booleans as `0`/`1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Params(Vec::new())
    }
    /// Set `key` to `value` (replaces an earlier value of the same key).
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.put(key, value.to_string());
        self
    }
    /// Set `key` when `value` is `Some`.
    pub fn opt<T: ToString>(self, key: &str, value: Option<T>) -> Self {
        match value {
            Some(v) => self.set(key, v),
            None => self,
        }
    }
    /// Set a boolean as `0`/`1`.
    pub fn flag(self, key: &str, value: bool) -> Self {
        self.set(key, if value { "1" } else { "0" })
    }
    /// Set a boolean as `0`/`1` when `Some`.
    pub fn opt_flag(self, key: &str, value: Option<bool>) -> Self {
        match value {
            Some(v) => self.flag(key, v),
            None => self,
        }
    }
    /// In-place set.
    pub fn put(&mut self, key: &str, value: String) {
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.0.push((key.to_string(), value));
        }
    }
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Characters escaped in a URL path segment (node names, storage ids, UPIDs).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Percent-encode one path segment.
pub(crate) fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// One API request: concrete path, its template (for metrics), params and error context.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: Method,
    pub path: String,
    pub template: &'static str,
    pub params: Params,
    pub node: Option<String>,
    pub vmid: Option<u32>,
}

impl Call {
    pub fn new(method: Method, template: &'static str, path: String) -> Self {
        Call {
            method,
            path,
            template,
            params: Params::new(),
            node: None,
            vmid: None,
        }
    }
    pub fn params(mut self, p: Params) -> Self {
        self.params = p;
        self
    }
    pub fn vm(mut self, node: &str, vmid: u32) -> Self {
        self.node = Some(node.to_string());
        self.vmid = Some(vmid);
        self
    }
    pub fn on_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }
    pub fn ctx(&self) -> Box<CallContext> {
        Box::new(CallContext {
            method: self.method.to_string(),
            path: self.path.clone(),
            node: self.node.clone(),
            vmid: self.vmid,
        })
    }
}

#[derive(Clone)]
struct TicketState {
    ticket: Secret,
    csrf: Secret,
    obtained: Instant,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    base: String,
    auth: PveAuth,
    ticket: tokio::sync::Mutex<Option<TicketState>>,
    limiter: Option<DefaultDirectRateLimiter>,
    metrics: StdMutex<Metrics>,
    read_retry: RetryPolicy,
    max_body: u64,
    renew_after: Duration,
    /// Serialises VMID choice + clone submission within this process.
    pub(crate) alloc_lock: tokio::sync::Mutex<std::collections::BTreeSet<u32>>,
}

/// A typed, async Proxmox VE API client. Cheap to clone (an `Arc` inside); share it freely.
#[derive(Clone)]
pub struct PveClient {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for PveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveClient")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

/// Normalise a base URL to `scheme://host[:port]/api2/json` (no trailing slash).
pub fn normalize_base_url(raw: &str) -> PveResult<String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| PveError::Config {
        field: "base_url",
        detail: format!("{raw:?}: {e}"),
    })?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(PveError::Config {
            field: "base_url",
            detail: format!("{raw:?}: scheme must be https or http"),
        });
    }
    if url.host_str().is_none() {
        return Err(PveError::Config {
            field: "base_url",
            detail: format!("{raw:?}: no host"),
        });
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/api2/json").unwrap_or(path);
    let mut origin = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        origin.push_str(&format!(":{port}"));
    }
    Ok(format!("{origin}{path}/api2/json"))
}

impl PveClient {
    /// Build a client. Fails on a bad base URL or TLS setting; does not contact the server.
    pub fn new(config: PveConfig) -> PveResult<Self> {
        let base = normalize_base_url(&config.base_url)?;
        let tls = client_config(&config.tls)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| PveError::Config {
                field: "http client",
                detail: e.to_string(),
            })?;
        let limiter = config
            .rate_limit
            .map(|r| RateLimiter::direct(Quota::per_second(r.per_second).allow_burst(r.burst)));
        Ok(PveClient {
            inner: Arc::new(Inner {
                http,
                base,
                auth: config.auth,
                ticket: tokio::sync::Mutex::new(None),
                limiter,
                metrics: StdMutex::new(Metrics::default()),
                read_retry: config.read_retry,
                max_body: config.max_response_bytes,
                renew_after: config.ticket_renew_after,
                alloc_lock: tokio::sync::Mutex::new(Default::default()),
            }),
        })
    }

    /// The normalised base URL (`…/api2/json`).
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// A snapshot of the call counters.
    pub fn metrics(&self) -> Metrics {
        match self.inner.metrics.lock() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn count(&self, method: &Method, template: &str) {
        let mut m = match self.inner.metrics.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        m.total += 1;
        *m.calls.entry(format!("{method} {template}")).or_insert(0) += 1;
    }

    /// Log in (or renew) and return the ticket. Holds the ticket lock while doing so.
    async fn ticket(&self, force_login: bool) -> PveResult<Option<TicketState>> {
        let PveAuth::Ticket { username, password } = &self.inner.auth else {
            return Ok(None);
        };
        let mut guard = self.inner.ticket.lock().await;
        if let Some(t) = guard.as_ref() {
            if !force_login && t.obtained.elapsed() < self.inner.renew_after {
                return Ok(Some(t.clone()));
            }
        }
        // Renew with the old ticket as password when we have one, else log in.
        let renewed = match (guard.as_ref(), force_login) {
            (Some(old), false) => self.login(username, &old.ticket).await.ok(),
            _ => None,
        };
        let fresh = match renewed {
            Some(t) => t,
            None => self.login(username, password).await?,
        };
        *guard = Some(fresh.clone());
        Ok(Some(fresh))
    }

    async fn login(&self, username: &str, password: &Secret) -> PveResult<TicketState> {
        let template = "/access/ticket";
        let call = Call::new(Method::POST, template, template.to_string());
        let body =
            serde_urlencoded::to_string([("username", username), ("password", password.expose())])
                .map_err(|e| PveError::Config {
                    field: "username",
                    detail: e.to_string(),
                })?;
        let req = self
            .inner
            .http
            .post(format!("{}{}", self.inner.base, template))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        let env = self.execute(&call, req).await?;
        let data = env.get("data").cloned().unwrap_or(Value::Null);
        let field = |k: &'static str| {
            data.get(k)
                .and_then(Value::as_str)
                .map(|s| Secret::new(s.to_string()))
                .ok_or_else(|| PveError::Unexpected {
                    ctx: call.ctx(),
                    field: k,
                    detail: "missing in login response (second factor required?)".into(),
                })
        };
        Ok(TicketState {
            ticket: field("ticket")?,
            csrf: field("CSRFPreventionToken")?,
            obtained: Instant::now(),
        })
    }

    /// Send the request, count it, log it, and decode the envelope or the error.
    async fn execute(&self, call: &Call, req: reqwest::RequestBuilder) -> PveResult<Value> {
        if let Some(l) = &self.inner.limiter {
            l.until_ready().await;
        }
        self.count(&call.method, call.template);
        let started = Instant::now();
        let write = call.method != Method::GET;
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(method = %call.method, path = %call.path, error = "transport",
                    duration_ms = started.elapsed().as_millis() as u64, "pve call");
                return Err(PveError::Transport {
                    ctx: call.ctx(),
                    connect: e.is_connect(),
                    detail: error_chain(e.without_url()),
                    write,
                });
            }
        };
        let status = resp.status();
        tracing::debug!(method = %call.method, path = %call.path, status = status.as_u16(),
            duration_ms = started.elapsed().as_millis() as u64, "pve call");
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .and_then(|r| std::str::from_utf8(r.as_bytes()).ok().map(str::to_string))
            .or_else(|| status.canonical_reason().map(str::to_string))
            .unwrap_or_default();
        let bytes = self.read_body(call, resp, write).await?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return body.ok_or_else(|| PveError::Decode {
                ctx: call.ctx(),
                detail: format!(
                    "HTTP {} body is not JSON ({} bytes)",
                    status.as_u16(),
                    bytes.len()
                ),
            });
        }
        let message = body
            .as_ref()
            .and_then(|b| b.get("message"))
            .and_then(Value::as_str)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| reason.trim().to_string());
        let errors = body
            .as_ref()
            .and_then(|b| b.get("errors"))
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        let msg = v
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string());
                        (k.clone(), msg.trim().to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Err(PveError::Api {
            ctx: call.ctx(),
            status: status.as_u16(),
            message,
            errors,
        })
    }

    /// Read the body, refusing (without reading further) one larger than the bound.
    async fn read_body(
        &self,
        call: &Call,
        mut resp: reqwest::Response,
        write: bool,
    ) -> PveResult<Vec<u8>> {
        let limit = self.inner.max_body;
        let too_large = || PveError::TooLarge {
            ctx: call.ctx(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if out.len() as u64 + chunk.len() as u64 > limit {
                        return Err(too_large());
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(out),
                Err(e) => {
                    return Err(PveError::Transport {
                        ctx: call.ctx(),
                        connect: false,
                        detail: error_chain(e.without_url()),
                        write,
                    })
                }
            }
        }
    }

    fn build(
        &self,
        call: &Call,
        ticket: Option<&TicketState>,
    ) -> PveResult<reqwest::RequestBuilder> {
        let url = format!("{}{}", self.inner.base, call.path);
        let mut req = self.inner.http.request(call.method.clone(), url);
        if call.method == Method::GET || call.method == Method::DELETE {
            if !call.params.0.is_empty() {
                req = req.query(&call.params.0);
            }
        } else {
            let body =
                serde_urlencoded::to_string(&call.params.0).map_err(|e| PveError::Decode {
                    ctx: call.ctx(),
                    detail: format!("cannot form-encode parameters: {e}"),
                })?;
            req = req
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body);
        }
        match (&self.inner.auth, ticket) {
            (PveAuth::Token { id, secret }, _) => {
                let mut v = reqwest::header::HeaderValue::from_str(&format!(
                    "PVEAPIToken={id}={}",
                    secret.expose()
                ))
                .map_err(|_| PveError::Config {
                    field: "api token",
                    detail: format!(
                        "token id {id:?} or its secret contains invalid header characters"
                    ),
                })?;
                v.set_sensitive(true);
                req = req.header(reqwest::header::AUTHORIZATION, v);
            }
            (PveAuth::Ticket { .. }, Some(t)) => {
                let mut cookie = reqwest::header::HeaderValue::from_str(&format!(
                    "PVEAuthCookie={}",
                    t.ticket.expose()
                ))
                .map_err(|_| PveError::Config {
                    field: "ticket",
                    detail: "server returned a ticket with invalid header characters".into(),
                })?;
                cookie.set_sensitive(true);
                req = req.header(reqwest::header::COOKIE, cookie);
                if call.method != Method::GET {
                    let mut csrf = reqwest::header::HeaderValue::from_str(t.csrf.expose())
                        .map_err(|_| PveError::Config {
                            field: "ticket",
                            detail: "server returned a CSRF token with invalid header characters"
                                .into(),
                        })?;
                    csrf.set_sensitive(true);
                    req = req.header("CSRFPreventionToken", csrf);
                }
            }
            (PveAuth::Ticket { .. }, None) => {}
        }
        Ok(req)
    }

    /// One attempt (plus one re-login on 401 with ticket auth). Returns the whole envelope.
    pub(crate) async fn send(&self, call: &Call) -> PveResult<Value> {
        let ticket = self.ticket(false).await?;
        let req = self.build(call, ticket.as_ref())?;
        match self.execute(call, req).await {
            Err(e) if e.status() == Some(401) && ticket.is_some() => {
                // 401 means the server did not run the call, so resending is safe.
                let fresh = self.ticket(true).await?;
                let req = self.build(call, fresh.as_ref())?;
                self.execute(call, req).await
            }
            other => other,
        }
    }

    /// A GET (or other idempotent read) under the read [`RetryPolicy`]: transient answers
    /// (transport errors, 5xx, lock timeouts, 595/596) are retried with jittered backoff;
    /// anything else returns at once. Never use for writes.
    pub(crate) async fn retry_read(&self, call: &Call) -> PveResult<Value> {
        let policy = self.inner.read_retry;
        let result = policy
            .retry_with(
                None,
                |e: &ReadError, attempt| {
                    tracing::debug!(method = %call.method, path = %call.path, attempt, error = %e.0, "retrying read");
                },
                || async { self.send(call).await.map_err(ReadError) },
            )
            .await;
        match result {
            Ok(v) => Ok(v.value),
            Err(RetryError::Final { error, .. }) => Err(error.0),
            Err(e) => match e.into_last() {
                Some(err) => Err(err.0),
                None => Err(PveError::Unexpected {
                    ctx: call.ctx(),
                    field: "read",
                    detail: "read retry ended without an answer".into(),
                }),
            },
        }
    }

    /// GET with retries, returning `data`.
    pub(crate) async fn get_data(&self, call: Call) -> PveResult<Value> {
        let env = self.retry_read(&call).await?;
        Ok(env.get("data").cloned().unwrap_or(Value::Null))
    }

    /// A write, sent exactly once, returning `data`.
    pub(crate) async fn write_data(&self, call: Call) -> PveResult<Value> {
        let env = self.send(&call).await?;
        Ok(env.get("data").cloned().unwrap_or(Value::Null))
    }
}

/// An error and its sources joined with `: ` (reqwest's own text alone says little, e.g.
/// "error sending request"). URLs are stripped by the caller; headers never appear.
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

/// A read's error: never "outcome unknown" (a GET changes nothing), so a reset or a 595 on
/// a read is transient even though the same failure on a write is not.
struct ReadError(PveError);

impl Classify for ReadError {
    fn disposition(&self) -> Disposition {
        match self.0.disposition() {
            Disposition::OutcomeUnknown => Disposition::Transient,
            d => d,
        }
    }
}
