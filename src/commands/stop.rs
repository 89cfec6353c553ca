//! A stop request for one run: SIGINT (Ctrl-C) or SIGTERM (a CI job cancelled, `timeout`,
//! systemd, the HyOps plug-in stopping `hyops-pve driver`), watched from the run's start to
//! its end, so a signal in any phase (preflight, observing Proxmox, the rollout, the
//! readiness gate) is seen instead of killing the process with the state left `running` or,
//! in driver mode, with no result document. Used by the CLI commands and the driver mode
//! alike, through the shared phases ([`super::phases`]).
//!
//! It knows nothing of what a phase does: a phase either races the request
//! ([`Stop::race`], for work that changes nothing or is safe to abandon) or hands it to the
//! executor's cancellation (see `phases::run_cancellable`).

use std::sync::{Arc, OnceLock};

use crate::retry::CancellationToken;

/// A stop request for one run. Once watched, a signal no longer ends the process by itself
/// (tokio keeps its handler for the process' lifetime): every phase of the run must race
/// [`Stop::requested`].
pub struct Stop {
    token: CancellationToken,
    signal: Arc<OnceLock<&'static str>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Stop {
    /// Start watching SIGINT and SIGTERM (inside the async runtime).
    pub fn watch() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let token = CancellationToken::new();
        let which = Arc::new(OnceLock::new());
        let (t, w) = (token.clone(), which.clone());
        // Registered here, before the task runs: a signal right after `watch` is not lost.
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        let watcher = tokio::spawn(async move {
            let (Ok(mut int), Ok(mut term)) = (int, term) else {
                // Signals cannot be watched: the default dispositions (terminate) stay.
                return;
            };
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            let _ = w.set(name);
            t.cancel();
        });
        Stop {
            token,
            signal: which,
            watcher: Some(watcher),
        }
    }

    /// A stop request that only [`Stop::request`] fires (no signal handler installed): for
    /// embedders that run the engine inside their own process and own its signals.
    pub fn manual() -> Self {
        Stop {
            token: CancellationToken::new(),
            signal: Arc::new(OnceLock::new()),
            watcher: None,
        }
    }

    /// Request a stop by hand, named `name` in the messages (e.g. `"SIGTERM"`).
    pub fn request(&self, name: &'static str) {
        let _ = self.signal.set(name);
        self.token.cancel();
    }

    /// The signal that requested a stop, if one did.
    pub fn requested_by(&self) -> Option<&'static str> {
        self.token
            .is_cancelled()
            .then(|| self.signal.get().copied().unwrap_or("SIGINT"))
    }

    /// Resolves once a stop was requested; names the signal.
    pub async fn requested(&self) -> &'static str {
        self.token.cancelled().await;
        self.signal.get().copied().unwrap_or("SIGINT")
    }

    /// Run `work` unless a stop comes first (then `work` is dropped: only for phases that
    /// change nothing, or whose every write is safe to abandon). A stop requested before
    /// the call wins at once.
    pub async fn race<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, &'static str> {
        tokio::select! {
            biased;
            sig = self.requested() => Err(sig),
            r = work => Ok(r),
        }
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}
