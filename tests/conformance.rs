//! Conformance suite: one set of test bodies (`conformance/cases.rs`), written once against a
//! target context (`conformance/targets.rs`), run against every Proxmox the machine can reach:
//!
//! * `sim::*`      the in-process simulator (`hyops_pve::sim`), always;
//! * `fakepve::*`  fakepve 0.5.0 (PyPI) through `tests/fakepve/launch.py`, when python3 can
//!   import it (`HYOPS_REQUIRE_FAKEPVE=1` turns "cannot" into a failure);
//! * `real_pve::*` a real cluster when `HYOPS_TEST_PVE_URL`, `HYOPS_TEST_PVE_TOKEN`,
//!   `HYOPS_TEST_PVE_NODE` and `HYOPS_TEST_PVE_TEMPLATE` are set (see docs/conformance.md).
//!
//! A target that is not available prints one `SKIPPED <target>: <why>` line on stderr and its
//! tests pass without running. Known divergences of a target are `Capabilities` flags, each
//! with the observation that justifies it; only those assertions are skipped for that target.
//! This file only wires names to bodies; it knows nothing about Proxmox itself.

mod conformance {
    pub mod cases;
    pub mod targets;
}

use conformance::targets::Kind;

/// For each case name, one test per target kind, each named `<target>::<case>`.
macro_rules! conformance_tests {
    ($($case:ident),* $(,)?) => {
        mod sim {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::conformance::targets::run(
                        crate::Kind::Sim,
                        stringify!($case),
                        |t| Box::pin(crate::conformance::cases::$case(t)),
                    )
                    .await;
                }
            )*
        }
        mod fakepve {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::conformance::targets::run(
                        crate::Kind::FakePve,
                        stringify!($case),
                        |t| Box::pin(crate::conformance::cases::$case(t)),
                    )
                    .await;
                }
            )*
        }
        mod real_pve {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::conformance::targets::run(
                        crate::Kind::RealPve,
                        stringify!($case),
                        |t| Box::pin(crate::conformance::cases::$case(t)),
                    )
                    .await;
                }
            )*
        }
    };
}

conformance_tests!(
    version_reports_a_pve_release,
    nextid_returns_a_free_id,
    nextid_refuses_a_taken_id,
    clone_configure_resize_start_stop_delete_lifecycle,
    shrink_fails_inside_its_task,
    start_of_a_running_vm_is_classified_already_running,
    call_on_a_vm_under_clone_lock_is_classified_locked,
    concurrent_clones_of_one_stopped_template_all_succeed,
    racing_allocations_get_distinct_ids_and_adopt_no_foreign_vm,
    shutdown_of_a_stopped_vm_is_not_an_http_error,
    every_request_passed_the_simulators_spec_check,
);
