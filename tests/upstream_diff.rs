//! The differential test against the real upstream `hyops` (installed in `<repo>/.venv-hyops`,
//! see README "Differences from hyops"): every generated overlay (tests/upstream/cases.rs) is
//! run through upstream in process (tests/upstream/driver.py: `resolve_module` with the
//! validators registered, the `inputs_resolved.json` write, and the API-free part of
//! `ProxmoxVmContract.preprocess_inputs`) and through `hyops-pve validate` in process
//! ([`validate_report`]). Verdicts and messages must agree; a difference passes only when an
//! entry of [`ALLOWED`] explains it, and each entry is a section of the README.
//!
//! Optional target `UPSTREAM` (tests/optional): SKIPPED without the venv, required in CI.

#[path = "upstream/cases.rs"]
mod cases;
use crate::optional;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hyops_pve::cli::ModuleArgs;
use hyops_pve::commands::context::Ctx;
use hyops_pve::commands::module::validate_report;
use serde_json::{json, Value};

use cases::Case;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The upstream source tree (its `modules/` holds the module spec `resolve_module` reads).
fn upstream_src() -> PathBuf {
    std::env::var_os("HYOPS_UPSTREAM_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/upstream/hybridops-core"))
}

struct Upstream {
    python: PathBuf,
    src: PathBuf,
}

fn probe() -> Result<Upstream, String> {
    let python = std::env::var_os("HYOPS_UPSTREAM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-hyops/bin/python"));
    let src = upstream_src();
    if !src
        .join("modules/platform/onprem/platform-vm/spec.yml")
        .is_file()
    {
        return Err(format!("no upstream source at {}", src.display()));
    }
    let out = Command::new(&python)
        .args(["-c", "import hyops, yaml; print(yaml.__version__)"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot import hyops: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Upstream { python, src })
}

/// One side's verdict.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    ok: bool,
    message: String,
    /// Upstream only: `resolve`, `record`, `contract`, `ipam` (reached the NetBox stage).
    stage: String,
}

/// A deliberate, documented difference: the README section "Differences from hyops" has a
/// bullet starting with `**<name>**`.
struct Allowed {
    name: &'static str,
    applies: fn(&Case, &Outcome, &Outcome) -> bool,
}

fn any_of(msg: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| msg.contains(n))
}

/// The allow-list, short on purpose.
const ALLOWED: &[Allowed] = &[
    Allowed {
        name: "Bounds and YAML hyops-pve does not carry",
        applies: |_, _, ours| {
            !ours.ok
                && any_of(
                    &ours.message,
                    &[
                        "nesting is deeper than",
                        "is not supported by hyops-pve",
                        "hyops-pve does not read recursive YAML",
                        "JSON nesting is deeper than",
                        "hyops-pve cannot carry",
                        "hyops-pve does not read it",
                        "a second byte-order mark",
                    ],
                )
        },
    },
    Allowed {
        // Both refuse the overlay file; upstream prints PyYAML's (or Python's) exception
        // text, hyops-pve names the file, line and column in its own words.
        name: "YAML error text",
        applies: |_, up, ours| {
            !up.ok
                && up.stage == "resolve"
                && !ours.ok
                && ours.message.starts_with("failed to load inputs file ")
        },
    },
    Allowed {
        // hyops accepts these inputs, then crashes with a TypeError writing
        // inputs_resolved.json; hyops-pve refuses them naming the field.
        name: "Inputs hyops cannot record",
        applies: |_, up, ours| {
            !up.ok
                && up.stage == "record"
                && !ours.ok
                && ours.message.contains("inputs_resolved.json")
        },
    },
    Allowed {
        name: "Numbers hyops-pve cannot carry",
        applies: |_, up, ours| {
            (up.ok || up.stage != "resolve")
                && !ours.ok
                && ours.message.contains(" is out of range: ")
        },
    },
    Allowed {
        name: "VM keys that are one VM once trimmed",
        applies: |_, up, ours| {
            up.ok
                && !ours.ok
                && ours
                    .message
                    .starts_with("inputs.vms has two keys for the VM ")
        },
    },
    Allowed {
        // Values hyops passes on and Proxmox then refuses (after a clone was made): refused
        // before any write, all at once (issue 8, README "Catch before write").
        name: "Values Proxmox would refuse",
        applies: |_, up, ours| {
            up.ok
                && !ours.ok
                && ours
                    .message
                    .contains("would be refused by Proxmox (nothing was sent to Proxmox)")
        },
    },
    Allowed {
        name: "Engine extensions",
        applies: |_, up, ours| {
            up.ok
                && !ours.ok
                && any_of(
                    &ours.message,
                    &[
                        "inputs.clone_mode must be one of",
                        "inputs.limits.",
                        ".model must be one of",
                        ".vlan_id must be between",
                        ".vlan_id must be an integer when set",
                        ".mtu must be between",
                        "node_name must be",
                        "must be a string when set",
                    ],
                )
        },
    },
];

fn materialize(dir: &Path, i: usize, case: &Case) -> (PathBuf, Option<PathBuf>) {
    let root = dir.join(format!("case{i:04}"));
    std::fs::create_dir_all(&root).unwrap();
    for (rel, text) in &case.files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        // `\u{ff}` in a fixture stands for a raw 0xff byte (a file that is not UTF-8).
        if text.contains('\u{ff}') {
            let bytes: Vec<u8> = text
                .chars()
                .flat_map(|c| {
                    if c == '\u{ff}' {
                        vec![0xff]
                    } else {
                        c.to_string().into_bytes()
                    }
                })
                .collect();
            std::fs::write(&p, bytes).unwrap();
        } else {
            std::fs::write(&p, text).unwrap();
        }
    }
    let overlay = case.overlay.as_ref().map(|text| {
        let p = dir.join(format!("overlay{i:04}.yml"));
        std::fs::write(&p, text).unwrap();
        p
    });
    (root, overlay)
}

/// Which driver-contract stages hyops-pve implements (and so are compared rather than
/// stubbed in the upstream driver): the SDN authority check (contract §4.3) and NetBox
/// readiness (§4.1). Found by asking hyops-pve about an overlay that needs each.
#[derive(Clone, Copy, Debug, Default)]
struct Stages {
    sdn: bool,
    netbox: bool,
}

fn detect_stages(dir: &Path) -> Stages {
    let probe = |i: usize, overlay: &str| -> String {
        let case = Case {
            id: format!("probe{i}"),
            category: "probe",
            overlay: Some(overlay.into()),
            env: Vec::new(),
            hyops_env: Some("dev".into()),
            files: vec![cases::template_ok()],
            state_instance: None,
        };
        let (root, overlay) = materialize(dir, 9000 + i, &case);
        run_ours(&case, &root, overlay.as_deref()).message
    };
    let sdn = probe(
        1,
        "require_ipam: false\nvms: {a: {interfaces: [{bridge: vnetmgmt}]}}\n",
    );
    let netbox = probe(
        2,
        "require_ipam: true\naddressing: {mode: ipam, ipam: {provider: netbox}}\nvms: {a: {interfaces: [{bridge: vmbr0}]}}\n",
    );
    Stages {
        sdn: sdn.starts_with("managed bridge(s) require network_sdn state"),
        netbox: netbox.starts_with("ipam requires netbox ready"),
    }
}

fn run_upstream(
    up: &Upstream,
    dir: &Path,
    cases: &[(Case, PathBuf, Option<PathBuf>)],
    stages: Stages,
) -> Vec<Outcome> {
    let input: Vec<Value> = cases
        .iter()
        .map(|(c, root, overlay)| {
            json!({
                "id": c.id,
                "root": root,
                "overlay": overlay,
                "env": c.env,
                "hyops_env": c.hyops_env,
                "state_instance": c.state_instance,
                "sdn": stages.sdn,
                "netbox": stages.netbox,
            })
        })
        .collect();
    let cases_file = dir.join("cases.json");
    let results_file = dir.join("results.json");
    std::fs::write(&cases_file, serde_json::to_vec(&input).unwrap()).unwrap();
    let out = Command::new(&up.python)
        .arg(repo().join("tests/upstream/driver.py"))
        .arg(&cases_file)
        .arg(&results_file)
        .arg(up.src.join("modules"))
        .env_remove("NETBOX_API_URL")
        .env_remove("NETBOX_API_TOKEN")
        .output()
        .expect("run the upstream driver");
    assert!(
        out.status.success(),
        "driver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&results_file).unwrap()).unwrap();
    assert_eq!(results.len(), cases.len());
    results
        .into_iter()
        .map(|r| Outcome {
            ok: r["ok"].as_bool().unwrap_or(false),
            message: r["message"].as_str().unwrap_or_default().to_string(),
            stage: r["stage"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

fn run_ours(case: &Case, root: &Path, overlay: Option<&Path>) -> Outcome {
    let args = ModuleArgs {
        root: Some(root.to_path_buf()),
        module: "platform/onprem/platform-vm".into(),
        inputs: overlay.map(Path::to_path_buf),
        state_instance: case.state_instance.clone(),
        json: true,
        ..ModuleArgs::default()
    };
    let mut env = vec![("HOME".to_string(), root.join("home").display().to_string())];
    if let Some(e) = &case.hyops_env {
        env.push(("HYOPS_ENV".to_string(), e.clone()));
    }
    env.extend(case.env.iter().cloned());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ctx = match rt.block_on(Ctx::build_ordered(&args, env)) {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                ok: false,
                message: e.message,
                stage: String::new(),
            }
        }
    };
    let outcome = rt.block_on(validate_report(&ctx));
    match outcome.result {
        Ok(_) => Outcome {
            ok: true,
            message: String::new(),
            stage: String::new(),
        },
        // Compared without the CLI's second line naming the offending value (hints.rs).
        Err(e) => Outcome {
            ok: false,
            message: outcome.verbatim.unwrap_or(e.message),
            stage: String::new(),
        },
    }
}

/// Upstream's verdict for what hyops-pve covers: reaching the NetBox stage is a pass.
fn agree(up: &Outcome, ours: &Outcome) -> bool {
    match (up.ok, ours.ok) {
        (true, true) => true,
        (false, false) => up.message == ours.message,
        _ => false,
    }
}

struct Report {
    total: usize,
    agreements: usize,
    allowed: BTreeMap<&'static str, usize>,
    unexplained: Vec<String>,
    /// Allow-listed differences, printed with `HYOPS_DIFF_VERBOSE=1`.
    allowed_details: Vec<String>,
    by_category: BTreeMap<&'static str, (usize, usize)>,
}

fn compare(up: &Upstream, cases: Vec<Case>, allow: bool) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let placed: Vec<(Case, PathBuf, Option<PathBuf>)> = cases
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (root, overlay) = materialize(dir.path(), i, &c);
            (c, root, overlay)
        })
        .collect();
    let stages = detect_stages(dir.path());
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "differential test: SDN authority stage {}, NetBox readiness stage {}",
            if stages.sdn {
                "compared"
            } else {
                "stubbed upstream (not in hyops-pve yet)"
            },
            if stages.netbox {
                "compared"
            } else {
                "stubbed upstream (not in hyops-pve yet)"
            },
        );
    }
    let upstream = run_upstream(up, dir.path(), &placed, stages);
    let mut report = Report {
        total: placed.len(),
        agreements: 0,
        allowed: BTreeMap::new(),
        unexplained: Vec::new(),
        allowed_details: Vec::new(),
        by_category: BTreeMap::new(),
    };
    for ((case, root, overlay), up) in placed.iter().zip(&upstream) {
        let ours = run_ours(case, root, overlay.as_deref());
        let slot = report.by_category.entry(case.category).or_default();
        slot.0 += 1;
        if agree(up, &ours) {
            report.agreements += 1;
            slot.1 += 1;
            continue;
        }
        let detail =
            format!(
            "{}\n    upstream: {} [{}] {}\n    hyops-pve: {} {}\n    overlay: {:?}\n    env: {:?}",
            case.id,
            if up.ok { "ok" } else { "ERR" },
            up.stage,
            up.message,
            if ours.ok { "ok" } else { "ERR" },
            ours.message,
            case.overlay.as_deref().map(|s| s.chars().take(400).collect::<String>()),
            case.env,
        );
        if allow {
            if let Some(entry) = ALLOWED.iter().find(|a| (a.applies)(case, up, &ours)) {
                *report.allowed.entry(entry.name).or_default() += 1;
                report
                    .allowed_details
                    .push(format!("[{}] {detail}", entry.name));
                continue;
            }
        }
        report.unexplained.push(detail);
    }
    report
}

/// The counts go straight to the process's stderr (past the harness's output capture), so
/// every run shows them.
fn print(report: &Report, title: &str) {
    use std::io::Write;
    let allowed: usize = report.allowed.values().sum();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "{title}: {} overlays run, {} agreements, {} allow-listed differences, {} unexplained",
        report.total,
        report.agreements,
        allowed,
        report.unexplained.len()
    );
    for (name, n) in &report.allowed {
        let _ = writeln!(err, "  allowed {n:4}  {name}");
    }
    for (cat, (n, agreed)) in &report.by_category {
        let _ = writeln!(err, "  category {cat:20} {n:4} cases, {agreed:4} agree");
    }
    drop(err);
    if std::env::var("HYOPS_DIFF_VERBOSE").as_deref() == Ok("1") {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        for d in &report.allowed_details {
            let _ = writeln!(err, "ALLOWED {d}");
        }
    }
    for d in report.unexplained.iter().take(40) {
        eprintln!("DIFF {d}");
    }
}

#[test]
fn validate_agrees_with_upstream_hyops_on_generated_overlays() {
    let Some(up) = optional::require("upstream hyops", "UPSTREAM", probe) else {
        return;
    };
    let cases = cases::all(&up.src, &repo());
    assert!(cases.len() >= 500, "only {} cases generated", cases.len());
    let report = compare(&up, cases, true);
    print(&report, "differential test");
    assert!(
        report.unexplained.is_empty(),
        "{} unexplained differences from upstream hyops (see DIFF lines)",
        report.unexplained.len()
    );
}

#[test]
fn shipped_examples_agree_with_upstream_exactly() {
    let Some(up) = optional::require("upstream hyops", "UPSTREAM", probe) else {
        return;
    };
    let cases: Vec<Case> = cases::all(&up.src, &repo())
        .into_iter()
        .filter(|c| c.category == "examples")
        .collect();
    assert!(cases.len() >= 15, "{} example cases", cases.len());
    let report = compare(&up, cases, false);
    print(&report, "shipped examples");
    assert!(report.unexplained.is_empty());
}

#[test]
fn the_allow_list_and_the_readme_agree() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("## Differences from hyops")
        .expect("README has a 'Differences from hyops' section");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let section = &section[..end];
    let bullets: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("- **"))
        .filter_map(|l| l.split("**").next())
        .collect();
    for a in ALLOWED {
        assert!(
            bullets.contains(&a.name),
            "allow-list entry {:?} has no README bullet",
            a.name
        );
    }
    for b in &bullets {
        assert!(
            ALLOWED.iter().any(|a| a.name == *b),
            "README bullet {b:?} is not in the allow-list"
        );
    }
}

/// Everything the YAML writer must get right for a YAML 1.1 reader.
fn tricky_document() -> Value {
    let strings = [
        "yes",
        "No",
        "on",
        "OFF",
        "y",
        "010",
        "0x1f",
        "0o7",
        "4_096",
        "1:30",
        "2024-01-01",
        "2001-12-14t21:59:43.10-05:00",
        "1e3",
        "1.0e+3",
        ".5",
        ".nan",
        "-.inf",
        "~",
        "null",
        "",
        " ",
        "  padded ",
        "<<",
        "=",
        "-",
        "- a",
        "a: b",
        "a #b",
        "#c",
        "'q'",
        "\"dq\"",
        "tab\there",
        "line\nbreak\n",
        "cr\r",
        "\u{85}nel",
        "\u{2028}",
        "\u{feff}bom",
        "é ü",
        "\u{a0}nbsp",
        "\u{1c}sep",
        "\u{1}",
        "CHANGE_ME",
        "vmbr0",
        "10.0.0.1/24",
        "BC:24:11:00:05:21",
        "!tag",
        "&anchor",
        "*alias",
        "%pct",
        "@at",
        "`tick",
        "[list]",
        "{map}",
        "?q",
        "|pipe",
        ">gt",
    ];
    let mut m = serde_json::Map::new();
    for (i, s) in strings.iter().enumerate() {
        m.insert(format!("s{i:02}"), json!(s));
        m.insert((*s).to_string(), json!(i));
    }
    m.insert(
        "numbers".into(),
        json!([0, -1, u64::MAX, i64::MIN, 0.5, 1e16, -1.5e-7, 1e300, 4096.0]),
    );
    m.insert(
        "nested".into(),
        json!({"empty_list": [], "empty_map": {}, "lists": [[1, [2, []]], [{"a": null}], {}],
               "bools": [true, false], "vms": {"app-01": {"interfaces": [{"bridge": "vmbr0",
               "ipv4": {"address": "dhcp"}}]}}}),
    );
    Value::Object(m)
}

#[test]
fn yaml_hyops_pve_writes_reads_back_unchanged_in_pyyaml() {
    let Some(up) = optional::require("upstream hyops", "UPSTREAM", probe) else {
        return;
    };
    use hyops_pve::hyops::{
        write_rerun_inputs, write_resolved_inputs_yaml, ModuleRef, RuntimeRoot,
    };
    let dir = tempfile::tempdir().unwrap();
    let doc = tricky_document();
    let evidence = dir.path().join("evidence");
    std::fs::create_dir_all(&evidence).unwrap();
    let resolved = write_resolved_inputs_yaml(&evidence, &doc).unwrap();
    let rerun = write_rerun_inputs(
        &RuntimeRoot::at(&dir.path().join("root")),
        &ModuleRef::parse("platform/onprem/platform-vm").unwrap(),
        None,
        &doc,
    )
    .unwrap();
    for file in [resolved, rerun] {
        let out = Command::new(&up.python)
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1], encoding='utf-8'))))",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "PyYAML cannot read {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let back: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(back, doc, "PyYAML read {} differently", file.display());
    }
}

/// A small deterministic generator of YAML documents for the reader comparison.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SCALARS: &[&str] = &[
    "plain",
    "yes",
    "No",
    "ON",
    "off",
    "y",
    "~",
    "null",
    "NULL",
    "",
    "0",
    "-0",
    "+1",
    "010",
    "0o17",
    "0x_1F",
    "0b1_0",
    "4_096",
    "1_",
    "1:30",
    "-1:30:00",
    "190:20:30.15",
    "1.5",
    "-1.",
    ".5",
    "1.0e+3",
    "1e3",
    "1E+3",
    ".inf",
    "-.Inf",
    ".NaN",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 21:59:43.10 -5",
    "2001-12-15 2:59:43.10",
    "2002-12-14T00:00:00Z",
    "2001-1-1",
    "12:30:00",
    "52:54:00:12:34:56",
    "BC:24:11:00:05:21",
    "'single ''quoted'''",
    "\"dq \\t\\u00e9\\x41\"",
    "\"esc \\N \\_ \\L \\P \\0 \\a\"",
    "\"\\e\\v\\f\"",
    "'multi\n  line'",
    "\"fold\n\n  x\"",
    "plain with  spaces",
    "-dash",
    "http://x/y?z",
    "#nocomment",
    "x #comment",
    "true!",
    "'<<'",
    "!!str 12",
    "!!int '0x10'",
    "!!float 1",
    "!!bool Off",
    "!!null x",
    "! 5",
    "!!timestamp 2001-12-14",
    "é",
    "\"\\U0001F600\"",
    "'  padded  '",
    "|\n  lit\n  eral\n",
    "|-\n  strip\n",
    "|+\n  keep\n\n",
    ">\n  folded\n  text\n\n  para\n",
    ">-\n  a\n   b\n",
    "|2\n    indented\n",
];
const KEYS: &[&str] = &[
    "a",
    "b",
    "key",
    "1",
    "yes",
    "null",
    "~",
    "1.5",
    "2024-01-01",
    "'quoted'",
    "\"dq\"",
    "010",
    "Yes",
    "on",
    "x y",
    "'='",
    "0x1",
    "k-1",
    "k_1",
    "é",
];

fn gen_value(r: &mut Rng, depth: u32, indent: usize, out: &mut String, anchors: &mut Vec<String>) {
    let choice = if depth >= 3 { 0 } else { r.below(6) };
    match choice {
        0 | 1 => {
            let s = r.pick(SCALARS);
            if s.contains('\n') && !s.starts_with('|') && !s.starts_with('>') {
                // Multi-line flow scalars continue indented.
                out.push(' ');
                out.push_str(&s.replace('\n', &format!("\n{}", " ".repeat(indent + 2))));
                out.push('\n');
            } else if s.starts_with('|') || s.starts_with('>') {
                out.push(' ');
                let mut lines = s.lines();
                out.push_str(lines.next().unwrap_or(""));
                out.push('\n');
                for l in lines {
                    if l.is_empty() {
                        out.push('\n');
                    } else {
                        out.push_str(&" ".repeat(indent));
                        out.push_str(l);
                        out.push('\n');
                    }
                }
                if s.ends_with("\n\n") {
                    out.push('\n');
                }
            } else {
                out.push(' ');
                out.push_str(s);
                out.push('\n');
            }
        }
        2 => {
            let n = r.below(4);
            let items: Vec<&str> = (0..n)
                .map(|_| {
                    r.pick(&[
                        "1", "a", "yes", "~", "'q'", "1.5", "[]", "{}", "{k: v}", "[x, [y]]",
                    ])
                })
                .collect();
            out.push_str(&format!(" [{}]\n", items.join(", ")));
        }
        3 if !anchors.is_empty() => {
            let a = anchors[(r.below(anchors.len() as u64)) as usize].clone();
            out.push_str(&format!(" *{a}\n"));
        }
        3 | 4 => {
            // A block mapping, sometimes anchored, sometimes merging an anchor.
            let anchor = if r.below(3) == 0 {
                let name = format!("a{}", r.next() % 1_000_000_007);
                out.push_str(&format!(" &{name}"));
                Some(name)
            } else {
                None
            };
            out.push('\n');
            let n = 1 + r.below(4);
            for _ in 0..n {
                out.push_str(&" ".repeat(indent + 2));
                if !anchors.is_empty() && r.below(6) == 0 {
                    let a = anchors[(r.below(anchors.len() as u64)) as usize].clone();
                    out.push_str(&format!("<<: *{a}\n"));
                    continue;
                }
                out.push_str(r.pick(KEYS));
                out.push(':');
                gen_value(r, depth + 1, indent + 2, out, anchors);
            }
            if let Some(a) = anchor {
                anchors.push(a);
            }
        }
        _ => {
            out.push('\n');
            let n = 1 + r.below(3);
            for _ in 0..n {
                out.push_str(&" ".repeat(indent + 2));
                out.push('-');
                gen_value(r, depth + 1, indent + 2, out, anchors);
            }
        }
    }
}

fn gen_document(r: &mut Rng) -> String {
    let mut out = String::new();
    if r.below(8) == 0 {
        out.push_str("---\n");
    }
    let mut anchors = Vec::new();
    let n = 1 + r.below(5);
    for _ in 0..n {
        out.push_str(r.pick(KEYS));
        out.push(':');
        gen_value(r, 0, 0, &mut out, &mut anchors);
    }
    out
}

#[test]
fn the_yaml_reader_agrees_with_pyyaml_value_for_value() {
    let Some(up) = optional::require("upstream hyops", "UPSTREAM", probe) else {
        return;
    };
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let docs: Vec<String> = (0..800).map(|_| gen_document(&mut r)).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("docs.json");
    let output = dir.path().join("out.json");
    std::fs::write(&input, serde_json::to_vec(&docs).unwrap()).unwrap();
    let script = "import json, sys, yaml\n\
        docs = json.load(open(sys.argv[1], encoding='utf-8'))\n\
        out = []\n\
        for d in docs:\n\
        \x20   try:\n\
        \x20       out.append(['ok', repr(yaml.safe_load(d))])\n\
        \x20   except Exception as e:\n\
        \x20       out.append(['err', type(e).__name__ + ': ' + str(e)])\n\
        json.dump(out, open(sys.argv[2], 'w', encoding='utf-8'))\n";
    let status = Command::new(&up.python)
        .args(["-c", script])
        .arg(&input)
        .arg(&output)
        .status()
        .unwrap();
    assert!(status.success());
    let theirs: Vec<(String, String)> =
        serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    let (mut same, mut both_err, mut allowed) = (0, 0, 0);
    let mut diffs = Vec::new();
    for (i, (doc, (verdict, text))) in docs.iter().zip(&theirs).enumerate() {
        if i < 3 && std::env::var("HYOPS_DIFF_VERBOSE").as_deref() == Ok("1") {
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "SAMPLE\n{doc}=> {text}");
        }
        let ours = hyops_pve::yaml::safe_load(doc);
        match (verdict.as_str(), &ours) {
            ("ok", Ok(v)) if v.py_repr() == *text => same += 1,
            ("err", Err(_)) => {
                both_err += 1;
                if std::env::var("HYOPS_DIFF_VERBOSE").as_deref() == Ok("1") {
                    use std::io::Write;
                    let _ = writeln!(std::io::stderr().lock(), "BOTH-ERR {text}");
                }
            }
            (_, Err(e)) if e.kind != hyops_pve::yaml::YamlErrorKind::Refused => allowed += 1,
            _ => diffs.push(format!(
                "document:\n{doc}\n  pyyaml:    {verdict} {text}\n  hyops-pve: {}",
                match &ours {
                    Ok(v) => format!("ok {}", v.py_repr()),
                    Err(e) => format!("err {e}"),
                }
            )),
        }
    }
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "YAML reader vs PyYAML: {} documents, {same} same values, {both_err} refused by both, {allowed} beyond hyops-pve's bounds, {} different",
            docs.len(),
            diffs.len()
        );
    }
    for d in diffs.iter().take(20) {
        eprintln!("DIFF {d}");
    }
    assert!(
        diffs.is_empty(),
        "{} documents read differently",
        diffs.len()
    );
}
