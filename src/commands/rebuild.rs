//! `hyops-pve rebuild`: strict preflight, then destroy, then apply, with the confirmation
//! rules of hyops (`--confirm-module` must match; a y/N prompt without `--yes`) and
//! `rebuild_summary.json` in `logs/rebuild/<module_id>/<run_id>/`. Part of the CLI layer.

use std::io::{BufRead, IsTerminal};

use crate::cli::{ModuleArgs, PreflightBypass};
use crate::commands::context::{require_inputs, Ctx};
use crate::commands::module::{apply_inner, check_bypass, destroy_inner};
use crate::commands::output;
use crate::commands::{CliError, EXIT_OK};
use crate::hyops::{
    new_run_id, rebuild_dir, write_json_atomic, PreflightDecision, RebuildSummary, RunPrefix,
};
use crate::inputs::canonical_module_ref;

/// The rebuild's error `e`, also naming its record when that could not be written (`e` stays
/// the message: it says what happened to the module).
fn keeping(e: CliError, recorded: Result<(), CliError>) -> CliError {
    match recorded {
        Ok(()) => e,
        Err(w) => CliError {
            message: format!(
                "{}; and the rebuild's evidence is incomplete: {}",
                e.message, w.message
            ),
            code: e.code,
        },
    }
}

/// Ask `question` on the terminal; only `y`/`yes` continues.
fn confirm(question: &str) -> bool {
    output::write_stderr(question);
    // the question must be on the terminal before we wait for the answer
    output::flush_stderr(std::time::Duration::from_secs(2));
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

pub async fn rebuild(
    args: &ModuleArgs,
    bypass: &PreflightBypass,
    yes: bool,
    confirm_module: Option<&str>,
) -> Result<i32, CliError> {
    let module = canonical_module_ref(&args.module).map_err(|e| CliError::msg(e.to_string()))?;
    // Checked first, as upstream's `hyops rebuild` does: the reason is recorded in the
    // rebuild's, the destroy's and the apply's preflight decisions.
    let reason = check_bypass(bypass)?;
    if let Some(c) = confirm_module {
        if c.trim() != module {
            return Err(CliError::msg(format!(
                "--confirm-module mismatch; expected '{module}' but got '{c}'"
            )));
        }
    }
    require_inputs(args, &super::procenv::map()?, "rebuild")?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::msg(format!(
                "rebuild will destroy and re-apply module '{module}'; refusing without --yes because stdin is not a terminal"
            )));
        }
        if !confirm(&format!(
            "rebuild will destroy and re-apply module '{module}'. continue? [y/N]: "
        )) {
            return Err(CliError::cancelled("rebuild cancelled by the operator"));
        }
    }
    let mut ctx = Ctx::new(args).await?;
    let result = match ctx.require_existing_root() {
        Ok(()) => rebuild_inner(&ctx, reason).await,
        Err(e) => Err(e),
    };
    ctx.finish().await?;
    result
}

/// Rebuild with the checked bypass `reason` ([`check_bypass`]: `Some` skips the strict
/// preflight).
pub async fn rebuild_inner(ctx: &Ctx, reason: Option<String>) -> Result<i32, CliError> {
    let run_id = new_run_id(RunPrefix::Rebuild);
    let dir = rebuild_dir(&ctx.root, &ctx.module_ref, &run_id);
    crate::hyops::evidence::create_evidence_dir(&dir).map_err(CliError::hyops)?;
    output::progress(&format!("run record: {}", dir.display()));
    output::set_run(&run_id, &dir);
    let mut summary = RebuildSummary::new(&run_id, &ctx.module_ref);
    let mut decision = PreflightDecision::new("rebuild", reason.as_deref());
    let write_summary = |s: &RebuildSummary| {
        output::field(
            "rebuild",
            serde_json::to_value(s).unwrap_or(serde_json::Value::Null),
        );
        s.write(&dir).map(|_| ()).map_err(CliError::hyops)
    };

    // 1. strict preflight (unless bypassed with a reason)
    if reason.is_none() {
        let pre = crate::commands::module::preflight_for_rebuild(ctx).await;
        match pre {
            Ok(()) => {
                summary.phase("preflight", "ok", 0);
                decision.complete(true, None);
            }
            Err(e) => {
                summary.phase("preflight", "error", e.code);
                summary.status = "error".into();
                decision.complete(false, Some(&e.message));
                let recorded = decision
                    .write(&dir)
                    .map(|_| ())
                    .map_err(CliError::hyops)
                    .and(write_summary(&summary));
                return Err(keeping(
                    CliError::msg(format!("preflight failed: {}", e.message)),
                    recorded,
                ));
            }
        }
    } else {
        summary.phase("preflight", "skipped", 0);
        decision.complete(true, Some("bypassed by operator"));
    }
    // nothing has changed yet: a decision that cannot be recorded stops the rebuild here
    decision.write(&dir).map_err(CliError::hyops)?;
    // 2. destroy
    let destroy_run = match destroy_inner(ctx, reason.clone()).await {
        Ok(run_id) => {
            summary.phase("destroy", "ok", 0);
            run_id
        }
        Err(e) => {
            summary.phase("destroy", "error", e.code);
            summary.status = "error".into();
            let recorded = write_summary(&summary);
            return Err(keeping(e, recorded));
        }
    };
    // 3. apply
    match apply_inner(ctx, reason, None).await {
        Ok(_) => summary.phase("apply", "ok", 0),
        Err(e) => {
            summary.phase("apply", "error", e.code);
            summary.status = "error".into();
            let recorded = write_summary(&summary);
            // The apply's own words ("no VM was changed") are about the apply: the destroy
            // before it did remove the VMs, which the operator must hear first.
            let e = CliError {
                message: format!(
                    "rebuild removed the module's VMs (destroy run {destroy_run}), then its apply failed: {}. Fix the cause, then run apply (or rebuild) again: it creates what is missing",
                    e.message
                ),
                code: e.code,
            };
            return Err(keeping(e, recorded));
        }
    }
    summary.status = "ok".into();
    let recorded = write_summary(&summary).and(
        write_json_atomic(
            &dir.join("meta.json"),
            &serde_json::json!({"command": "rebuild", "run_id": run_id, "module_ref": ctx.module_ref.as_str()}),
        )
        .map_err(CliError::hyops),
    );
    if let Err(e) = recorded {
        // The destroy and the apply recorded their states; only the rebuild's record is
        // missing.
        return Err(CliError::msg(format!(
            "rebuild ok (destroy and apply recorded the module state), but its evidence is incomplete: {}",
            e.message
        )));
    }
    output::result_line(&format!("rebuild ok: {}", ctx.module_ref.as_str()));
    Ok(EXIT_OK)
}
