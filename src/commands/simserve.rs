//! `hyops-pve sim serve`: the simulator as a standalone HTTPS server until Ctrl-C (or SIGTERM). Prints how
//! to reach it (human lines, or the `--json` envelope once listening), writes its CA PEM to
//! `--ca-pem` or a private per-run directory that is removed on exit, and saves the cluster
//! state on exit; `--hyops-root DIR` also makes DIR a ready HyOps runtime root for it (refused
//! unless DIR is new, empty or already a simulator root, and outside `~/.hybridops`). Part
//! of the CLI layer; the simulator itself lives in [`crate::sim`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use crate::commands::simroot::SimRootUse;

use crate::commands::output;
use crate::commands::{CliError, EXIT_OK};
use crate::sim::{describe, finish_serving, private_temp_dir, start_serving, ServeOptions};

#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listen: &str,
    cluster: Option<PathBuf>,
    time_scale: f64,
    seed: u64,
    state: Option<PathBuf>,
    faults: Option<PathBuf>,
    ca_pem: Option<PathBuf>,
    hyops_root: Option<PathBuf>,
) -> Result<i32, CliError> {
    let listen = listen
        .parse()
        .map_err(|e| CliError::msg(format!("--listen {listen:?} is not an address:port: {e}")))?;
    if !std::net::SocketAddr::ip(&listen).is_loopback() {
        output::warn(&format!(
            "the simulator is listening on a non-loopback address {listen}"
        ));
    }
    let faults = match &faults {
        Some(f) => crate::sim::FaultPlan::from_file(f).map_err(|e| CliError::msg(e.to_string()))?,
        None => crate::sim::FaultPlan::default(),
    };
    if !faults.rules.is_empty() {
        output::progress(&format!(
            "fault injection: {} rule(s), seed {}",
            faults.rules.len(),
            faults.seed.unwrap_or(seed)
        ));
    }
    // `--hyops-root` gets the simulator's credentials and template state: refused, before
    // anything is written or served, unless it is new, empty or already a simulator root.
    if let Some(root) = &hyops_root {
        super::simroot::check_sim_root(root, SimRootUse::ServeHyopsRoot)?;
        // A HOME that is not UTF-8 is refused by name (procenv), never taken as unset: the
        // guard against ~/.hybridops would be skipped without a word.
        let home: BTreeMap<String, String> = super::procenv::var("HOME")?
            .map(|h| ("HOME".to_string(), h))
            .into_iter()
            .collect();
        super::simroot::refuse_real_envs_tree(root, &home, SimRootUse::ServeHyopsRoot)?;
        super::simroot::mark_sim_root(root)?;
    }
    // A saved state is served by one simulator at a time.
    let _state_lock = match &state {
        Some(p) => Some(super::simroot::lock_sim_state(
            p,
            std::time::Duration::ZERO,
        )?),
        None => None,
    };
    // The per-run directory is ours to remove; an operator's --ca-pem is left in place.
    let temp_dir = match &ca_pem {
        Some(_) => None,
        None => Some(private_temp_dir().map_err(|e| CliError::msg(e.to_string()))?),
    };
    let ca_pem_path = ca_pem.or_else(|| temp_dir.as_ref().map(|d| d.join("ca.pem")));
    let opts = ServeOptions {
        listen,
        cluster_file: cluster,
        time_scale,
        seed,
        state_file: state,
        ca_pem_path,
        tls: true,
        faults,
    };
    let outcome = serve_until_ctrl_c(&opts, hyops_root.as_deref()).await;
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    outcome
}

async fn serve_until_ctrl_c(
    opts: &ServeOptions,
    hyops_root: Option<&std::path::Path>,
) -> Result<i32, CliError> {
    // Registered before anything is printed: a client that reads the banner and signals at
    // once must find the handler in place (SIGINT and SIGTERM both stop and save).
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| CliError::msg(format!("cannot watch SIGINT: {e}")))?;
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| CliError::msg(format!("cannot watch SIGTERM: {e}")))?;
    let (handle, ca_path) = start_serving(opts)
        .await
        .map_err(|e| CliError::msg(format!("cannot start the simulator: {e}")))?;
    {
        // The state guard is a std mutex: released before the await below.
        let st = handle.state();
        output::field("url", json!(handle.url()));
        output::field("authorization", json!(handle.token_header()));
        output::field("token_id", json!(handle.token_id));
        output::field(
            "ca_fingerprint_sha256",
            json!(handle.ca_fingerprint_colon.clone()),
        );
        output::field("ca_pem", json!(ca_path.display().to_string()));
        output::field("nodes", json!(st.cluster.nodes));
        output::field(
            "templates",
            json!(st
                .vms
                .values()
                .filter(|v| v.is_template())
                .map(|v| json!({"vmid": v.vmid, "name": v.name(), "node": v.node}))
                .collect::<Vec<_>>()),
        );
    }
    if let Some(root) = hyops_root {
        // A ready HyOps runtime root for this simulator (`hyops apply --root DIR`).
        super::simroot::write_sim_root(root, &handle)?;
        output::field("hyops_root", json!(root.display().to_string()));
    }
    output::result_line(&describe(&handle, &ca_path));
    if let Some(root) = hyops_root {
        output::result_line(&format!("HyOps runtime root ready: {}", root.display()));
    }
    output::print_envelope_now("sim serve");
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    finish_serving(&handle, opts)
        .await
        .map_err(|e| CliError::msg(format!("cannot save the simulator state: {e}")))?;
    Ok(EXIT_OK)
}
