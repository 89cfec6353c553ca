//! `--json`: every command prints exactly one JSON document on stdout, on success and on
//! failure, valid against `docs/schemas/cli-envelope.schema.json`, with `status`, `command`,
//! `run_id`, `warnings`, `error` (on failure) and its command fields; progress stays on stderr.

use crate::cli_support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cli_support::*;
use serde_json::Value;

fn schema(name: &str) -> jsonschema::Validator {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schemas")
        .join(name);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    jsonschema::validator_for(&v).unwrap()
}

/// The envelope of `o`: one document, valid, with the expected command, status and code.
fn envelope(o: &std::process::Output, command: &str, status: &str) -> Value {
    let doc = one_doc(o);
    let errors: Vec<String> = schema("cli-envelope.schema.json")
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "envelope violates its schema: {errors:#?}\n{doc:#}"
    );
    assert_eq!(doc["command"], command, "{doc:#}");
    assert_eq!(doc["status"], status, "{doc:#}\nstderr: {}", stderr(o));
    assert_eq!(
        Some(doc["exit_code"].as_i64().unwrap() as i32),
        o.status.code()
    );
    if status != "ok" && o.status.code() != Some(64) {
        // (a usage error's stderr is clap's own rendering)
        let err = doc["error"].as_str().unwrap();
        assert!(
            stderr(o).contains(&format!("ERR: {}", err.lines().next().unwrap())),
            "the ERR line on stderr carries the same message"
        );
    }
    doc
}

fn cmd(home: &Path, args: &[&str]) -> std::process::Command {
    let mut c = bin(home);
    c.args(args);
    c
}

#[test]
fn version() {
    let home = tempfile::tempdir().unwrap();
    let o = run_sync(cmd(home.path(), &["version", "--json"]));
    let doc = envelope(&o, "version", "ok");
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn validate_ok_and_failed() {
    let (home, root) = home_with_root();
    let root = root.to_str().unwrap();
    let o = run_sync(cmd(
        home.path(),
        &[
            "validate",
            "--json",
            "--root",
            root,
            "--inputs",
            &example("inputs.sim-demo.yml"),
        ],
    ));
    let doc = envelope(&o, "validate", "ok");
    assert_eq!(doc["model"]["vms"]["app-01"]["physical_name"], "app-01");
    let bad = write(
        home.path(),
        "bad.yml",
        "require_ipam: false\ntemplate_vm_id: 9000\n",
    );
    let o = run_sync(cmd(
        home.path(),
        &[
            "validate",
            "--json",
            "--root",
            root,
            "--inputs",
            bad.to_str().unwrap(),
        ],
    ));
    let doc = envelope(&o, "validate", "error");
    assert!(doc["error"].as_str().unwrap().contains("either inputs.vms"));
}

#[test]
fn plan_apply_state_destroy_on_the_simulator() {
    let home = tempfile::tempdir().unwrap();
    let demo = example("inputs.sim-demo.yml");
    let sim = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--sim", "--env", "dev", "--json", "--inputs", &demo]);
        run_sync(cmd(home.path(), &a))
    };
    let o = sim(&["plan", "--detailed-exitcode"]);
    let doc = envelope(&o, "plan", "ok");
    assert_eq!(
        (doc["exit_code"].as_i64(), doc["has_changes"].as_bool()),
        (Some(2), Some(true))
    );
    assert!(doc["run_id"].as_str().unwrap().starts_with("plan-"));
    assert!(
        stderr(&o).contains("run record: "),
        "progress stays on stderr"
    );

    let o = sim(&["apply"]);
    let doc = envelope(&o, "apply", "ok");
    assert_eq!(doc["vms"].as_array().unwrap().len(), 3);
    let outputs_schema = schema("outputs.schema.json");
    assert!(
        outputs_schema.is_valid(&doc["outputs"]),
        "{:#}",
        doc["outputs"]
    );
    assert!(stderr(&o).contains("progress: phase=apply"));

    let o = run_sync(cmd(
        home.path(),
        &["state", "show", "--sim", "--env", "dev", "--json"],
    ));
    let doc = envelope(&o, "state show", "ok");
    assert_eq!(doc["state"]["status"], "ok");

    let o = sim(&["destroy"]);
    let doc = envelope(&o, "destroy", "ok");
    assert_eq!(doc["destroyed"].as_array().unwrap().len(), 3);
}

#[test]
fn apply_failure_still_prints_the_envelope() {
    let home = tempfile::tempdir().unwrap();
    // An IPAM overlay on a vnet the SDN state does not publish fails clearly in preflight.
    let typical = std::fs::read_to_string(example("inputs.typical.yml")).unwrap();
    let bad = write(
        home.path(),
        "bad-vnet.yml",
        &typical.replace("bridge: vnetmgmt", "bridge: vnetfoo"),
    );
    let o = run_sync(cmd(
        home.path(),
        &[
            "apply",
            "--sim",
            "--env",
            "dev",
            "--json",
            "--inputs",
            bad.to_str().unwrap(),
        ],
    ));
    let doc = envelope(&o, "apply", "error");
    assert!(doc["run_id"].as_str().unwrap().starts_with("apply-"));
    assert!(doc["error"]
        .as_str()
        .unwrap()
        .contains("not present in network_sdn state outputs: [vnetfoo]"));
}

#[test]
fn failures_before_any_run_still_print_the_envelope() {
    let (home, root) = home_with_root();
    let root = root.to_str().unwrap();
    // no --inputs
    let o = run_sync(cmd(home.path(), &["plan", "--json", "--root", root]));
    let doc = envelope(&o, "plan", "error");
    assert!(doc["run_id"].is_null());
    // a runtime root that does not exist
    let o = run_sync(cmd(
        home.path(),
        &[
            "destroy",
            "--json",
            "--env",
            "nope",
            "--inputs",
            &example("inputs.min.yml"),
        ],
    ));
    envelope(&o, "destroy", "error");
    // no state yet
    let o = run_sync(cmd(
        home.path(),
        &["state", "show", "--json", "--root", root],
    ));
    envelope(&o, "state show", "error");
}

#[test]
fn preflight_ok_and_failed() {
    let (home, root) = home_with_root();
    let o = run_sync(cmd(
        home.path(),
        &[
            "preflight",
            "--json",
            "--root",
            root.to_str().unwrap(),
            "--inputs",
            &example("inputs.sim-demo.yml"),
        ],
    ));
    let doc = envelope(&o, "preflight", "error");
    assert_eq!(doc["module_preflight"]["status"], "error");
    assert!(doc["error"]
        .as_str()
        .unwrap()
        .contains("missing required credentials"));
    let o = run_sync(cmd(
        home.path(),
        &[
            "preflight",
            "--json",
            "--sim",
            "--env",
            "dev",
            "--inputs",
            &example("inputs.sim-demo.yml"),
        ],
    ));
    let doc = envelope(&o, "preflight", "ok");
    assert_eq!(doc["ok"], true);
}

#[test]
fn rebuild_ok_and_refused() {
    let home = tempfile::tempdir().unwrap();
    let demo = example("inputs.sim-demo.yml");
    let o = run_sync(cmd(
        home.path(),
        &[
            "rebuild",
            "--sim",
            "--env",
            "dev",
            "--json",
            "--yes",
            "--confirm-module",
            "platform/onprem/platform-vm",
            "--inputs",
            &demo,
        ],
    ));
    let doc = envelope(&o, "rebuild", "ok");
    assert_eq!(doc["rebuild"]["status"], "ok");
    assert!(doc["run_id"].as_str().unwrap().starts_with("rebuild-"));
    let o = run_sync(cmd(
        home.path(),
        &[
            "rebuild",
            "--sim",
            "--env",
            "dev",
            "--json",
            "--yes",
            "--confirm-module",
            "platform/onprem/netbox",
            "--inputs",
            &demo,
        ],
    ));
    envelope(&o, "rebuild", "error");
}

#[test]
fn a_usage_error_with_json_is_an_envelope_too() {
    let home = tempfile::tempdir().unwrap();
    let o = run_sync(cmd(home.path(), &["plan", "--json", "--inptus", "x.yml"]));
    assert_eq!(o.status.code(), Some(64));
    let doc = envelope(&o, "plan", "error");
    assert!(
        doc["error"].as_str().unwrap().contains("--inptus"),
        "{doc:#}"
    );
}

#[test]
fn sim_serve_prints_one_document_when_listening() {
    let home = tempfile::tempdir().unwrap();
    let mut child = cmd(
        home.path(),
        &[
            "sim",
            "serve",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--time-scale",
            "0.001",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let doc: Value = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "stdout closed: {text}"
        );
        text.push_str(&line);
        if let Ok(v) = serde_json::from_str(&text) {
            break v;
        }
        assert!(Instant::now() < deadline, "no JSON document: {text}");
    };
    assert!(schema("cli-envelope.schema.json").is_valid(&doc), "{doc:#}");
    assert_eq!(doc["command"], "sim serve");
    assert!(doc["url"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));
    // SAFETY: kill(2) on the child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.trim().is_empty(), "nothing after the document: {rest}");
}
