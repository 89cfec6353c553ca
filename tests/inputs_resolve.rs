//! The resolution pipeline: merge rules, env overrides, field and bridge aliases, naming,
//! single-VM mode, shipped examples, destroy leniency, rerun sanitising and module refs.

use std::path::PathBuf;

use hyops_pve::inputs::{
    apply_env_overrides, canonical_module_ref, merge_operator_inputs, parse_overlay,
    resolve_bridge_alias, resolve_inputs, resolve_inputs_with_overlay, resolve_py,
    sanitize_rerun_inputs, spec_defaults, InputsError, Ipv4Config, LifecycleCommand,
    OverlayParseError, ResolveRequest, ResolvedInputs, TemplateSource, VmMode,
};
use hyops_pve::yaml::{PyDict, PyValue};
use serde_json::{json, Value};

/// JSON as `json.loads` would give it.
fn pyd(v: Value) -> PyDict {
    match PyValue::from(&v) {
        PyValue::Dict(d) => d,
        _ => panic!("not a mapping"),
    }
}

fn json_of(d: PyDict) -> Value {
    PyValue::Dict(d).to_json("inputs").unwrap()
}

fn req(cmd: LifecycleCommand, env: Option<&str>) -> ResolveRequest {
    let mut r = ResolveRequest::new(cmd);
    r.runtime_env = env.map(str::to_string);
    r
}

fn resolve(
    cmd: LifecycleCommand,
    env: Option<&str>,
    overlay: Value,
) -> Result<ResolvedInputs, InputsError> {
    resolve_inputs_with_overlay(&req(cmd, env), &overlay)
}

fn pool(bridge: &str) -> Value {
    json!({"require_ipam": false, "vms": {"app-01": {"interfaces": [{"bridge": bridge}]}}})
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

// ---- merge (§1.2 step 3) ----

#[test]
fn nested_mappings_merge_recursively() {
    let mut d = pyd(spec_defaults());
    merge_operator_inputs(
        &mut d,
        &pyd(json!({"post_apply_ssh_readiness": {"connectivity_wait_s": 180}})),
    );
    let v = json_of(d);
    assert_eq!(
        v["post_apply_ssh_readiness"],
        json!({"enabled": true, "required": true, "connectivity_timeout_s": 5, "connectivity_wait_s": 180})
    );
}

#[test]
fn lists_replace_the_default() {
    let mut d = pyd(spec_defaults());
    merge_operator_inputs(
        &mut d,
        &pyd(json!({"tags": ["only"], "dns_servers": ["1.1.1.1"]})),
    );
    let v = json_of(d);
    assert_eq!(v["tags"], json!(["only"]));
    assert_eq!(v["dns_servers"], json!(["1.1.1.1"]));
}

#[test]
fn blank_operator_string_never_erases_a_value() {
    let mut d = pyd(spec_defaults());
    merge_operator_inputs(
        &mut d,
        &pyd(json!({"template_key": "  ", "name_prefix": "", "cpu_type": "kvm64"})),
    );
    let v = json_of(d);
    assert_eq!(v["template_key"], json!("ubuntu-24.04"));
    assert_eq!(v["name_prefix"], json!(""));
    assert_eq!(v["cpu_type"], json!("kvm64"));
}

#[test]
fn an_inputs_key_is_not_unwrapped_but_warned_about() {
    // hyops reads the overlay's top level as the inputs; `inputs:` is just an unknown key.
    let v = json_of(parse_overlay("inputs:\n  cpu_cores: 6\n").unwrap());
    assert_eq!(v, json!({"inputs": {"cpu_cores": 6}}));
    let mut o = pool("vmbr0");
    o["inputs"] = json!({"cpu_cores": 6});
    let out = resolve(LifecycleCommand::Plan, None, o).unwrap();
    assert_eq!(out.model.cpu_cores, 2);
    assert!(out.warnings[0].starts_with("inputs.inputs is not a platform-vm input"));
}

#[test]
fn overlay_must_be_a_mapping() {
    assert_eq!(
        parse_overlay("- a\n- b\n").unwrap_err(),
        OverlayParseError::NotAMapping
    );
    assert!(parse_overlay("").unwrap().is_empty());
}

#[test]
fn a_non_mapping_overlay_file_reads_as_upstream_says() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.yml");
    std::fs::write(&p, "- a\n").unwrap();
    let mut r = req(LifecycleCommand::Plan, None);
    r.overlay_path = Some(p.clone());
    assert_eq!(
        resolve_inputs(&r).unwrap_err().to_string(),
        format!("invalid YAML object: {}", p.display())
    );
}

#[test]
fn missing_overlay_file_names_the_path() {
    let mut r = req(LifecycleCommand::Plan, None);
    r.overlay_path = Some(PathBuf::from("/nonexistent/inputs.yml"));
    let e = resolve_inputs(&r).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("failed to load inputs file /nonexistent/inputs.yml: "),
        "{e}"
    );
}

#[test]
fn preset_ref_is_rejected_exactly() {
    let e = resolve(
        LifecycleCommand::Apply,
        None,
        json!({"preset_ref": "small"}),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "platform/onprem/platform-vm: inputs.preset_ref provided but spec.inputs.presets is not defined");
}

// ---- env overrides (§1.2 step 4) ----

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn inputs_json_is_a_shallow_update() {
    let mut d = pyd(spec_defaults());
    apply_env_overrides(
        &mut d,
        &env(&[(
            "HYOPS_INPUTS_JSON",
            r#"{"post_apply_ssh_readiness": {"enabled": false}, "cpu_cores": 3}"#,
        )]),
    )
    .unwrap();
    let v = json_of(d);
    assert_eq!(v["cpu_cores"], json!(3));
    assert_eq!(v["post_apply_ssh_readiness"], json!({"enabled": false}));
}

#[test]
fn inputs_json_must_be_an_object() {
    let mut v = pyd(spec_defaults());
    for bad in ["[1,2]", "not json", "42"] {
        let e = apply_env_overrides(&mut v, &env(&[("HYOPS_INPUTS_JSON", bad)])).unwrap_err();
        assert_eq!(e.to_string(), "HYOPS_INPUTS_JSON must be a JSON object");
    }
}

#[test]
fn input_path_variables_nest_lowercase_and_parse_json() {
    let mut d = pyd(spec_defaults());
    apply_env_overrides(
        &mut d,
        &env(&[
            (
                "HYOPS_INPUT_post_apply_ssh_readiness__connectivity_wait_s",
                "600",
            ),
            ("HYOPS_INPUT_NAME_PREFIX", "lab"),
            ("HYOPS_INPUT_tags", r#"["a","b"]"#),
            ("HYOPS_INPUT_limits__global", "3"),
        ]),
    )
    .unwrap();
    let v = json_of(d);
    assert_eq!(
        v["post_apply_ssh_readiness"]["connectivity_wait_s"],
        json!(600)
    );
    assert_eq!(v["post_apply_ssh_readiness"]["enabled"], json!(true));
    assert_eq!(v["name_prefix"], json!("lab"));
    assert_eq!(v["tags"], json!(["a", "b"]));
    assert_eq!(v["limits"], json!({"global": 3}));
}

#[test]
fn env_overrides_beat_the_overlay() {
    let mut r = req(LifecycleCommand::Plan, None);
    r.env = env(&[("HYOPS_INPUT_cpu_cores", "7")]);
    let out = resolve_inputs_with_overlay(&r, &json!({"cpu_cores": 4, "require_ipam": false, "vm_name": "x1", "vm_mac": "BC:24:11:00:05:21", "vm_ipv4_cidr": "10.0.0.2/24", "vm_gateway": "10.0.0.1"})).unwrap();
    assert_eq!(out.model.cpu_cores, 7);
    assert_eq!(out.resolved_json["cpu_cores"], json!(7));
}

// ---- field aliases (§1.3) ----

#[test]
fn field_aliases_map_to_canonical_keys() {
    let mut o = pool("vmbr0");
    o["proxmox_node"] = json!("pve03");
    o["storage_pool"] = json!("ceph");
    o["storage_snippets"] = json!("snip");
    let out = resolve(LifecycleCommand::Plan, None, o).unwrap();
    assert_eq!(out.model.node_name.as_deref(), Some("pve03"));
    assert_eq!(out.model.datastore_id.as_deref(), Some("ceph"));
    assert_eq!(out.model.snippets_datastore_id.as_deref(), Some("snip"));
    assert_eq!(out.resolved_json["node_name"], json!("pve03"));
    assert!(out.resolved_json.get("proxmox_node").is_none());
}

#[test]
fn canonical_key_beats_its_alias_with_a_warning() {
    let mut o = pool("vmbr0");
    o["node_name"] = json!("pve01");
    o["proxmox_node"] = json!("pve03");
    let out = resolve(LifecycleCommand::Plan, None, o).unwrap();
    assert_eq!(out.model.node_name.as_deref(), Some("pve01"));
    assert!(out
        .warnings
        .contains(&"inputs.proxmox_node ignored because inputs.node_name is set".to_string()));
}

#[test]
fn ssh_public_key_fills_empty_ssh_keys() {
    let mut o = pool("vmbr0");
    o["ssh_public_key"] = json!("ssh-ed25519 AAAA test");
    let m = resolve(LifecycleCommand::Plan, None, o.clone())
        .unwrap()
        .model;
    assert_eq!(m.ssh_keys, vec!["ssh-ed25519 AAAA test".to_string()]);
    o["ssh_keys"] = json!(["ssh-ed25519 BBBB other"]);
    let m = resolve(LifecycleCommand::Plan, None, o).unwrap().model;
    assert_eq!(m.ssh_keys, vec!["ssh-ed25519 BBBB other".to_string()]);
}

#[test]
fn unknown_per_vm_keys_are_dropped_with_a_warning() {
    let mut o = pool("vmbr0");
    o["vms"]["app-01"]["cpu_cores"] = json!(16);
    let out = resolve(LifecycleCommand::Plan, None, o).unwrap();
    assert_eq!(out.model.cpu_cores, 2);
    assert_eq!(
        out.warnings,
        vec!["inputs.vms[app-01].cpu_cores is not a per-VM setting and is ignored (cpu_cores is a module-level input: set inputs.cpu_cores, it applies to every VM)".to_string()]
    );
}

// ---- bridge aliases (§1.8) ----

#[test]
fn every_bridge_alias_mapping() {
    let cases = [
        ("vnetenv", "dev", "vnetdev"),
        ("vnetenv", "development", "vnetdev"),
        ("vnetenv", "stag", "vnetstag"),
        ("vnetenv", "stage", "vnetstag"),
        ("vnetenv", "staging", "vnetstag"),
        ("vnetenv", "prod", "vnetprod"),
        ("vnetenv", "production", "vnetprod"),
        ("vnetenvdata", "shared", "vnetdata"),
        ("vnetenvdata", "dev", "vnetddev"),
        ("vnetenvdata", "development", "vnetddev"),
        ("vnetenvdata", "stag", "vnetdstg"),
        ("vnetenvdata", "stage", "vnetdstg"),
        ("vnetenvdata", "staging", "vnetdstg"),
        ("vnetenvdata", "prod", "vnetdprd"),
        ("vnetenvdata", "production", "vnetdprd"),
    ];
    for (alias, env, bridge) in cases {
        assert_eq!(
            resolve_bridge_alias(alias, env).as_deref(),
            Ok(bridge),
            "{alias}/{env}"
        );
        assert_eq!(
            resolve_bridge_alias(alias, &env.to_uppercase()).as_deref(),
            Ok(bridge)
        );
    }
}

#[test]
fn vms_bridge_alias_is_rewritten_with_a_warning() {
    let out = resolve(LifecycleCommand::Apply, Some("Dev"), pool("VNetEnv")).unwrap();
    assert_eq!(
        out.model.vms.values().next().unwrap().interfaces[0].bridge,
        "vnetdev"
    );
    assert_eq!(
        out.resolved_json["vms"]["app-01"]["interfaces"][0]["bridge"],
        json!("vnetdev")
    );
    assert_eq!(
        out.warnings,
        vec![
            "resolved inputs.vms[app-01].interfaces[1].bridge=vnetenv -> vnetdev (env=Dev)"
                .to_string()
        ]
    );
}

#[test]
fn module_interfaces_and_vm_bridge_aliases_are_rewritten() {
    let o = json!({"require_ipam": false, "interfaces": [{"bridge": "vmbr0"}, {"bridge": "vnetenvdata"}],
                   "vm_bridge": "vnetenv", "vms": {"app-01": {}}});
    let out = resolve(LifecycleCommand::Plan, Some("prod"), o).unwrap();
    assert_eq!(
        out.warnings,
        vec![
            "resolved inputs.interfaces[2].bridge=vnetenvdata -> vnetdprd (env=prod)".to_string(),
            "resolved inputs.vm_bridge=vnetenv -> vnetprod (env=prod)".to_string(),
        ]
    );
    assert_eq!(out.resolved_json["vm_bridge"], json!("vnetprod"));
}

#[test]
fn bridge_alias_without_env_is_an_error() {
    let e = resolve(LifecycleCommand::Validate, None, pool("vnetenv")).unwrap_err();
    assert_eq!(e.to_string(), "vnetenv bridge alias requires HYOPS_ENV to be set (supported: dev, development, prod, production, stag, stage, staging)");
}

#[test]
fn bridge_alias_for_unsupported_env_is_an_error() {
    let e = resolve(LifecycleCommand::Preflight, Some("qa"), pool("vnetenvdata")).unwrap_err();
    assert_eq!(e.to_string(), "vnetenvdata bridge alias is unsupported for env='qa' (supported: dev, development, prod, production, shared, stag, stage, staging). Use an explicit bridge (for example vnetmgmt/vnetdata) instead.");
}

#[test]
fn bridge_aliases_are_left_alone_on_destroy() {
    let out = resolve(LifecycleCommand::Destroy, None, pool("vnetenv")).unwrap();
    assert!(out.warnings.is_empty());
    assert_eq!(
        out.model.vms.values().next().unwrap().interfaces[0].bridge,
        "vnetenv"
    );
}

#[test]
fn runtime_env_falls_back_to_the_env_map() {
    let mut r = req(LifecycleCommand::Apply, None);
    r.env = env(&[("HYOPS_ENV", "staging")]);
    let out = resolve_inputs_with_overlay(&r, &pool("vnetenv")).unwrap();
    assert_eq!(
        out.model.vms.values().next().unwrap().interfaces[0].bridge,
        "vnetstag"
    );
    assert_eq!(
        out.model.vms.values().next().unwrap().physical_name.0,
        "staging-app-01"
    );
}

#[test]
fn build_image_true_is_a_contract_error() {
    let mut o = pool("vmbr0");
    o["build_image"] = json!(true);
    let e = resolve(LifecycleCommand::Apply, None, o).unwrap_err();
    assert_eq!(e.to_string(), "build_image=true is not supported yet for this module; build an image first and reference it via template_state_ref (try: template_state_ref=core/onprem/template-image, template_key=ubuntu-24.04)");
}

// ---- naming (§1.10) ----

#[test]
fn env_prefixes_names_when_no_prefix_inputs() {
    let m = resolve(LifecycleCommand::Plan, Some("dev"), pool("vmbr0"))
        .unwrap()
        .model;
    let vm = m.vms.values().next().unwrap();
    assert_eq!(
        (vm.key.0.as_str(), vm.physical_name.0.as_str()),
        ("app-01", "dev-app-01")
    );
}

#[test]
fn enterprise_example_uses_name_prefix() {
    let mut r = req(LifecycleCommand::Validate, Some("dev"));
    r.overlay_path = Some(example("inputs.enterprise.yml"));
    let m = resolve_inputs(&r).unwrap().model;
    let names: Vec<&str> = m.vms.values().map(|v| v.physical_name.0.as_str()).collect();
    assert_eq!(names, vec!["corp-apps-gitops-01", "corp-apps-gitops-02"]);
    assert_eq!(m.node_name.as_deref(), Some("pve02"));
}

#[test]
fn per_vm_vm_name_overrides_and_no_double_prefix() {
    let o = json!({"require_ipam": false, "name_prefix": "dev", "interfaces": [{"bridge": "vmbr0"}],
                   "vms": {"dev-app-01": {}, "db-01": {"vm_name": "legacy-db"}}});
    let m = resolve(LifecycleCommand::Plan, Some("prod"), o)
        .unwrap()
        .model;
    let names: Vec<(&str, &str)> = m
        .vms
        .values()
        .map(|v| (v.key.0.as_str(), v.physical_name.0.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![("db-01", "legacy-db"), ("dev-app-01", "dev-app-01")]
    );
}

// ---- single-VM mode (§1.6) ----

#[test]
fn single_static_example_validates_and_builds_one_vm() {
    let mut r = req(LifecycleCommand::Validate, Some("dev"));
    r.overlay_path = Some(example("inputs.single-static.yml"));
    r.credentials_network_bridge = Some("vmbr7".into());
    let m = resolve_inputs(&r).unwrap().model;
    assert_eq!(m.mode, VmMode::Single);
    let vm = m.vms.values().next().unwrap();
    assert_eq!(vm.key.0, "netbox-app-01");
    assert_eq!(vm.physical_name.0, "hyops-netbox-app-01");
    assert_eq!(vm.role, "platform-vm");
    assert_eq!(vm.vm_id, Some(1302));
    let nic = &vm.interfaces[0];
    assert_eq!(nic.bridge, "vmbr7");
    assert_eq!(
        nic.mac_address.map(|m| m.to_string()).as_deref(),
        Some("BC:24:11:00:05:21")
    );
    assert_eq!(
        nic.ipv4,
        Some(Ipv4Config::Static {
            address: "10.12.0.51/24".parse().unwrap(),
            gateway: Some("10.12.0.1".parse().unwrap())
        })
    );
}

#[test]
fn single_vm_default_nic_falls_back_to_vmbr0_and_uses_vm_role() {
    let mut r = req(LifecycleCommand::Validate, None);
    r.overlay_path = Some(example("inputs.single-static.yml"));
    let mut overlay =
        hyops_pve::inputs::load_overlay_file(&example("inputs.single-static.yml")).unwrap();
    overlay.set("vm_role", PyValue::str("netbox"));
    let m = resolve_py(&r, &overlay).1.unwrap().model;
    let vm = m.vms.values().next().unwrap();
    assert_eq!(vm.interfaces[0].bridge, "vmbr0");
    assert_eq!(vm.role, "netbox");
}

#[test]
fn single_vm_uses_module_interfaces_when_given() {
    let mut overlay =
        hyops_pve::inputs::load_overlay_file(&example("inputs.single-static.yml")).unwrap();
    overlay.set("interfaces", PyValue::from(&json!([{"bridge": "vmbr5"}])));
    let m = resolve_py(&req(LifecycleCommand::Validate, None), &overlay)
        .1
        .unwrap()
        .model;
    assert_eq!(m.vms.values().next().unwrap().interfaces[0].bridge, "vmbr5");
}

// ---- examples ----

#[test]
fn every_shipped_example_validates() {
    for name in [
        "inputs.min.yml",
        "inputs.typical.yml",
        "inputs.enterprise.yml",
        "inputs.single-static.yml",
        "inputs.sim-demo.yml",
    ] {
        let mut r = req(LifecycleCommand::Validate, Some("dev"));
        r.overlay_path = Some(example(name));
        let out = resolve_inputs(&r).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!out.model.vms.is_empty(), "{name}");
    }
}

#[test]
fn sim_demo_example_is_a_static_three_vm_pool() {
    let mut r = req(LifecycleCommand::Validate, Some("dev"));
    r.overlay_path = Some(example("inputs.sim-demo.yml"));
    let m = resolve_inputs(&r).unwrap().model;
    assert_eq!(
        m.vms.keys().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        vec!["app-01", "app-02", "db-01"]
    );
    assert!(!m.require_ipam && !m.uses_ipam());
    assert_eq!((m.cpu_cores, m.memory_mb, m.disk_size_gb), (2, 2048, 40));
    assert_eq!(
        m.template,
        TemplateSource::StateRef {
            state_ref: "core/onprem/template-image".into(),
            key: Some("ubuntu-24.04".into())
        }
    );
    for vm in m.vms.values() {
        assert_eq!(vm.interfaces[0].bridge, "vmbr0");
        assert!(
            matches!(vm.interfaces[0].ipv4, Some(Ipv4Config::Static { gateway: Some(g), .. }) if g.to_string() == "10.20.0.1")
        );
    }
}

#[test]
fn min_example_is_ipam() {
    let mut r = req(LifecycleCommand::Validate, Some("dev"));
    r.overlay_path = Some(example("inputs.min.yml"));
    let m = resolve_inputs(&r).unwrap().model;
    assert!(m.uses_ipam());
    assert_eq!(m.tags, vec!["platform", "onprem", "custom-vm"]);
    assert_eq!(m.vms.values().next().unwrap().role, "app");
}

// ---- destroy ----

#[test]
fn destroy_skips_validation_but_still_builds_keys_names_and_ids() {
    let o = json!({"cpu_cores": "lots", "tags": [], "dns_servers": 5,
                   "vms": {"App-01": {"vm_id": 201, "interfaces": "nope"}, "db-01": 7}});
    let m = resolve(LifecycleCommand::Destroy, Some("dev"), o.clone())
        .unwrap()
        .model;
    let got: Vec<(&str, &str, Option<u32>)> = m
        .vms
        .values()
        .map(|v| (v.key.0.as_str(), v.physical_name.0.as_str(), v.vm_id))
        .collect();
    assert_eq!(
        got,
        vec![
            // Keys stay as written (the pack keys VMs by the trimmed key, never lower-cased).
            ("App-01", "dev-App-01", Some(201)),
            ("db-01", "dev-db-01", None)
        ]
    );
    assert!(resolve(LifecycleCommand::Apply, Some("dev"), o).is_err());
}

// ---- rerun sanitising (§3.6) ----

#[test]
fn rerun_inputs_drop_internal_and_secret_keys() {
    let v = json!({
        "_hyops_lifecycle_command": "apply",
        "netbox_api_token": "x", "proxmox_password": "y", "db_secret": "z",
        "netbox_api_token_env": "NETBOX_API_TOKEN", "sa_json_file": "/k.json", "access_key_path": "/p",
        "ssh_keys": ["k"], "ssh_keys_from_init": true,
        "nested": {"my_token": "t", "keep": 1},
        "cpu_cores": 2
    });
    assert_eq!(
        sanitize_rerun_inputs(&v),
        json!({
            "netbox_api_token_env": "NETBOX_API_TOKEN", "sa_json_file": "/k.json", "access_key_path": "/p",
            "ssh_keys_from_init": true, "nested": {"keep": 1}, "cpu_cores": 2
        })
    );
}

#[test]
fn rerun_inputs_keep_ssh_keys_when_not_from_init() {
    let v = json!({"ssh_keys": ["k"], "ssh_keys_from_init": false});
    assert_eq!(sanitize_rerun_inputs(&v), v);
}

// ---- module ref ----

#[test]
fn module_ref_accepts_dots_and_rejects_others() {
    assert_eq!(
        canonical_module_ref("platform.onprem.platform-vm").unwrap(),
        "platform/onprem/platform-vm"
    );
    assert_eq!(
        canonical_module_ref("platform/onprem/platform-vm").unwrap(),
        "platform/onprem/platform-vm"
    );
    assert_eq!(
        canonical_module_ref("platform/onprem/netbox").unwrap_err().to_string(),
        "module 'platform/onprem/netbox' is not supported by hyops-pve (supported: platform/onprem/platform-vm)"
    );
}

// ---- readiness fallbacks (§1.12) ----

#[test]
fn readiness_falls_back_to_top_level_inputs() {
    let mut o = pool("vmbr0");
    o["ssh_username"] = json!("ubuntu");
    o["ssh_proxy_jump_host"] = json!("10.0.0.2");
    o["ssh_proxy_jump_port"] = json!(2222);
    o["post_apply_ssh_readiness"] = json!({"connectivity_wait_s": 0});
    let rc = resolve(LifecycleCommand::Plan, None, o)
        .unwrap()
        .model
        .readiness;
    assert_eq!(rc.target_user.as_deref(), Some("ubuntu"));
    assert_eq!(rc.ssh_proxy_jump_host.as_deref(), Some("10.0.0.2"));
    assert_eq!(rc.ssh_proxy_jump_port, 2222);
    assert_eq!(rc.connectivity_wait_s, 0);
    assert_eq!(rc.connectivity_timeout_s, 5);
    assert!(rc.enabled && rc.required && rc.ssh_proxy_jump_auto);
}

#[test]
fn readiness_target_user_defaults_to_opsadmin() {
    let rc = resolve(LifecycleCommand::Plan, None, pool("vmbr0"))
        .unwrap()
        .model
        .readiness;
    assert_eq!(rc.target_user.as_deref(), Some("opsadmin"));
    assert_eq!(rc.target_port, 22);
}

// ---- bounds (checked while the overlay streams in) ----

fn overlay_file(dir: &tempfile::TempDir, text: &str) -> ResolveRequest {
    let p = dir.path().join("big.yml");
    std::fs::write(&p, text).unwrap();
    let mut r = req(LifecycleCommand::Validate, Some("dev"));
    r.overlay_path = Some(p);
    r
}

#[test]
fn a_600_kb_deeply_nested_overlay_is_refused_at_the_nesting_bound() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("require_ipam: false\nextra: {}\n", "[".repeat(600_000));
    let e = resolve_inputs(&overlay_file(&dir, &text))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nesting is deeper than 64 levels"), "{e}");
    let block: String = (0..80)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i * 2)))
        .collect();
    let e = resolve_inputs(&overlay_file(&dir, &block))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nesting is deeper than 64 levels"), "{e}");
}

#[test]
fn an_overlay_over_8_mib_is_refused_before_it_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("name_prefix: {}\n", "a".repeat(10 << 20));
    let e = resolve_inputs(&overlay_file(&dir, &text))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("hyops-pve reads overlays of at most 8388608 bytes"),
        "{e}"
    );
}

#[test]
fn a_value_over_1_mib_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("cloud_init_user_data: '{}'\n", "a".repeat((1 << 20) + 1));
    let e = resolve_inputs(&overlay_file(&dir, &text))
        .unwrap_err()
        .to_string();
    assert!(e.contains("values of at most 1048576 bytes"), "{e}");
    let mut r = req(LifecycleCommand::Validate, Some("dev"));
    r.env = vec![(
        "HYOPS_INPUTS_JSON".into(),
        format!("{{\"name_prefix\": \"{}\"}}", "a".repeat((1 << 20) + 1)),
    )];
    let e = resolve_inputs(&r).unwrap_err().to_string();
    assert!(e.contains("longer than 1048576 bytes"), "{e}");
}

#[test]
fn an_alias_bomb_is_refused_at_the_value_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        text.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    let e = resolve_inputs(&overlay_file(&dir, &text))
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than 1000000 values"), "{e}");
}

// ---- numbers hyops-pve cannot carry (never replaced) ----

#[test]
fn cpu_cores_past_32_bits_is_refused_not_replaced() {
    let mut o = pool("vmbr0");
    o["cpu_cores"] = json!(4294967297u64);
    let e = resolve(LifecycleCommand::Plan, None, o).unwrap_err();
    assert_eq!(
        e.to_string(),
        "inputs.cpu_cores is out of range: 4294967297 is more than 4294967295, the largest value hyops-pve carries for it"
    );
}

#[test]
fn a_vm_id_past_32_bits_is_refused_even_on_destroy() {
    let mut o = pool("vmbr0");
    o["vms"]["app-01"]["vm_id"] = json!(4294967296u64);
    let e = resolve(LifecycleCommand::Destroy, None, o).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("inputs.vms[app-01].vm_id is out of range: 4294967296"),
        "{e}"
    );
}

#[test]
fn nan_and_huge_integers_from_the_environment_are_refused() {
    let mut r = req(LifecycleCommand::Plan, None);
    r.env = env(&[(
        "HYOPS_INPUTS_JSON",
        r#"{"memory_mb": 123456789012345678901234567890}"#,
    )]);
    let e = resolve_inputs_with_overlay(&r, &pool("vmbr0")).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "inputs.memory_mb is out of range: 123456789012345678901234567890 does not fit"
        ),
        "{e}"
    );
    r.env = env(&[("HYOPS_INPUT_extra", "NaN")]);
    let e = resolve_inputs_with_overlay(&r, &pool("vmbr0")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("inputs.extra is out of range: nan is not a finite number"),
        "{e}"
    );
    r.env = env(&[("HYOPS_INPUT_cpu_cores", "NaN")]);
    let e = resolve_inputs_with_overlay(&r, &pool("vmbr0")).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("inputs.cpu_cores must be an integer"),
        "{e}"
    );
}
