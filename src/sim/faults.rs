//! Fault injection: rules that match (method, path template, vmid, nth matching call) or fire
//! at a seeded rate, and what they do (HTTP error, 595/596, connection reset, lock timeout,
//! task failure, slow task). Knows nothing about the handlers it disturbs.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// What a fault does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this status (500, 595, 596, …) and message; the handler does not run.
    Http { status: u16, message: String },
    /// Close the connection without a response; the handler does not run.
    Reset,
    /// Fail with `can't lock file '/var/lock/qemu-server/lock-<vmid>.conf' - got timeout`
    /// (inside the task for UPID endpoints, else HTTP 500).
    LockTimeout,
    /// The task runs and ends with this error (HTTP 500 for synchronous endpoints).
    TaskFail { message: String },
    /// The task takes this many extra simulated milliseconds.
    SlowTask { extra_ms: u64 },
}

/// One rule. Unset match fields match anything.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultRule {
    #[serde(default)]
    pub method: Option<String>,
    /// A path template from the spec, e.g. `/nodes/{node}/qemu/{vmid}/clone`.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub vmid: Option<u32>,
    /// Fire only on the nth (1-based) matching call.
    #[serde(default)]
    pub nth: Option<u64>,
    /// Fire with this probability on each matching call (seeded RNG).
    #[serde(default)]
    pub rate: Option<f64>,
    pub action: FaultAction,
}

impl FaultRule {
    /// A rule for `method path` that always fires.
    pub fn on(method: &str, path: &str, action: FaultAction) -> Self {
        Self {
            method: Some(method.to_string()),
            path: Some(path.to_string()),
            vmid: None,
            nth: None,
            rate: None,
            action,
        }
    }
    pub fn vmid(mut self, vmid: u32) -> Self {
        self.vmid = Some(vmid);
        self
    }
    pub fn nth(mut self, n: u64) -> Self {
        self.nth = Some(n);
        self
    }
    pub fn rate(mut self, r: f64) -> Self {
        self.rate = Some(r);
        self
    }
}

/// The configured faults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FaultPlan {
    pub rules: Vec<FaultRule>,
}

/// Rules plus how often each matched.
#[derive(Debug, Default)]
pub struct FaultState {
    rules: Vec<(FaultRule, u64)>,
}

impl FaultState {
    pub fn new(plan: FaultPlan) -> Self {
        Self {
            rules: plan.rules.into_iter().map(|r| (r, 0)).collect(),
        }
    }

    pub fn add(&mut self, rule: FaultRule) {
        self.rules.push((rule, 0));
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The actions that fire for this call, in rule order.
    pub fn fire(
        &mut self,
        method: &str,
        template: &str,
        vmid: Option<u32>,
        rng: &mut impl Rng,
    ) -> Vec<FaultAction> {
        let mut out = Vec::new();
        for (rule, seen) in &mut self.rules {
            if rule.method.as_deref().is_some_and(|m| m != method)
                || rule.path.as_deref().is_some_and(|p| p != template)
                || rule.vmid.is_some_and(|v| Some(v) != vmid)
            {
                continue;
            }
            *seen += 1;
            if rule.nth.is_some_and(|n| n != *seen) {
                continue;
            }
            if let Some(rate) = rule.rate {
                if !rng.random_bool(rate.clamp(0.0, 1.0)) {
                    continue;
                }
            }
            out.push(rule.action.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn nth_rule_fires_once_on_the_nth_match_only() {
        let mut s = FaultState::new(FaultPlan {
            rules: vec![FaultRule::on("GET", "/version", FaultAction::Reset).nth(2)],
        });
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert!(s.fire("GET", "/version", None, &mut rng).is_empty());
        assert_eq!(
            s.fire("GET", "/version", None, &mut rng),
            vec![FaultAction::Reset]
        );
        assert!(s.fire("GET", "/version", None, &mut rng).is_empty());
        assert!(s.fire("POST", "/version", None, &mut rng).is_empty());
    }

    #[test]
    fn rate_is_deterministic_for_a_seed() {
        let run = || {
            let mut s = FaultState::new(FaultPlan {
                rules: vec![FaultRule::on("GET", "/version", FaultAction::Reset).rate(0.3)],
            });
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            (0..200)
                .map(|_| !s.fire("GET", "/version", None, &mut rng).is_empty())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let n = a.iter().filter(|x| **x).count();
        assert!((30..90).contains(&n), "{n}");
    }
}
