//! Race-safe VMID allocation for clones (API notes §5): pick a candidate, confirm it with
//! `nextid?vmid=X`, clone, and on "id taken" (sync or task error) move to the next candidate.
//! An existing VM is only ever adopted when its config proves it is ours. Within one process,
//! id choice and clone submission are serialised and submitted ids are never reused.
//! Knows nothing about HyOps.

use std::ops::RangeInclusive;

use super::client::PveClient;
use super::error::{ErrorClass, PveError, PveResult};
use super::types::{CloneParams, TaskOutcome, VmConfig, WaitOptions};
use super::upid::Upid;

/// How to recognise a VM that is already ours.
pub enum Ownership<'a> {
    /// The VM's `description` contains this marker (non-empty).
    Marker(&'a str),
    /// A caller-supplied predicate over the VM config.
    Check(&'a (dyn Fn(&VmConfig) -> bool + Send + Sync)),
}

impl Ownership<'_> {
    fn owns(&self, c: &VmConfig) -> bool {
        match self {
            Ownership::Marker(m) => c.description_contains(m),
            Ownership::Check(f) => f(c),
        }
    }
}

/// A clone request whose target VMID the client chooses.
pub struct AllocateRequest<'a> {
    /// Node that owns the template.
    pub node: &'a str,
    /// The template (source) VMID.
    pub template_vmid: u32,
    /// Clone parameters; `newid` is ignored.
    pub params: &'a CloneParams,
    /// How to tell that an existing VM is ours.
    pub ownership: Ownership<'a>,
    /// First candidate to try (else `/cluster/nextid`).
    pub start_hint: Option<u32>,
    /// Only allocate ids in this range.
    pub range: Option<RangeInclusive<u32>>,
    /// Clone submissions to try before giving up.
    pub max_attempts: u32,
    /// Wait for the clone task (so task-level id conflicts are retried too); `None` returns
    /// right after submission.
    pub wait: Option<WaitOptions>,
}

/// What the allocation ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloneAllocation {
    /// Clone submitted to `vmid`; the caller waits for `upid`.
    Submitted {
        /// The new VM's id.
        vmid: u32,
        /// The `qmclone` task.
        upid: Upid,
        /// `/cluster/nextid` reads made to choose the id (for call accounting).
        probes: u32,
    },
    /// Clone to `vmid` finished successfully.
    Completed {
        /// The new VM's id.
        vmid: u32,
        /// The finished `qmclone` task.
        outcome: TaskOutcome,
    },
    /// `vmid` already existed and its config carries our ownership marker.
    Adopted {
        /// The existing VM's id.
        vmid: u32,
        /// The node that owns it.
        node: String,
    },
}

impl CloneAllocation {
    /// The VMID in every case.
    pub fn vmid(&self) -> u32 {
        match self {
            CloneAllocation::Submitted { vmid, .. }
            | CloneAllocation::Completed { vmid, .. }
            | CloneAllocation::Adopted { vmid, .. } => *vmid,
        }
    }
}

/// True when `e` says that `vmid` is already used (or being created) by someone.
pub fn is_id_conflict(e: &PveError, vmid: u32) -> bool {
    match e.classify() {
        ErrorClass::VmIdTaken => true,
        ErrorClass::LockTimeout { vmid: Some(v), .. } => v == vmid,
        _ => false,
    }
}

const PROBES_PER_ATTEMPT: u32 = 64;
const MIN_VMID: u32 = 100;
const MAX_VMID: u32 = 999_999_999;

/// ` (refused: 120..=183)` for the error message; only ids Proxmox refused are named.
fn refused_text(refused: &[u32]) -> String {
    match (refused.first(), refused.last()) {
        (Some(a), Some(b)) if a == b => format!(" (Proxmox refused {a})"),
        (Some(a), Some(b)) => format!(" (Proxmox refused {} ids in {a}..={b})", refused.len()),
        _ => String::new(),
    }
}

impl PveClient {
    /// Pick a free VMID and clone `template_vmid` to it, retrying with the next candidate when
    /// the id turns out to be taken. Never adopts a VM unless `ownership` says it is ours.
    pub async fn allocate_vmid_and_clone(
        &self,
        req: &AllocateRequest<'_>,
    ) -> PveResult<CloneAllocation> {
        let exhausted = |detail: String| PveError::VmidExhausted {
            node: req.node.to_string(),
            template: req.template_vmid,
            detail,
        };
        let mut floor = req
            .start_hint
            .or_else(|| req.range.as_ref().map(|r| *r.start()));
        let mut last_conflict = String::from("no attempt made");
        let mut probes = 0u32;
        for _attempt in 0..req.max_attempts.max(1) {
            let mut used = self.inner.alloc_lock.lock().await;
            // 1. candidate: the floor, else what /cluster/nextid calls free right now.
            let (mut candidate, free_hint) = match floor {
                Some(f) => (f, None),
                None => {
                    probes += 1;
                    let n = self.next_id(None).await?;
                    (n, Some(n))
                }
            };
            if let Some(r) = &req.range {
                candidate = candidate.max(*r.start());
            }
            candidate = candidate.max(MIN_VMID);
            // Ids this process already submitted (in flight, ours, or burned by a failed
            // clone) are skipped without asking Proxmox and without counting: /cluster/nextid
            // keeps offering an id whose clone has not written its config yet. Only ids
            // Proxmox itself refuses count toward the limit.
            let mut refused: Vec<u32> = Vec::new();
            let vmid = loop {
                if let Some(r) = &req.range {
                    if candidate > *r.end() {
                        return Err(exhausted(format!(
                            "no free id left in {}..={}{}",
                            r.start(),
                            r.end(),
                            refused_text(&refused)
                        )));
                    }
                }
                if candidate > MAX_VMID {
                    return Err(exhausted(format!(
                        "candidate {candidate} exceeds {MAX_VMID}{}",
                        refused_text(&refused)
                    )));
                }
                if used.contains(&candidate) {
                    candidate += 1;
                    continue;
                }
                if free_hint == Some(candidate) {
                    break candidate;
                }
                probes += 1;
                match self.next_id(Some(candidate)).await {
                    Ok(v) if v == candidate => break candidate,
                    Ok(_) => {}
                    Err(e) if e.classify() == ErrorClass::VmIdTaken || e.status() == Some(400) => {}
                    Err(e) => return Err(e),
                }
                refused.push(candidate);
                if refused.len() as u32 >= PROBES_PER_ATTEMPT {
                    return Err(exhausted(format!(
                        "Proxmox refused {PROBES_PER_ATTEMPT} consecutive candidate ids as taken{}",
                        refused_text(&refused)
                    )));
                }
                candidate += 1;
            };
            // 2. submit
            let mut params = req.params.clone();
            params.newid = vmid;
            let submitted = self.clone_vm(req.node, req.template_vmid, &params).await;
            // Whatever happened, this process never offers `vmid` again: it is ours or taken.
            used.insert(vmid);
            drop(used);
            let wrap = |e: PveError| PveError::Clone {
                newid: vmid,
                node: req.node.to_string(),
                source: Box::new(e),
            };
            let upid = match submitted {
                Ok(upid) => upid,
                Err(e) if is_id_conflict(&e, vmid) => {
                    last_conflict = e.to_string();
                    if let Some(adopted) = self.adopt_if_ours(vmid, &req.ownership).await? {
                        return Ok(adopted);
                    }
                    floor = Some(vmid + 1);
                    continue;
                }
                Err(e) => return Err(wrap(e)),
            };
            // 3. optionally wait, retrying task-level id conflicts
            let Some(wait) = &req.wait else {
                return Ok(CloneAllocation::Submitted { vmid, upid, probes });
            };
            match self.wait_task(&upid, wait).await {
                Ok(outcome) => return Ok(CloneAllocation::Completed { vmid, outcome }),
                Err(e) if is_id_conflict(&e, vmid) => {
                    last_conflict = e.to_string();
                    if let Some(adopted) = self.adopt_if_ours(vmid, &req.ownership).await? {
                        return Ok(adopted);
                    }
                    floor = Some(vmid + 1);
                }
                Err(e) => return Err(wrap(e)),
            }
        }
        Err(exhausted(format!(
            "{} attempts hit taken ids; last: {last_conflict}",
            req.max_attempts.max(1)
        )))
    }

    /// Adopt `vmid` only if it exists, is visible, and its config is ours.
    async fn adopt_if_ours(
        &self,
        vmid: u32,
        ownership: &Ownership<'_>,
    ) -> PveResult<Option<CloneAllocation>> {
        let Some(node) = self.vm_node(vmid).await? else {
            return Ok(None);
        };
        match self.vm_config(&node, vmid, false).await {
            Ok(cfg) if ownership.owns(&cfg) => Ok(Some(CloneAllocation::Adopted { vmid, node })),
            Ok(_) => Ok(None),
            // Gone or moved between the two reads: not ours to take.
            Err(e) if e.classify() == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}
