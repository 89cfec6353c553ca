//! The minimum Rust version the project states (`rust-version` in Cargo.toml, "Requirements" in
//! the README) is what the locked dependencies need: the highest `rust-version` among the
//! packages of `Cargo.lock` built for this platform. (Clippy's `incompatible_msrv` lint, run
//! with `-D warnings` in CI, checks our own code against the same number.)

use std::process::Command;

fn version(s: &str) -> Vec<u64> {
    s.trim()
        .split('.')
        .map(|p| p.parse().unwrap_or_else(|_| panic!("bad version {s:?}")))
        .collect()
}

fn short(v: &[u64]) -> String {
    v.iter()
        .take(2)
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[test]
fn rust_version_matches_what_the_locked_dependencies_need() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = String::from_utf8(
        Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("-vV")
            .output()
            .expect("rustc -vV")
            .stdout,
    )
    .unwrap()
    .lines()
    .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
    .expect("host triple");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
        ])
        .arg(&host)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == env!("CARGO_PKG_NAME"))
        .unwrap();
    let stated = version(ours["rust_version"].as_str().expect("rust-version is set"));
    let (needed, by) = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] != env!("CARGO_PKG_NAME"))
        .filter_map(|p| {
            Some((
                version(p["rust_version"].as_str()?),
                p["name"].as_str()?.to_string(),
            ))
        })
        .max()
        .expect("dependencies state rust versions");
    assert_eq!(
        short(&stated),
        short(&needed),
        "Cargo.toml says rust-version {}, the locked dependencies need {} ({by})",
        short(&stated),
        short(&needed)
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let claim = format!("Rust toolchain ({}+)", short(&stated));
    assert!(readme.contains(&claim), "README must say {claim:?}");
}
