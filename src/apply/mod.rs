//! Executor: applies a plan under concurrency limits with lock-aware retries, records the
//! journal, reads back facts for the outputs, destroys provably-owned VMs and adopts existing
//! ones (import).

pub mod engine;
pub mod executor;
pub mod import;
pub mod journal;
pub mod limits;
pub mod outputs;
