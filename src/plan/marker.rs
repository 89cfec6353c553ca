//! The ownership marker written into a VM's `description` at clone time. It names the HyOps
//! env, the module slot and the logical key, plus the template and clone mode the VM was
//! created from, so that a VM created by a run that later crashed is adopted (not duplicated)
//! and a VM that is not ours is never touched. Knows nothing about HTTP or state files.

use serde::{Deserialize, Serialize};

use crate::inputs::model::CloneMode;

const PREFIX: &str = "hyops-pve:v1";
/// The description up to the marker line's first field.
const DESCRIPTION_HEAD: &str =
    "Managed by hyops-pve (HybridOps platform-vm). Do not edit the marker line.\nhyops-pve:v1";

/// Identity of one managed VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipMarker {
    /// HyOps env name, or `root:<hash>` when the run used `--root` without an env.
    pub env: String,
    /// `latest` or `instance:<name>`.
    pub slot: String,
    pub module_ref: String,
    pub key: String,
    pub template_vmid: u32,
    pub clone_mode: CloneMode,
}

impl OwnershipMarker {
    /// The line stored in the description (one line, `key=value` pairs separated by `;`).
    pub fn to_line(&self) -> String {
        format!(
            "{PREFIX};env={};module={};slot={};key={};template={};clone={}",
            self.env,
            self.module_ref,
            self.slot,
            self.key,
            self.template_vmid,
            clone_word(self.clone_mode)
        )
    }

    /// The whole `description` value.
    pub fn to_description(&self) -> String {
        self.description().to_string()
    }

    /// The whole `description` value, formatted where it is written (compare it with
    /// [`crate::plan::props::renders_as`] without building it).
    pub fn description(&self) -> impl std::fmt::Display + '_ {
        struct Description<'a>(&'a OwnershipMarker);
        impl std::fmt::Display for Description<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let m = self.0;
                write!(
                    f,
                    "{DESCRIPTION_HEAD};env={};module={};slot={};key={};template={};clone={}",
                    m.env,
                    m.module_ref,
                    m.slot,
                    m.key,
                    m.template_vmid,
                    clone_word(m.clone_mode)
                )
            }
        }
        Description(self)
    }

    /// Find and parse a marker line in a description. `None` when there is none or it is
    /// malformed (a malformed marker never proves ownership).
    pub fn parse_description(description: &str) -> Option<Self> {
        let m = MarkerFields::parse(description)?;
        Some(OwnershipMarker {
            env: m.env.to_string(),
            slot: m.slot.to_string(),
            module_ref: m.module_ref.to_string(),
            key: m.key.to_string(),
            template_vmid: m.template_vmid,
            clone_mode: m.clone_mode,
        })
    }

    /// `self.to_description() == text`, compared piece by piece without formatting (the
    /// planner asks this of every managed VM).
    pub fn is_description(&self, text: &str) -> bool {
        let pieces: [&str; 9] = [
            DESCRIPTION_HEAD,
            ";env=",
            &self.env,
            ";module=",
            &self.module_ref,
            ";slot=",
            &self.slot,
            ";key=",
            &self.key,
        ];
        let mut rest = text;
        for piece in pieces {
            match rest.strip_prefix(piece) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest.strip_prefix(";template=")
            .and_then(|r| crate::plan::props::strip_decimal(r, self.template_vmid))
            .and_then(|r| r.strip_prefix(";clone="))
            == Some(clone_word(self.clone_mode))
    }

    /// `has_marker(&self.to_description())`, without rendering where the answer is known:
    /// when no field holds a `;` or a line break, the marker line is the description's
    /// second line and splits into exactly the six fields, so it parses.
    pub fn description_has_marker(&self) -> bool {
        let plain = |s: &str| !s.bytes().any(|b| b == b';' || b == b'\n');
        if plain(&self.env) && plain(&self.module_ref) && plain(&self.slot) && plain(&self.key) {
            return true;
        }
        Self::has_marker(&self.to_description())
    }

    /// `parse_description(description).is_some()`, without copying the fields out.
    pub fn has_marker(description: &str) -> bool {
        MarkerFields::parse(description).is_some()
    }

    /// Same env, module and slot (the key may differ: a VM of this slot that is no longer
    /// requested is still ours to delete).
    pub fn same_slot(&self, other: &OwnershipMarker) -> bool {
        self.env == other.env && self.module_ref == other.module_ref && self.slot == other.slot
    }
}

fn clone_word(mode: CloneMode) -> &'static str {
    match mode {
        CloneMode::Full => "full",
        CloneMode::Linked => "linked",
    }
}

/// A marker line's fields, borrowed from the description they were read from.
struct MarkerFields<'a> {
    env: &'a str,
    slot: &'a str,
    module_ref: &'a str,
    key: &'a str,
    template_vmid: u32,
    clone_mode: CloneMode,
}

impl<'a> MarkerFields<'a> {
    fn parse(description: &'a str) -> Option<Self> {
        let line = description
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(PREFIX))?;
        let mut env = None;
        let mut module_ref = None;
        let mut slot = None;
        let mut key = None;
        let mut template = None;
        let mut clone = None;
        for part in line.split(';').skip(1) {
            let (k, v) = part.split_once('=')?;
            match k {
                "env" => env = Some(v),
                "module" => module_ref = Some(v),
                "slot" => slot = Some(v),
                "key" => key = Some(v),
                "template" => template = v.parse::<u32>().ok(),
                "clone" => {
                    clone = match v {
                        "full" => Some(CloneMode::Full),
                        "linked" => Some(CloneMode::Linked),
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        Some(MarkerFields {
            env: env?,
            slot: slot?,
            module_ref: module_ref?,
            key: key?,
            template_vmid: template?,
            clone_mode: clone?,
        })
    }
}

/// The marker of VM `app-01` in slot `latest` of env `dev`, template 9000 (test fixture).
#[cfg(test)]
impl OwnershipMarker {
    pub(crate) fn test_sample(clone_mode: CloneMode) -> Self {
        OwnershipMarker {
            env: "dev".into(),
            slot: "latest".into(),
            module_ref: "platform/onprem/platform-vm".into(),
            key: "app-01".into(),
            template_vmid: 9000,
            clone_mode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> OwnershipMarker {
        OwnershipMarker::test_sample(CloneMode::Full)
    }

    #[test]
    fn marker_round_trips_through_the_description() {
        let m = sample();
        assert_eq!(
            OwnershipMarker::parse_description(&m.to_description()),
            Some(m)
        );
    }

    #[test]
    fn description_without_marker_proves_nothing() {
        assert_eq!(OwnershipMarker::parse_description("my own VM"), None);
        assert_eq!(
            OwnershipMarker::parse_description("hyops-pve:v1;env=dev;key=x"),
            None
        );
    }

    proptest! {
        #[test]
        fn marker_parse_never_panics(s in ".{0,200}") {
            let _ = OwnershipMarker::parse_description(&s);
        }

        #[test]
        fn has_marker_is_parse_description_is_some(s in "(hyops-pve:v1|[a-z;=]{0,6})(;(env|module|slot|key|template|clone|x)=(full|linked|[a-z0-9]{0,6})){0,8}") {
            prop_assert_eq!(OwnershipMarker::has_marker(&s), OwnershipMarker::parse_description(&s).is_some());
        }

        #[test]
        fn description_display_is_the_description(env in ".{0,12}", key in ".{0,12}", tpl in any::<u32>()) {
            let m = OwnershipMarker { env, slot: "latest".into(), module_ref: "platform/onprem/platform-vm".into(), key, template_vmid: tpl, clone_mode: CloneMode::Full };
            let expected = format!("Managed by hyops-pve (HybridOps platform-vm). Do not edit the marker line.\n{}", m.to_line());
            prop_assert_eq!(m.to_description(), expected);
        }

        #[test]
        fn is_description_is_equality_with_the_description(env in "[a-z;\n=]{0,6}", key in "[a-z;=]{0,6}", tpl in any::<u32>(), full in any::<bool>(), cut in 0usize..200, extra in "[a-z0-9]{0,2}") {
            let m = OwnershipMarker { env, slot: "latest".into(), module_ref: "platform/onprem/platform-vm".into(), key, template_vmid: tpl, clone_mode: if full { CloneMode::Full } else { CloneMode::Linked } };
            let d = m.to_description();
            prop_assert!(m.is_description(&d));
            let cut = cut.min(d.len());
            if d.is_char_boundary(cut) {
                let other = format!("{}{extra}", &d[..cut]);
                prop_assert_eq!(m.is_description(&other), other == d);
            }
        }

        #[test]
        fn description_has_marker_is_has_marker_of_the_description(env in "[a-z;\n=]{0,6}", slot in "[a-z;\n=]{0,6}", key in "[a-z;\n= ]{0,6}", module_ref in "[a-z;\n/]{0,6}", tpl in any::<u32>()) {
            let m = OwnershipMarker { env, slot, module_ref, key, template_vmid: tpl, clone_mode: CloneMode::Linked };
            prop_assert_eq!(m.description_has_marker(), OwnershipMarker::has_marker(&m.to_description()));
        }

        #[test]
        fn marker_round_trips(env in "[a-z0-9-]{1,12}", key in "[a-z0-9][a-z0-9-]{0,20}", tpl in 100u32..999999) {
            let m = OwnershipMarker { env, slot: "instance:x".into(), module_ref: "platform/onprem/platform-vm".into(), key, template_vmid: tpl, clone_mode: CloneMode::Linked };
            prop_assert_eq!(OwnershipMarker::parse_description(&m.to_description()), Some(m));
        }
    }
}
