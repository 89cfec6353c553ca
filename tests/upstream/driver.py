"""Runs overlay cases through the real upstream hyops, in process, for tests/upstream_diff.rs.

For each case (a JSON list in argv[1]): set the case's HYOPS_ENV / HYOPS_INPUTS_JSON /
HYOPS_INPUT_* variables in the given order, then do what `hyops validate` does before any
API call: `resolve_module(...)` with the validators registered (`hyops.validators.builtin.register.register_all`, which the CLI runs at start-up), `json.dumps` of the
resolved inputs (as inputs_resolved.json is written), and `ProxmoxVmContract
.preprocess_inputs` for a `preflight` of `validate` without credentials (no API or SSH
probe runs). The SDN and NetBox stages of the contract are stubbed out unless the case
asks for them (`sdn` / `netbox`), because hyops-pve may not implement them yet.

Writes a JSON list of {"id", "ok", "message", "stage", "warnings"} to argv[2]. Reads the
upstream source's modules/ directory from argv[3].
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from hyops.validators.builtin.register import register_all
from hyops.runtime.module_resolve import resolve_module
from hyops.drivers.iac.terragrunt.contracts import proxmox_vm

MODULE_REF = "platform/onprem/platform-vm"
ENV_PREFIXES = (
    "HYOPS_INPUT_",
    "HYOPS_INPUTS_JSON",
    "HYOPS_ENV",
    "HYOPS_SDN_",
    "HYOPS_NETBOX_",
    "NETBOX_API_",
)

_real_bridges = proxmox_vm._collect_requested_bridges
_real_netbox_ready = proxmox_vm._netbox_ready
IPAM_STAGE = "__hyops_pve_diff_ipam_stage__"


def set_case_env(pairs: list[list[str]], hyops_env: str | None, home: str) -> None:
    for key in list(os.environ):
        if key.startswith(ENV_PREFIXES):
            del os.environ[key]
    # The SDN authority defaults to ~/.hybridops/envs/shared: each case has its own home.
    os.environ["HOME"] = home
    if hyops_env is not None:
        os.environ["HYOPS_ENV"] = hyops_env
    for key, value in pairs:
        os.environ[key] = value


def run_case(case: dict, module_root: Path) -> dict:
    root = Path(case["root"])
    set_case_env(case.get("env") or [], case.get("hyops_env"), str(root / "home"))
    proxmox_vm._collect_requested_bridges = (
        _real_bridges if case.get("sdn") else (lambda inputs: set())
    )
    proxmox_vm._netbox_ready = (
        _real_netbox_ready if case.get("netbox") else (lambda state_dir: ({}, IPAM_STAGE))
    )
    out = {"id": case["id"], "ok": True, "message": "", "stage": "", "warnings": []}
    try:
        resolved = resolve_module(
            MODULE_REF,
            module_root,
            Path(case["overlay"]) if case.get("overlay") else None,
            state_dir=root / "state",
            runtime_root=root,
            lifecycle_command="validate",
            invocation_command="validate",
        )
    except Exception as exc:  # hyops prints `ERR: {exc}`
        out.update(ok=False, message=str(exc), stage="resolve")
        return out
    try:
        json.dumps(resolved.inputs, indent=2, sort_keys=True)
    except Exception as exc:  # hyops crashes writing inputs_resolved.json
        out.update(ok=False, message=f"{type(exc).__name__}: {exc}", stage="record")
        return out
    runtime = {
        "root": str(root),
        "env": case.get("hyops_env") or "",
        "state_dir": str(root / "state"),
        "meta_dir": str(root / "meta"),
        "lifecycle_command": "validate",
        "state_instance": case.get("state_instance") or "",
    }
    env = {"HYOPS_ENV": case["hyops_env"]} if case.get("hyops_env") else {}
    try:
        _, warnings, err = proxmox_vm.ProxmoxVmContract().preprocess_inputs(
            command_name="preflight",
            module_ref=MODULE_REF,
            inputs=resolved.inputs,
            profile_policy={},
            runtime=runtime,
            env=env,
            credential_env={},
        )
    except Exception as exc:
        out.update(ok=False, message=f"{type(exc).__name__}: {exc}", stage="contract")
        return out
    out["warnings"] = list(warnings)
    if err:
        if IPAM_STAGE in err:
            out["stage"] = "ipam"
        else:
            out.update(ok=False, message=err, stage="contract")
    return out


def main() -> int:
    cases = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    module_root = Path(sys.argv[3])
    register_all()
    results = []
    for case in cases:
        try:
            results.append(run_case(case, module_root))
        except BaseException:  # never lose the whole run to one case
            results.append(
                {
                    "id": case["id"],
                    "ok": False,
                    "message": "driver crash: " + traceback.format_exc(limit=3),
                    "stage": "driver",
                    "warnings": [],
                }
            )
    Path(sys.argv[2]).write_text(json.dumps(results), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
