//! Fault injection: rules that match a call (method, path template or glob, vmid), fire on the
//! nth match, at most `count` times, at a seeded rate, and only inside a time window
//! (simulated seconds from the simulator's start or from the first call of a trigger), and
//! what they do: an HTTP error with Proxmox's message (595/596 included), a connection reset,
//! a delay, a hang, a lost reply (the write takes effect, the reply never arrives), a lock
//! timeout, a task failure with a given exit status, a slow task, an oversized answer.
//! Knows nothing about the handlers it disturbs. The messages follow Proxmox's
//! (`pve-api-notes.md` §4 for the config flock timeout, §6 for 595/596 from the proxy hop
//! and the error catalogue).
//!
//! # Fault file (`sim serve --faults F`, `apply|plan|destroy --sim --sim-faults F`)
//!
//! ```yaml
//! seed: 7                      # optional; the fault RNG seed (default: the simulator's)
//! rules:
//!   - method: GET              # GET | POST | PUT | DELETE | write (any non-GET) | any
//!     path: /nodes/{node}/tasks/{upid}/status   # a spec template, or a glob with *
//!     window: {after: "POST /nodes/{node}/qemu/{vmid}/clone", start_s: 0, duration_s: 40}
//!     action: {kind: reset}
//!   - method: write
//!     rate: 0.05               # probability per matching call
//!     action: {kind: lost_reply}
//!   - path: /nodes/{node}/qemu/{vmid}/clone
//!     nth: 3                   # only the 3rd matching call
//!     action: {kind: task_fail, message: "clone failed: broken pipe"}
//! ```
//!
//! Actions (`kind`): `http` (`status`, `message`), `reset`, `delay` (`ms`, simulated),
//! `hang`, `lost_reply`, `lock_timeout`, `task_fail` (`message`), `slow_task` (`extra_ms`,
//! simulated), `oversized` (`bytes`). Other match keys: `vmid`, `count` (fire at most N
//! times). An unknown key anywhere is an error naming it, and so is a rule that could never
//! fire (a non-glob `path` the API schema does not serve for the rule's method, a
//! `window.after` that is no API call, a non-finite window start). A window may last
//! forever (`duration_s: .inf`).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What a fault does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// Answer with this status (500, 595, 596, …) and message; the handler does not run.
    Http { status: u16, message: String },
    /// Close the connection without a response; the handler does not run.
    Reset,
    /// Wait this many simulated milliseconds before handling the request.
    Delay { ms: u64 },
    /// Never answer (the client's own timeout ends the call); the handler does not run.
    /// Inside a window with a duration, the connection is dropped when the window closes.
    Hang,
    /// The handler runs (a write takes effect, its task starts), then the connection is
    /// closed without the reply.
    LostReply,
    /// Fail with `can't lock file '/var/lock/qemu-server/lock-<vmid>.conf' - got timeout`
    /// (inside the task for UPID endpoints, else HTTP 500).
    LockTimeout,
    /// The task runs and ends with this exit status (HTTP 500 for synchronous endpoints).
    TaskFail { message: String },
    /// The task takes this many extra simulated milliseconds.
    SlowTask { extra_ms: u64 },
    /// Answer 200 with a body of this many bytes (the handler does not run).
    Oversized { bytes: u64 },
}

/// When a rule is active, in simulated seconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct FaultWindow {
    /// `"METHOD /path/template"`: the window is measured from the first such call (the rule
    /// is inactive until it happens). Default: from the simulator's start.
    #[serde(default)]
    pub after: Option<String>,
    /// Start of the window after the reference point.
    #[serde(default)]
    pub start_s: f64,
    /// Length of the window; default: until the end.
    #[serde(default)]
    pub duration_s: Option<f64>,
}

/// One rule. Unset match fields match anything.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// `GET`, `POST`, `PUT`, `DELETE`, `write` (any non-GET) or `any`.
    #[serde(default)]
    pub method: Option<String>,
    /// A path template from the spec (`/nodes/{node}/qemu/{vmid}/clone`) or a glob with `*`
    /// matched against the template and the concrete path.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub vmid: Option<u32>,
    /// Fire only on the nth (1-based) matching call.
    #[serde(default)]
    pub nth: Option<u64>,
    /// Fire at most this many times.
    #[serde(default)]
    pub count: Option<u64>,
    /// Fire with this probability on each matching call (seeded RNG).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Only inside this window.
    #[serde(default)]
    pub window: Option<FaultWindow>,
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
            count: None,
            rate: None,
            window: None,
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
    pub fn count(mut self, n: u64) -> Self {
        self.count = Some(n);
        self
    }
    pub fn window(mut self, w: FaultWindow) -> Self {
        self.window = Some(w);
        self
    }
}

/// The configured faults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Seed of the fault RNG (default: the simulator's seed).
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

/// A fault file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FaultFileError {
    #[error("fault file {path}: {msg}")]
    Read { path: String, msg: String },
    #[error("fault file: {0}")]
    Invalid(String),
}

/// A serde path in the fault file's notation: `faults.rules[1].window.start_s`, lists numbered
/// from 1 like [`crate::yaml::PyValue::to_json`]'s paths.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::from("faults");
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{}]", index + 1)),
            Segment::Map { key } => {
                out.push('.');
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                out.push('.');
                out.push_str(variant);
            }
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "write", "any"];

impl FaultPlan {
    /// Parse and check a YAML fault file (the one place that parses it).
    pub fn from_yaml(text: &str) -> Result<Self, FaultFileError> {
        // Read as HyOps reads YAML (YAML 1.1), then typed through its JSON form.
        let doc =
            crate::yaml::safe_load(text).map_err(|e| FaultFileError::Invalid(e.to_string()))?;
        let json = doc
            .to_json("faults")
            .map_err(|e| FaultFileError::Invalid(e.to_string()))?;
        let plan: FaultPlan = serde_path_to_error::deserialize(json).map_err(|e| {
            FaultFileError::Invalid(format!("{}: {}", field_path(e.path()), e.inner()))
        })?;
        plan.validate()?;
        Ok(plan)
    }

    /// Read a YAML fault file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, FaultFileError> {
        let text = crate::fsread::read_text_at_most(path, crate::fsread::DEFAULT_LIMIT).map_err(
            |msg| FaultFileError::Read {
                path: path.display().to_string(),
                msg,
            },
        )?;
        Self::from_yaml(&text).map_err(|e| match e {
            FaultFileError::Invalid(m) => FaultFileError::Read {
                path: path.display().to_string(),
                msg: m,
            },
            other => other,
        })
    }

    /// Check values serde cannot: methods, rates, statuses, windows.
    pub fn validate(&self) -> Result<(), FaultFileError> {
        for (i, r) in self.rules.iter().enumerate() {
            // Rules are numbered from 1, as every other list in hyops-pve's messages (and
            // upstream hyops') is: `faults.rules[1]` is the first rule.
            let n = i + 1;
            let bad = |m: String| Err(FaultFileError::Invalid(format!("faults.rules[{n}]: {m}")));
            if let Some(m) = &r.method {
                if !METHODS.contains(&m.as_str()) {
                    return bad(format!("method {m:?} is not one of {}", METHODS.join(", ")));
                }
            }
            if let Some(rate) = r.rate {
                if !(0.0..=1.0).contains(&rate) {
                    return bad(format!("rate {rate} must be between 0 and 1"));
                }
            }
            if r.nth == Some(0) {
                return bad("nth counts from 1".into());
            }
            if let FaultAction::Http { status, .. } = &r.action {
                if !(400..=599).contains(status) {
                    return bad(format!("http status {status} must be 400-599"));
                }
            }
            if let Some(path) = &r.path {
                check_path(r.method.as_deref(), path).or_else(bad)?;
            }
            if let Some(w) = &r.window {
                // `.inf` is "never ends" for a duration, but no start: NaN compares false
                // with everything and would silently open the window at 0.
                if !w.start_s.is_finite() {
                    return bad(format!(
                        "window start_s {} must be a finite number",
                        w.start_s
                    ));
                }
                if w.duration_s.is_some_and(f64::is_nan) {
                    return bad("window duration_s must be a number".into());
                }
                if w.start_s < 0.0 || w.duration_s.is_some_and(|d| d < 0.0) {
                    return bad("window start_s and duration_s must not be negative".into());
                }
                if let Some(a) = &w.after {
                    check_trigger(a).or_else(bad)?;
                }
            }
        }
        Ok(())
    }
}

/// A rule's `path` must be able to match a call: a glob (`*`) is taken as written, anything
/// else must be an API path template of the spec or a concrete path one resolves to, served
/// for the rule's method. A typo here used to make a chaos run silently fault-free.
fn check_path(method: Option<&str>, path: &str) -> Result<(), String> {
    if path.contains('*') {
        return Ok(());
    }
    let spec = super::spec::spec().map_err(|e| e.to_string())?;
    let methods: Vec<&str> = spec
        .endpoints
        .iter()
        .filter(|ep| {
            ep.path == path
                || matches!(
                    spec.find(&ep.method, path),
                    super::spec::PathMatch::Found(found, _) if found.path == ep.path
                )
        })
        .map(|ep| ep.method.as_str())
        .collect();
    if methods.is_empty() {
        return Err(format!(
            "path {path:?} is no Proxmox API path: use a template from the API schema (e.g. /nodes/{{node}}/qemu/{{vmid}}/clone), a concrete path (/nodes/pve1/qemu/100/config), or a glob with *"
        ));
    }
    let serves = |m: &str| match m {
        "any" => true,
        "write" => methods.iter().any(|x| *x != "GET"),
        m => methods.contains(&m),
    };
    match method {
        Some(m) if !serves(m) => Err(format!(
            "method {m} never meets path {path:?}: Proxmox serves it for {} only",
            methods.join(", ")
        )),
        _ => Ok(()),
    }
}

/// `window.after` is `"METHOD /path/template"` naming one endpoint of the spec exactly (it is
/// compared with each call's method and template; anything else would never open the window).
fn check_trigger(after: &str) -> Result<(), String> {
    let Some((method, template)) = after.split_once(' ') else {
        return Err(format!(
            "window.after {after:?} must be \"METHOD /path/template\""
        ));
    };
    let spec = super::spec::spec().map_err(|e| e.to_string())?;
    if spec.endpoint(method, template).is_none() {
        return Err(format!(
            "window.after {after:?} names no Proxmox API call: it must be a method (GET, POST, PUT, DELETE) and a path template of the API schema, e.g. \"POST /nodes/{{node}}/qemu/{{vmid}}/clone\""
        ));
    }
    Ok(())
}

/// Rules, how often each matched and fired, trigger times, and the seeded RNG.
#[derive(Debug)]
pub struct FaultState {
    rules: Vec<RuleState>,
    /// `"METHOD template"` → simulated ms of its first call.
    seen_first: HashMap<String, u64>,
    rng: StdRng,
}

#[derive(Debug)]
struct RuleState {
    rule: FaultRule,
    matched: u64,
    fired: u64,
}

impl Default for FaultState {
    fn default() -> Self {
        Self::new(FaultPlan::default(), 1)
    }
}

/// `*` matches any run of characters (slashes included).
fn glob(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// An action that fired, with the end of its rule's window (simulated ms), if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub action: FaultAction,
    pub until_ms: Option<u64>,
}

/// The call a rule is asked about.
pub struct CallInfo<'a> {
    pub method: &'a str,
    pub template: &'a str,
    pub path: &'a str,
    pub vmid: Option<u32>,
    /// Simulated milliseconds since the simulator started.
    pub now_ms: u64,
}

impl FaultState {
    /// `default_seed` is used when the plan has none.
    pub fn new(plan: FaultPlan, default_seed: u64) -> Self {
        Self {
            rules: plan
                .rules
                .into_iter()
                .map(|rule| RuleState {
                    rule,
                    matched: 0,
                    fired: 0,
                })
                .collect(),
            seen_first: HashMap::new(),
            rng: StdRng::seed_from_u64(plan.seed.unwrap_or(default_seed)),
        }
    }

    pub fn add(&mut self, rule: FaultRule) {
        self.rules.push(RuleState {
            rule,
            matched: 0,
            fired: 0,
        });
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The actions that fire for this call, in rule order.
    pub fn fire(&mut self, call: &CallInfo<'_>) -> Vec<FaultAction> {
        self.fire_timed(call)
            .into_iter()
            .map(|f| f.action)
            .collect()
    }

    /// [`FaultState::fire`] with each action's window end.
    pub fn fire_timed(&mut self, call: &CallInfo<'_>) -> Vec<Fired> {
        let key = format!("{} {}", call.method, call.template);
        self.seen_first.entry(key).or_insert(call.now_ms);
        let mut out = Vec::new();
        for st in &mut self.rules {
            let rule = &st.rule;
            let method_ok = match rule.method.as_deref() {
                None | Some("any") => true,
                Some("write") => call.method != "GET",
                Some(m) => m == call.method,
            };
            let path_ok = rule
                .path
                .as_deref()
                .is_none_or(|p| p == call.template || glob(p, call.template) || glob(p, call.path));
            if !method_ok || !path_ok || rule.vmid.is_some_and(|v| Some(v) != call.vmid) {
                continue;
            }
            let mut until_ms = None;
            if let Some(w) = &rule.window {
                let origin = match &w.after {
                    None => Some(0),
                    Some(a) => self.seen_first.get(a.as_str()).copied(),
                };
                let Some(origin) = origin else { continue };
                // Saturating: a window may start or last beyond the end of u64 time (a
                // `duration_s: 1.0e+300` never ends; `as u64` already saturates the product).
                let start = origin.saturating_add((w.start_s * 1000.0) as u64);
                let end = w
                    .duration_s
                    .map(|d| start.saturating_add((d * 1000.0) as u64));
                if call.now_ms < start || end.is_some_and(|e| call.now_ms >= e) {
                    continue;
                }
                until_ms = end;
            }
            st.matched += 1;
            if rule.nth.is_some_and(|n| n != st.matched) {
                continue;
            }
            if rule.count.is_some_and(|c| st.fired >= c) {
                continue;
            }
            if let Some(rate) = rule.rate {
                if !self.rng.random_bool(rate.clamp(0.0, 1.0)) {
                    continue;
                }
            }
            st.fired += 1;
            out.push(Fired {
                action: rule.action.clone(),
                until_ms,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(method: &'a str, template: &'a str, now_ms: u64) -> CallInfo<'a> {
        CallInfo {
            method,
            template,
            path: template,
            vmid: None,
            now_ms,
        }
    }

    #[test]
    fn nth_rule_fires_once_on_the_nth_match_only() {
        let mut s = FaultState::new(
            FaultPlan {
                seed: None,
                rules: vec![FaultRule::on("GET", "/version", FaultAction::Reset).nth(2)],
            },
            1,
        );
        assert!(s.fire(&call("GET", "/version", 0)).is_empty());
        assert_eq!(
            s.fire(&call("GET", "/version", 0)),
            vec![FaultAction::Reset]
        );
        assert!(s.fire(&call("GET", "/version", 0)).is_empty());
        assert!(s.fire(&call("POST", "/version", 0)).is_empty());
    }

    #[test]
    fn rate_is_deterministic_for_a_seed() {
        let run = |seed| {
            let mut s = FaultState::new(
                FaultPlan {
                    seed: Some(seed),
                    rules: vec![FaultRule::on("GET", "/version", FaultAction::Reset).rate(0.3)],
                },
                1,
            );
            (0..200)
                .map(|_| !s.fire(&call("GET", "/version", 0)).is_empty())
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        let n = a.iter().filter(|x| **x).count();
        assert!((30..90).contains(&n), "{n}");
    }

    #[test]
    fn a_window_after_a_trigger_opens_at_its_first_call_and_closes() {
        let task = "/nodes/{node}/tasks/{upid}/status";
        let mut s = FaultState::new(
            FaultPlan {
                seed: None,
                rules: vec![
                    FaultRule::on("GET", task, FaultAction::Reset).window(FaultWindow {
                        after: Some("POST /nodes/{node}/qemu/{vmid}/clone".into()),
                        start_s: 0.0,
                        duration_s: Some(40.0),
                    }),
                ],
            },
            1,
        );
        assert!(
            s.fire(&call("GET", task, 1_000)).is_empty(),
            "before the clone"
        );
        s.fire(&call("POST", "/nodes/{node}/qemu/{vmid}/clone", 5_000));
        assert_eq!(s.fire(&call("GET", task, 6_000)).len(), 1);
        assert_eq!(s.fire(&call("GET", task, 44_999)).len(), 1);
        assert!(s.fire(&call("GET", task, 45_000)).is_empty(), "window over");
    }

    #[test]
    fn count_write_and_glob_match() {
        let mut s = FaultState::new(
            FaultPlan {
                seed: None,
                rules: vec![FaultRule {
                    method: Some("write".into()),
                    path: Some("/nodes/*/qemu/*".into()),
                    ..FaultRule::on("x", "x", FaultAction::LostReply)
                }
                .count(2)],
            },
            1,
        );
        let c = |m| CallInfo {
            method: m,
            template: "/nodes/{node}/qemu/{vmid}/config",
            path: "/nodes/pve1/qemu/101/config",
            vmid: Some(101),
            now_ms: 0,
        };
        assert!(s.fire(&c("GET")).is_empty());
        assert_eq!(s.fire(&c("POST")).len(), 1);
        assert_eq!(s.fire(&c("PUT")).len(), 1);
        assert!(s.fire(&c("POST")).is_empty(), "count 2 reached");
    }

    #[test]
    fn every_action_kind_parses_from_yaml() {
        let plan = FaultPlan::from_yaml(
            r#"
seed: 3
rules:
  - {path: /version, action: {kind: http, status: 596, message: "Connection timed out"}}
  - {action: {kind: reset}}
  - {action: {kind: delay, ms: 200}}
  - {action: {kind: hang}}
  - {method: write, rate: 0.05, action: {kind: lost_reply}}
  - {action: {kind: lock_timeout}}
  - {action: {kind: task_fail, message: "clone failed: x"}}
  - {action: {kind: slow_task, extra_ms: 1000}}
  - {action: {kind: oversized, bytes: 1000000}}
  - {window: {after: "POST /nodes/{node}/qemu/{vmid}/clone", duration_s: 30}, count: 2, nth: 1, vmid: 100, action: {kind: reset}}
"#,
        )
        .unwrap();
        assert_eq!(plan.seed, Some(3));
        assert_eq!(plan.rules.len(), 10);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        for (yaml, needle) in [
            ("rules: [{action: {kind: reset}, ratio: 0.5}]", "ratio"),
            ("seeds: 1", "seeds"),
            (
                "rules: [{action: {kind: http, status: 500, mesage: x}}]",
                "mesage",
            ),
            ("rules: [{action: {kind: explode}}]", "explode"),
            (
                "rules: [{window: {durations: 3}, action: {kind: reset}}]",
                "durations",
            ),
            ("rules: [{rate: 2, action: {kind: reset}}]", "rate"),
            ("rules: [{method: PATCH, action: {kind: reset}}]", "PATCH"),
        ] {
            let e = FaultPlan::from_yaml(yaml).unwrap_err().to_string();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
    }
}
