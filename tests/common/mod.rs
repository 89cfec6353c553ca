//! Shared harness for end-to-end tests: an in-process simulator, a ready HyOps runtime root
//! pointing at it, and a command context built with an explicit (hermetic) environment.
#![allow(dead_code)]

pub mod netbox;
pub mod pool;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hyops_pve::cli::ModuleArgs;
use hyops_pve::commands::context::Ctx;
use hyops_pve::commands::simroot::write_sim_root;
use hyops_pve::sim::{SimConfig, SimHandle, Simulator};

pub struct Harness {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(SimConfig {
            time_scale: 0.0005,
            ..SimConfig::default()
        })
        .await
    }

    pub async fn start_with(cfg: SimConfig) -> Self {
        let sim = Simulator::start(cfg).await.expect("simulator starts");
        let dir = tempfile::tempdir().expect("tempdir");
        write_sim_root(&dir.path().join("root"), &sim).expect("sim root");
        Harness { sim, dir }
    }

    /// A harness whose runner has a shared env with an SDN: `~/.hybridops/envs/shared` (the
    /// default SDN authority) holds a `core/onprem/network-sdn` state with `vnetmgmt`
    /// (10.10.0.0/24), and the simulated node carries its gateway. Overlays using the
    /// SDN-managed bridge `vnetmgmt` pass the managed-bridge guard (§4.3) as on such a runner.
    pub async fn start_with_sdn() -> Self {
        let h = Self::start_with(SimConfig {
            time_scale: 0.0005,
            ssh: hyops_pve::sim::ssh::SimSshConfig {
                bridge_addresses: [("vnetmgmt".to_string(), vec!["10.10.0.1/24".to_string()])]
                    .into(),
                ..Default::default()
            },
            ..SimConfig::default()
        })
        .await;
        hyops_pve::commands::simroot::write_sdn_state(
            &h.dir.path().join(".hybridops/envs/shared"),
            "hybzone",
            &[("vnetmgmt", 10, "10.10.0.0/24")],
        )
        .expect("sdn state");
        h
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Write an overlay file and return its path.
    pub fn overlay(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, yaml).expect("write overlay");
        p
    }

    pub fn args(&self, inputs: &Path) -> ModuleArgs {
        ModuleArgs {
            root: Some(self.root()),
            module: "platform/onprem/platform-vm".into(),
            inputs: Some(inputs.to_path_buf()),
            lock_wait_s: 5,
            json: true,
            ..ModuleArgs::default()
        }
    }

    pub async fn ctx(&self, inputs: &Path) -> Ctx {
        self.ctx_env(inputs, &[]).await
    }

    /// A context with extra environment variables.
    pub async fn ctx_env(&self, inputs: &Path, extra: &[(&str, &str)]) -> Ctx {
        let mut env = BTreeMap::new();
        env.insert("HYOPS_ENV".to_string(), "dev".to_string());
        env.insert("HOME".to_string(), self.dir.path().display().to_string());
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let mut ctx = Ctx::build(&self.args(inputs), env).await.expect("ctx");
        // SSH (snippets, readiness gate) goes to the simulator's in-process network.
        ctx.ssh_dialer = Some(std::sync::Arc::new(self.sim.ssh()));
        ctx
    }

    /// A context whose engine runs on the simulator's time scale (deadlines, backoff, polls
    /// and the read budget shrink with simulated time, keeping their proportions to faults
    /// measured in simulated seconds).
    pub async fn scaled_ctx(&self, inputs: &Path) -> Ctx {
        let scale = self.sim.time_scale().to_string();
        self.ctx_env(inputs, &[("HYOPS_PVE_ENGINE_TIME_SCALE", scale.as_str())])
            .await
    }

    /// Count of calls the simulator saw for `METHOD template`.
    pub fn calls(&self, method: &str, template: &str) -> u64 {
        self.sim.counters().get(method, template)
    }

    /// Non-template VMs in the simulator: (vmid, name).
    pub fn vms(&self) -> Vec<(u32, String)> {
        let st = self.sim.state();
        st.vms
            .values()
            .filter(|v| !v.is_template())
            .map(|v| (v.vmid, v.name()))
            .collect()
    }

    pub fn config_of(&self, name: &str) -> BTreeMap<String, String> {
        let st = self.sim.state();
        st.vms
            .values()
            .find(|v| v.name() == name)
            .map(|v| v.pending_view())
            .unwrap_or_default()
    }

    /// A client for out-of-band API calls (someone else acting on the cluster).
    pub fn raw_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("reqwest client")
    }

    /// Clone template 9000 on pve1 to `newid` named `name`, outside the engine.
    pub async fn clone_raw(&self, newid: u32, name: &str) {
        let r = self
            .raw_client()
            .post(format!("{}/nodes/pve1/qemu/9000/clone", self.sim.url()))
            .header("Authorization", self.sim.token_header())
            .form(&[
                ("newid", newid.to_string().as_str()),
                ("name", name),
                ("full", "1"),
            ])
            .send()
            .await
            .expect("clone request");
        assert!(r.status().is_success(), "{:?}", r.text().await);
    }

    /// Wait until the simulator has no task running.
    pub async fn settle(&self) {
        for _ in 0..1000 {
            if self.sim.running_tasks() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    pub fn state_json(&self) -> serde_json::Value {
        let p = self
            .root()
            .join("state/modules/platform__onprem__platform-vm/latest.json");
        serde_json::from_str(&std::fs::read_to_string(p).expect("state file")).expect("state json")
    }
}

pub const DEMO: &str = r#"
require_ipam: false
ssh_username: opsadmin
template_state_ref: core/onprem/template-image
template_key: ubuntu-24.04
cpu_cores: 2
memory_mb: 2048
disk_size_gb: 40
post_apply_ssh_readiness:
  connectivity_wait_s: 30
vms:
  app-01:
    role: app
    interfaces:
      - bridge: vmbr0
        ipv4: {address: 10.20.0.11/24, gateway: 10.20.0.1}
  app-02:
    role: app
    interfaces:
      - bridge: vmbr0
        ipv4: {address: 10.20.0.12/24, gateway: 10.20.0.1}
  db-01:
    role: db
    interfaces:
      - bridge: vmbr0
        ipv4: {address: 10.20.0.21/24, gateway: 10.20.0.1}
"#;
