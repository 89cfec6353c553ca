//! Executor: applies a plan under concurrency limits, one unit per step (`steps`) retried by
//! the one retry policy on the Proxmox error table, records the journal, reads back facts for
//! the outputs, destroys provably-owned VMs and adopts existing ones (import); Ctrl-C cancels
//! through a token so every started step is journalled to its end. Around the rollout: the
//! snippet phases (before) and the SSH readiness gate (after).

pub mod engine;
pub mod executor;
pub mod import;
pub mod journal;
pub mod limits;
pub mod outputs;
pub mod readiness;
pub mod snippets;
pub mod steps;
