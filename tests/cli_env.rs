//! The process environment at the CLI edge (found by the tester): one variable that was not
//! valid UTF-8, even one hyops-pve never reads, crashed every module command with exit 70 and
//! printed its raw value (`std::env::vars()` panics, naming the value) into stderr and the
//! `--json` envelope. Now an unrelated variable is ignored, and a variable hyops-pve reads is
//! refused with an error naming only the variable.

use crate::cli_support;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use cli_support::*;

/// A value that is not valid UTF-8 (Latin-1 `é`), with a marker the tests look for.
const SECRET: &[u8] = b"s3cr\xe9t-MARKER-4711";

fn not_utf8(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Neither the raw bytes nor any readable piece of the value appear in `out`.
fn assert_value_absent(out: &[u8], what: &str) {
    let text = String::from_utf8_lossy(out);
    assert!(
        !text.contains("MARKER-4711") && !out.windows(SECRET.len()).any(|w| w == SECRET),
        "the value leaked into {what}: {text}"
    );
}

#[test]
fn every_module_command_runs_with_an_unrelated_variable_that_is_not_utf8() {
    let home = tempfile::tempdir().unwrap();
    let demo = example("inputs.sim-demo.yml");
    let sim = ["--sim", "--env", "dev"];
    let commands: Vec<Vec<&str>> = vec![
        vec!["validate", "--inputs", &demo],
        vec!["preflight", "--inputs", &demo],
        vec!["plan", "--inputs", &demo],
        vec!["apply", "--inputs", &demo],
        vec!["state", "show"],
        vec!["rebuild", "--yes", "--inputs", &demo],
        vec!["destroy"],
    ];
    for args in commands {
        let mut c = bin(home.path());
        c.args(&args)
            .args(sim)
            .arg("--json")
            .env("UNRELATED_LATIN1", not_utf8(SECRET));
        let o = run_sync(c);
        let shown = format!("{args:?}: {}\n{}", stdout(&o), stderr(&o));
        assert_eq!(o.status.code(), Some(0), "{shown}");
        assert!(!stderr(&o).contains("internal error"), "{shown}");
        // `state show --json` prints the state, the others the envelope
        if args[0] != "state" {
            assert_eq!(one_doc(&o)["status"], "ok", "{shown}");
        }
        assert_value_absent(&o.stdout, "stdout");
        assert_value_absent(&o.stderr, "stderr");
    }
}

#[test]
fn an_input_override_that_is_not_utf8_is_refused_naming_only_the_variable() {
    let home = tempfile::tempdir().unwrap();
    let mut c = bin(home.path());
    c.args(["apply", "--sim", "--env", "dev", "--json", "--inputs"])
        .arg(example("inputs.sim-demo.yml"))
        .env("HYOPS_INPUT_name_prefix", not_utf8(SECRET));
    let o = run_sync(c);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let doc = one_doc(&o);
    assert_eq!(doc["status"], "error", "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.starts_with("environment variable HYOPS_INPUT_name_prefix is not valid UTF-8"),
        "{error}"
    );
    assert!(
        stderr(&o).contains("ERR: environment variable HYOPS_INPUT_name_prefix is not valid UTF-8"),
        "{}",
        stderr(&o)
    );
    assert_value_absent(&o.stdout, "stdout");
    assert_value_absent(&o.stderr, "stderr");
    // refused before anything was written: no run record
    assert!(
        !home.path().join("sim-home/envs/dev/logs").exists(),
        "a run started"
    );
}

#[test]
fn a_secret_variable_that_is_not_utf8_is_refused_by_every_module_command() {
    let home = tempfile::tempdir().unwrap();
    let demo = example("inputs.sim-demo.yml");
    for args in [
        vec!["validate", "--inputs", &demo],
        vec!["plan", "--inputs", &demo],
        vec!["preflight", "--inputs", &demo],
        vec!["state", "show"],
        vec!["destroy"],
    ] {
        let mut c = bin(home.path());
        c.args(&args)
            .args(["--sim", "--env", "dev"])
            .env("NETBOX_API_TOKEN", not_utf8(SECRET));
        let o = run_sync(c);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("ERR: environment variable NETBOX_API_TOKEN is not valid UTF-8"),
            "{args:?}: {err}"
        );
        assert_value_absent(&o.stdout, "stdout");
        assert_value_absent(&o.stderr, "stderr");
    }
}
