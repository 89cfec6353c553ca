#!/usr/bin/env python3
"""A peer rollout for `benches/rollout.rs` (section `peer`): what a plain proxmoxer script does
with a pool of worker threads. Each thread takes one VM at a time: the next free VMID and the
clone under one lock (as bpg serialises id choice; without it the threads clone to the same id),
waits for the clone task, writes the config (synchronous PUT), grows the disk, starts the VM
and waits for its guest agent to report an address. Task waits use proxmoxer's own
`Tasks.blocking_status`, polling every second (what the peers do, pve-api-notes.md §2.8); every
pause is multiplied by --time-scale so the script keeps its proportions on a time-scaled
simulator. Prints one JSON line: wall time (real and simulated seconds), VMs, failures.
"""
import argparse
import concurrent.futures
import json
import threading
import time
import urllib.parse

from proxmoxer import ProxmoxAPI
from proxmoxer.tools import Tasks


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="https://127.0.0.1:PORT/api2/json")
    ap.add_argument("--token-id", required=True, help="user@realm!name")
    ap.add_argument("--token-secret", required=True)
    ap.add_argument("--vms", type=int, default=100)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--template", type=int, default=9000)
    ap.add_argument("--template-node", default="pve1")
    ap.add_argument("--storage", default="ceph")
    ap.add_argument("--nodes", default="pve1,pve2,pve3,pve4")
    ap.add_argument("--disk", default="40G")
    ap.add_argument("--time-scale", type=float, default=1.0)
    args = ap.parse_args()

    url = urllib.parse.urlparse(args.url)
    user, token_name = args.token_id.split("!", 1)
    prox = ProxmoxAPI(
        url.hostname,
        port=url.port,
        user=user,
        token_name=token_name,
        token_value=args.token_secret,
        verify_ssl=False,
        service="PVE",
        timeout=60,
    )
    nodes = args.nodes.split(",")
    poll = 1.0 * args.time_scale
    alloc = threading.Lock()

    def wait(node_upid: str) -> None:
        status = Tasks.blocking_status(
            prox, node_upid, timeout=3600 * max(args.time_scale, 0.01), polling_interval=poll
        )
        if not status or status.get("exitstatus") != "OK":
            raise RuntimeError(f"task {node_upid} ended {status}")

    def one(i: int) -> None:
        node = nodes[i % len(nodes)]
        name = f"peer-{i:03d}"
        with alloc:
            newid = int(prox.cluster.nextid.get())
            upid = prox.nodes(args.template_node).qemu(args.template).clone.post(
                newid=newid, name=name, full=1, storage=args.storage, target=node
            )
        wait(upid)
        vm = prox.nodes(node).qemu(newid)
        vm.config.put(
            cores=2,
            memory=2048,
            ciuser="opsadmin",
            ipconfig0=f"ip=10.50.{i // 250}.{2 + i % 250}/8,gw=10.0.0.1",
            tags="peer",
        )
        wait(vm.resize.put(disk="scsi0", size=args.disk))
        wait(vm.status.start.post())
        while True:
            try:
                ifaces = vm.agent("network-get-interfaces").get()["result"]
                if any(
                    a.get("ip-address-type") == "ipv4" and not a["ip-address"].startswith("127.")
                    for f in ifaces
                    for a in f.get("ip-addresses", [])
                ):
                    return
            except Exception:  # agent not up yet
                pass
            time.sleep(poll)

    started = time.monotonic()
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.threads) as pool:
        for f in concurrent.futures.as_completed([pool.submit(one, i) for i in range(args.vms)]):
            try:
                f.result()
            except Exception as e:  # report, keep the others going
                failed += 1
                print(json.dumps({"error": str(e)}), flush=True)
    wall = time.monotonic() - started
    print(
        json.dumps(
            {
                "wall_s": wall,
                "sim_s": wall / args.time_scale,
                "vms": args.vms,
                "failed": failed,
                "threads": args.threads,
            }
        ),
        flush=True,
    )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
