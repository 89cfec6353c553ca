//! Shared helpers for the simulator tests: start a plain-HTTP simulator and talk to it with
//! reqwest directly (never through the engine's client).
#![allow(dead_code)]

use hyops_pve::sim::{SimConfig, SimHandle, Simulator};
use serde_json::Value;
use std::time::Duration;

pub struct T {
    pub h: SimHandle,
    pub c: reqwest::Client,
}

pub async fn start(time_scale: f64) -> T {
    start_with(SimConfig {
        time_scale,
        tls: false,
        ..SimConfig::default()
    })
    .await
}

pub async fn start_with(cfg: SimConfig) -> T {
    let h = Simulator::start(cfg).await.expect("simulator starts");
    T {
        h,
        c: reqwest::Client::new(),
    }
}

pub type Resp = (u16, Value);

impl T {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.h.url(), path)
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let r = rb
            .header("Authorization", self.h.token_header())
            .send()
            .await
            .expect("request sent");
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        (status, v)
    }

    pub async fn get(&self, path: &str, q: &[(&str, &str)]) -> Resp {
        self.send(self.c.get(self.url(path)).query(q)).await
    }
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.send(self.c.post(self.url(path)).form(form)).await
    }
    pub async fn put(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.send(self.c.put(self.url(path)).form(form)).await
    }
    pub async fn delete(&self, path: &str, q: &[(&str, &str)]) -> Resp {
        self.send(self.c.delete(self.url(path)).query(q)).await
    }
    /// A raw form body, sent exactly as given.
    pub async fn raw(&self, method: reqwest::Method, path: &str, body: &str) -> Resp {
        self.send(
            self.c
                .request(method, self.url(path))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.to_string()),
        )
        .await
    }

    /// Poll a task until it stops; returns its status object.
    pub async fn wait(&self, upid: &str) -> Value {
        let node = upid.split(':').nth(1).expect("upid has a node");
        let path = format!("/nodes/{node}/tasks/{}/status", urlenc(upid));
        for _ in 0..4000 {
            let (code, v) = self.get(&path, &[]).await;
            assert_eq!(code, 200, "task status {v}");
            if v["data"]["status"] == "stopped" {
                return v["data"].clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("task {upid} never stopped");
    }

    /// Run an async call that returns a UPID and wait for it; returns the exitstatus.
    pub async fn task(&self, r: Resp) -> String {
        assert_eq!(r.0, 200, "expected a UPID, got {:?}", r.1);
        let upid = r.1["data"].as_str().expect("UPID string").to_string();
        self.wait(&upid).await["exitstatus"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Clone `src` on `node` to `newid` and wait for the task.
    pub async fn clone_vm(
        &self,
        node: &str,
        src: u32,
        newid: u32,
        extra: &[(&str, &str)],
    ) -> String {
        let id = newid.to_string();
        let mut form = vec![("newid", id.as_str())];
        form.extend_from_slice(extra);
        let r = self
            .post(&format!("/nodes/{node}/qemu/{src}/clone"), &form)
            .await;
        self.task(r).await
    }

    pub async fn config(&self, node: &str, vmid: u32) -> Value {
        let (code, v) = self
            .get(&format!("/nodes/{node}/qemu/{vmid}/config"), &[])
            .await;
        assert_eq!(code, 200, "{v}");
        v["data"].clone()
    }
}

pub fn urlenc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
