//! The exit-code table of the README ("Exit codes"), one test per row, and the promise behind
//! it: no error of any kind exits with 2, the `plan --detailed-exitcode` "changes present" code.

use crate::cli_support;

use cli_support::*;
use hyops_pve::commands::{
    exit_code, guard, CliError, EXIT_CANCELLED, EXIT_CHANGES, EXIT_ERROR, EXIT_INTERNAL, EXIT_OK,
    EXIT_USAGE,
};

#[test]
fn the_table_values_are_the_documented_ones() {
    assert_eq!(
        (
            EXIT_OK,
            EXIT_ERROR,
            EXIT_CHANGES,
            EXIT_USAGE,
            EXIT_INTERNAL,
            EXIT_CANCELLED
        ),
        (0, 1, 2, 64, 70, 130)
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for code in ["| 0 |", "| 1 |", "| 2 |", "| 64 |", "| 70 |", "| 130 |"] {
        assert!(readme.contains(code), "README exit-code table lacks {code}");
    }
}

#[test]
fn row_0_success_and_plan_without_changes() {
    let home = tempfile::tempdir().unwrap();
    let demo = example("inputs.sim-demo.yml");
    let o = run_sync({
        let mut c = bin(home.path());
        c.args(["apply", "--sim", "--env", "dev", "--inputs", &demo]);
        c
    });
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run_sync({
        let mut c = bin(home.path());
        c.args([
            "plan",
            "--sim",
            "--env",
            "dev",
            "--detailed-exitcode",
            "--inputs",
            &demo,
        ]);
        c
    });
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn row_1_a_failed_run() {
    let (home, root) = home_with_root();
    let bad = write(
        home.path(),
        "bad.yml",
        "require_ipam: false\ntemplate_vm_id: 9000\n",
    );
    let o = run_sync({
        let mut c = bin(home.path());
        c.args(["plan", "--detailed-exitcode", "--root"])
            .arg(&root)
            .arg("--inputs")
            .arg(&bad);
        c
    });
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn row_2_plan_detailed_exitcode_with_changes() {
    let home = tempfile::tempdir().unwrap();
    let o = run_sync({
        let mut c = bin(home.path());
        c.args([
            "plan",
            "--sim",
            "--env",
            "dev",
            "--detailed-exitcode",
            "--inputs",
            &example("inputs.sim-demo.yml"),
        ]);
        c
    });
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Command lines clap refuses, each with `--detailed-exitcode` where it parses, so a usage
/// error can never be read as "changes present".
#[test]
fn row_64_every_kind_of_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let cases: &[&[&str]] = &[
        &["plan", "--inptus", "x.yml", "--detailed-exitcode"],
        &[],
        &["plann"],
        &["plan", "--detailed-exitcode", "--max-parallel", "many"],
        &[
            "plan",
            "--detailed-exitcode",
            "--env",
            "dev",
            "--root",
            "/tmp/x",
        ],
        &["plan", "--detailed-exitcode", "--inputs"],
        &["completions", "no-such-shell"],
        &["state"],
        &["apply", "--sim-cluster", "c.yml"],
    ];
    for args in cases {
        let o = run_sync({
            let mut c = bin(home.path());
            c.args(*args);
            c
        });
        assert_eq!(
            o.status.code(),
            Some(EXIT_USAGE),
            "hyops-pve {args:?}: {}",
            stderr(&o)
        );
        assert!(o.stdout.is_empty(), "usage errors print nothing on stdout");
    }
}

#[test]
fn help_and_version_flags_exit_0_on_stdout() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["--version"],
        &["plan", "--help"],
        &["help"],
    ] {
        let o = run_sync({
            let mut c = bin(home.path());
            c.args(args);
            c
        });
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(!o.stdout.is_empty(), "{args:?} prints on stdout");
    }
}

#[test]
fn row_70_a_panic_is_an_internal_error() {
    let r = guard(|| panic!("boom in a test"));
    let e = r.as_ref().unwrap_err();
    assert_eq!(e.code, EXIT_INTERNAL);
    assert!(e.message.contains("internal error") && e.message.contains("boom in a test"));
    assert_eq!(exit_code(&r), EXIT_INTERNAL);
}

#[test]
fn no_error_maps_to_success_or_changes() {
    for code in [EXIT_OK, EXIT_CHANGES] {
        let r: Result<i32, CliError> = Err(CliError {
            message: "x".into(),
            code,
        });
        assert_eq!(exit_code(&r), EXIT_ERROR);
    }
    assert_eq!(exit_code(&Ok(EXIT_CHANGES)), EXIT_CHANGES);
}

/// Row 130 (Ctrl-C during apply) is driven in `cli_process.rs`; here: the envelope and code of
/// a cancelled result.
#[test]
fn row_130_a_cancelled_result_keeps_its_code() {
    let r: Result<i32, CliError> = Err(CliError::cancelled("stop"));
    assert_eq!(exit_code(&r), EXIT_CANCELLED);
    let sink = hyops_pve::commands::output::Sink::new(true);
    let doc = sink.envelope("apply", EXIT_CANCELLED, Some("stop"));
    assert_eq!(doc["status"], "cancelled");
}
