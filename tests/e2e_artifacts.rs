//! The evidence an apply leaves is checked against the published schemas in docs/schemas:
//! plan.json, every line of apply_journal.jsonl, and the published outputs in the state.
//! Also: no secret reaches any file the run writes outside credentials.

use crate::common;

use std::path::{Path, PathBuf};

use common::{Harness, DEMO};
use hyops_pve::commands::module::apply_inner;

fn schema(name: &str) -> jsonschema::Validator {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schemas")
        .join(name);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    jsonschema::validator_for(&v).unwrap()
}

fn assert_valid(v: &jsonschema::Validator, doc: &serde_json::Value, what: &str) {
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what} violates its schema: {errors:#?}");
}

fn run_dir(h: &Harness) -> PathBuf {
    let base = h.root().join("logs/module/platform__onprem__platform-vm");
    let mut runs: Vec<PathBuf> = std::fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("apply-")
        })
        .collect();
    runs.sort();
    runs.pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_journal_and_outputs_match_their_schemas() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let dir = run_dir(&h);
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    assert_valid(&schema("plan.schema.json"), &plan, "plan.json");
    let journal = std::fs::read_to_string(dir.join("apply_journal.jsonl")).unwrap();
    let js = schema("journal-event.schema.json");
    let mut lines = 0;
    for line in journal.lines() {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_valid(&js, &ev, "journal line");
        lines += 1;
    }
    assert!(
        lines >= 3 * 2 * 4,
        "every VM's clone/config/resize/start has start and end lines ({lines})"
    );
    let state = h.state_json();
    assert_valid(
        &schema("outputs.schema.json"),
        &state["outputs"],
        "published outputs",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_reject_a_broken_plan() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let dir = run_dir(&h);
    let mut plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    plan["vms"][0]["action"] = serde_json::json!("explode");
    assert!(!schema("plan.schema.json").is_valid(&plan));
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_token_secret_never_reaches_state_evidence_or_rerun_inputs() {
    let h = Harness::start().await;
    let secret = h.sim.token_secret.expose().to_string();
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let mut files = Vec::new();
    all_files(&h.root(), &mut files);
    let mut checked = 0;
    for f in files {
        // The credentials file is where the operator keeps the token; nothing else may hold it.
        if f.starts_with(h.root().join("credentials")) {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).to_string();
        assert!(
            !text.contains(&secret),
            "token secret leaked into {}",
            f.display()
        );
        checked += 1;
    }
    assert!(
        checked > 8,
        "checked the evidence, state and rerun files ({checked})"
    );
}
