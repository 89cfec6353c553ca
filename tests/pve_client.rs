//! The Proxmox client against a small in-test HTTP(S) stub on 127.0.0.1: auth headers, form
//! encoding, envelope and error parsing, ticket re-login, TLS pinning, read-only retries, task
//! waiting and race-safe VMID allocation (API notes §0–§6).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hyops_pve::pve::*;
use hyops_pve::retry::RetryPolicy;
use hyops_pve::secret::Secret;
use serde_json::{json, Value};

// ------------------------------------------------------------------ the stub

#[derive(Clone, Debug)]
struct Req {
    method: String,
    /// Path below /api2/json, percent-decoded.
    path: String,
    query: String,
    headers: HeaderMap,
    body: String,
}

impl Req {
    fn form(&self) -> Vec<(String, String)> {
        serde_urlencoded::from_str(&self.body).unwrap_or_default()
    }
    fn param(&self, k: &str) -> Option<String> {
        let src = if self.method == "GET" || self.method == "DELETE" {
            serde_urlencoded::from_str::<Vec<(String, String)>>(&self.query).unwrap_or_default()
        } else {
            self.form()
        };
        src.into_iter().find(|(key, _)| key == k).map(|(_, v)| v)
    }
    fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

struct Resp {
    status: u16,
    reason: Option<&'static str>,
    body: String,
}

fn ok(data: Value) -> Resp {
    Resp {
        status: 200,
        reason: None,
        body: json!({ "data": data }).to_string(),
    }
}

fn fail(status: u16, message: &str) -> Resp {
    Resp {
        status,
        reason: None,
        body: json!({ "data": null, "message": format!("{message}\n") }).to_string(),
    }
}

type Handler = Box<dyn Fn(&Req, &[Req]) -> Resp + Send + Sync>;

struct Stub {
    log: Mutex<Vec<Req>>,
    handler: Handler,
}

impl Stub {
    fn new(h: impl Fn(&Req, &[Req]) -> Resp + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Stub {
            log: Mutex::new(Vec::new()),
            handler: Box::new(h),
        })
    }
    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
    fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.is(method, path))
            .count()
    }
}

async fn handle(State(stub): State<Arc<Stub>>, req: Request) -> Response {
    let method = req.method().to_string();
    let raw_path = req.uri().path().to_string();
    let path = percent_encoding::percent_decode_str(
        raw_path.strip_prefix("/api2/json").unwrap_or(&raw_path),
    )
    .decode_utf8_lossy()
    .to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap();
    let r = Req {
        method,
        path,
        query,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    };
    let resp = {
        let mut log = stub.log.lock().unwrap();
        let prior = log.clone();
        let resp = (stub.handler)(&r, &prior);
        log.push(r);
        resp
    };
    let mut out = Response::builder()
        .status(StatusCode::from_u16(resp.status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(resp.body))
        .unwrap();
    if let Some(reason) = resp.reason {
        out.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(reason.as_bytes()));
    }
    out
}

fn router(stub: Arc<Stub>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(stub)
}

async fn serve(stub: Arc<Stub>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(stub)).await.unwrap() });
    addr
}

struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((s, a)) = self.tcp.accept().await {
                if let Ok(t) = self.acceptor.accept(s).await {
                    return (t, a);
                }
            }
        }
    }
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Serve over HTTPS with a fresh self-signed certificate; returns the address and the
/// certificate's DER.
async fn serve_tls(stub: Arc<Stub>) -> (SocketAddr, Vec<u8>, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = ck.cert.der().to_vec();
    let pem = ck.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![der.clone().into()], key)
    .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
    };
    tokio::spawn(async move { axum::serve(listener, router(stub)).await.unwrap() });
    (addr, der, pem)
}

fn assert_send<T: Send>(_: &T) {}

const SECRET: &str = "8f0c1b2a-aaaa-bbbb-cccc-0123456789ab";

fn token_config(base: String) -> PveConfig {
    let mut c = PveConfig::new(
        base,
        PveAuth::Token {
            id: "root@pam!tf".into(),
            secret: Secret::new(SECRET),
        },
    );
    c.read_retry = RetryPolicy {
        initial: Duration::from_millis(5),
        max_interval: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(2),
        ..RetryPolicy::default()
    };
    c
}

async fn token_client(stub: Arc<Stub>) -> PveClient {
    let addr = serve(stub).await;
    PveClient::new(token_config(format!("http://{addr}"))).unwrap()
}

fn upid(node: &str, ty: &str, id: &str) -> String {
    format!("UPID:{node}:000003E8:00001B58:6B06C6E0:{ty}:{id}:root@pam!tf:")
}

fn fast_wait() -> WaitOptions {
    WaitOptions {
        timeout: Duration::from_secs(5),
        initial_poll: Duration::from_millis(5),
        max_poll: Duration::from_millis(20),
        not_visible_grace: Duration::from_secs(2),
        log_tail: 5,
    }
}

// ------------------------------------------------------------------ auth and errors

#[tokio::test]
async fn token_header_is_sent_on_every_call() {
    let stub = Stub::new(|r, _| {
        if r.is("GET", "/version") {
            ok(json!({"version":"9.2.11","release":"9.2","repoid":"abcdef12"}))
        } else {
            fail(501, "not implemented")
        }
    });
    let c = token_client(stub.clone()).await;
    let v = c.version().await.unwrap();
    assert_eq!(v.version, "9.2.11");
    let reqs = stub.requests();
    assert_eq!(
        reqs[0].headers["authorization"],
        format!("PVEAPIToken=root@pam!tf={SECRET}")
    );
    assert!(reqs[0].headers.get("csrfpreventiontoken").is_none());
}

#[tokio::test]
async fn base_url_accepts_with_and_without_api2_json() {
    for (raw, want) in [
        ("https://pve:8006", "https://pve:8006/api2/json"),
        ("https://pve:8006/", "https://pve:8006/api2/json"),
        ("https://pve:8006/api2/json", "https://pve:8006/api2/json"),
        ("https://pve:8006/api2/json/", "https://pve:8006/api2/json"),
    ] {
        assert_eq!(normalize_base_url(raw).unwrap(), want);
    }
    assert!(normalize_base_url("ftp://pve").is_err());
    assert!(normalize_base_url("not a url").is_err());
}

#[tokio::test]
async fn secret_never_appears_in_error_display_or_debug() {
    let stub = Stub::new(|_, _| fail(500, "VM 120 is running - destroy failed"));
    let c = token_client(stub).await;
    let e = c.delete_vm("pve1", 120, true, true).await.unwrap_err();
    let shown = format!("{e} {e:?} {c:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("DELETE /nodes/pve1/qemu/120"), "{shown}");
    assert!(shown.contains("vmid 120"), "{shown}");
    let cfg = token_config("http://127.0.0.1:1".into());
    assert!(!format!("{cfg:?}").contains(SECRET));
}

#[tokio::test]
async fn error_envelope_message_and_field_map_are_parsed() {
    let stub = Stub::new(|_, _| Resp {
        status: 400,
        reason: None,
        body: json!({"data":null,"message":"Parameter verification failed.\n",
            "errors":{"net0":"net0.tag: value must have a maximum value of 4094\n"}})
        .to_string(),
    });
    let c = token_client(stub).await;
    let upd = ConfigUpdate::new().raw("net0", "virtio,bridge=vmbr0,tag=5000");
    let e = c.update_config_async("pve1", 120, &upd).await.unwrap_err();
    match e.classify() {
        ErrorClass::Param { fields } => {
            assert_eq!(
                fields["net0"],
                "net0.tag: value must have a maximum value of 4094"
            )
        }
        other => panic!("expected Param, got {other:?}"),
    }
    assert!(e.to_string().contains("Parameter verification failed."));
}

#[tokio::test]
async fn reason_phrase_is_used_when_the_body_has_no_message() {
    let stub = Stub::new(|_, _| Resp {
        status: 500,
        reason: Some("unable to create VM 120: config file already exists"),
        body: r#"{"data":null}"#.into(),
    });
    let c = token_client(stub).await;
    let e = c
        .clone_vm(
            "pve1",
            9000,
            &CloneParams {
                newid: 120,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("config file already exists"), "{e}");
    assert_eq!(e.classify(), ErrorClass::VmIdTaken);
}

#[tokio::test]
async fn ticket_login_sends_cookie_and_csrf_and_relogs_once_on_401() {
    let stub = Stub::new(|r, prior| {
        let logins = prior
            .iter()
            .filter(|p| p.is("POST", "/access/ticket"))
            .count();
        if r.is("POST", "/access/ticket") {
            let t = format!("PVE:root@pam:TICKET{}", logins + 1);
            return ok(json!({"username":"root@pam","ticket":t,"CSRFPreventionToken":"CSRF1"}));
        }
        let cookie = r
            .headers
            .get("cookie")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        if r.method != "GET" && r.headers.get("csrfpreventiontoken").is_none() {
            return fail(401, "Permission denied - invalid csrf token");
        }
        // the first ticket "expires" after one use
        if cookie.contains("TICKET1") && prior.iter().any(|p| !p.is("POST", "/access/ticket")) {
            return fail(401, "invalid PVE ticket");
        }
        if r.is("GET", "/version") {
            return ok(json!({"version":"9.2.11"}));
        }
        ok(Value::Null)
    });
    let addr = serve(stub.clone()).await;
    let mut cfg = token_config(format!("http://{addr}/api2/json"));
    cfg.auth = PveAuth::Ticket {
        username: "root@pam".into(),
        password: Secret::new("pw-very-secret"),
    };
    let c = PveClient::new(cfg).unwrap();
    c.version().await.unwrap();
    // second call: 401 with the old ticket, re-login, success
    c.cloudinit_regenerate("pve1", 120).await.unwrap();
    let reqs = stub.requests();
    assert_eq!(stub.count("POST", "/access/ticket"), 2);
    let login = &reqs[0];
    assert_eq!(login.param("username").as_deref(), Some("root@pam"));
    let get = &reqs[1];
    assert_eq!(get.headers["cookie"], "PVEAuthCookie=PVE:root@pam:TICKET1");
    assert!(get.headers.get("csrfpreventiontoken").is_none());
    let put = reqs.last().unwrap();
    assert!(put.is("PUT", "/nodes/pve1/qemu/120/cloudinit"));
    assert_eq!(put.headers["cookie"], "PVEAuthCookie=PVE:root@pam:TICKET2");
    assert_eq!(put.headers["csrfpreventiontoken"], "CSRF1");
}

#[tokio::test]
async fn ticket_login_failure_is_an_auth_error_without_the_password() {
    let stub = Stub::new(|_, _| fail(401, "authentication failure"));
    let addr = serve(stub).await;
    let mut cfg = token_config(format!("http://{addr}"));
    cfg.auth = PveAuth::Ticket {
        username: "root@pam".into(),
        password: Secret::new("pw-very-secret"),
    };
    let c = PveClient::new(cfg).unwrap();
    let e = c.version().await.unwrap_err();
    assert_eq!(e.classify(), ErrorClass::Auth);
    assert!(!format!("{e} {e:?}").contains("pw-very-secret"));
}

// ------------------------------------------------------------------ form encoding

#[tokio::test]
async fn resize_sends_an_absolute_size_without_plus() {
    let stub = Stub::new(|_, _| ok(json!(upid("pve1", "resize", "120"))));
    let c = token_client(stub.clone()).await;
    let slot: DiskSlot = "scsi0".parse().unwrap();
    c.resize("pve1", 120, slot, DiskSize::gib(40))
        .await
        .unwrap();
    c.resize("pve1", 120, slot, DiskSize(40 * (1 << 30) + 1))
        .await
        .unwrap();
    let reqs = stub.requests();
    assert_eq!(reqs[0].body, "disk=scsi0&size=40G");
    assert_eq!(reqs[1].param("size").as_deref(), Some("42949672961"));
    assert!(reqs.iter().all(|r| !r.body.contains('+')));
}

#[tokio::test]
async fn sshkeys_are_double_encoded_in_the_form_body() {
    let stub = Stub::new(|_, _| ok(json!(upid("pve1", "qmconfig", "120"))));
    let c = token_client(stub.clone()).await;
    let key = "ssh-ed25519 AAAAC3Nz+/= me@host".to_string();
    let upd = ConfigUpdate::new()
        .sshkeys(std::slice::from_ref(&key))
        .onboot(true)
        .digest("abc");
    let got = c.update_config_async("pve1", 120, &upd).await.unwrap();
    assert!(got.is_some());
    let r = &stub.requests()[0];
    assert!(r.is("POST", "/nodes/pve1/qemu/120/config"));
    assert!(
        r.body
            .contains("sshkeys=ssh-ed25519%2520AAAAC3Nz%252B%252F%253D%2520me%2540host"),
        "{}",
        r.body
    );
    let once = r.param("sshkeys").unwrap();
    let re = regex::Regex::new(r"^[-%a-zA-Z0-9_.!~*'()]*$").unwrap();
    assert!(re.is_match(&once), "{once}");
    assert_eq!(decode_sshkeys(&once), vec![key]);
    assert_eq!(r.param("onboot").as_deref(), Some("1"));
    assert_eq!(r.param("digest").as_deref(), Some("abc"));
}

#[tokio::test]
async fn get_params_go_in_the_query_and_bools_are_0_1() {
    let stub = Stub::new(|_, _| ok(json!({"name":"web","digest":"d"})));
    let c = token_client(stub.clone()).await;
    let cfg = c.vm_config("pve1", 120, true).await.unwrap();
    assert_eq!(cfg.name.as_deref(), Some("web"));
    let r = &stub.requests()[0];
    assert_eq!(r.query, "current=1");
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn delete_vm_sends_flags_in_the_query() {
    let stub = Stub::new(|_, _| ok(json!(upid("pve1", "qmdestroy", "120"))));
    let c = token_client(stub.clone()).await;
    c.delete_vm("pve1", 120, true, true).await.unwrap();
    let r = &stub.requests()[0];
    assert_eq!(r.method, "DELETE");
    assert_eq!(r.param("purge").as_deref(), Some("1"));
    assert_eq!(r.param("destroy-unreferenced-disks").as_deref(), Some("1"));
}

#[tokio::test]
async fn nextid_string_data_is_read_as_a_number() {
    let stub = Stub::new(|_, _| ok(json!("100")));
    let c = token_client(stub).await;
    assert_eq!(c.next_id(None).await.unwrap(), 100);
}

// ------------------------------------------------------------------ retries and metrics

#[tokio::test]
async fn get_is_retried_on_500_and_counted() {
    let stub = Stub::new(|_, prior| {
        if prior.len() < 2 {
            fail(500, "temporary")
        } else {
            ok(json!({"version":"9.2.11"}))
        }
    });
    let c = token_client(stub.clone()).await;
    c.version().await.unwrap();
    assert_eq!(stub.count("GET", "/version"), 3);
    let m = c.metrics();
    assert_eq!(m.total, 3);
    assert_eq!(m.count("GET /version"), 3);
}

#[tokio::test]
async fn get_is_not_retried_on_a_permanent_error() {
    let stub = Stub::new(|_, _| fail(403, "Permission check failed (/vms/120, VM.Audit)"));
    let c = token_client(stub.clone()).await;
    let e = c.vm_status("pve1", 120).await.unwrap_err();
    assert_eq!(e.classify(), ErrorClass::Permission);
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn post_is_not_retried_on_596_and_is_write_outcome_unknown() {
    let stub = Stub::new(|_, _| fail(596, "Connection timed out"));
    let c = token_client(stub.clone()).await;
    let e = c
        .clone_vm(
            "pve1",
            9000,
            &CloneParams {
                newid: 120,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.classify(), ErrorClass::WriteOutcomeUnknown);
    assert_eq!(stub.count("POST", "/nodes/pve1/qemu/9000/clone"), 1);
    assert_eq!(c.metrics().count("POST /nodes/{node}/qemu/{vmid}/clone"), 1);
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    // bind then drop to get a port nobody listens on
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let mut cfg = token_config(format!("http://{addr}"));
    cfg.read_retry.max_elapsed = Duration::from_millis(50);
    let c = PveClient::new(cfg).unwrap();
    let e = c.version().await.unwrap_err();
    assert!(
        matches!(e.classify(), ErrorClass::Transport { code: None }),
        "{e:?}"
    );
}

#[tokio::test]
async fn rate_limit_spaces_out_calls() {
    let stub = Stub::new(|_, _| ok(json!("100")));
    let addr = serve(stub).await;
    let mut cfg = token_config(format!("http://{addr}"));
    cfg.rate_limit = Some(RateLimit {
        per_second: std::num::NonZeroU32::new(20).unwrap(),
        burst: std::num::NonZeroU32::new(1).unwrap(),
    });
    let c = PveClient::new(cfg).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..5 {
        c.next_id(None).await.unwrap();
    }
    // 5 calls at 20/s with burst 1 need at least 4 gaps of 50 ms
    assert!(
        t.elapsed() >= Duration::from_millis(190),
        "{:?}",
        t.elapsed()
    );
}

// ------------------------------------------------------------------ tasks

fn task_stub(final_exit: &'static str, log: Vec<&'static str>) -> Arc<Stub> {
    Stub::new(move |r, prior| {
        if r.path.ends_with("/status") && r.path.starts_with("/nodes/pve2/tasks/") {
            let polls = prior.iter().filter(|p| p.path.ends_with("/status")).count();
            if polls == 0 {
                return fail(400, "no such task");
            }
            if polls < 3 {
                return ok(json!({"status":"running","pid":"1000"}));
            }
            return ok(json!({"status":"stopped","exitstatus":final_exit}));
        }
        if r.path.ends_with("/log") {
            let start: usize = r.param("start").unwrap().parse().unwrap();
            let limit: usize = r.param("limit").unwrap().parse().unwrap();
            let lines: Vec<Value> = log
                .iter()
                .enumerate()
                .skip(start)
                .take(limit)
                .map(|(i, t)| json!({"n": i + 1, "t": t}))
                .collect();
            return Resp {
                status: 200,
                reason: None,
                body: json!({"data": lines, "total": log.len()}).to_string(),
            };
        }
        fail(501, "not implemented")
    })
}

#[tokio::test]
async fn wait_task_ok_polls_the_node_in_the_upid() {
    let stub = task_stub("OK", vec!["TASK OK"]);
    let c = token_client(stub.clone()).await;
    let u: Upid = upid("pve2", "qmclone", "9000").parse().unwrap();
    let out = c.wait_task(&u, &fast_wait()).await.unwrap();
    assert_eq!(out.exitstatus, "OK");
    assert_eq!(out.warnings, 0);
    assert!(stub
        .requests()
        .iter()
        .all(|r| r.path == format!("/nodes/pve2/tasks/{u}/status")));
}

#[tokio::test]
async fn wait_task_warnings_count_as_ok_and_are_recorded() {
    let stub = task_stub(
        "WARNINGS: 1",
        vec!["starting", "WARN: disk is thin", "TASK WARNINGS: 1"],
    );
    let c = token_client(stub).await;
    let u: Upid = upid("pve2", "qmstart", "120").parse().unwrap();
    let out = c.wait_task(&u, &fast_wait()).await.unwrap();
    assert_eq!(out.warnings, 1);
    assert_eq!(out.warning_lines, vec!["WARN: disk is thin".to_string()]);
}

#[tokio::test]
async fn wait_task_failure_carries_the_log_tail() {
    let log: Vec<&'static str> = vec![
        "l1",
        "l2",
        "l3",
        "l4",
        "l5",
        "create full clone of drive scsi0",
        "TASK ERROR: clone failed: can't lock file '/var/lock/qemu-server/lock-133.conf' - got timeout",
    ];
    let stub = task_stub(
        "clone failed: can't lock file '/var/lock/qemu-server/lock-133.conf' - got timeout",
        log,
    );
    let c = token_client(stub).await;
    let u: Upid = upid("pve2", "qmclone", "132").parse().unwrap();
    let e = c.wait_task(&u, &fast_wait()).await.unwrap_err();
    match &e {
        PveError::TaskFailed { log_tail, .. } => {
            assert_eq!(log_tail.len(), 5);
            assert!(log_tail.last().unwrap().starts_with("TASK ERROR"));
            assert_eq!(log_tail[0], "l3");
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    assert_eq!(
        e.classify(),
        ErrorClass::LockTimeout {
            path: "/var/lock/qemu-server/lock-133.conf".into(),
            vmid: Some(133)
        }
    );
    assert!(e.to_string().contains("pve2"));
}

#[tokio::test]
async fn wait_task_times_out() {
    let stub = Stub::new(|_, _| ok(json!({"status":"running"})));
    let c = token_client(stub).await;
    let u: Upid = upid("pve1", "qmclone", "9000").parse().unwrap();
    let mut w = fast_wait();
    w.timeout = Duration::from_millis(60);
    let e = c.wait_task(&u, &w).await.unwrap_err();
    assert_eq!(e.classify(), ErrorClass::Timeout);
}

// ------------------------------------------------------------------ VMID allocation

/// A cluster where VM 100 exists (description `desc100`) and clones to 100 fail as taken.
fn alloc_stub(desc100: &'static str, task_conflict_on: Option<u32>) -> Arc<Stub> {
    Stub::new(move |r, prior| {
        if r.is("GET", "/cluster/nextid") {
            return match r.param("vmid") {
                None => ok(json!("100")),
                // 100 is not yet in the vmlist (a racing clone), so nextid says it is free
                Some(v) => ok(json!(v)),
            };
        }
        if r.is("POST", "/nodes/pve1/qemu/9000/clone") {
            let newid: u32 = r.param("newid").unwrap().parse().unwrap();
            if newid == 100 {
                return fail(500, "unable to create VM 100: config file already exists");
            }
            return ok(json!(upid("pve1", "qmclone", &format!("9000-{newid}"))));
        }
        if r.is("GET", "/cluster/resources") {
            return ok(json!([{"id":"qemu/100","type":"qemu","node":"pve1","vmid":100}]));
        }
        if r.is("GET", "/nodes/pve1/qemu/100/config") {
            return ok(json!({"name":"someone-else","description":desc100,"digest":"x"}));
        }
        if r.path.ends_with("/status") && r.path.contains("/tasks/") {
            let conflict = task_conflict_on
                .map(|v| r.path.contains(&format!("qmclone:9000-{v}:")))
                .unwrap_or(false);
            return if conflict {
                ok(json!({"status":"stopped","exitstatus":format!(
                    "clone failed: can't lock file '/var/lock/qemu-server/lock-{}.conf' - got timeout",
                    task_conflict_on.unwrap()
                )}))
            } else {
                ok(json!({"status":"stopped","exitstatus":"OK"}))
            };
        }
        if r.path.ends_with("/log") {
            return ok(json!([{"n":1,"t":"TASK ERROR"}]));
        }
        let _ = prior;
        fail(501, "not implemented")
    })
}

fn params() -> CloneParams {
    CloneParams {
        name: Some("web-01".into()),
        full: Some(true),
        description: Some("hyops-owner:run-42".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn allocation_skips_a_taken_id_and_never_adopts_a_foreign_vm() {
    let stub = alloc_stub("not ours", None);
    let c = token_client(stub.clone()).await;
    let p = params();
    let req = AllocateRequest {
        node: "pve1",
        template_vmid: 9000,
        params: &p,
        ownership: Ownership::Marker("hyops-owner:run-42"),
        start_hint: None,
        range: None,
        max_attempts: 5,
        wait: None,
    };
    let got = c.allocate_vmid_and_clone(&req).await.unwrap();
    match got {
        CloneAllocation::Submitted { vmid, .. } => assert_eq!(vmid, 101),
        other => panic!("expected Submitted(101), got {other:?}"),
    }
    let clones: Vec<String> = stub
        .requests()
        .iter()
        .filter(|r| r.is("POST", "/nodes/pve1/qemu/9000/clone"))
        .map(|r| r.param("newid").unwrap())
        .collect();
    assert_eq!(clones, vec!["100", "101"]);
    let second = stub
        .requests()
        .into_iter()
        .filter(|r| r.is("POST", "/nodes/pve1/qemu/9000/clone"))
        .nth(1)
        .unwrap();
    assert_eq!(second.param("name").as_deref(), Some("web-01"));
    assert_eq!(second.param("full").as_deref(), Some("1"));
    // nothing was ever written to the foreign VM 100
    assert!(stub
        .requests()
        .iter()
        .all(|r| r.method == "GET" || !r.path.contains("/qemu/100")));
}

#[tokio::test]
async fn allocation_adopts_an_existing_vm_only_with_our_marker() {
    let stub = alloc_stub("managed: hyops-owner:run-42", None);
    let c = token_client(stub.clone()).await;
    let p = params();
    let req = AllocateRequest {
        node: "pve1",
        template_vmid: 9000,
        params: &p,
        ownership: Ownership::Marker("hyops-owner:run-42"),
        start_hint: None,
        range: None,
        max_attempts: 5,
        wait: None,
    };
    let got = c.allocate_vmid_and_clone(&req).await.unwrap();
    assert_eq!(
        got,
        CloneAllocation::Adopted {
            vmid: 100,
            node: "pve1".into()
        }
    );
}

#[tokio::test]
async fn allocation_retries_a_task_level_lock_conflict_on_the_new_id() {
    let stub = alloc_stub("not ours", Some(101));
    let c = token_client(stub.clone()).await;
    let p = params();
    let req = AllocateRequest {
        node: "pve1",
        template_vmid: 9000,
        params: &p,
        ownership: Ownership::Marker("hyops-owner:run-42"),
        start_hint: Some(101),
        range: Some(100..=200),
        max_attempts: 5,
        wait: Some(fast_wait()),
    };
    let got = c.allocate_vmid_and_clone(&req).await.unwrap();
    match got {
        CloneAllocation::Completed { vmid, outcome } => {
            assert_eq!(vmid, 102);
            assert_eq!(outcome.exitstatus, "OK");
        }
        other => panic!("expected Completed(102), got {other:?}"),
    }
}

#[tokio::test]
async fn allocation_respects_the_range_end() {
    let stub = alloc_stub("not ours", None);
    let c = token_client(stub).await;
    let p = params();
    let req = AllocateRequest {
        node: "pve1",
        template_vmid: 9000,
        params: &p,
        ownership: Ownership::Marker("hyops-owner:run-42"),
        start_hint: None,
        range: Some(100..=100),
        max_attempts: 5,
        wait: None,
    };
    let e = c.allocate_vmid_and_clone(&req).await.unwrap_err();
    assert!(matches!(e, PveError::VmidExhausted { .. }), "{e:?}");
}

#[tokio::test]
async fn concurrent_allocations_in_one_process_never_pick_the_same_id() {
    // nextid always answers 100 and every probe is "free": only the in-process
    // bookkeeping keeps the two clones apart.
    let stub = Stub::new(|r, _| {
        if r.is("GET", "/cluster/nextid") {
            return ok(json!(r.param("vmid").unwrap_or_else(|| "100".into())));
        }
        if r.path.ends_with("/clone") {
            return ok(json!(upid("pve1", "qmclone", "9000")));
        }
        fail(501, "not implemented")
    });
    let c = token_client(stub.clone()).await;
    let p = params();
    let mk = || AllocateRequest {
        node: "pve1",
        template_vmid: 9000,
        params: &p,
        ownership: Ownership::Marker("hyops-owner:run-42"),
        start_hint: None,
        range: None,
        max_attempts: 3,
        wait: None,
    };
    let (ra, rb) = (mk(), mk());
    let fa = c.allocate_vmid_and_clone(&ra);
    assert_send(&fa);
    let (a, b) = tokio::join!(fa, c.allocate_vmid_and_clone(&rb));
    let (a, b) = (a.unwrap().vmid(), b.unwrap().vmid());
    assert_ne!(a, b);
}

// ------------------------------------------------------------------ TLS

#[tokio::test]
async fn fingerprint_pin_accepts_the_right_certificate() {
    let stub = Stub::new(|_, _| ok(json!({"version":"9.2.11"})));
    let (addr, der, _) = serve_tls(stub).await;
    let mut cfg = token_config(format!("https://{addr}"));
    cfg.tls = TlsMode::Fingerprint(fingerprint_of(&der));
    let c = PveClient::new(cfg).unwrap();
    assert_eq!(c.version().await.unwrap().version, "9.2.11");
}

#[tokio::test]
async fn fingerprint_pin_rejects_a_wrong_certificate() {
    let stub = Stub::new(|_, _| ok(json!({"version":"9.2.11"})));
    let (addr, _, _) = serve_tls(stub.clone()).await;
    let mut cfg = token_config(format!("https://{addr}"));
    cfg.tls = TlsMode::Fingerprint(["AB"; 32].join(":"));
    cfg.read_retry.max_elapsed = Duration::from_millis(50);
    let c = PveClient::new(cfg).unwrap();
    let e = c.version().await.unwrap_err();
    assert!(matches!(e, PveError::Transport { .. }), "{e:?}");
    assert!(stub.requests().is_empty());
}

#[tokio::test]
async fn a_tls_verification_failure_is_permanent_and_tried_once() {
    // issue 7 §3: a certificate mismatch was retried for 25-29 s although nothing is ever
    // sent; the policy table makes it permanent, so the read budget is not spent on it.
    let stub = Stub::new(|_, _| ok(json!({"version":"9.2.11"})));
    let (addr, _, _) = serve_tls(stub.clone()).await;
    let mut cfg = token_config(format!("https://{addr}"));
    cfg.tls = TlsMode::Fingerprint(["AB"; 32].join(":"));
    cfg.read_retry.max_elapsed = Duration::from_secs(30);
    let c = PveClient::new(cfg).unwrap();
    let e = c.version().await.unwrap_err();
    assert_eq!(e.classify(), ErrorClass::Tls, "{e}");
    assert_eq!(c.metrics().total, 1, "sent once, not retried");
}

#[tokio::test]
async fn a_response_over_the_bound_is_refused_naming_the_call() {
    let big = "x".repeat(64 * 1024);
    let stub = Stub::new(move |_, _| ok(json!([{"id": "qemu/100", "name": big.clone()}])));
    let addr = serve(stub).await;
    let mut cfg = token_config(format!("http://{addr}"));
    cfg.max_response_bytes = 16 * 1024;
    let c = PveClient::new(cfg).unwrap();
    let e = c.cluster_resources(None).await.unwrap_err();
    assert!(
        matches!(e, PveError::TooLarge { limit: 16384, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("GET /cluster/resources"), "{msg}");
    assert_eq!(c.metrics().total, 1, "an oversized answer is not re-read");
}

#[tokio::test]
async fn ca_file_mode_trusts_the_given_certificate() {
    let stub = Stub::new(|_, _| ok(json!({"version":"9.2.11"})));
    let (addr, _, pem) = serve_tls(stub).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let mut cfg = token_config(format!("https://localhost:{}", addr.port()));
    cfg.tls = TlsMode::CaFile(ca);
    let c = PveClient::new(cfg).unwrap();
    assert_eq!(c.version().await.unwrap().version, "9.2.11");
}

#[tokio::test]
async fn system_roots_reject_a_self_signed_certificate() {
    let stub = Stub::new(|_, _| ok(json!({"version":"9.2.11"})));
    let (addr, _, _) = serve_tls(stub).await;
    let mut cfg = token_config(format!("https://localhost:{}", addr.port()));
    cfg.read_retry.max_elapsed = Duration::from_millis(50);
    match PveClient::new(cfg) {
        // no system trust store on this machine: the configuration error is the rejection
        Err(e) => assert!(matches!(e, PveError::Config { .. })),
        Ok(c) => assert!(c.version().await.is_err()),
    }
}

#[tokio::test]
async fn bad_fingerprint_text_is_a_config_error() {
    let mut cfg = token_config("https://127.0.0.1:8006".into());
    cfg.tls = TlsMode::Fingerprint("zz:11".into());
    let e = PveClient::new(cfg).unwrap_err();
    assert!(e.to_string().contains("tls fingerprint"), "{e}");
}

// ------------------------------------------------------------------ more behaviours

#[tokio::test]
async fn ticket_is_renewed_with_the_old_ticket_as_password() {
    let stub = Stub::new(|r, prior| {
        if r.is("POST", "/access/ticket") {
            let n = prior
                .iter()
                .filter(|p| p.is("POST", "/access/ticket"))
                .count();
            return ok(json!({"ticket":format!("T{}", n + 1),"CSRFPreventionToken":"C"}));
        }
        ok(json!({"version":"9.2.11"}))
    });
    let addr = serve(stub.clone()).await;
    let mut cfg = token_config(format!("http://{addr}"));
    cfg.auth = PveAuth::Ticket {
        username: "root@pam".into(),
        password: Secret::new("pw-very-secret"),
    };
    cfg.ticket_renew_after = Duration::ZERO;
    let c = PveClient::new(cfg).unwrap();
    c.version().await.unwrap();
    c.version().await.unwrap();
    let logins: Vec<Req> = stub
        .requests()
        .into_iter()
        .filter(|r| r.is("POST", "/access/ticket"))
        .collect();
    assert_eq!(logins.len(), 2);
    assert_eq!(
        logins[0].param("password").as_deref(),
        Some("pw-very-secret")
    );
    assert_eq!(logins[1].param("password").as_deref(), Some("T1"));
    let last = stub.requests().pop().unwrap();
    assert_eq!(last.headers["cookie"], "PVEAuthCookie=T2");
}

/// A server that reads each request and closes the connection without answering.
async fn hang_up_server() -> (SocketAddr, Arc<Mutex<usize>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(Mutex::new(0usize));
    let seen = conns.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            *seen.lock().unwrap() += 1;
            let mut buf = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            drop(s);
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn a_write_cut_off_mid_request_is_write_outcome_unknown_and_not_resent() {
    let (addr, conns) = hang_up_server().await;
    let c = PveClient::new(token_config(format!("http://{addr}"))).unwrap();
    let e = c.start("pve1", 120).await.unwrap_err();
    assert_eq!(e.classify(), ErrorClass::WriteOutcomeUnknown, "{e:?}");
    assert_eq!(*conns.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_read_cut_off_mid_request_is_retried() {
    let (addr, conns) = hang_up_server().await;
    let mut cfg = token_config(format!("http://{addr}"));
    cfg.read_retry.max_elapsed = Duration::from_millis(100);
    let c = PveClient::new(cfg).unwrap();
    let e = c.vm_status("pve1", 120).await.unwrap_err();
    assert!(
        matches!(e.classify(), ErrorClass::Transport { .. }),
        "{e:?}"
    );
    assert!(*conns.lock().unwrap() >= 2);
}

#[tokio::test]
async fn allocation_reports_the_picked_id_when_the_clone_outcome_is_unknown() {
    let stub = Stub::new(|r, _| {
        if r.is("GET", "/cluster/nextid") {
            return ok(json!(r.param("vmid").unwrap_or_else(|| "150".into())));
        }
        fail(596, "Broken pipe")
    });
    let c = token_client(stub).await;
    let p = params();
    let req = AllocateRequest {
        node: "pve1",
        template_vmid: 9000,
        params: &p,
        ownership: Ownership::Marker("hyops-owner:run-42"),
        start_hint: None,
        range: None,
        max_attempts: 3,
        wait: None,
    };
    let e = c.allocate_vmid_and_clone(&req).await.unwrap_err();
    assert_eq!(e.classify(), ErrorClass::WriteOutcomeUnknown);
    match e {
        PveError::Clone { newid, .. } => assert_eq!(newid, 150),
        other => panic!("expected Clone wrapper, got {other:?}"),
    }
}

#[tokio::test]
async fn allocation_with_a_predicate_ownership_check() {
    let stub = alloc_stub("anything", None);
    let c = token_client(stub).await;
    let p = params();
    let is_ours = |cfg: &VmConfig| cfg.name.as_deref() == Some("someone-else");
    let req = AllocateRequest {
        node: "pve1",
        template_vmid: 9000,
        params: &p,
        ownership: Ownership::Check(&is_ours),
        start_hint: None,
        range: None,
        max_attempts: 3,
        wait: None,
    };
    assert_eq!(
        c.allocate_vmid_and_clone(&req).await.unwrap().vmid(),
        100,
        "the predicate said VM 100 is ours"
    );
}

#[tokio::test]
async fn vm_node_resolves_through_cluster_resources() {
    let stub = Stub::new(|r, _| {
        assert_eq!(r.param("type").as_deref(), Some("vm"));
        ok(json!([
            {"id":"lxc/120","type":"lxc","node":"pve9","vmid":120},
            {"id":"qemu/120","type":"qemu","node":"pve2","vmid":"120"},
            {"id":"qemu/121","type":"qemu","node":"pve1","vmid":121}
        ]))
    });
    let c = token_client(stub).await;
    assert_eq!(c.vm_node(120).await.unwrap().as_deref(), Some("pve2"));
    assert_eq!(c.vm_node(999).await.unwrap(), None);
}

#[tokio::test]
async fn agent_interfaces_are_read_from_the_result_wrapper() {
    let stub = Stub::new(|r, _| {
        if r.path.ends_with("/agent/network-get-interfaces") {
            ok(
                json!({"result":[{"name":"eth0","hardware-address":"bc:24:11:00:00:01",
                "ip-addresses":[{"ip-address":"192.0.2.10","ip-address-type":"ipv4","prefix":24}]}]}),
            )
        } else {
            fail(501, "not implemented")
        }
    });
    let c = token_client(stub).await;
    let ifaces = c.agent_network_interfaces("pve1", 120).await.unwrap();
    assert_eq!(ipv4_addresses(&ifaces)[0].1.to_string(), "192.0.2.10");
}

#[tokio::test]
async fn agent_not_running_is_classified_and_not_retried() {
    let stub = Stub::new(|_, _| fail(500, "QEMU guest agent is not running"));
    let c = token_client(stub.clone()).await;
    let e = c.agent_network_interfaces("pve1", 120).await.unwrap_err();
    assert_eq!(e.classify(), ErrorClass::AgentNotReady);
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn shutdown_sends_force_stop_and_timeout() {
    let stub = Stub::new(|_, _| ok(json!(upid("pve1", "qmshutdown", "120"))));
    let c = token_client(stub.clone()).await;
    let u = c.shutdown("pve1", 120, Some(60), true).await.unwrap();
    assert_eq!(u.task_type, "qmshutdown");
    let r = &stub.requests()[0];
    assert!(r.is("POST", "/nodes/pve1/qemu/120/status/shutdown"));
    assert_eq!(r.param("forceStop").as_deref(), Some("1"));
    assert_eq!(r.param("timeout").as_deref(), Some("60"));
}

#[tokio::test]
async fn cloudinit_dump_and_storage_content() {
    let stub = Stub::new(|r, _| {
        if r.path.ends_with("/cloudinit/dump") {
            assert_eq!(r.param("type").as_deref(), Some("user"));
            ok(json!("#cloud-config\nuser: ops\n"))
        } else if r.is("GET", "/nodes/pve1/storage/local/content") {
            assert_eq!(r.param("content").as_deref(), Some("snippets"));
            ok(
                json!([{"volid":"local:snippets/u.yaml","format":"snippet","size":"120","content":"snippets"}]),
            )
        } else {
            fail(501, "not implemented")
        }
    });
    let c = token_client(stub).await;
    let y = c
        .cloudinit_dump("pve1", 120, CloudInitKind::User)
        .await
        .unwrap();
    assert!(y.contains("user: ops"));
    let vols = c
        .storage_content("pve1", "local", Some("snippets"))
        .await
        .unwrap();
    assert_eq!(vols[0].size, Some(120));
}

#[tokio::test]
async fn a_non_upid_answer_to_a_task_call_is_an_unexpected_value_error() {
    let stub = Stub::new(|_, _| ok(json!("not-a-upid")));
    let c = token_client(stub).await;
    let e = c.start("pve1", 120).await.unwrap_err();
    assert!(matches!(e, PveError::Unexpected { .. }), "{e:?}");
}

#[tokio::test]
async fn wait_unlocked_polls_until_the_clone_lock_is_gone() {
    let stub = Stub::new(|_, prior| {
        if prior.len() < 2 {
            ok(json!({"status":"stopped","lock":"clone"}))
        } else {
            ok(json!({"status":"stopped"}))
        }
    });
    let c = token_client(stub.clone()).await;
    let st = c.wait_unlocked("pve1", 120, &fast_wait()).await.unwrap();
    assert_eq!(st.lock, None);
    assert_eq!(stub.requests().len(), 3);
}

#[tokio::test]
async fn wait_unlocked_names_the_holder_on_timeout() {
    let stub = Stub::new(|_, _| ok(json!({"status":"stopped","lock":"backup"})));
    let c = token_client(stub).await;
    let mut w = fast_wait();
    w.timeout = Duration::from_millis(50);
    let e = c.wait_unlocked("pve1", 120, &w).await.unwrap_err();
    assert!(e.to_string().contains("backup"), "{e}");
}

#[tokio::test]
async fn wait_agent_ipv4_polls_through_agent_not_ready() {
    let stub = Stub::new(|_, prior| match prior.len() {
        0 => fail(500, "QEMU guest agent is not running"),
        1 => ok(
            json!({"result":[{"name":"lo","ip-addresses":[{"ip-address":"127.0.0.1","ip-address-type":"ipv4","prefix":8}]}]}),
        ),
        _ => ok(
            json!({"result":[{"name":"eth0","ip-addresses":[{"ip-address":"192.0.2.7","ip-address-type":"ipv4","prefix":24}]}]}),
        ),
    });
    let c = token_client(stub).await;
    let v4 = c.wait_agent_ipv4("pve1", 120, &fast_wait()).await.unwrap();
    assert_eq!(v4[0].1.to_string(), "192.0.2.7");
}

#[tokio::test]
async fn wait_agent_ipv4_times_out_with_the_agent_error() {
    let stub = Stub::new(|_, _| fail(500, "No QEMU guest agent configured"));
    let c = token_client(stub).await;
    let mut w = fast_wait();
    w.timeout = Duration::from_millis(40);
    let e = c.wait_agent_ipv4("pve1", 120, &w).await.unwrap_err();
    assert_eq!(e.classify(), ErrorClass::AgentNotReady);
}

#[tokio::test]
async fn client_and_its_futures_can_be_shared_across_tasks() {
    fn send_sync<T: Send + Sync + Clone + 'static>(_: &T) {}
    let stub = Stub::new(|_, _| ok(json!({"status":"stopped","exitstatus":"OK"})));
    let c = token_client(stub).await;
    send_sync(&c);
    let u: Upid = upid("pve1", "qmstart", "120").parse().unwrap();
    let c2 = c.clone();
    let handle = tokio::spawn(async move { c2.wait_task(&u, &fast_wait()).await });
    assert_eq!(handle.await.unwrap().unwrap().exitstatus, "OK");
    assert_eq!(c.metrics().total, 1, "clones share one call counter");
}

#[tokio::test]
async fn log_tail_pages_forward_when_the_server_sends_no_total() {
    let stub = Stub::new(|r, _| {
        let start: usize = r.param("start").unwrap().parse().unwrap();
        let limit: usize = r.param("limit").unwrap().parse().unwrap();
        let lines: Vec<Value> = (start..12.min(start + limit))
            .map(|i| json!({"n": i + 1, "t": format!("line {}", i + 1)}))
            .collect();
        ok(json!(lines))
    });
    let c = token_client(stub).await;
    let u: Upid = upid("pve1", "qmclone", "9000").parse().unwrap();
    let tail = c.task_log_tail(&u, 5).await.unwrap();
    assert_eq!(
        tail,
        vec!["line 8", "line 9", "line 10", "line 11", "line 12"]
    );
}

#[tokio::test]
async fn transport_errors_explain_the_cause() {
    let stub = Stub::new(|_, _| ok(json!({"version":"9.2.11"})));
    let (addr, _, _) = serve_tls(stub).await;
    let mut cfg = token_config(format!("https://{addr}"));
    cfg.tls = TlsMode::Fingerprint(["CD"; 32].join(":"));
    cfg.read_retry.max_elapsed = Duration::from_millis(20);
    let c = PveClient::new(cfg).unwrap();
    let e = c.version().await.unwrap_err().to_string();
    assert!(e.contains("does not match the pinned fingerprint"), "{e}");
    assert!(e.contains("GET /version"), "{e}");
}

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn debug_logs_name_the_call_but_never_the_secret_or_body() {
    let buf = LogBuf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || w.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(sub);
    let stub = Stub::new(|_, _| ok(json!(upid("pve1", "qmconfig", "120"))));
    let c = token_client(stub).await;
    let upd = ConfigUpdate::new()
        .cipassword(Secret::new("pw-in-body"))
        .ciuser("ops");
    c.update_config_async("pve1", 120, &upd).await.unwrap();
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("/nodes/pve1/qemu/120/config"), "{logs}");
    assert!(logs.contains("status=200"), "{logs}");
    assert!(!logs.contains(SECRET), "{logs}");
    assert!(!logs.contains("pw-in-body"), "{logs}");
}

#[tokio::test]
async fn get_is_retried_on_595_and_lock_timeouts() {
    let stub = Stub::new(|_, prior| match prior.len() {
        0 => fail(595, "Connection refused"),
        1 => fail(
            500,
            "can't lock file '/var/lock/qemu-server/lock-120.conf' - got timeout",
        ),
        _ => ok(json!({"status":"running"})),
    });
    let c = token_client(stub.clone()).await;
    assert!(c.vm_status("pve1", 120).await.unwrap().is_running());
    assert_eq!(stub.requests().len(), 3);
}
