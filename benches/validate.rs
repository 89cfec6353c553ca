//! Validate on a 1 000-VM overlay: the YAML 1.1 read alone, input resolution (the overlay read,
//! merge, env overrides, the upstream rules, the engine rules and the typed model), and the
//! whole `validate` command's checks (state references, VM-set guards and the template state
//! of a runtime root included); and how fast a 600 KB deeply nested overlay is refused.
//! Nothing here touches the network.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hyops_pve::cli::ModuleArgs;
use hyops_pve::commands::context::Ctx;
use hyops_pve::commands::module::validate_report;
use hyops_pve::inputs::{resolve_inputs, LifecycleCommand, ResolveRequest};

/// A static pool of `n` VMs with two NICs each, a per-VM VMID and cloud-init meta-data.
fn pool_overlay(n: usize) -> String {
    let mut s = String::from(
        "require_ipam: false\ntemplate_state_ref: core/onprem/template-image\ntemplate_key: ubuntu-24.04\n\
         cpu_cores: 4\nmemory_mb: 8192\ndns_servers: [10.0.0.53, 10.0.0.54]\n\
         tags: [platform, onprem, bench]\npost_apply_ssh_readiness: {connectivity_wait_s: 5}\nvms:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "  vm-{i:04}:\n    role: app\n    vm_id: {}\n    cloud_init_meta_data: 'instance-id: vm-{i:04}'\n    interfaces:\n      - bridge: vmbr0\n        mac_address: BC:24:11:{:02X}:{:02X}:01\n        ipv4: {{address: 10.30.{}.{}/16, gateway: 10.30.0.1}}\n      - bridge: vmbr1\n        ipv4: {{address: dhcp}}\n",
            2000 + i,
            i / 256,
            i % 256,
            i / 200,
            10 + i % 200
        ));
    }
    s
}

fn validate(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let template = root.join("state/modules/core__onprem__template-image/latest.json");
    std::fs::create_dir_all(template.parent().expect("parent")).expect("state dir");
    std::fs::write(
        &template,
        r#"{"status": "ok", "outputs": {"template_vm_ids": {"ubuntu-24.04": 9000}}}"#,
    )
    .expect("template state");
    let text = pool_overlay(1000);
    let overlay = dir.path().join("pool.yml");
    std::fs::write(&overlay, &text).expect("overlay");

    let mut g = c.benchmark_group("validate");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("read 1000-VM overlay (YAML 1.1)", |b| {
        b.iter(|| hyops_pve::yaml::safe_load(&text).expect("reads"))
    });
    let mut req = ResolveRequest::new(LifecycleCommand::Validate);
    req.overlay_path = Some(overlay.clone());
    req.runtime_env = Some("bench".into());
    g.bench_function("resolve 1000-VM overlay", |b| {
        b.iter(|| {
            let r = resolve_inputs(&req).expect("valid");
            assert_eq!(r.model.vms.len(), 1000);
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let args = ModuleArgs {
        root: Some(root),
        module: "platform/onprem/platform-vm".into(),
        inputs: Some(overlay),
        json: true,
        ..ModuleArgs::default()
    };
    let env = vec![
        ("HYOPS_ENV".to_string(), "bench".to_string()),
        ("HOME".to_string(), dir.path().display().to_string()),
    ];
    let ctx = rt.block_on(Ctx::build_ordered(&args, env)).expect("ctx");
    g.bench_function("validate command on 1000-VM overlay", |b| {
        b.iter(|| rt.block_on(validate_report(&ctx)).result.expect("valid"))
    });
    let nested = dir.path().join("nested.yml");
    std::fs::write(
        &nested,
        format!("require_ipam: false\nextra: {}\n", "[".repeat(600_000)),
    )
    .expect("nested overlay");
    let mut nested_req = ResolveRequest::new(LifecycleCommand::Validate);
    nested_req.overlay_path = Some(nested);
    g.bench_function("refuse 600 KB nested overlay", |b| {
        b.iter(|| assert!(resolve_inputs(&nested_req).is_err()))
    });
    g.finish();
}

criterion_group!(benches, validate);
criterion_main!(benches);
