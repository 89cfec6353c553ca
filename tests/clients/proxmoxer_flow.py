#!/usr/bin/env python3
"""A plain proxmoxer client (PyPI `proxmoxer`, written by others, used by Ansible's modules)
running the everyday VM flow against `hyops-pve sim serve`: clone a template, set cloud-init,
add a NIC, grow the disk, start, read it back (config, status, pending, node listings,
cloud-init dump, guest agent), stop and delete.

It knows nothing about hyops-pve's code: only the Proxmox API through proxmoxer. TLS is
verified against the simulator's CA. Environment:

    HYOPS_SIM_URL    https://127.0.0.1:PORT/api2/json
    HYOPS_SIM_TOKEN  PVEAPIToken=USER@REALM!NAME=SECRET
    HYOPS_SIM_CA     path of the simulator's CA PEM

Prints one line `proxmoxer flow ok: ...` on success; any failure raises with the step named.
"""
import os
import sys
import time
from urllib.parse import quote, urlparse

from proxmoxer import ProxmoxAPI
from proxmoxer.tools import Tasks

NODE = "pve1"
TEMPLATE = 9000
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGh5b3BzLXB2ZS1wcm94bW94ZXItZmxvdw proxmoxer@flow"


def fail(step, detail):
    print(f"proxmoxer flow FAILED at {step}: {detail}", file=sys.stderr, flush=True)
    sys.exit(1)


def wait(px, upid, step):
    status = Tasks.blocking_status(px, upid, timeout=120, polling_interval=0.05)
    if not status or status.get("status") != "stopped" or status.get("exitstatus") != "OK":
        fail(step, f"task {upid} ended {status}")


def main():
    url = urlparse(os.environ["HYOPS_SIM_URL"])
    token = os.environ["HYOPS_SIM_TOKEN"].removeprefix("PVEAPIToken=")
    ident, secret = token.rsplit("=", 1)
    user, token_name = ident.split("!", 1)
    px = ProxmoxAPI(
        url.hostname,
        port=url.port,
        user=user,
        token_name=token_name,
        token_value=secret,
        verify_ssl=os.environ["HYOPS_SIM_CA"],
        timeout=30,
    )
    version = px.version.get()
    if not str(version.get("version", "")).startswith("9."):
        fail("version", version)
    if NODE not in [n["node"] for n in px.nodes.get()]:
        fail("nodes", px.nodes.get())

    newid = int(px.cluster.nextid.get())
    node = px.nodes(NODE)
    wait(px, node.qemu(TEMPLATE).clone.post(newid=newid, name="px-web-01", full=1), "clone")
    vm = node.qemu(newid)

    # cloud-init and a second NIC; sshkeys percent-encoded (urlencoded format), which the
    # form body then encodes once more, exactly as Proxmox expects
    vm.config.put(
        ciuser="ops",
        sshkeys=quote(KEY, safe=""),
        ipconfig0="ip=10.20.0.5/24,gw=10.20.0.1",
        nameserver="10.20.0.53",
        net1="virtio,bridge=vmbr1,tag=20",
        cores=2,
        memory=2048,
    )
    cfg = vm.config.get()
    if cfg.get("ciuser") != "ops" or "bridge=vmbr1" not in cfg.get("net1", ""):
        fail("config", cfg)
    if "tag=20" not in cfg["net1"] or "=" not in cfg["net1"].split(",")[0]:
        fail("config net1 (a MAC is generated)", cfg["net1"])

    wait(px, vm.resize.put(disk="scsi0", size="40G"), "resize")
    if "size=40G" not in vm.config.get()["scsi0"]:
        fail("resize", vm.config.get()["scsi0"])

    wait(px, vm.status.start.post(), "start")
    if vm.status.current.get()["status"] != "running":
        fail("status after start", vm.status.current.get())

    # info: node listing, cluster resources, pending, cloud-init as the guest sees it
    listed = [int(v["vmid"]) for v in node.qemu.get()]
    if newid not in listed:
        fail("GET /nodes/pve1/qemu", listed)
    res = [r for r in px.cluster.resources.get(type="vm") if int(r["vmid"]) == newid]
    if not res or res[0]["name"] != "px-web-01":
        fail("cluster resources", res)
    if any("pending" in p for p in vm.pending.get()):
        fail("pending after start", vm.pending.get())
    user_data = vm.cloudinit.dump.get(type="user")
    if "user: ops" not in user_data or KEY not in user_data:
        fail("cloud-init dump", user_data)
    bridges = [n["iface"] for n in node.network.get(type="any_bridge")]
    if "vmbr1" not in bridges:
        fail("network", bridges)
    storages = [s["storage"] for s in node.storage.get(content="images")]
    if "local-lvm" not in storages:
        fail("storage", storages)
    deadline = time.time() + 30
    while True:
        try:
            ifaces = vm.agent("network-get-interfaces").get()["result"]
            break
        except Exception as e:  # agent not up yet: Proxmox answers 500 until it is
            if time.time() > deadline:
                fail("guest agent", e)
            time.sleep(0.1)
    if not any(
        a["ip-address"] == "10.20.0.5" for i in ifaces for a in i.get("ip-addresses", [])
    ):
        fail("guest agent addresses", ifaces)

    wait(px, vm.status.stop.post(), "stop")
    wait(px, node.qemu(newid).delete(purge=1), "delete")
    if newid in [int(v["vmid"]) for v in node.qemu.get()]:
        fail("delete", "the VM is still listed")
    print(f"proxmoxer flow ok: vmid {newid} cloned, configured, resized, started, read, stopped, deleted")


if __name__ == "__main__":
    main()
