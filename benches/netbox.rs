//! NetBox benchmarks: 100 address allocations (one NIC per run, sequential; 100 runs at
//! once; one run with 100 NICs), the inventory sync of 100 VMs (first and second sync), and
//! the NetBox requests each costs per VM. Each figure is one measured pass (allocations
//! cannot be repeated on the same identities), against a real NetBox 4.7.3 when
//! `HYOPS_TEST_NETBOX_URL`/`_TOKEN` are set (`tests/netbox/testbed.sh start`), and always
//! against the embedded NetBox for comparison. `cargo bench --bench netbox`.

use std::time::{Duration, Instant};

use hyops_pve::netbox::ipam::{allocate, AllocateOptions, NicRequest, Pool};
use hyops_pve::netbox::sync::{sync_vms, SyncNic, SyncOptions, SyncVm};
use hyops_pve::netbox::{NetboxClient, NetboxConfig};
use hyops_pve::pve::TlsMode;
use hyops_pve::secret::Secret;
use hyops_pve::sim::netbox::{NetboxSim, NetboxSimConfig};

const N: usize = 100;

#[derive(Clone)]
struct Target {
    label: &'static str,
    url: String,
    token: Secret,
    tls: TlsMode,
}

impl Target {
    fn client(&self) -> NetboxClient {
        let mut cfg = NetboxConfig::new(self.url.clone(), self.token.clone());
        cfg.tls = self.tls.clone();
        NetboxClient::new(cfg).expect("client")
    }
}

fn pool(second_octet: u8, third: u8) -> Pool {
    Pool {
        network: format!("10.{second_octet}.{third}.0/24").parse().unwrap(),
        gateway: format!("10.{second_octet}.{third}.1").parse().unwrap(),
        start: format!("10.{second_octet}.{third}.2").parse().unwrap(),
        end: format!("10.{second_octet}.{third}.119").parse().unwrap(),
    }
}

fn req(vm: String, pool: Pool) -> NicRequest {
    NicRequest {
        vm_key: vm,
        bridge: "vnetmgmt".into(),
        nic_index: 1,
        pool,
        vlan_id: Some(10),
        published: None,
    }
}

fn opts(zone: &str) -> AllocateOptions {
    AllocateOptions {
        zone: zone.into(),
        used_hosts: Default::default(),
        settle: Duration::from_secs(10),
    }
}

fn row(i: usize, stamp: &str, net: (u8, u8)) -> SyncVm {
    SyncVm {
        name: format!("bench-{stamp}-{i:03}"),
        cluster: format!("bench-{stamp}"),
        status: "active".into(),
        vcpus: Some(2),
        memory_mb: Some(2048),
        disk_gb: Some(40),
        role: Some("app".into()),
        tags: vec!["platform".into(), "onprem".into(), "app".into()],
        external_id: format!("onprem-proxmox:{}", 1000 + i),
        previous_name: None,
        nics: vec![SyncNic {
            name: "eth0".into(),
            mac: Some(format!("BC:24:11:00:{:02X}:{:02X}", i / 256, i % 256)),
            address: Some(format!("10.{}.{}.{}/24", net.0, net.1, 2 + i)),
            assignment: Some("static".into()),
        }],
    }
}

async fn run(t: &Target, stamp: &str, base: u8) {
    println!("\n== {} NetBox ({}) ==", t.label, t.url);
    let mut lines = Vec::new();

    // Sequential: 100 runs one after the other, one NIC each.
    let zone = format!("bench-{stamp}-seq");
    let p = pool(base, 1);
    let c = t.client();
    let t0 = Instant::now();
    for i in 0..N {
        allocate(&c, &opts(&zone), &[req(format!("vm-{i:03}"), p)])
            .await
            .expect("sequential allocation");
    }
    let seq = t0.elapsed();
    let m = c.metrics();
    lines.push(format!(
        "allocate {N} (sequential runs, 1 NIC each): {:>8.2} s  {:>6.1} ms/address  {:.1} requests/address",
        seq.as_secs_f64(),
        seq.as_secs_f64() * 1000.0 / N as f64,
        m.total as f64 / N as f64
    ));

    // Concurrent: 100 runs at once, each with its own client.
    let zone = format!("bench-{stamp}-conc");
    let p = pool(base, 2);
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for i in 0..N {
        let t = t.clone();
        let zone = zone.clone();
        handles.push(tokio::spawn(async move {
            let c = t.client();
            allocate(&c, &opts(&zone), &[req(format!("vm-{i:03}"), p)])
                .await
                .map(|_| c.metrics().total)
        }));
    }
    let mut total_requests = 0;
    let mut hosts = std::collections::BTreeSet::new();
    for h in handles {
        total_requests += h.await.expect("task").expect("concurrent allocation");
    }
    let conc = t0.elapsed();
    for r in hyops_pve::netbox::ipam::find_by_identities(
        &t.client(),
        &(0..N)
            .map(|i| hyops_pve::netbox::ipam::identity(&zone, &format!("vm-{i:03}"), "vnetmgmt", 1))
            .collect::<Vec<_>>(),
    )
    .await
    .expect("lookup")
    .values()
    {
        hosts.extend(r.iter().filter_map(|x| x.host()));
    }
    assert_eq!(hosts.len(), N, "100 distinct addresses");
    lines.push(format!(
        "allocate {N} (concurrent runs, 1 NIC each):  {:>8.2} s  {:>6.1} ms/address  {:.1} requests/address",
        conc.as_secs_f64(),
        conc.as_secs_f64() * 1000.0 / N as f64,
        total_requests as f64 / N as f64
    ));

    // One run with 100 NICs: one list POST to the range.
    let zone = format!("bench-{stamp}-batch");
    let p = pool(base, 3);
    let c = t.client();
    let reqs: Vec<NicRequest> = (0..N).map(|i| req(format!("vm-{i:03}"), p)).collect();
    let t0 = Instant::now();
    allocate(&c, &opts(&zone), &reqs)
        .await
        .expect("batched allocation");
    let batch = t0.elapsed();
    lines.push(format!(
        "allocate {N} (one run, {N} NICs):             {:>8.2} s  {:>6.1} ms/address  {:.2} requests/address",
        batch.as_secs_f64(),
        batch.as_secs_f64() * 1000.0 / N as f64,
        c.metrics().total as f64 / N as f64
    ));
    let c2 = t.client();
    let t0 = Instant::now();
    allocate(&c2, &opts(&zone), &reqs).await.expect("reuse");
    lines.push(format!(
        "re-apply {N} (reuse every address):          {:>8.2} s  {:.2} requests/VM, {} writes",
        t0.elapsed().as_secs_f64(),
        c2.metrics().total as f64 / N as f64,
        c2.metrics().writes
    ));

    // Sync of 100 VMs (addresses from the batched run's pool).
    let rows: Vec<SyncVm> = (0..N).map(|i| row(i, stamp, (base, 3))).collect();
    let c = t.client();
    let t0 = Instant::now();
    let rep = sync_vms(&c, &rows, &[], &SyncOptions::default()).await;
    let first = t0.elapsed();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    lines.push(format!(
        "sync {N} VMs (first):                       {:>8.2} s  {:.2} requests/VM ({:.2} writes/VM)",
        first.as_secs_f64(),
        rep.requests as f64 / N as f64,
        rep.writes as f64 / N as f64
    ));
    let t0 = Instant::now();
    let rep = sync_vms(&t.client(), &rows, &[], &SyncOptions::default()).await;
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    lines.push(format!(
        "sync {N} VMs (second, nothing to change):   {:>8.2} s  {:.2} requests/VM ({} writes)",
        t0.elapsed().as_secs_f64(),
        rep.requests as f64 / N as f64,
        rep.writes
    ));
    for l in lines {
        println!("{l}");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful: run
    // the measurement only for `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("netbox bench: run with `cargo bench --bench netbox`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let stamp = format!("{:x}", std::process::id());
        let nb = NetboxSim::start(NetboxSimConfig::default())
            .await
            .expect("embedded NetBox");
        let embedded = Target {
            label: "embedded",
            url: nb.url().to_string(),
            token: nb.token.clone(),
            tls: TlsMode::Fingerprint(nb.ca_fingerprint_sha256.clone()),
        };
        run(&embedded, &stamp, 150).await;
        match (
            std::env::var("HYOPS_TEST_NETBOX_URL"),
            std::env::var("HYOPS_TEST_NETBOX_TOKEN"),
        ) {
            (Ok(url), Ok(token)) if !url.is_empty() && !token.is_empty() => {
                let real = Target {
                    label: "real (4.7.3)",
                    url,
                    token: Secret::new(token),
                    tls: TlsMode::SystemRoots,
                };
                // A subnet block of this run's own (the testbed may hold earlier runs).
                let base = 160 + (std::process::id() % 40) as u8;
                run(&real, &stamp, base).await;
            }
            _ => println!(
                "\nSKIPPED real NetBox: set HYOPS_TEST_NETBOX_URL/HYOPS_TEST_NETBOX_TOKEN (tests/netbox/testbed.sh start)"
            ),
        }
    });
}
