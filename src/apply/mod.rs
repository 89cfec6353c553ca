//! Executor: applies a plan under concurrency limits with lock-aware retries, records the
//! journal, reads back facts for the outputs, and destroys provably-owned VMs.

pub mod engine;
pub mod executor;
pub mod journal;
pub mod limits;
pub mod outputs;
pub mod steps;
