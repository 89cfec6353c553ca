//! The HTTP(S) front: accepts connections on 127.0.0.1, decodes requests (query, form or JSON
//! body, each decoded once), authenticates (API token or ticket + CSRF), matches the spec,
//! fires request-level faults, verifies parameters, counts calls, and renders PVE's envelope
//! and error bodies. Endpoint behaviour lives in `api`/`vm`; this module knows only the wire.

use super::api;
use super::check;
use super::core::{guard, ApiError, Call, Reply, Sim};
use super::faults::{CallInfo, FaultAction, Fired};
use super::spec::PathMatch;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Returned by a handler to make hyper drop the connection without a response (a lost
/// reply).
#[derive(Debug)]
pub struct ConnectionReset;

impl std::fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated connection reset")
    }
}
impl std::error::Error for ConnectionReset {}

/// Accept connections until `shutdown` flips to true, serving the Proxmox API.
pub async fn run(
    sim: Arc<Sim>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    serve(listener, tls, shutdown, move |req| {
        handle(Arc::clone(&sim), req)
    })
    .await
}

/// The simulators' one HTTP(S) machinery (the Proxmox simulator and the embedded NetBox):
/// accept connections on `listener` until `shutdown` flips to true, TLS through `tls` when
/// given (HTTP/1.1 or HTTP/2), each request answered by `handler`; a handler's
/// [`ConnectionReset`] drops the connection without an answer, and open connections end when
/// `shutdown` flips.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<Body>, ConnectionReset>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        // Answers go out as soon as they are written: without TCP_NODELAY a reply split over
        // two segments waits for the client's delayed ACK (tens of ms), which is latency no
        // real pveproxy adds and the latency model does not ask for.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let tls = tls.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(handler);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_shutdown.changed() => {}
                    }
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_shutdown.changed() => {}
                    }
                }
            }
        });
    }
}

async fn handle(sim: Arc<Sim>, req: Request<Incoming>) -> Result<Response<Body>, ConnectionReset> {
    let method = req.method().as_str().to_string();
    let full_path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(Body::new(req.into_body()), 64 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return Ok(error_response(&ApiError::new(
                400,
                format!("unable to read request body: {e}"),
            )))
        }
    };

    let Some(path) = full_path.strip_prefix("/api2/json") else {
        return Ok(not_implemented(&sim, &method, &full_path));
    };
    let (ep, vars) = match sim.spec.find(&method, path) {
        PathMatch::Found(ep, vars) => (ep, vars),
        PathMatch::NotImplemented => return Ok(not_implemented(&sim, &method, path)),
    };
    {
        let mut c = guard(&sim.counters);
        *c.by_endpoint
            .entry((method.clone(), ep.path.clone()))
            .or_insert(0) += 1;
        c.total += 1;
        if method != "GET" {
            c.writes += 1;
        }
    }

    let user = if ep.path == "/access/ticket" {
        String::new()
    } else {
        match authenticate(&sim, &method, &headers) {
            Ok(u) => u,
            Err(e) => {
                sim.clock.sleep(sim.latency.auth_failure_ms).await;
                return Ok(error_response(&e));
            }
        }
    };

    let mut params = match decode_params(&query, &headers, &body) {
        Ok(p) => p,
        Err(e) => return Ok(error_response(&e)),
    };
    params.extend(vars);

    let vmid = params.get("vmid").and_then(|v| v.parse().ok());
    let fired = guard(&sim.faults).fire_timed(&CallInfo {
        method: &method,
        template: &ep.path,
        path,
        vmid,
        now_ms: sim.clock.now_ms(),
    });
    let mut task_faults = Vec::new();
    let mut lost_reply = false;
    for Fired {
        action: f,
        until_ms,
    } in fired
    {
        match f {
            FaultAction::Reset => return Err(ConnectionReset),
            FaultAction::Http { status, message } => {
                return Ok(error_response(&ApiError::new(status, message)))
            }
            FaultAction::Delay { ms } => sim.clock.sleep(ms).await,
            FaultAction::Hang => match until_ms {
                // Held to the end of the rule's window, then the connection drops.
                Some(end) => {
                    sim.clock
                        .sleep(end.saturating_sub(sim.clock.now_ms()))
                        .await;
                    return Err(ConnectionReset);
                }
                // Held until the client gives up (or the simulator stops).
                None => std::future::pending::<()>().await,
            },
            FaultAction::LostReply => lost_reply = true,
            FaultAction::Oversized { bytes } => return Ok(oversized_response(bytes)),
            FaultAction::LockTimeout | FaultAction::TaskFail { .. } if !ep.upid => {
                let msg = match f {
                    FaultAction::TaskFail { message } => message,
                    _ => format!(
                        "can't lock file '/var/lock/qemu-server/lock-{}.conf' - got timeout",
                        vmid.unwrap_or(0)
                    ),
                };
                return Ok(error_response(&ApiError::e500(msg)));
            }
            other => task_faults.push(other),
        }
    }

    if let Err(errors) = check::verify(sim.spec, ep, &params) {
        return Ok(error_response(&ApiError::params(errors)));
    }
    sim.clock.sleep(sim.latency.request_ms).await;

    let call = Call {
        method,
        template: ep.path.clone(),
        params,
        user,
        faults: task_faults,
    };
    let answer = api::dispatch(&sim, &call).await;
    if lost_reply {
        // The call ran (its task, if any, goes on); the reply is lost on the way back.
        return Err(ConnectionReset);
    }
    Ok(match answer {
        Ok(reply) => ok_response(reply),
        Err(e) => {
            if e.status == 401 {
                // a failed login (POST /access/ticket) is delayed like any other 401
                sim.clock.sleep(sim.latency.auth_failure_ms).await;
            }
            error_response(&e)
        }
    })
}

/// A 200 answer of `bytes` bytes, streamed so the simulator never holds it in memory.
fn oversized_response(bytes: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunks = bytes.div_ceil(CHUNK);
    let stream = futures::stream::iter((0..chunks).map(move |i| {
        let n = CHUNK.min(bytes - i * CHUNK) as usize;
        Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; n]))
    }));
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    resp
}

fn not_implemented(sim: &Sim, method: &str, path: &str) -> Response<Body> {
    {
        let mut c = guard(&sim.counters);
        *c.by_endpoint
            .entry((method.to_string(), "?".to_string()))
            .or_insert(0) += 1;
        c.total += 1;
        if method != "GET" {
            c.writes += 1;
        }
    }
    error_response(&ApiError::new(
        501,
        format!("Method '{method} {path}' not implemented"),
    ))
}

/// Query string plus body (form or JSON), each decoded exactly once.
fn decode_params(
    query: &str,
    headers: &hyper::HeaderMap,
    body: &[u8],
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::new(400, format!("unable to parse query string: {e}")))?;
    out.extend(pairs);
    if body.is_empty() {
        return Ok(out);
    }
    let ctype = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.starts_with("application/json") {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::new(400, format!("unable to parse JSON body: {e}")))?;
        let Value::Object(map) = v else {
            return Err(ApiError::new(400, "JSON body must be an object"));
        };
        for (k, v) in map {
            let s = match v {
                Value::Null => continue,
                Value::String(s) => s,
                Value::Bool(b) => if b { "1" } else { "0" }.to_string(),
                Value::Number(n) => n.to_string(),
                other => other.to_string(),
            };
            out.insert(k, s);
        }
    } else {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError::new(400, format!("unable to parse form body: {e}")))?;
        out.extend(pairs);
    }
    Ok(out)
}

/// The authenticated user (`root@pam!hyops` for the token), or a 401.
fn authenticate(sim: &Sim, method: &str, headers: &hyper::HeaderMap) -> Result<String, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(auth) = header("authorization") {
        if let Some(tok) = auth.strip_prefix("PVEAPIToken=") {
            let (id, secret) = tok.rsplit_once('=').unwrap_or((tok, ""));
            if id == sim.auth.token_id && secret == sim.auth.token_secret.expose() {
                return Ok(id.to_string());
            }
            return Err(ApiError::new(401, "authentication failure"));
        }
        if let Some(ticket) = auth.strip_prefix("PVEAuthCookie=") {
            return check_ticket(sim, method, ticket, header("csrfpreventiontoken"));
        }
    }
    let cookie_ticket = header("cookie").and_then(|c| {
        c.split(';')
            .filter_map(|p| p.trim().strip_prefix("PVEAuthCookie="))
            .next()
            .map(|t| {
                percent_encoding::percent_decode_str(t)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    });
    match cookie_ticket {
        Some(t) => check_ticket(sim, method, &t, header("csrfpreventiontoken")),
        None => Err(ApiError::new(401, "No ticket")),
    }
}

fn check_ticket(
    sim: &Sim,
    method: &str,
    ticket: &str,
    csrf: Option<&str>,
) -> Result<String, ApiError> {
    let tickets = guard(&sim.auth.tickets);
    let Some((user, token)) = tickets.get(ticket) else {
        return Err(ApiError::new(401, "invalid PVE ticket"));
    };
    if method != "GET" && csrf != Some(token.as_str()) {
        return Err(ApiError::new(401, "Permission denied - invalid csrf token"));
    }
    Ok(user.clone())
}

fn ok_response(reply: Reply) -> Response<Body> {
    let mut v = json!({ "data": reply.data });
    if let Some(t) = reply.total {
        v["total"] = json!(t);
    }
    json_response(200, &v, None)
}

/// PVE's error body; the message also goes into the reason phrase.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut v = json!({ "data": null, "message": format!("{}\n", e.message.trim_end()) });
    if let Some(errs) = &e.errors {
        v["errors"] = json!(errs);
    }
    json_response(e.status, &v, Some(&e.message))
}

fn json_response(status: u16, v: &Value, reason: Option<&str>) -> Response<Body> {
    let mut resp = Response::new(Body::from(v.to_string()));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    if let Some(r) = reason {
        let line: String = r
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .collect();
        if let Ok(p) = hyper::ext::ReasonPhrase::try_from(line) {
            resp.extensions_mut().insert(p);
        }
    }
    resp
}
