//! A full disk (or a failing one) during apply, destroy and rebuild, reproduced
//! deterministically with the write-fault seam (`hyops::fsio::faults`): once VMs changed, an
//! evidence file that cannot be written never keeps the module state from being recorded
//! (`error`, previous outputs kept, contract §3.4); the run fails naming the file, the OS error,
//! the VMs and what to do next; a state that cannot be written is said so, and no half-written
//! state file remains. Evidence that cannot be written before any change stops the run.

use crate::common;

use std::path::PathBuf;

use common::{Harness, DEMO};
use hyops_pve::commands::module::{apply_inner, destroy_inner};
use hyops_pve::commands::rebuild::rebuild_inner;
use hyops_pve::hyops::fsio::faults::{inject, FaultGuard, WriteFault};
use serde_json::Value;

const CLONE: &str = "/nodes/{node}/qemu/{vmid}/clone";

/// Writes of `name` under the runtime root fail with ENOSPC (a full disk: content that fits
/// into room set aside before is still written), after `after` of them succeeded, `failures`
/// times (every time with `None`).
fn full_disk(h: &Harness, name: &str, after: u32, failures: Option<u32>) -> FaultGuard {
    failing(h, name, after, failures, libc::ENOSPC)
}

/// Writes of `name` fail with EIO (a failing device: every write fails, reserved room or not).
fn failing_device(h: &Harness, name: &str, after: u32, failures: Option<u32>) -> FaultGuard {
    failing(h, name, after, failures, libc::EIO)
}

fn failing(h: &Harness, name: &str, after: u32, failures: Option<u32>, errno: i32) -> FaultGuard {
    inject(WriteFault {
        under: h.root(),
        file_name: Some(name.to_string()),
        armed_by: None,
        after,
        failures,
        errno,
    })
}

fn state_dir(h: &Harness) -> PathBuf {
    h.root().join("state/modules/platform__onprem__platform-vm")
}

fn state_exists(h: &Harness) -> bool {
    state_dir(h).join("latest.json").exists()
}

/// The temp files left beside the state file.
fn state_temps(h: &Harness) -> Vec<String> {
    std::fs::read_dir(state_dir(h))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.contains(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

/// The newest run dir of `prefix` (`apply`, `destroy`).
fn latest_run(h: &Harness, prefix: &str) -> PathBuf {
    let dir = h.root().join("logs/module/platform__onprem__platform-vm");
    let mut runs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    runs.sort();
    runs.pop().expect("a run dir")
}

fn cores_changed() -> String {
    DEMO.replace("cpu_cores: 2", "cpu_cores: 4")
}

/// A pool applied once (state ok with its outputs): returns the published outputs.
async fn applied_pool(h: &Harness) -> Value {
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let st = h.state_json();
    assert_eq!(st["status"], "ok");
    st["outputs"].clone()
}

fn contains(haystack: &str, needle: &str) {
    assert!(haystack.contains(needle), "{needle:?} not in:\n{haystack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_evidence_write_still_records_the_state_as_error_with_the_previous_outputs() {
    let h = Harness::start().await;
    let previous = applied_pool(&h).await;
    let ctx = h.ctx(&h.overlay("o2.yml", &cores_changed())).await;
    let _fault = full_disk(&h, "apply_report.json", 0, None);
    let e = apply_inner(&ctx, None, None).await.unwrap_err();
    assert_eq!(
        h.config_of("dev-app-01")["cores"],
        "4",
        "the change was made"
    );
    let st = h.state_json();
    assert_eq!(st["status"], "error", "{st:#}");
    assert_eq!(st["failed_command"], "apply");
    assert_eq!(st["last_error"], e.message.as_str());
    assert!(st.get("active_command").is_none(), "{st:#}");
    assert_eq!(st["outputs"], previous, "the previous outputs are kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_up_during_the_rollout_still_gets_the_state_recorded_as_error() {
    let h = Harness::start().await;
    // the tester's overlay (examples/inputs.sim-serve.yml): native cloud-init, no gate
    let overlay = DEMO.replace(
        "post_apply_ssh_readiness:\n  connectivity_wait_s: 30\n",
        "cloud_init_mode: native\npost_apply_ssh_readiness:\n  enabled: false\n",
    );
    assert_ne!(overlay, DEMO);
    let ctx = h.ctx(&h.overlay("o.yml", &overlay)).await;
    // the disk is full from the moment the plan is recorded: the journal, the reports and
    // every new file fail from then on
    let _full = inject(WriteFault {
        under: h.root(),
        file_name: None,
        armed_by: Some("plan.txt".into()),
        after: 0,
        failures: None,
        errno: libc::ENOSPC,
    });
    let e = apply_inner(&ctx, None, None).await.unwrap_err();
    assert_eq!(h.vms().len(), 3, "the VMs were created: {}", e.message);
    let st = h.state_json();
    assert_eq!(st["status"], "error", "{st:#}");
    assert_eq!(st["last_error"], e.message.as_str());
    assert_eq!(st["outputs"], serde_json::json!({}));
    contains(
        &e.message,
        "apply_journal.jsonl: No space left on device (os error 28) (",
    );
    contains(&e.message, "apply_report.json");
    contains(&e.message, "VMs: 3 created (app-01 vmid ");
    contains(&e.message, "local runtime storage is full");
    assert!(state_temps(&h).is_empty(), "{:?}", state_temps(&h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_names_the_file_the_os_error_the_vms_and_what_to_do_next() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    let _fault = full_disk(&h, "apply_report.json", 0, None);
    let e = apply_inner(&ctx, None, None).await.unwrap_err();
    assert_eq!(e.code, 1);
    let report = latest_run(&h, "apply").join("apply_report.json");
    let m = &e.message;
    assert!(
        m.starts_with(&format!(
            "apply changed Proxmox but its evidence is incomplete: cannot write {}: No space left on device (os error 28); ",
            report.display()
        )),
        "{m}"
    );
    contains(m, "VMs: 3 created (app-01 vmid ");
    contains(m, "local runtime storage is full: free disk space");
    contains(
        m,
        "then run apply again: it adopts the VMs above and converges without creating any twice",
    );
    assert!(!report.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_after_the_disk_is_freed_converges_without_creating_a_vm_twice() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    {
        let _fault = full_disk(&h, "apply_report.json", 0, None);
        apply_inner(&ctx, None, None).await.unwrap_err();
    }
    let clones = h.calls("POST", CLONE);
    assert_eq!(clones, 3);
    apply_inner(&ctx, None, None).await.unwrap();
    assert_eq!(h.calls("POST", CLONE), clones, "no VM was created twice");
    let st = h.state_json();
    assert_eq!(st["status"], "ok");
    assert_eq!(
        st["outputs"]["vm_keys"],
        serde_json::json!(["app-01", "app-02", "db-01"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_evidence_file_written_after_the_rollout_that_fails_leaves_the_state_error() {
    for file in [
        "driver_result.json",
        "result.json",
        "latest.inputs.yml",
        "post_apply_ssh_readiness.json",
        "hook_netbox_sync.dataset.json",
        "vms.auto.json",
    ] {
        let h = Harness::start().await;
        let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
        let _fault = full_disk(&h, file, 0, None);
        let e = apply_inner(&ctx, None, None)
            .await
            .expect_err(&format!("a full disk for {file} fails the apply"));
        contains(&e.message, &format!("{file}: No space left on device"));
        contains(&e.message, "VMs: 3 created");
        assert_eq!(h.vms().len(), 3, "{file}");
        let st = h.state_json();
        assert_eq!(st["status"], "error", "{file}: {st:#}");
        assert_eq!(st["outputs"], serde_json::json!({}), "{file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_journal_lines_fail_the_apply_and_the_journal_keeps_only_whole_lines() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    let _fault = full_disk(&h, "apply_journal.jsonl", 5, None);
    let e = apply_inner(&ctx, None, None).await.unwrap_err();
    let journal = latest_run(&h, "apply").join("apply_journal.jsonl");
    contains(
        &e.message,
        &format!(
            "cannot write {}: No space left on device (os error 28) (",
            journal.display()
        ),
    );
    contains(&e.message, " line(s) lost)");
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(text.ends_with('\n'));
    assert_eq!(text.lines().count(), 5);
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap();
    }
    assert_eq!(h.state_json()["status"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_state_record_that_cannot_be_written_keeps_the_ok_state_and_fails_the_run() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    let _fault = full_disk(&h, "module_state.json", 0, None);
    let e = apply_inner(&ctx, None, None).await.unwrap_err();
    contains(&e.message, "apply ok and its state is recorded in ");
    contains(&e.message, "module_state.json: No space left on device");
    assert_eq!(h.state_json()["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_cannot_be_recorded_stops_the_apply_before_any_vm_is_created() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    let _fault = full_disk(&h, "plan.json", 0, None);
    let e = apply_inner(&ctx, None, None).await.unwrap_err();
    assert!(
        e.message
            .starts_with("cannot record the plan, so no VM was changed: cannot write "),
        "{}",
        e.message
    );
    contains(
        &e.message,
        "plan.json: No space left on device (os error 28)",
    );
    assert!(h.vms().is_empty());
    assert_eq!(h.calls("POST", CLONE), 0);
    assert_eq!(h.state_json()["status"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_without_room_for_the_final_state_record_aborts_before_any_change() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    let _fault = full_disk(&h, "latest.json", 0, None);
    let e = apply_inner(&ctx, None, None).await.unwrap_err();
    assert!(
        e.message
            .starts_with("cannot record the running state (the apply is aborted before any change): cannot write "),
        "{}",
        e.message
    );
    contains(&e.message, "local runtime storage is full");
    assert!(h.vms().is_empty());
    assert!(!state_exists(&h), "the state is not touched");
    assert!(state_temps(&h).is_empty(), "{:?}", state_temps(&h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_that_cannot_be_written_says_the_vms_changed_and_leaves_no_half_written_file() {
    let h = Harness::start().await;
    let previous = applied_pool(&h).await;
    let ctx = h.ctx(&h.overlay("o2.yml", &cores_changed())).await;
    // the reserve and the running record pass, every later state write fails
    let _fault = failing_device(&h, "latest.json", 2, None);
    let e = apply_inner(&ctx, None, None).await.unwrap_err();
    let m = &e.message;
    contains(m, "VMs: 3 updated (app-01 vmid ");
    contains(
        m,
        "and the module state could not be recorded: cannot write ",
    );
    contains(m, "latest.json: Input/output error (os error 5)");
    contains(
        m,
        "(the state file still says `running` from this run's start)",
    );
    contains(m, "then run apply again");
    let st = h.state_json();
    assert_eq!(st["status"], "running");
    assert_eq!(st["outputs"], previous);
    assert!(state_temps(&h).is_empty(), "{:?}", state_temps(&h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ok_state_that_cannot_be_written_falls_back_to_the_error_record() {
    let h = Harness::start().await;
    let previous = applied_pool(&h).await;
    let ctx = h.ctx(&h.overlay("o2.yml", &cores_changed())).await;
    let _fault = failing_device(&h, "latest.json", 2, Some(1));
    let e = apply_inner(&ctx, None, None).await.unwrap_err();
    contains(
        &e.message,
        "apply converged in Proxmox but its ok state could not be written: cannot write ",
    );
    contains(&e.message, "VMs: 3 updated");
    let st = h.state_json();
    assert_eq!(st["status"], "error");
    assert_eq!(st["last_error"], e.message.as_str());
    assert_eq!(st["outputs"], previous);
    assert!(state_temps(&h).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_evidence_write_during_destroy_still_records_the_state_as_error_with_the_previous_outputs(
) {
    let h = Harness::start().await;
    let previous = applied_pool(&h).await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    let _fault = full_disk(&h, "destroy_report.json", 0, None);
    let e = destroy_inner(&ctx, None).await.unwrap_err();
    assert!(h.vms().is_empty(), "the VMs were removed");
    let report = latest_run(&h, "destroy").join("destroy_report.json");
    assert!(
        e.message.starts_with(&format!(
            "destroy changed Proxmox but its evidence is incomplete: cannot write {}: No space left on device (os error 28); ",
            report.display()
        )),
        "{}",
        e.message
    );
    contains(&e.message, "VMs: 3 removed (app-01 vmid ");
    contains(&e.message, "then run destroy again");
    let st = h.state_json();
    assert_eq!(st["status"], "error");
    assert_eq!(st["failed_command"], "destroy");
    assert_eq!(st["outputs"], previous);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroy_rerun_after_the_disk_is_freed_records_destroyed() {
    let h = Harness::start().await;
    applied_pool(&h).await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    {
        let _fault = full_disk(&h, "destroy_report.json", 0, None);
        destroy_inner(&ctx, None).await.unwrap_err();
    }
    destroy_inner(&ctx, None).await.unwrap();
    let st = h.state_json();
    assert_eq!(st["status"], "destroyed");
    assert_eq!(st["outputs"], serde_json::json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_destroy_journal_lines_record_the_state_as_error() {
    let h = Harness::start().await;
    applied_pool(&h).await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    let _fault = full_disk(&h, "apply_journal.jsonl", 1, None);
    let e = destroy_inner(&ctx, None).await.unwrap_err();
    contains(&e.message, "apply_journal.jsonl: No space left on device");
    contains(&e.message, "VMs: 3 removed");
    assert!(h.vms().is_empty());
    assert_eq!(h.state_json()["status"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_state_that_cannot_be_written_says_the_vms_were_removed() {
    let h = Harness::start().await;
    let previous = applied_pool(&h).await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    let _fault = failing_device(&h, "latest.json", 2, None);
    let e = destroy_inner(&ctx, None).await.unwrap_err();
    contains(
        &e.message,
        "destroy removed the slot's VMs but its destroyed state could not be written: ",
    );
    contains(&e.message, "VMs: 3 removed");
    contains(
        &e.message,
        "and the module state could not be recorded: cannot write ",
    );
    assert!(h.vms().is_empty());
    let st = h.state_json();
    assert_eq!(st["status"], "running");
    assert_eq!(st["outputs"], previous);
    assert!(state_temps(&h).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_keeps_the_apply_error_when_its_own_summary_cannot_be_written_either() {
    let h = Harness::start().await;
    applied_pool(&h).await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    let _report = full_disk(&h, "apply_report.json", 0, None);
    let _summary = full_disk(&h, "rebuild_summary.json", 0, None);
    let e = rebuild_inner(&ctx, None).await.unwrap_err();
    // The destroy phase is named first: the apply's words are about the apply only.
    assert!(
        e.message
            .starts_with("rebuild removed the module's VMs (destroy run destroy-"),
        "{}",
        e.message
    );
    contains(
        &e.message,
        "then its apply failed: apply changed Proxmox but its evidence is incomplete: cannot write ",
    );
    contains(
        &e.message,
        "; and the rebuild's evidence is incomplete: cannot write ",
    );
    contains(&e.message, "rebuild_summary.json: No space left on device");
    assert_eq!(h.vms().len(), 3, "the apply recreated the pool");
    assert_eq!(h.state_json()["status"], "error");
}
