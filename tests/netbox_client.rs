//! The NetBox client against the embedded NetBox: both token forms, pagination,
//! `API-Version`, the retry rules (429 honours `Retry-After`; a create is never resent after
//! NetBox may have acted), timeouts, and faults on the server side.

use std::time::{Duration, Instant};

use hyops_pve::netbox::{token_version, NetboxClient, NetboxConfig, TokenVersion};
use hyops_pve::pve::TlsMode;
use hyops_pve::secret::Secret;
use hyops_pve::sim::netbox::{
    NbFaultAction, NbFaultRule, NetboxSim, NetboxSimConfig, NetboxSimHandle,
};
use serde_json::json;

async fn sim() -> NetboxSimHandle {
    NetboxSim::start(NetboxSimConfig::default()).await.unwrap()
}

fn client(s: &NetboxSimHandle, token: Secret, f: impl FnOnce(&mut NetboxConfig)) -> NetboxClient {
    let mut cfg = NetboxConfig::new(s.url(), token);
    cfg.tls = TlsMode::Fingerprint(s.ca_fingerprint_sha256.clone());
    cfg.retry = hyops_pve::netbox::default_policy().scaled(0.1);
    f(&mut cfg);
    NetboxClient::new(cfg).unwrap()
}

#[tokio::test]
async fn v2_bearer_and_v1_token_both_authenticate_and_api_version_is_recorded() {
    let s = sim().await;
    assert_eq!(token_version(s.token.expose()), TokenVersion::V2);
    let c = client(&s, s.token.clone(), |_| {});
    c.status().await.unwrap();
    assert_eq!(c.api_version().as_deref(), Some("4.7"));
    let v1 = client(
        &s,
        Secret::new("0123456789abcdef0123456789abcdef01234567"),
        |_| {},
    );
    v1.status().await.unwrap();
}

#[tokio::test]
async fn a_bad_token_is_refused_with_403_not_401() {
    let s = sim().await;
    let c = client(&s, Secret::new("nbt_wrongkey0001.nope"), |_| {});
    let e = c.status().await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(e.is_auth());
    assert!(e.to_string().contains("Invalid v2 token"), "{e}");
    assert_eq!(c.metrics().total, 1, "an auth failure is not retried");
}

#[tokio::test]
async fn list_follows_every_page() {
    let s = sim().await;
    {
        let mut st = s.store();
        for i in 0..2100 {
            st.create(
                "extras/tags",
                &json!({"name": format!("t{i}"), "slug": format!("t{i}")}),
            )
            .unwrap();
        }
    }
    let c = client(&s, s.token.clone(), |_| {});
    let all = c.list("/api/extras/tags/", &[]).await.unwrap();
    assert_eq!(all.len(), 2100);
    assert_eq!(c.metrics().total, 3, "1000 per page");
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let s = sim().await;
    s.add_fault(NbFaultRule {
        method: Some("GET".into()),
        path_contains: "/api/status/".into(),
        times: 1,
        action: NbFaultAction::Status {
            status: 429,
            retry_after: Some(1),
        },
    });
    let c = client(&s, s.token.clone(), |_| {});
    let t0 = Instant::now();
    c.status().await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        t0.elapsed()
    );
    assert_eq!(c.metrics().total, 2);
}

#[tokio::test]
async fn a_create_answered_429_is_resent_but_one_answered_502_is_not() {
    let s = sim().await;
    s.add_fault(NbFaultRule {
        method: Some("POST".into()),
        path_contains: "/api/extras/tags/".into(),
        times: 1,
        action: NbFaultAction::Status {
            status: 429,
            retry_after: None,
        },
    });
    let c = client(&s, s.token.clone(), |_| {});
    c.create("/api/extras/tags/", &json!({"name": "a", "slug": "a"}))
        .await
        .unwrap();
    assert_eq!(c.metrics().writes, 2);
    s.add_fault(NbFaultRule {
        method: Some("POST".into()),
        path_contains: "/api/extras/tags/".into(),
        times: 1,
        action: NbFaultAction::Status {
            status: 502,
            retry_after: None,
        },
    });
    let e = c
        .create("/api/extras/tags/", &json!({"name": "b", "slug": "b"}))
        .await
        .unwrap_err();
    assert!(e.outcome_unknown(), "{e}");
    assert_eq!(c.metrics().writes, 3, "the 502 create was sent once");
}

#[tokio::test]
async fn reads_are_retried_on_5xx() {
    let s = sim().await;
    s.add_fault(NbFaultRule {
        method: Some("GET".into()),
        path_contains: "/api/status/".into(),
        times: 2,
        action: NbFaultAction::Status {
            status: 503,
            retry_after: None,
        },
    });
    let c = client(&s, s.token.clone(), |_| {});
    c.status().await.unwrap();
    assert_eq!(c.metrics().total, 3);
}

#[tokio::test]
async fn a_reply_lost_after_the_commit_is_an_unknown_outcome_and_the_object_exists() {
    let s = sim().await;
    s.add_fault(NbFaultRule {
        method: Some("POST".into()),
        path_contains: "/api/dcim/sites/".into(),
        times: 1,
        action: NbFaultAction::ResetAfterCommit,
    });
    let c = client(&s, s.token.clone(), |_| {});
    let e = c
        .create("/api/dcim/sites/", &json!({"name": "z", "slug": "z"}))
        .await
        .unwrap_err();
    assert!(e.outcome_unknown(), "{e}");
    assert_eq!(c.metrics().writes, 1, "never resent blindly");
    assert_eq!(s.store().count("dcim/sites"), 1);
}

#[tokio::test]
async fn the_per_request_timeout_applies_and_a_timed_out_create_is_unknown() {
    let s = NetboxSim::start(NetboxSimConfig {
        latency_ms: Some(1500),
        ..NetboxSimConfig::default()
    })
    .await
    .unwrap();
    let c = client(&s, s.token.clone(), |cfg| {
        cfg.request_timeout = Duration::from_millis(300);
        cfg.retry = hyops_pve::retry::RetryPolicy::once();
    });
    let t0 = Instant::now();
    let e = c
        .create("/api/dcim/sites/", &json!({"name": "z", "slug": "z"}))
        .await
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_millis(1200));
    assert!(e.outcome_unknown(), "{e}");
}

#[tokio::test]
async fn the_token_never_appears_in_error_text() {
    let s = sim().await;
    let secret = "nbt_wrongkey0001.verysecretvalue";
    let c = client(&s, Secret::new(secret), |_| {});
    let e = c.status().await.unwrap_err();
    assert!(!format!("{e} {e:?}").contains("verysecretvalue"));
}
