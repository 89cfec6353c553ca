//! The apply progress display: a progress bar with the latest step per VM on a terminal,
//! plain `progress:` lines otherwise (CI logs, pipes). Part of the CLI layer.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};

use crate::apply::executor::{ProgressEvent, ProgressFn};
use crate::commands::output;

/// Build the progress sink for `total` VMs. `quiet` prints nothing (callers pass `false`:
/// progress goes to stderr in every mode, `--json` included).
pub fn progress_for(total: usize, quiet: bool) -> (ProgressFn, Option<ProgressBar>) {
    if quiet {
        return (Arc::new(|_ev: ProgressEvent| {}), None);
    }
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total as u64);
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} VMs  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let b = bar.clone();
        let f: ProgressFn = Arc::new(move |ev: ProgressEvent| {
            if ev.step == "done" {
                b.inc(1);
                if ev.status != "ok" {
                    b.println(format!("✗ {}: {}", ev.vm, ev.detail.unwrap_or_default()));
                }
            } else if ev.status == "retry" {
                b.set_message(format!("{} {} retrying", ev.vm, ev.step));
            } else {
                b.set_message(format!("{} {} {}", ev.vm, ev.step, ev.status));
            }
        });
        (f, Some(bar))
    } else {
        // The last error shown per VM (its kind: numbers and UPIDs aside): a VM's error is
        // printed once, however many retries (each with a new VMID and UPID) and the final
        // `done` line repeat it.
        let shown: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let f: ProgressFn = Arc::new(move |ev: ProgressEvent| {
            if ev.status == "start" {
                return;
            }
            let mut shown = shown.lock().unwrap_or_else(|p| p.into_inner());
            // The failing step's own line only says which step failed; `retry` and `done`
            // lines carry the error.
            let detail = ev
                .detail
                .filter(|_| ev.step == "done" || ev.status == "retry")
                .filter(|_| ev.status != "ok")
                .map(|d| one_line(&d));
            let suffix = match detail {
                // The final `done` line wraps the last retry's error in its step context.
                Some(d)
                    if shown
                        .get(&ev.vm)
                        .is_some_and(|k| same_kind(&d).contains(k.as_str())) =>
                {
                    " detail=(as above)".to_string()
                }
                Some(d) => {
                    shown.insert(ev.vm.clone(), same_kind(&d));
                    format!(" detail={d}")
                }
                None => String::new(),
            };
            output::progress(&format!(
                "progress: vm={} step={} status={}{suffix}",
                ev.vm, ev.step, ev.status
            ));
        });
        (f, None)
    }
}

/// A multi-line error (e.g. with a task log tail) as one progress line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// An error with its numbers and UPIDs blanked: two retries of one failure compare equal.
fn same_kind(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(' ') {
        if word.starts_with("UPID:") {
            out.push_str("UPID");
        } else {
            let mut digits = false;
            for c in word.chars() {
                if c.is_ascii_digit() {
                    if !digits {
                        out.push('#');
                    }
                    digits = true;
                } else {
                    digits = false;
                    out.push(c);
                }
            }
        }
        out.push(' ');
    }
    out
}
