//! Executor: applies a plan under concurrency limits with lock-aware retries, records the
//! journal, reads back facts for the outputs, and destroys provably-owned VMs; around the
//! rollout, the snippet phases (before) and the SSH readiness gate (after).

pub mod engine;
pub mod executor;
pub mod journal;
pub mod limits;
pub mod outputs;
pub mod readiness;
pub mod snippets;
