#!/usr/bin/env python3
"""Extract the parameter facts hyops-pve needs from Proxmox's API schema dump.

Usage: python3 proxmox-api-spec/generate.py ../shared/proxmox-api-spec/pve-apidoc.json \
           > proxmox-api-spec/endpoints.json

Keeps only the endpoints the engine calls, and of each parameter only machine facts:
type, format (inline property-string schemas resolved to their keys), enum, minimum, maximum,
maxLength, pattern (Perl `(?^:` wrapper removed), optional, default_key, alias/keyAlias,
requires. Descriptions and everything else in the dump are dropped. Indexed parameters whose
schemas are identical (net0..net31) are collapsed to one entry `net[n]` with `index: [0, 31]`.
"""
import json
import re
import sys

ENDPOINTS = [
    ("/version", "GET"),
    ("/cluster/nextid", "GET"),
    ("/cluster/resources", "GET"),
    ("/access/ticket", "POST"),
    ("/nodes/{node}/qemu/{vmid}/clone", "POST"),
    ("/nodes/{node}/qemu/{vmid}/config", "GET"),
    ("/nodes/{node}/qemu/{vmid}/config", "POST"),
    ("/nodes/{node}/qemu/{vmid}/config", "PUT"),
    ("/nodes/{node}/qemu/{vmid}/resize", "PUT"),
    ("/nodes/{node}/qemu/{vmid}/status/current", "GET"),
    ("/nodes/{node}/qemu/{vmid}/status/start", "POST"),
    ("/nodes/{node}/qemu/{vmid}/status/shutdown", "POST"),
    ("/nodes/{node}/qemu/{vmid}/status/stop", "POST"),
    ("/nodes/{node}/qemu/{vmid}", "DELETE"),
    ("/nodes/{node}/tasks/{upid}/status", "GET"),
    ("/nodes/{node}/tasks/{upid}/log", "GET"),
    ("/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces", "GET"),
    ("/nodes/{node}/qemu/{vmid}/cloudinit", "PUT"),
    ("/nodes/{node}/qemu/{vmid}/cloudinit", "GET"),
    ("/nodes/{node}/qemu/{vmid}/cloudinit/dump", "GET"),
    ("/nodes/{node}/storage/{storage}/content", "GET"),
    ("/nodes/{node}/qemu/{vmid}/pending", "GET"),
    # read endpoints common clients (proxmoxer, Ansible proxmox_kvm) and the plan's placement
    # checks use; and the offline migration of a clone made on the template's node
    ("/nodes", "GET"),
    ("/nodes/{node}/qemu", "GET"),
    ("/nodes/{node}/network", "GET"),
    ("/nodes/{node}/storage", "GET"),
    ("/nodes/{node}/capabilities/qemu/cpu", "GET"),
    ("/nodes/{node}/qemu/{vmid}/migrate", "POST"),
]

# Of the ~500 VM config keys, the ones the engine sets or reads (plus control parameters).
# Indexed families are named by their base.
CONFIG_KEYS = {
    "acpi", "agent", "balloon", "bios", "boot", "cicustom", "cipassword", "citype", "ciupgrade",
    "ciuser", "cores", "cpu", "cpulimit", "delete", "description", "digest", "efidisk0", "force",
    "hotplug", "ide", "ipconfig", "kvm", "lock", "machine", "memory", "name", "nameserver", "net",
    "numa", "onboot", "ostype", "protection", "revert", "sata", "scsi", "scsihw", "searchdomain",
    "serial", "skiplock", "smbios1", "sockets", "sshkeys", "startup", "tags", "template", "tpmstate0",
    "unused", "vcpus", "vga", "virtio", "vmgenid", "background_delay", "node", "vmid", "current",
    "snapshot",
}
FACT_KEYS = ("type", "enum", "minimum", "maximum", "maxLength", "minLength", "pattern",
             "optional", "default_key", "alias", "keyAlias", "requires")
INDEXED = re.compile(r"^([a-z_]+?)(\d+)$")


def pattern(p):
    # Perl's stringified qr// is "(?^:...)"; the plain equivalent is a non-capturing group.
    return p.replace("(?^:", "(?:")


def num(v):
    if isinstance(v, str):
        return float(v) if "." in v else int(v)
    return v


def facts(schema, formats, used_formats):
    out = {}
    for k in FACT_KEYS:
        if k in schema:
            v = schema[k]
            if k in ("minimum", "maximum", "maxLength", "minLength"):
                v = num(v)
            elif k in ("optional", "default_key"):
                v = bool(int(v))
            elif k == "pattern":
                v = pattern(v)
            out[k] = v
    fmt = schema.get("format")
    if isinstance(fmt, dict):
        out["format"] = {name: facts(sub, formats, used_formats) for name, sub in fmt.items()}
    elif isinstance(fmt, str):
        out["format"] = fmt
        used_formats.add(fmt)
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        out["items"] = facts(schema["items"], formats, used_formats)
    return out


def collapse(params):
    groups = {}
    for name in params:
        m = INDEXED.match(name)
        if m:
            groups.setdefault(m.group(1), []).append(int(m.group(2)))
    out = {}
    done = set()
    for name, p in params.items():
        m = INDEXED.match(name)
        if m and m.group(1) not in done:
            base = m.group(1)
            idx = sorted(groups[base])
            same = all(params[f"{base}{i}"] == params[f"{base}{idx[0]}"] for i in idx)
            contiguous = idx == list(range(idx[0], idx[-1] + 1))
            if len(idx) > 1 and same and contiguous:
                entry = dict(p)
                entry["index"] = [idx[0], idx[-1]]
                out[f"{base}[n]"] = entry
                done.add(base)
                continue
        if m and m.group(1) in done:
            continue
        out[name] = p
    return out


def keep_config_key(name):
    m = INDEXED.match(name)
    return name in CONFIG_KEYS or (m is not None and m.group(1) in CONFIG_KEYS)


def main():
    dump = json.load(open(sys.argv[1]))
    index = {}

    def walk(node):
        index[node["path"]] = node
        for child in node.get("children") or []:
            walk(child)

    for root in dump["root"]:
        walk(root)
    formats = dump["formats"]
    used = set()
    endpoints = []
    for path, method in ENDPOINTS:
        info = index[path]["info"][method]
        props = info.get("parameters", {}).get("properties", {})
        if path.endswith("/config") and method != "GET":
            props = {k: v for k, v in props.items() if keep_config_key(k)}
        params = collapse({k: facts(v, formats, used) for k, v in sorted(props.items())})
        returns = info.get("returns", {})
        rtype = returns.get("type", "null")
        name = info.get("name", "")
        upid = rtype == "string" and method != "GET" and path not in ("/access/ticket",)
        endpoints.append({
            "path": path,
            "method": method,
            "name": name,
            "protected": bool(int(info.get("protected", 0))),
            "allowtoken": bool(int(info.get("allowtoken", 0))),
            "returns": rtype,
            "upid": upid,
            "params": params,
        })
    named = {}
    while True:
        pending = sorted(f for f in used if f not in named)
        if not pending:
            break
        for f in pending:
            v = formats.get(f, "missing")
            if isinstance(v, dict):
                named[f] = {k: facts(s, formats, used) for k, s in sorted(v.items())}
            else:
                # "perl-code": a verifier implemented by the simulator; None: a "-list" variant.
                named[f] = "verifier" if v == "perl-code" else ("list" if v is None else "missing")
    json.dump({"source": "pve-apidoc.json (PVE 9.1.x, proxmox-rs@984a933c)",
               "formats": named, "endpoints": endpoints}, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
