//! The embedded NetBox's wire: NetBox's URL layout (`/api/<app>/<model>/[<id>/]`, trailing
//! slash required — a missing one answers 301 like the real server), token authentication
//! (v1 `Token`, v2 `Bearer nbt_<key>.<secret>`; every failure is 403 with NetBox's detail),
//! `API-Version` and `X-Request-ID` headers, limit/offset pagination with absolute
//! `next`/`previous`, `fields=`, list-body bulk creates, `available-ips`, fault injection and
//! request counters. Object behaviour lives in `store`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::sim::server::ConnectionReset;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::store::{model_name, NbError, Query, KINDS};
use super::{NbFaultAction, NbShared};

/// Accept connections until `shutdown` flips, on the Proxmox simulator's HTTP(S) machinery.
pub async fn run(
    nb: Arc<NbShared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    crate::sim::server::serve(listener, tls, shutdown, move |req| {
        handle(Arc::clone(&nb), req)
    })
    .await
}

fn respond(status: u16, body: &Value, extra: &[(&str, String)]) -> Response<Body> {
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    h.insert(
        "API-Version",
        hyper::header::HeaderValue::from_static("4.7"),
    );
    let rid = format!("{:032x}", rand::random::<u128>());
    if let Ok(v) = hyper::header::HeaderValue::from_str(&rid) {
        h.insert("X-Request-ID", v);
    }
    for (k, v) in extra {
        if let (Ok(name), Ok(val)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            h.insert(name, val);
        }
    }
    resp
}

fn error(e: &NbError) -> Response<Body> {
    respond(e.status, &e.body, &[])
}

/// Check the `Authorization` header against the configured tokens; NetBox's 403 details.
fn authenticate(nb: &NbShared, headers: &hyper::HeaderMap) -> Result<(), NbError> {
    let Some(raw) = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(NbError::detail(
            403,
            "Authentication credentials were not provided.",
        ));
    };
    let (keyword, value) = raw.trim().split_once(' ').unwrap_or((raw, ""));
    let keyword = keyword.to_ascii_lowercase();
    if keyword != "token" && keyword != "bearer" {
        return Err(NbError::detail(
            403,
            "Authentication credentials were not provided.",
        ));
    }
    let value = value.trim();
    if let Some(rest) = value.strip_prefix("nbt_") {
        if !rest.contains('.') {
            return Err(NbError::detail(
                403,
                "Could not parse key from v2 token. Did you mean to use 'Token' instead of 'Bearer'?",
            ));
        }
        if nb.token_v2.expose() == value {
            return Ok(());
        }
        return Err(NbError::detail(403, "Invalid v2 token"));
    }
    match &nb.token_v1 {
        Some(t) if t.expose() == value => Ok(()),
        _ => Err(NbError::detail(403, "Invalid v1 token")),
    }
}

fn parse_query(raw: &str) -> Result<(Query, BTreeMap<String, String>), NbError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| NbError::detail(400, format!("unable to parse the query string: {e}")))?;
    let mut filters = Query::new();
    let mut control = BTreeMap::new();
    for (k, v) in pairs {
        if [
            "limit", "offset", "brief", "fields", "omit", "ordering", "format",
        ]
        .contains(&k.as_str())
        {
            control.insert(k, v);
        } else {
            filters.entry(k).or_default().push(v);
        }
    }
    Ok((filters, control))
}

fn only_fields(v: Value, control: &BTreeMap<String, String>) -> Value {
    let Some(fields) = control.get("fields").filter(|f| !f.trim().is_empty()) else {
        return v;
    };
    let keep: Vec<&str> = fields.split(',').map(str::trim).collect();
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .collect::<Map<String, Value>>(),
        ),
        other => other,
    }
}

async fn handle(
    nb: Arc<NbShared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ConnectionReset> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(Body::new(req.into_body()), 16 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return Ok(error(&NbError::detail(
                400,
                format!("unable to read the body: {e}"),
            )))
        }
    };
    let template = template_of(&path);
    nb.count(&method, &template);

    if let Some(ms) = nb.latency_ms() {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }

    // Request-level faults fire before any processing, except a lost reply, which fires
    // after the work is done.
    let fault = nb.fire(&method, &path);
    if let Some(NbFaultAction::Hold(gate)) = &fault {
        gate.hold().await;
    }
    if let Some(NbFaultAction::Status {
        status,
        retry_after,
    }) = &fault
    {
        let extra: Vec<(&str, String)> = retry_after
            .map(|s| vec![("Retry-After", s.to_string())])
            .unwrap_or_default();
        return Ok(respond(
            *status,
            &json!({"detail": "injected fault"}),
            &extra,
        ));
    }

    if !path.ends_with('/') {
        let location = format!(
            "{}{}/{}",
            nb.base_url(),
            path,
            if query.is_empty() {
                String::new()
            } else {
                format!("?{query}")
            }
        );
        return Ok(respond(301, &Value::Null, &[("Location", location)]));
    }
    if let Err(e) = authenticate(&nb, &headers) {
        return Ok(error(&e));
    }
    let (filters, control) = match parse_query(&query) {
        Ok(q) => q,
        Err(e) => return Ok(error(&e)),
    };
    let json_body: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => {
                return Ok(error(&NbError::detail(
                    400,
                    format!("JSON parse error - {e}"),
                )))
            }
        }
    };
    let result = route(&nb, &method, &path, &filters, &control, json_body.as_ref());
    if let Some(NbFaultAction::ResetAfterCommit) = fault {
        return Err(ConnectionReset);
    }
    Ok(match result {
        Ok((status, v)) => respond(status, &v, &[]),
        Err(e) => error(&e),
    })
}

/// `/api/ipam/ip-addresses/12/` → `/api/ipam/ip-addresses/{id}/`.
fn template_of(path: &str) -> String {
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

fn route(
    nb: &NbShared,
    method: &str,
    path: &str,
    filters: &Query,
    control: &BTreeMap<String, String>,
    body: Option<&Value>,
) -> Result<(u16, Value), NbError> {
    let base = nb.base_url().to_string();
    let Some(rest) = path.strip_prefix("/api/") else {
        return Err(NbError::detail(404, "Not found."));
    };
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", ["status"]) => Ok((
            200,
            json!({"netbox-version": "4.7.3", "netbox-full-version": "4.7.3 (hyops-pve embedded)",
                   "python-version": "n/a", "plugins": {}, "rq-workers-running": 0,
                   "hostname": "hyops-pve-sim", "installed_apps": {}}),
        )),
        ("GET", ["authentication-check"]) => Ok((
            200,
            json!({"id": 1, "username": "hyops-sim", "is_superuser": true}),
        )),
        (_, [app, model, rest @ ..]) => {
            let kind = format!("{app}/{model}");
            if !KINDS.contains(&kind.as_str()) {
                return Err(NbError::detail(404, "Not found."));
            }
            let mut store = nb.store();
            match (method, rest) {
                ("GET", []) => {
                    let ids = store.list(&kind, filters)?;
                    let count = ids.len();
                    let limit = control
                        .get("limit")
                        .and_then(|l| l.parse::<usize>().ok())
                        .map(|l| if l == 0 { 1000 } else { l.min(1000) })
                        .unwrap_or(50);
                    let offset = control
                        .get("offset")
                        .and_then(|o| o.parse::<usize>().ok())
                        .unwrap_or(0);
                    let results: Vec<Value> = ids
                        .iter()
                        .skip(offset)
                        .take(limit)
                        .filter_map(|id| store.render(&base, &kind, *id))
                        .map(|v| only_fields(v, control))
                        .collect();
                    let page_url = |off: usize| {
                        let mut pairs: Vec<(String, String)> = filters
                            .iter()
                            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
                            .collect();
                        pairs.push(("limit".into(), limit.to_string()));
                        pairs.push(("offset".into(), off.to_string()));
                        format!(
                            "{base}{path}?{}",
                            serde_urlencoded::to_string(&pairs).unwrap_or_default()
                        )
                    };
                    let next = (offset + limit < count).then(|| page_url(offset + limit));
                    let previous = (offset > 0).then(|| page_url(offset.saturating_sub(limit)));
                    Ok((
                        200,
                        json!({"count": count, "next": next, "previous": previous, "results": results}),
                    ))
                }
                ("POST", []) => {
                    let body = body.ok_or_else(|| NbError::detail(400, "No data provided."))?;
                    match body {
                        Value::Array(items) => {
                            let ids = store.create_many(&kind, items).map_err(|e| {
                                let n = e.body.as_array().map(|a| a.len()).unwrap_or(0);
                                NbError {
                                    status: 400,
                                    body: json!({"detail": format!("1 of {n} objects failed validation."),
                                                 "errors": e.body}),
                                }
                            })?;
                            Ok((
                                201,
                                Value::Array(
                                    ids.iter()
                                        .filter_map(|id| store.render(&base, &kind, *id))
                                        .collect(),
                                ),
                            ))
                        }
                        other => {
                            let id = store.create(&kind, other)?;
                            Ok((201, store.render(&base, &kind, id).unwrap_or(Value::Null)))
                        }
                    }
                }
                (m, [id]) => {
                    let id: u64 = id.parse().map_err(|_| NbError::detail(404, "Not found."))?;
                    match m {
                        "GET" => store
                            .render(&base, &kind, id)
                            .map(|v| (200, only_fields(v, control)))
                            .ok_or_else(|| {
                                NbError::detail(
                                    404,
                                    format!("No {} matches the given query.", model_name(&kind)),
                                )
                            }),
                        "PATCH" | "PUT" => {
                            let body =
                                body.ok_or_else(|| NbError::detail(400, "No data provided."))?;
                            store.update(&kind, id, body)?;
                            Ok((200, store.render(&base, &kind, id).unwrap_or(Value::Null)))
                        }
                        "DELETE" => {
                            store.delete(&kind, id)?;
                            Ok((204, Value::Null))
                        }
                        _ => Err(NbError::detail(405, format!("Method \"{m}\" not allowed."))),
                    }
                }
                (m, [id, "available-ips"]) if kind == "ipam/ip-ranges" => {
                    let id: u64 = id.parse().map_err(|_| NbError::detail(404, "Not found."))?;
                    match m {
                        "GET" => {
                            let limit = control
                                .get("limit")
                                .and_then(|l| l.parse::<usize>().ok())
                                .map(|l| if l == 0 { 1000 } else { l.min(1000) })
                                .unwrap_or(50);
                            let free = store.range_available(id, limit)?;
                            Ok((
                                200,
                                Value::Array(
                                    free.into_iter()
                                        .map(|a| json!({"family": 4, "address": a, "vrf": null}))
                                        .collect(),
                                ),
                            ))
                        }
                        "POST" => {
                            let body = body.cloned().unwrap_or(json!({}));
                            let (items, single) = match body {
                                Value::Array(a) => (a, false),
                                other => (vec![other], true),
                            };
                            let ids = store.range_allocate(id, &items).map_err(|e| {
                                // A single object's errors pass through unpositioned.
                                match (&e.body, single, e.status) {
                                    (Value::Array(a), true, 400) => NbError {
                                        status: 400,
                                        body: a.first().cloned().unwrap_or(Value::Null),
                                    },
                                    _ => e,
                                }
                            })?;
                            let rendered: Vec<Value> = ids
                                .iter()
                                .filter_map(|i| store.render(&base, "ipam/ip-addresses", *i))
                                .collect();
                            if single {
                                Ok((201, rendered.into_iter().next().unwrap_or(Value::Null)))
                            } else {
                                Ok((201, Value::Array(rendered)))
                            }
                        }
                        _ => Err(NbError::detail(405, format!("Method \"{m}\" not allowed."))),
                    }
                }
                _ => Err(NbError::detail(404, "Not found.")),
            }
        }
        _ => Err(NbError::detail(404, "Not found.")),
    }
}
