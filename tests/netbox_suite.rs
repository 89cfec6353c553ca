//! The NetBox suite: one set of allocator and sync tests (`netbox_suite/cases.rs`) run
//! against every NetBox this machine has:
//!
//! * `embedded::*` the simulator's NetBox (`hyops_pve::sim::netbox`), always;
//! * `real::*` a real NetBox 4.7.3 when `HYOPS_TEST_NETBOX_URL`/`_TOKEN` are set
//!   (`tests/netbox/testbed.sh`; CI sets `HYOPS_REQUIRE_NETBOX=1`, elsewhere it says
//!   `SKIPPED real NetBox 4.7.3`).
//!
//! A difference between the two is a bug in the embedded NetBox: fix it there.

pub mod cases;
pub mod targets;

use targets::Kind;

macro_rules! netbox_tests {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::netbox_suite::targets::run(crate::netbox_suite::Kind::Embedded, stringify!($case),
                        |t| Box::pin(crate::netbox_suite::cases::$case(t))).await;
                }
            )*
        }
        mod real {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::netbox_suite::targets::run(crate::netbox_suite::Kind::Real, stringify!($case),
                        |t| Box::pin(crate::netbox_suite::cases::$case(t))).await;
                }
            )*
        }
    };
}

netbox_tests!(
    ordered_allocation_on_a_fresh_range,
    reuse_on_reapply_makes_no_netbox_writes,
    preview_of_a_fresh_nic_says_allocate_first_free_and_writes_nothing,
    sixteen_concurrent_allocations_fill_a_16_host_range_then_report_exhaustion,
    two_runs_allocating_the_same_identity_end_with_one_record_and_one_address,
    a_lost_reply_does_not_leak_a_record,
    hosts_published_by_other_slots_but_unknown_to_netbox_are_skipped,
    a_short_pool_allocates_in_order_and_names_the_first_nic_that_did_not_fit,
    a_range_created_the_upstream_way_is_adopted_and_its_mask_fixed_once,
    explicit_addresses_get_the_ownership_checks_and_messages,
    sync_creates_vm_interface_ip_and_primary_and_a_second_sync_writes_nothing,
    sync_uses_the_configured_address_and_never_touches_another_slots_vms,
    soft_retire_then_reapply_gives_the_same_addresses,
    hard_delete_removes_the_vm_and_keeps_the_reservation,
    a_rebuild_that_swapped_vmids_keeps_each_netbox_vm_by_name,
    concurrent_syncs_into_one_new_cluster_keep_every_vm_findable,
    a_renamed_vm_keeps_its_netbox_record_and_an_equal_vmid_elsewhere_is_not_taken,
);
