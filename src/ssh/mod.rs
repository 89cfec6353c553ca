//! The post-apply SSH readiness gate (contract §5), ProxyJump, and node SSH for cloud-init
//! snippets live here once they are built. This build has no SSH code: readiness is the guest
//! agent reporting an address within `post_apply_ssh_readiness.connectivity_wait_s`, and
//! cloud-init is delivered through native keys (`plan::desired::CloudInitDelivery`).
//!
//! The seams: the executor's per-VM pipeline ends with a readiness step whose budget comes
//! from the inputs, and `CloudInitDelivery` gains a snippet variant that uploads
//! `<physical>-cloud-init-user.yaml` over node SSH before the config step. This module must
//! not know about HyOps state files.
