//! The HyOps runtime root: paths, run ids, evidence, module state, the driver protocol,
//! template resolution, VM-set guards, credentials, the runtime vault, NetBox env
//! hydration, the run lock, the detach record and API-free preflight checks. Takes plain values (module refs,
//! instances, logical keys, `serde_json::Value` outputs); knows nothing about Proxmox API
//! calls or the planner.
//!
//! Typical apply sequence for the caller (CLI / executor):
//! 1. [`RuntimeRoot::resolve`], [`ModuleRef::parse`], [`StateInstance::parse_opt`].
//! 2. `run_id = new_run_id(RunPrefix::for_command(cmd)?)`; `ev = evidence_dir(..)`;
//!    [`acquire_lock`] for the slot (hold the guard for the whole run).
//! 3. [`write_meta`], [`PreflightDecision::new`]`.write(&ev)`, [`write_inputs_resolved`].
//! 4. Vault: [`password_source`] → [`read_password`] → [`read_vault_env`];
//!    [`load_proxmox_credentials`]; [`run_preflight_checks`].
//! 5. Planner-side contract steps use [`BUILD_IMAGE_UNSUPPORTED`], [`check_vm_set_guards`]
//!    (its `deletion_only_shrink` turns [`template_absent_error`] into
//!    [`template_missing_in_shrink_warning`]), [`resolve_template`] and
//!    [`read_tfstate_vms`] for adoption.
//! 6. Before mutating: [`write_rerun_inputs`] (already sanitised inputs), then
//!    [`ModuleState::persist_running`] — abort the run if it fails (it also sets aside the
//!    room for the run's final record, so a disk the run fills cannot keep it unwritten).
//! 7. After: [`publish_outputs`] → [`ModuleState::persist_ok`], or
//!    [`ModuleState::persist_error`] on a failed mutation (a failed preflight and a failed
//!    destroy leave the state untouched); [`ModuleState::persist_destroyed`] after destroy;
//!    [`write_module_state_record`]; [`write_driver_result`].

pub mod claims;
pub mod contract;
pub mod credentials;
pub mod detached;
pub mod error;
pub mod evidence;
pub mod fsio;
pub mod guards;
pub mod lock;
pub mod modspec;
pub mod netbox_env;
pub mod paths;
pub mod preflight;
pub mod protocol;
pub mod runid;
pub mod sdn;
pub mod seed;
pub mod state;
pub mod state_refs;
pub mod template;
pub mod vault;

pub use contract::{
    py_list, template_absent_error, template_missing_in_shrink_warning,
    template_not_a_template_error, template_probe_skipped, template_source_hint,
    BUILD_IMAGE_UNSUPPORTED, DRIVER_REF, MODULE_REF, PACK_ID, PROFILE, PUBLISH_KEYS,
    REQUIRED_CREDENTIALS, STATE_DIR_REQUIRED, TEMPLATE_KEY_IGNORED,
    TEMPLATE_PROBE_SKIPPED_NO_CREDENTIALS,
};
pub use credentials::{
    load_proxmox_credentials, parse_tfvars, parse_tfvars_noting, read_proxmox_ready,
    ProxmoxCredentials, ProxmoxReady, TlsPolicy, UnclosedValue,
};
pub use detached::{DetachedVm, DetachedVms};
pub use error::{HyopsError, Result};
pub use evidence::{
    evidence_dir, rebuild_dir, write_cli_result, write_driver_result, write_inputs_resolved,
    write_meta, write_resolved_inputs_yaml, EvidenceFailure, EvidenceFailures, PreflightDecision,
    RebuildSummary,
};
pub use fsio::{
    append_jsonl, render_json, sort_keys, write_json_atomic, write_json_atomic_ser,
    write_text_atomic, Sorted, SortedMap, SortedSlice, SortedWith,
};
pub use guards::{check_vm_set_guards, GuardOutcome};
pub use lock::{
    acquire as acquire_lock, acquire_subject as acquire_lock_file, force_unlock, LockHolder,
    RunLock, UnlockAction, Unlocked,
};
pub use netbox_env::{hydrate_netbox_env, netbox_authority_root, netbox_ready, NetboxEnv};
pub use paths::{
    check_env_name, module_id, slot_name, ModuleRef, RootSource, RuntimeRoot, StateInstance,
};
pub use preflight::{run_preflight_checks, PreflightCheck, PreflightOptions, PreflightReport};
pub use protocol::{DriverIdentity, DriverRequest, DriverResult, ResultStatus};
pub use runid::{new_run_id, RunPrefix};
pub use seed::{seed_ready_root, ReadyRootSeed};
pub use state::{
    build_input_contract, driver_outputs, publish_outputs, publish_outputs_owned, read_tfstate_vms,
    write_module_state_record, write_module_state_record_of, write_rerun_inputs, ModuleState,
    OkRecord, RunningRecord, TfstateVm,
};
pub use template::{pick_template_id, resolve_template};
pub use vault::{password_source, read_password, read_vault_env, PasswordSource};
