//! `hyops-pve hyops-setup`: the modules tree whose platform-vm spec selects iac/proxmox-native.

use std::path::Path;
use std::process::Command;

fn setup(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hyops-pve"))
        .arg("hyops-setup")
        .args(args)
        .output()
        .unwrap()
}

fn spec_of(root: &Path) -> std::path::PathBuf {
    root.join("platform/onprem/platform-vm/spec.yml")
}

#[test]
fn the_spec_selects_the_native_driver_and_a_rerun_is_up_to_date() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("modules");
    let out = setup(&["--module-root", root.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(spec_of(&root)).unwrap();
    // Read as hyops reads it (PyYAML safe_load semantics).
    let spec = hyops_pve::yaml::safe_load(&text)
        .unwrap()
        .to_json("spec.yml")
        .unwrap();
    assert_eq!(
        spec["execution"]["driver"].as_str(),
        Some("iac/proxmox-native")
    );
    assert_eq!(
        spec["module_ref"].as_str(),
        Some("platform/onprem/platform-vm")
    );
    assert!(spec["execution"]["pack_ref"]["id"].as_str().is_some());
    let again = setup(&["--module-root", root.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&again.stdout).starts_with("up to date:"),
        "{again:?}"
    );
}

#[test]
fn a_spec_it_did_not_write_is_kept_unless_forced() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("modules");
    std::fs::create_dir_all(spec_of(&root).parent().unwrap()).unwrap();
    std::fs::write(spec_of(&root), "execution: {driver: iac/terragrunt}\n").unwrap();
    let out = setup(&["--module-root", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("was not written by hyops-pve") && err.contains("--force"),
        "{err}"
    );
    assert!(std::fs::read_to_string(spec_of(&root))
        .unwrap()
        .contains("terragrunt"));
    let forced = setup(&["--module-root", root.to_str().unwrap(), "--force"]);
    assert!(forced.status.success());
    assert!(std::fs::read_to_string(spec_of(&root))
        .unwrap()
        .contains("iac/proxmox-native"));
}

#[test]
fn the_other_modules_of_a_base_tree_are_linked_in() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("core/modules");
    for m in [
        "core/onprem/template-image",
        "platform/onprem/netbox",
        "platform/onprem/platform-vm",
    ] {
        std::fs::create_dir_all(base.join(m)).unwrap();
        std::fs::write(base.join(m).join("spec.yml"), format!("module_ref: {m}\n")).unwrap();
    }
    let root = d.path().join("modules");
    let out = setup(&[
        "--module-root",
        root.to_str().unwrap(),
        "--link-modules",
        base.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    for m in ["core/onprem/template-image", "platform/onprem/netbox"] {
        let link = root.join(m);
        assert!(
            link.symlink_metadata().unwrap().file_type().is_symlink(),
            "{m}"
        );
        assert_eq!(std::fs::read_link(&link).unwrap(), base.join(m));
    }
    // Ours is a real file, not the base tree's Terragrunt spec.
    assert!(!root
        .join("platform/onprem/platform-vm")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(spec_of(&root))
        .unwrap()
        .contains("iac/proxmox-native"));
}
