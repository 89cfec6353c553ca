//! The CLI layer's commands: they resolve the runtime root, call the engine and own every
//! HyOps state write (the engine returns driver-shaped results). Output lines and exit codes
//! follow hyops: `run record: <dir>`, `progress: phase=…`, `ERR: …`; 0 ok, 1 error, 130
//! cancelled, and `plan --detailed-exitcode` 2 for changes.

pub mod context;
pub mod ipam;
pub mod module;
pub mod netbox_sync;
pub mod progress;
pub mod rebuild;
pub mod simroot;

use crate::cli::{Cli, Command, SimAction, StateAction};
use crate::hyops::HyopsError;

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_CHANGES: i32 = 2;
pub const EXIT_CANCELLED: i32 = 130;

/// A command failure: one human message (already carrying the context an operator needs).
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl CliError {
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: EXIT_ERROR,
        }
    }
    pub fn hyops(e: HyopsError) -> Self {
        Self::msg(e.to_string())
    }
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: EXIT_CANCELLED,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn init_tracing(verbose: bool) {
    let filter = if verbose {
        "hyops_pve=debug"
    } else {
        "hyops_pve=warn"
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HYOPS_PVE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Run a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    let verbose = match &cli.command {
        Command::Preflight { module, .. }
        | Command::Validate { module }
        | Command::Plan { module, .. }
        | Command::Apply { module, .. }
        | Command::Destroy { module, .. }
        | Command::Rebuild { module, .. } => module.verbose,
        _ => false,
    };
    init_tracing(verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ERR: cannot start the async runtime: {e}");
            return EXIT_ERROR;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ERR: {}", e.message);
            e.code
        }
    }
}

async fn dispatch(cli: Cli) -> Result<i32, CliError> {
    match cli.command {
        Command::Preflight { module, strict } => module::preflight(&module, strict).await,
        Command::Validate { module } => module::validate(&module).await,
        Command::Plan {
            module,
            detailed_exitcode,
            out,
        } => module::plan(&module, detailed_exitcode, out.as_deref()).await,
        Command::Apply {
            module,
            bypass,
            plan,
        } => module::apply(&module, &bypass, plan.as_deref()).await,
        Command::Destroy { module, bypass } => module::destroy(&module, &bypass).await,
        Command::Rebuild {
            module,
            bypass,
            yes,
            confirm_module,
        } => rebuild::rebuild(&module, &bypass, yes, confirm_module.as_deref()).await,
        Command::State {
            action: StateAction::Show { module },
        } => module::state_show(&module).await,
        Command::Version => {
            println!("hyops-pve {}", env!("CARGO_PKG_VERSION"));
            println!("module: platform/onprem/platform-vm");
            println!(
                "driver: {} profile: {} pack: {}",
                crate::hyops::DRIVER_REF,
                crate::hyops::PROFILE,
                crate::hyops::PACK_ID
            );
            Ok(EXIT_OK)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "hyops-pve", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
        Command::Sim {
            action:
                SimAction::Serve {
                    listen,
                    cluster,
                    time_scale,
                    seed,
                    state,
                },
        } => {
            let listen = listen.parse().map_err(|e| {
                CliError::msg(format!("--listen {listen:?} is not an address:port: {e}"))
            })?;
            if !is_loopback(&listen) {
                eprintln!("warning: the simulator is listening on a non-loopback address {listen}");
            }
            let opts = crate::sim::ServeOptions {
                listen,
                cluster_file: cluster,
                time_scale,
                seed,
                state_file: state,
                ca_pem_path: None,
                tls: true,
            };
            crate::sim::serve(opts)
                .await
                .map_err(|e| CliError::msg(e.to_string()))?;
            Ok(EXIT_OK)
        }
    }
}

fn is_loopback(addr: &std::net::SocketAddr) -> bool {
    addr.ip().is_loopback()
}
