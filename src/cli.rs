//! The command line surface (clap). Declares the flags and hands each command to
//! [`crate::commands`], which also renders clap's help and usage errors (exit 64, never 2).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Flags shared by the module commands (contract §6.1).
#[derive(Args, Debug, Clone, Default)]
pub struct ModuleArgs {
    /// HyOps env (runtime root `~/.hybridops/envs/<env>`); falls back to HYOPS_ENV.
    #[arg(long, conflicts_with = "root")]
    pub env: Option<String>,
    /// Runtime root directory; falls back to HYOPS_RUNTIME_ROOT.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Module ref (dots accepted for slashes). Only platform/onprem/platform-vm is supported.
    #[arg(long, default_value = "platform/onprem/platform-vm")]
    pub module: String,
    /// Modules tree (accepted for hyops compatibility; hyops-pve carries the module spec).
    #[arg(long)]
    pub module_root: Option<PathBuf>,
    /// Operator input overlay (YAML).
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    /// State slot `instances/<name>.json` instead of `latest.json`.
    #[arg(long)]
    pub state_instance: Option<String>,
    /// Evidence root: runs go to <out-dir>/module/<module_id>/<run_id>/.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Use the built-in Proxmox simulator and its own runtime root (never a real env's root).
    #[arg(long)]
    pub sim: bool,
    /// Simulator cluster description (YAML), with --sim.
    #[arg(long, requires = "sim")]
    pub sim_cluster: Option<PathBuf>,
    /// Fault file (YAML) for the built-in simulator, with --sim (see README "Fault injection").
    #[arg(long, requires = "sim")]
    pub sim_faults: Option<PathBuf>,
    /// Print one JSON document (the envelope, docs/schemas/cli-envelope.schema.json) on
    /// stdout, on success and on failure; stderr is unchanged.
    #[arg(long)]
    pub json: bool,
    /// Max concurrent VM operations overall (overrides inputs.limits.global).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Max concurrent operations per Proxmox node.
    #[arg(long)]
    pub max_per_node: Option<usize>,
    /// Max concurrent allocations per storage.
    #[arg(long)]
    pub max_per_storage: Option<usize>,
    /// Seconds to wait for another run holding this module slot's lock.
    #[arg(long, default_value_t = 30)]
    pub lock_wait_s: u64,
    /// Verbose logs on stderr (secrets are never logged).
    #[arg(short, long)]
    pub verbose: bool,
}

/// Preflight bypass flags of mutating commands.
#[derive(Args, Debug, Clone, Default)]
pub struct PreflightBypass {
    /// Skip the preflight phase (needs --preflight-bypass-reason).
    #[arg(long)]
    pub skip_preflight: bool,
    /// Why preflight is skipped (single printable line, at most 500 characters).
    #[arg(long)]
    pub preflight_bypass_reason: Option<String>,
}

#[derive(Parser, Debug)]
#[command(
    name = "hyops-pve",
    version,
    about = "Native Proxmox VE engine for HybridOps platform/onprem/platform-vm",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Checks before a mutating run: disk, credentials, template, guards, Proxmox reachability.
    Preflight {
        #[command(flatten)]
        module: ModuleArgs,
        /// Every check is mandatory.
        #[arg(long)]
        strict: bool,
    },
    /// Resolve and validate the inputs; print the resolved model.
    Validate {
        #[command(flatten)]
        module: ModuleArgs,
    },
    /// Diff the desired pool against Proxmox and save plan.json.
    Plan {
        #[command(flatten)]
        module: ModuleArgs,
        /// Exit 0 when there are no changes, 2 when there are, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Also write the plan artifact to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Create or converge the VM pool.
    #[command(visible_alias = "deploy")]
    Apply {
        #[command(flatten)]
        module: ModuleArgs,
        #[command(flatten)]
        bypass: PreflightBypass,
        /// Apply this saved plan, only if Proxmox still matches it.
        #[arg(long)]
        plan: Option<PathBuf>,
    },
    /// Remove every VM this module slot provably owns.
    Destroy {
        #[command(flatten)]
        module: ModuleArgs,
        #[command(flatten)]
        bypass: PreflightBypass,
    },
    /// Preflight (strict), destroy, then apply.
    Rebuild {
        #[command(flatten)]
        module: ModuleArgs,
        #[command(flatten)]
        bypass: PreflightBypass,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Must equal the module ref.
        #[arg(long)]
        confirm_module: Option<String>,
    },
    /// HyOps driver mode: read one driver request (JSON, contract §6.3) from stdin or
    /// --request, run it, print one result document on stdout. Used by the hyops plug-in
    /// `iac/proxmox-native`; hyops owns the module state.
    Driver {
        /// Read the request from this file instead of stdin.
        #[arg(long)]
        request: Option<PathBuf>,
    },
    /// Write a HyOps modules tree whose platform/onprem/platform-vm/spec.yml selects the
    /// iac/proxmox-native driver; point `hyops --module-root` (or HYOPS_CORE_ROOT) at it.
    HyopsSetup {
        /// The modules tree to write (e.g. ~/.hyops-pve/modules).
        #[arg(long)]
        module_root: PathBuf,
        /// Also link every other module of this existing tree (e.g. hybridops-core/modules),
        /// so one tree serves all modules.
        #[arg(long)]
        link_modules: Option<PathBuf>,
        /// Replace a platform-vm spec.yml that hyops-pve did not write.
        #[arg(long)]
        force: bool,
    },
    /// Module state.
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// Print version information.
    Version {
        /// Print the envelope (JSON) instead.
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The Proxmox VE simulator.
    Sim {
        #[command(subcommand)]
        action: SimAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum StateAction {
    /// Print the module state (latest.json or the instance file). Reads only; never starts
    /// the simulator, never creates a directory.
    Show {
        #[command(flatten)]
        args: StateShowArgs,
    },
}

/// The flags of `state show`: which root, module and slot to read.
#[derive(Args, Debug, Clone)]
pub struct StateShowArgs {
    /// HyOps env (runtime root `~/.hybridops/envs/<env>`); falls back to HYOPS_ENV.
    #[arg(long, conflicts_with = "root")]
    pub env: Option<String>,
    /// Runtime root directory; falls back to HYOPS_RUNTIME_ROOT.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Module ref (dots accepted for slashes).
    #[arg(long, default_value = "platform/onprem/platform-vm")]
    pub module: String,
    /// State slot `instances/<name>.json` instead of `latest.json`.
    #[arg(long)]
    pub state_instance: Option<String>,
    /// Read the simulator's own root for --env (`--sim` runs write there); the simulator is
    /// not started.
    #[arg(long, conflicts_with = "root")]
    pub sim: bool,
    /// Print the envelope (JSON) with the state under `state`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum SimAction {
    /// Serve the simulator over HTTPS until Ctrl-C.
    Serve {
        /// Address to bind (loopback by default).
        #[arg(long, default_value = "127.0.0.1:8006")]
        listen: String,
        /// Cluster description (YAML); default: the built-in cluster.
        #[arg(long)]
        cluster: Option<PathBuf>,
        /// Real seconds per simulated second (0.01 = 100x faster).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// Seed for MACs and fault rates.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Load and save the cluster state here (locked while serving).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Fault file (YAML): injected errors, resets, lost replies, … (README "Fault injection").
        #[arg(long)]
        faults: Option<PathBuf>,
        /// Write the CA certificate (PEM) here; default: a private temporary directory,
        /// removed when the simulator stops.
        #[arg(long)]
        ca_pem: Option<PathBuf>,
        /// Print the connection details as one JSON document (the envelope) once listening.
        #[arg(long)]
        json: bool,
        /// Also make DIR a ready HyOps runtime root for this simulator (credentials with the
        /// certificate pinned, the template-image state), e.g. for `hyops apply --root DIR`.
        #[arg(long)]
        hyops_root: Option<PathBuf>,
    },
}

/// Parse the process arguments and run; returns the process exit code. Sets the process's
/// heap up first ([`crate::commands::heap`]): call it from `main` only.
pub fn main_entry() -> i32 {
    crate::commands::heap::one_malloc_arena();
    crate::commands::run_args(std::env::args_os())
}
