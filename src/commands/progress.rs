//! The apply progress display: a progress bar with the latest step per VM on a terminal,
//! plain `progress:` lines otherwise (CI logs, pipes). Part of the CLI layer.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};

use crate::apply::executor::{ProgressEvent, ProgressFn};

/// Build the progress sink for `total` VMs. `quiet` (JSON output) prints nothing.
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
        let lock = Arc::new(Mutex::new(()));
        let f: ProgressFn = Arc::new(move |ev: ProgressEvent| {
            if ev.status == "start" {
                return;
            }
            let _g = lock.lock();
            match ev.detail {
                Some(d) if ev.status != "ok" => {
                    eprintln!(
                        "progress: vm={} step={} status={} detail={}",
                        ev.vm, ev.step, ev.status, d
                    )
                }
                _ => eprintln!(
                    "progress: vm={} step={} status={}",
                    ev.vm, ev.step, ev.status
                ),
            }
        });
        (f, None)
    }
}
