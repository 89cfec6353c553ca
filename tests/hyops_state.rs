//! Module state transitions, published outputs, writers (sorted keys, 0600), run ids, paths.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hyops_pve::hyops::paths::env_root;
use hyops_pve::hyops::runid::{is_run_id, run_id_at};
use hyops_pve::hyops::*;
use serde_json::{json, Map, Value};

fn root(dir: &Path) -> RuntimeRoot {
    RuntimeRoot::at(dir)
}

fn mref() -> ModuleRef {
    ModuleRef::parse(MODULE_REF).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn outputs(keys: &[&str]) -> Map<String, Value> {
    let mut vms = Map::new();
    for k in keys {
        vms.insert(
            (*k).into(),
            json!({"vm_id": 100, "vm_name": format!("dev-{k}")}),
        );
    }
    publish_outputs(
        json!({"vms": vms, "node_name": "pve1", "secret_extra": "x"})
            .as_object()
            .unwrap(),
    )
}

/// The running record of the second apply (`apply-…-00000002`, evidence in `<dir>/ev2`)
/// with `input_contract` and no rerun or resolved inputs files.
fn running_record(dir: &Path, input_contract: Value) -> RunningRecord {
    RunningRecord {
        run_id: "apply-20260102T000000Z-00000002".into(),
        command: "apply".into(),
        evidence_dir: dir.join("ev2"),
        input_contract,
        rerun_inputs_file: None,
        resolved_inputs_file: None,
    }
}

fn ok_record(r: &RuntimeRoot, run_id: &str, keys: &[&str]) -> OkRecord {
    OkRecord {
        run_id: run_id.into(),
        evidence_dir: evidence_dir(r, None, &mref(), run_id),
        outputs: outputs(keys),
        input_contract: json!({"addressing_mode": "static"}),
        rerun_inputs_file: r.rerun_inputs_file(&mref(), None),
        resolved_inputs_file: r.path().join("x/resolved.inputs.yml"),
        backend_binding: None,
    }
}

#[test]
fn persist_ok_writes_every_contract_key() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let inst = StateInstance::parse("pool_a").unwrap();
    let st = ModuleState::new(&r, &mref(), Some(&inst));
    let v = st
        .persist_ok(&ok_record(
            &r,
            "apply-20260101T000000Z-00000001",
            &["app-01"],
        ))
        .unwrap();
    for k in [
        "module_ref",
        "run_id",
        "status",
        "updated_at",
        "execution",
        "requirements",
        "dependencies",
        "outputs",
        "output_count",
        "evidence_dir",
        "input_contract",
        "state_instance",
        "rerun_inputs_file",
        "resolved_inputs_file",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["status"], "ok");
    assert_eq!(
        v["execution"],
        json!({"driver": DRIVER_REF, "profile": PROFILE, "pack_id": PACK_ID, "backend": {"mode": "local"}})
    );
    assert_eq!(v["requirements"], json!({"credentials": ["proxmox"]}));
    assert_eq!(v["dependencies"], json!([]));
    assert_eq!(
        v["output_count"],
        json!(v["outputs"].as_object().unwrap().len())
    );
    let ts = v["updated_at"].as_str().unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%SZ").is_ok(),
        "{ts}"
    );
    assert!(st
        .path()
        .ends_with("state/modules/platform__onprem__platform-vm/instances/pool_a.json"));
    assert_eq!(mode(st.path()), 0o600);
}

#[test]
fn latest_slot_has_no_state_instance_key() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let st = ModuleState::new(&r, &mref(), None);
    let v = st
        .persist_ok(&ok_record(&r, "apply-20260101T000000Z-00000001", &["a"]))
        .unwrap();
    assert!(v.get("state_instance").is_none());
    assert!(st
        .path()
        .ends_with("state/modules/platform__onprem__platform-vm/latest.json"));
}

#[test]
fn running_then_ok_replaces_with_fresh_object() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let st = ModuleState::new(&r, &mref(), None);
    st.persist_ok(&ok_record(
        &r,
        "apply-20260101T000000Z-00000001",
        &["old-01"],
    ))
    .unwrap();
    st.persist_running(&RunningRecord {
        rerun_inputs_file: Some(d.path().join("r.yml")),
        resolved_inputs_file: Some(d.path().join("ev2/resolved.inputs.yml")),
        ..running_record(d.path(), json!({"addressing_mode": "ipam"}))
    })
    .unwrap();
    let running = Value::Object(st.read().unwrap().unwrap());
    assert_eq!(running["status"], "running");
    assert_eq!(running["active_command"], "apply");
    assert_eq!(running["run_id"], "apply-20260102T000000Z-00000002");
    assert_eq!(
        running["outputs"]["vm_keys"],
        json!(["old-01"]),
        "previous outputs kept"
    );
    assert_eq!(running["input_contract"]["addressing_mode"], "ipam");
    let ok = st
        .persist_ok(&ok_record(
            &r,
            "apply-20260102T000000Z-00000002",
            &["new-01"],
        ))
        .unwrap();
    assert_eq!(ok["status"], "ok");
    assert!(
        ok.get("active_command").is_none(),
        "fresh object, not merged"
    );
    assert_eq!(ok["outputs"]["vm_keys"], json!(["new-01"]));
}

#[test]
fn running_then_error_keeps_previous_outputs_and_drops_active_command() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let st = ModuleState::new(&r, &mref(), None);
    st.persist_ok(&ok_record(
        &r,
        "apply-20260101T000000Z-00000001",
        &["keep-01"],
    ))
    .unwrap();
    st.persist_running(&running_record(d.path(), json!({})))
        .unwrap();
    st.persist_error("apply", "clone of app-02 failed").unwrap();
    let err = Value::Object(st.read().unwrap().unwrap());
    assert_eq!(err["status"], "error");
    assert_eq!(err["last_error"], "clone of app-02 failed");
    assert_eq!(err["failed_command"], "apply");
    assert!(err.get("active_command").is_none());
    assert_eq!(err["outputs"]["vm_keys"], json!(["keep-01"]));
    assert_eq!(err["outputs"]["vm_names"], json!(["dev-keep-01"]));
    assert_eq!(
        std::fs::read_to_string(st.path()).unwrap(),
        render_json(&err),
        "sorted keys, 2-space indent, trailing newline"
    );
}

/// A previous state as another writer may leave it: keys unsorted at every level, compact
/// and odd whitespace, escaped and non-ASCII text, a repeated key, numbers of every kind.
const FOREIGN_STATE: &str = r#"{"status":"ok","zeta":{"b":[1,{"y":2,"x":[]}],"a":{}},
  "outputs" : {"vms": {"vm-2": {"z": 1, "a": [{"k": 1, "b": 2}]}, "vm-1": {"name": "caf\u00e9 \"q\" é"}},
  "vm_keys": ["vm-2", "vm-1"], "n": [0, -1, 2.5, 1e3, 18446744073709551615, true, null]},
  "active_command": "destroy", "dup": 1, "dup": {"later": "wins"}, "run_id": "old"}"#;

/// What the previous state gives as a value with `set` put over it and `remove` left out.
fn merged(set: Value, remove: &[&str]) -> Value {
    let mut m: serde_json::Map<String, Value> = serde_json::from_str(FOREIGN_STATE).unwrap();
    for k in remove {
        m.remove(*k);
    }
    for (k, v) in set.as_object().unwrap() {
        m.insert(k.clone(), v.clone());
    }
    Value::Object(m)
}

#[test]
fn running_over_a_foreign_state_writes_what_merging_its_values_would() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let st = ModuleState::new(&r, &mref(), None);
    std::fs::create_dir_all(st.path().parent().unwrap()).unwrap();
    std::fs::write(st.path(), FOREIGN_STATE).unwrap();
    st.persist_running(&running_record(
        d.path(),
        json!({"addressing_mode": "static"}),
    ))
    .unwrap();
    let text = std::fs::read_to_string(st.path()).unwrap();
    let written: Value = serde_json::from_str(&text).unwrap();
    let want = merged(
        json!({
            "module_ref": "platform/onprem/platform-vm",
            "status": "running",
            "active_command": "apply",
            "updated_at": written["updated_at"],
            "run_id": "apply-20260102T000000Z-00000002",
            "evidence_dir": d.path().join("ev2").display().to_string(),
            "input_contract": {"addressing_mode": "static"},
            "output_count": 3,
        }),
        &[],
    );
    assert_eq!(text, render_json(&want));
}

#[test]
fn error_over_a_foreign_state_writes_what_merging_its_values_would() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let st = ModuleState::new(&r, &mref(), None);
    std::fs::create_dir_all(st.path().parent().unwrap()).unwrap();
    std::fs::write(st.path(), FOREIGN_STATE).unwrap();
    st.persist_error("destroy", "the lock was lost").unwrap();
    let text = std::fs::read_to_string(st.path()).unwrap();
    let written: Value = serde_json::from_str(&text).unwrap();
    let want = merged(
        json!({
            "module_ref": "platform/onprem/platform-vm",
            "status": "error",
            "last_error": "the lock was lost",
            "failed_command": "destroy",
            "updated_at": written["updated_at"],
        }),
        &["active_command"],
    );
    assert_eq!(text, render_json(&want));
}

#[test]
fn running_over_a_state_that_is_not_an_object_fails_and_leaves_it() {
    for bad in ["[]", "[1, ", "\"ok\"", ""] {
        let d = tempfile::tempdir().unwrap();
        let r = root(d.path());
        let st = ModuleState::new(&r, &mref(), None);
        std::fs::create_dir_all(st.path().parent().unwrap()).unwrap();
        std::fs::write(st.path(), bad).unwrap();
        let err = st
            .persist_running(&running_record(d.path(), json!({})))
            .unwrap_err();
        assert!(
            err.to_string().contains(&st.path().display().to_string()),
            "{bad:?}: {err}"
        );
        assert_eq!(std::fs::read_to_string(st.path()).unwrap(), bad);
        assert!(st.persist_error("apply", "x").is_err(), "{bad:?}");
    }
}

/// JSON that Python's `json.loads` (and so the collision guards) accepts but a JSON value
/// cannot hold: a number beyond f64 (`1e400`, a 400-digit integer), also when a later
/// duplicate key hides it. The running/error records refuse it as reading the whole state
/// does (the same message, naming the state file and the place in it), never half-way
/// through the write naming a temp file, and never accept what the whole read refuses.
#[test]
fn running_and_error_over_an_unrepresentable_number_fail_as_reading_the_state_fails() {
    let big = format!("1{}", "0".repeat(400));
    for bad in [
        r#"{"junk": 1e400, "outputs": {}}"#.to_string(),
        format!(r#"{{"outputs": {{}}, "junk": [1, {{"x": {big}}}]}}"#),
        r#"{"junk": 1e400, "junk": 0, "outputs": {}}"#.to_string(),
        "\n\n  {\"outputs\": {\"a\": -1.5e999}}".to_string(),
    ] {
        let d = tempfile::tempdir().unwrap();
        let r = root(d.path());
        let st = ModuleState::new(&r, &mref(), None);
        std::fs::create_dir_all(st.path().parent().unwrap()).unwrap();
        std::fs::write(st.path(), &bad).unwrap();
        let want = st.read().unwrap_err().to_string();
        let running = st
            .persist_running(&running_record(d.path(), json!({})))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(running.to_string(), want, "{bad}");
        let error = st.persist_error("apply", "x").map(|_| ()).unwrap_err();
        assert_eq!(error.to_string(), want, "{bad}");
        assert_eq!(std::fs::read_to_string(st.path()).unwrap(), bad);
        let left: Vec<_> = std::fs::read_dir(st.path().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
}

#[test]
fn destroyed_has_empty_outputs_and_no_rerun_files() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let st = ModuleState::new(&r, &mref(), None);
    st.persist_ok(&ok_record(&r, "apply-20260101T000000Z-00000001", &["a"]))
        .unwrap();
    let v = st
        .persist_destroyed(
            "destroy-20260103T000000Z-00000003",
            &d.path().join("ev3"),
            &json!({}),
        )
        .unwrap();
    assert_eq!(v["status"], "destroyed");
    assert_eq!(v["outputs"], json!({}));
    assert_eq!(v["output_count"], 0);
    assert!(v.get("rerun_inputs_file").is_none());
    assert!(v.get("resolved_inputs_file").is_none());
    assert_eq!(v["execution"]["driver"], DRIVER_REF);
}

#[test]
fn publish_outputs_selects_list_and_builds_vm_keys_and_physical_names() {
    let raw = json!({
        "vms": {"app-01": {"vm_name": "dev-app-01"}, "app-02": {}},
        "vm_names": ["wrong"], "node_name": "pve1", "cloud_init": "drop me"
    });
    let p = publish_outputs(raw.as_object().unwrap());
    assert_eq!(p["vm_keys"], json!(["app-01", "app-02"]));
    assert_eq!(p["vm_names"], json!(["dev-app-01", "app-02"]));
    assert!(p.get("cloud_init").is_none());
    assert!(p.keys().all(|k| PUBLISH_KEYS.contains(&k.as_str())));
}

#[test]
fn driver_outputs_takes_first_dict_in_order() {
    let n = json!({"outputs": {"a": 1}, "terragrunt_outputs": {"b": 2}});
    assert_eq!(driver_outputs(&n).unwrap().get("a"), Some(&json!(1)));
    let n = json!({"published_outputs": "not a dict", "terragrunt_outputs": {"b": 2}});
    assert_eq!(driver_outputs(&n).unwrap().get("b"), Some(&json!(2)));
}

#[test]
fn input_contract_contains_only_present_keys() {
    let c = build_input_contract(&json!({
        "addressing": {"mode": "IPAM", "ipam": {"provider": "NetBox"}},
        "require_ipam": "true",
        "inventory_state_ref": "x/y",
        "vms": {}
    }));
    assert_eq!(
        c,
        json!({"addressing_mode": "ipam", "ipam_provider": "netbox", "require_ipam": true, "inventory_state_ref": "x/y"})
    );
    assert_eq!(build_input_contract(&json!({})), json!({}));
}

#[test]
fn json_is_written_with_sorted_keys_two_space_indent_and_0600() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("sub/x.json");
    write_json_atomic(
        &p,
        &json!({"zeta": 1, "alpha": {"d": 1, "c": [{"b": 1, "a": 2}]}}),
    )
    .unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert_eq!(
        text,
        "{\n  \"alpha\": {\n    \"c\": [\n      {\n        \"a\": 2,\n        \"b\": 1\n      }\n    ],\n    \"d\": 1\n  },\n  \"zeta\": 1\n}\n"
    );
    assert_eq!(mode(&p), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temp files left behind");
}

#[test]
fn jsonl_append_adds_one_sorted_line_per_call() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("journal.jsonl");
    append_jsonl(&p, &json!({"b": 1, "a": 2})).unwrap();
    append_jsonl(&p, &json!({"c": 3})).unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "{\"a\":2,\"b\":1}\n{\"c\":3}\n"
    );
    assert_eq!(mode(&p), 0o600);
}

#[test]
fn run_id_has_prefix_utc_stamp_and_eight_hex() {
    let id = new_run_id(RunPrefix::for_command("deploy").unwrap());
    assert!(id.starts_with("apply-"), "{id}");
    assert!(is_run_id(&id), "{id}");
    let at = chrono::DateTime::parse_from_rfc3339("2026-07-12T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(
        run_id_at(RunPrefix::Apply, at, 0xabcd1234),
        "apply-20260712T120000Z-abcd1234"
    );
    for p in [
        "plan",
        "validate",
        "destroy",
        "preflight",
        "rebuild",
        "import",
    ] {
        assert!(new_run_id(RunPrefix::for_command(p).unwrap()).starts_with(&format!("{p}-")));
    }
    assert!(RunPrefix::for_command("nuke").is_err());
    assert!(!is_run_id("apply-20260712T120000Z-ABCD1234"));
}

#[test]
fn state_instance_must_match_the_contract_regex() {
    for ok in ["a", "0", "platform_vms", "a.b-c_d", &"a".repeat(64)] {
        assert!(StateInstance::parse(ok).is_ok(), "{ok}");
    }
    for bad in ["", "_a", "A", "a/b", "a b", &"a".repeat(65), "-x", "é"] {
        let e = StateInstance::parse(bad).unwrap_err().to_string();
        assert!(e.contains("^[a-z0-9][a-z0-9_.-]{0,63}$"), "{e}");
    }
}

#[test]
fn module_id_and_slot_paths_follow_the_contract() {
    let r = RuntimeRoot::at(Path::new("/r"));
    let m = ModuleRef::parse("platform.onprem.platform-vm").unwrap();
    let i = StateInstance::parse("x1").unwrap();
    assert_eq!(m.as_str(), "platform/onprem/platform-vm");
    assert_eq!(module_id(&m, None), "platform__onprem__platform-vm");
    assert_eq!(module_id(&m, Some(&i)), "platform__onprem__platform-vm__x1");
    assert_eq!(
        r.tfstate_file(&m, Some(&i)),
        Path::new("/r/state/terraform/platform__onprem__platform-vm__x1.tfstate")
    );
    assert_eq!(
        r.module_work_dir(&m, Some(&i)),
        Path::new("/r/work/platform__onprem__platform-vm__x1")
    );
    assert_eq!(
        evidence_dir(&r, None, &m, "apply-x"),
        Path::new("/r/logs/module/platform__onprem__platform-vm/apply-x")
    );
    assert_eq!(
        evidence_dir(&r, Some(Path::new("/o")), &m, "apply-x"),
        Path::new("/o/module/platform__onprem__platform-vm/apply-x")
    );
    assert_eq!(
        rebuild_dir(&r, &m, "rebuild-x"),
        Path::new("/r/logs/rebuild/platform__onprem__platform-vm/rebuild-x")
    );
    assert_eq!(
        r.rerun_inputs_file(&m, Some(&i)),
        Path::new("/r/config/modules/platform__onprem__platform-vm/instances/x1.inputs.yml")
    );
    assert_eq!(
        r.rerun_inputs_file(&m, None),
        Path::new("/r/config/modules/platform__onprem__platform-vm/latest.inputs.yml")
    );
    assert_eq!(
        r.lock_file(&m, None),
        Path::new("/r/state/locks/platform__onprem__platform-vm.lock")
    );
    assert!(ModuleRef::parse("../etc").is_err());
}

#[test]
fn runtime_root_resolves_env_root_and_env_var_exclusively() {
    let home = Path::new("/home/u");
    let r = RuntimeRoot::resolve(&RootSource {
        env: Some("dev"),
        home: Some(home),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(r.path(), env_root(home, "dev").unwrap());
    assert_eq!(r.path(), Path::new("/home/u/.hybridops/envs/dev"));
    assert_eq!(r.env(), Some("dev"));
    let r = RuntimeRoot::resolve(&RootSource {
        runtime_root_env: Some("/x/y"),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(r.path(), Path::new("/x/y"));
    assert!(RuntimeRoot::resolve(&RootSource {
        env: Some("dev"),
        root: Some(Path::new("/x")),
        home: Some(home),
        ..Default::default()
    })
    .is_err());
    assert!(RuntimeRoot::resolve(&RootSource::default()).is_err());
    let r = RuntimeRoot::resolve(&RootSource {
        root: Some(Path::new("~/rt")),
        home: Some(home),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(r.path(), Path::new("/home/u/rt"));
    let r = RuntimeRoot::resolve(&RootSource {
        root: Some(Path::new("rel/rt")),
        ..Default::default()
    })
    .unwrap();
    assert!(r.path().is_absolute() && r.path().ends_with("rel/rt"));
    assert!(RuntimeRoot::resolve(&RootSource {
        env: Some("../x"),
        home: Some(home),
        ..Default::default()
    })
    .is_err());
}

#[test]
fn rerun_inputs_are_yaml_0600_at_the_slot_path() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let i = StateInstance::parse("b").unwrap();
    let p = write_rerun_inputs(
        &r,
        &mref(),
        Some(&i),
        &json!({"zz": 1, "ssh_username": "ops"}),
    )
    .unwrap();
    assert!(p.ends_with("config/modules/platform__onprem__platform-vm/instances/b.inputs.yml"));
    let y = hyops_pve::yaml::safe_load(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(
        y.as_dict().unwrap().get("ssh_username"),
        Some(&hyops_pve::yaml::PyValue::str("ops"))
    );
    assert_eq!(mode(&p), 0o600);
}

#[test]
fn module_state_record_lists_sorted_published_keys() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let st = ModuleState::new(&r, &mref(), None);
    let v = st
        .persist_ok(&ok_record(&r, "apply-20260101T000000Z-00000001", &["a"]))
        .unwrap();
    let p =
        write_module_state_record(d.path(), st.path(), &v, Some(("ok", "state written"))).unwrap();
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    assert_eq!(
        rec["published_outputs"],
        json!(["node_name", "vm_keys", "vm_names", "vms"])
    );
    assert_eq!(rec["status"], "ok");
    assert_eq!(rec["path"], json!(st.path().to_string_lossy()));
}

#[test]
fn tfstate_vm_ids_are_keyed_by_for_each_key() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let doc = json!({"version": 4, "resources": [
        {"mode": "managed", "type": "proxmox_virtual_environment_vm", "name": "vm",
         "module": "module.vm_multi.module.vm[\"app-01\"]",
         "instances": [{"attributes": {"vm_id": 4101, "name": "dev-app-01"}}]},
        {"mode": "managed", "type": "proxmox_virtual_environment_vm", "name": "vm",
         "instances": [{"index_key": "app-02", "attributes": {"id": "4102"}}]},
        {"mode": "managed", "type": "proxmox_virtual_environment_file", "name": "ci",
         "instances": [{"attributes": {"id": "local:snippets/x"}}]}
    ]});
    write_json_atomic(&r.tfstate_file(&mref(), None), &doc).unwrap();
    let vms = read_tfstate_vms(&r, &mref(), None).unwrap();
    assert_eq!(vms.len(), 2);
    assert_eq!(
        (vms[0].key.as_deref(), vms[0].vm_id, vms[0].name.as_deref()),
        (Some("app-01"), 4101, Some("dev-app-01"))
    );
    assert_eq!(
        (vms[1].key.as_deref(), vms[1].vm_id),
        (Some("app-02"), 4102)
    );
    assert!(
        read_tfstate_vms(&r, &mref(), Some(&StateInstance::parse("none").unwrap()))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn driver_result_serialises_protocol_shape() {
    let mut r = DriverResult::ok("apply-x", "deploy", Map::new());
    r.warnings.push("w".into());
    let v = r.to_value();
    assert_eq!(v["command"], "apply");
    assert_eq!(v["status"], "ok");
    assert_eq!(
        v["driver"],
        json!({"ref": DRIVER_REF, "profile": PROFILE, "pack_id": PACK_ID})
    );
    assert_eq!(v["backend_binding"], json!({"mode": "local"}));
    assert!(v.get("error").is_none());
    let e = DriverResult::error("plan-x", "plan", "boom").to_value();
    assert_eq!(e["status"], "error");
    assert_eq!(e["error"], "boom");
    let back: DriverResult = serde_json::from_value(e).unwrap();
    assert_eq!(back.error.as_deref(), Some("boom"));
}

#[test]
fn driver_request_parses_upstream_shape_and_effective_command() {
    let req: DriverRequest = serde_json::from_value(json!({
        "command": "preflight", "lifecycle_command": "deploy", "run_id": "apply-x",
        "module_ref": MODULE_REF, "state_instance": "", "module_dir": "/m",
        "inputs": {"vms": {}}, "execution": {"driver": DRIVER_REF, "profile": PROFILE, "pack_id": PACK_ID, "hooks": {}},
        "requirements": {"credentials": ["proxmox"]},
        "runtime": {"root": "/r", "env": "dev", "logs_dir": "/r/logs", "meta_dir": "/r/meta", "state_dir": "/r/state",
                    "credentials_dir": "/r/credentials", "work_dir": "/r/work", "allow_state_drift_recreate": false},
        "evidence_dir": "/r/logs/module/x/apply-x"
    }))
    .unwrap();
    assert_eq!(req.effective_command(), "apply");
}

#[test]
fn evidence_writers_produce_contract_shapes() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let ev = evidence_dir(&r, None, &mref(), "apply-x");
    write_inputs_resolved(&ev, &mref(), None, &json!({"a": 1})).unwrap();
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("inputs_resolved.json")).unwrap())
            .unwrap();
    assert_eq!(
        v,
        json!({"module_ref": MODULE_REF, "state_instance": "", "inputs": {"a": 1}})
    );
    write_meta(&ev, "apply", "apply-x", &mref(), &r, &json!({})).unwrap();
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("meta.json")).unwrap()).unwrap();
    assert_eq!(
        m["outputs"]["publish"].as_array().unwrap().len(),
        PUBLISH_KEYS.len()
    );
    let mut dec = PreflightDecision::new("apply", None);
    dec.complete(true, None);
    dec.write(&ev).unwrap();
    let p: Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("preflight_decision.json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            p["schema_version"].clone(),
            p["decision"].clone(),
            p["status"].clone(),
            p["mutating"].clone()
        ),
        (json!(1), json!("enforce"), json!("passed"), json!(true))
    );
    let mut s = RebuildSummary::new("rebuild-x", &mref());
    s.phase("destroy", "ok", 0);
    s.write(&ev).unwrap();
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("rebuild_summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        s["phases"]["destroy"],
        json!({"status": "ok", "exit_code": 0})
    );
    assert_eq!(s["module_id"], "platform__onprem__platform-vm");
    assert_eq!(mode(&ev.join("meta.json")), 0o600);
}

#[test]
fn cli_result_and_resolved_inputs_files_are_written() {
    let d = tempfile::tempdir().unwrap();
    let ev = d.path().join("ev");
    let r = DriverResult::ok("apply-x", "apply", Map::new());
    assert!(write_cli_result(&ev, true, &r)
        .unwrap()
        .ends_with("preflight_result.json"));
    assert!(write_cli_result(&ev, false, &r)
        .unwrap()
        .ends_with("result.json"));
    let p = write_resolved_inputs_yaml(&ev, &json!({"b": 1, "a": {"z": 1, "y": 2}})).unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "a:\n  y: 2\n  z: 1\nb: 1\n"
    );
    assert_eq!(mode(&p), 0o600);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            "[a-z0-9 ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-zA-Z_]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().rev().collect())),
            ]
        })
    }

    fn keys_sorted(v: &Value) -> bool {
        match v {
            Value::Object(m) => {
                let ks: Vec<&String> = m.keys().collect();
                ks.windows(2).all(|w| w[0] <= w[1]) && m.values().all(keys_sorted)
            }
            Value::Array(a) => a.iter().all(keys_sorted),
            _ => true,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn written_json_reads_back_equal_with_sorted_keys(v in arb_json()) {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("x.json");
            write_json_atomic(&p, &v).unwrap();
            let back: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            prop_assert!(keys_sorted(&back));
            prop_assert_eq!(back, sort_keys(&v));
        }
    }
}

#[test]
fn the_prior_view_keeps_exactly_what_a_plan_reads_of_the_previous_outputs() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let st = ModuleState::new(&r, &mref(), None);
    write_json_atomic(
        st.path(),
        &json!({
            "status": "ok",
            "outputs": {
                "vm_ids": {"a": 101, "b": "102"},
                "vms": {
                    "a": {"vm_name": "dev-a", "ipv4_addresses": [["10.0.0.2"]], "cpu_cores": 2},
                    "b": {"vm_name": null, "tags": ["x"]},
                },
                "ipv4_addresses": {"a": "10.0.0.2"},
            },
        }),
    )
    .unwrap();
    let view = st.read_prior_view().unwrap().unwrap();
    assert_eq!(
        Value::Object(view),
        json!({"outputs": {
            "vm_ids": {"a": 101, "b": "102"},
            "vms": {"a": {"vm_name": "dev-a", "ipv4_addresses": [["10.0.0.2"]]}, "b": {}},
        }})
    );
}

#[test]
fn a_state_of_another_shape_is_read_whole_by_the_prior_view() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let st = ModuleState::new(&r, &mref(), None);
    assert!(st.read_prior_view().unwrap().is_none(), "no state yet");
    // `vms` as a list: not the usual shape, so the whole state is returned as read()
    let odd = json!({"outputs": {"vms": ["a"], "vm_ids": {"a": 1}}, "status": "ok"});
    write_json_atomic(st.path(), &odd).unwrap();
    assert_eq!(
        st.read_prior_view().unwrap(),
        st.read().unwrap(),
        "same as read()"
    );
    std::fs::write(st.path(), "[1, 2]").unwrap();
    assert!(st.read_prior_view().is_err() && st.read().is_err());
    std::fs::write(st.path(), "{not json").unwrap();
    assert!(st.read_prior_view().is_err());
}

#[test]
fn an_empty_array_state_is_refused_by_the_prior_view_as_by_read() {
    // a derived struct also parses from an array, so `[]` used to read as "no prior VMs"
    // (a plan went ahead) where read() refuses the file
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let st = ModuleState::new(&r, &mref(), None);
    write_json_atomic(st.path(), &json!({})).unwrap();
    std::fs::write(st.path(), "[]").unwrap();
    assert!(st.read().is_err());
    assert!(st.read_prior_view().is_err());
}

#[test]
fn outputs_given_as_an_array_yield_no_prior_vm_ids_in_the_prior_view() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let st = ModuleState::new(&r, &mref(), None);
    let odd = json!({"status": "ok", "outputs": [{"app-01": 101}, {"app-01": {"vm_name": "x"}}]});
    write_json_atomic(st.path(), &odd).unwrap();
    assert_eq!(st.read_prior_view().unwrap(), st.read().unwrap());
}

#[test]
fn a_vm_entry_given_as_an_array_is_read_whole_by_the_prior_view() {
    let d = tempfile::tempdir().unwrap();
    let r = root(d.path());
    let st = ModuleState::new(&r, &mref(), None);
    let odd = json!({"outputs": {"vm_ids": {"a": 101}, "vms": {"a": ["dev-a", [["10.0.0.2"]]]}}});
    write_json_atomic(st.path(), &odd).unwrap();
    assert_eq!(st.read_prior_view().unwrap(), st.read().unwrap());
}
