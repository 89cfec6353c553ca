#!/usr/bin/env python3
"""The Ansible peer of `benches/rollout.rs` (section `peer`): the same rollout as
`proxmoxer_rollout.py` (same arguments, same 100 full clones, same config, disk and start, same
wait for the guest agent) done the way an Ansible user does it with community.proxmox's
`proxmox_kvm`: the playbook `ansible_rollout.yml` beside this file, one inventory host per VM,
`connection: local`, `forks` workers (Ansible's usual 10), the default linear strategy (each
task on every host before the next task). Prints one JSON line like the proxmoxer script:
wall time (real and simulated seconds), VMs, failures, forks; Ansible's own output goes to
stderr (add `ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks` for per-task times).

Why a playbook and a small driver, not Python calling the modules: the playbook is what an
Ansible user writes and runs, with Ansible's own process-per-module execution, forks and
strategy, which are the cost being compared. The driver only mirrors the proxmoxer script's
arguments, writes the inventory (VMID 100 + i, node i mod nodes, the same cloud-init address
as the proxmoxer script), runs `ansible-playbook` and times it. The wall time starts at the
first task (Ansible prints its banner when the task starts), so Ansible's start-up (loading
the playbook and inventory) is excluded, as the proxmoxer script excludes its imports.

Time scale (the simulator runs its durations at --time-scale; the proxmoxer script scales
every pause). What Ansible lets a user set is scaled:
- the modules' `timeout` (an integer count of one-second polls): clone 600 s, resize 600 s
  (proxmox_disk's default), start 60 s, each multiplied by --time-scale (at least 1);
- the `uri` retry `delay` (Ansible's default 5 s, a float) times --time-scale, with as many
  retries as fit in 300 simulated seconds.
What cannot be scaled:
- `proxmox_kvm` waits for a task by polling its status and sleeping a hard-coded real second
  between polls (`wait_for_task`), and sleeps one more real second after the task is done
  ("the API can be ahead of the hypervisor"); `proxmox_disk` polls with a hard-coded one-second
  sleep too (`api_task_complete`, only while the task runs). At time scale 0.1 each of those
  seconds is ten simulated seconds: every clone and every start costs at least 10 simulated s
  more than it would on a real cluster, and a clone's end is seen up to 10 simulated s late;
- Ansible's own work is real CPU time: a Python process per module run per host (AnsiballZ),
  the controller's templating and result handling. On a real cluster it costs what it costs
  here; at time scale 0.1 it counts ten times. Both make the figure larger than Ansible's on a
  real cluster would be: a ratio computed from it overstates how much faster hyops-pve is.
  Run with --time-scale 1 against a real-time simulator to measure without either distortion.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="https://127.0.0.1:PORT/api2/json")
    ap.add_argument("--token-id", required=True, help="user@realm!name")
    ap.add_argument("--token-secret", required=True)
    ap.add_argument("--vms", type=int, default=100)
    ap.add_argument("--forks", type=int, default=10)
    ap.add_argument("--template", type=int, default=9000)
    ap.add_argument("--template-node", default="pve1")
    ap.add_argument("--storage", default="ceph")
    ap.add_argument("--nodes", default="pve1,pve2,pve3,pve4")
    ap.add_argument("--disk", default="40G")
    ap.add_argument("--time-scale", type=float, default=1.0)
    args = ap.parse_args()

    url = urllib.parse.urlparse(args.url)
    user, token_name = args.token_id.split("!", 1)
    nodes = args.nodes.split(",")
    scale = args.time_scale

    def scaled(seconds: float) -> int:
        return max(1, math.ceil(seconds * scale))

    # Ansible's default retry delay (5 s), scaled; 60 retries: 300 simulated seconds
    agent_delay = 5.0 * scale
    hosts = {
        f"peer-{i:03d}": {
            "vmid": 100 + i,
            "node": nodes[i % len(nodes)],
            "ipconfig0": f"ip=10.50.{i // 250}.{2 + i % 250}/8,gw=10.0.0.1",
        }
        for i in range(args.vms)
    }
    inventory = {
        "all": {
            "children": {
                "rollout": {
                    "hosts": hosts,
                    "vars": {
                        "ansible_python_interpreter": sys.executable,
                        "template_vmid": args.template,
                        "template_node": args.template_node,
                        "storage": args.storage,
                        "disk_size": args.disk,
                        "clone_timeout": scaled(600),
                        "resize_timeout": scaled(600),
                        "start_timeout": scaled(60),
                        "agent_delay": agent_delay,
                        "agent_retries": 60,
                    },
                }
            }
        }
    }
    playbook = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ansible_rollout.yml")

    with tempfile.TemporaryDirectory(prefix="ansible-peer-") as home:
        inv_path = os.path.join(home, "inventory.yml")
        with open(inv_path, "w") as f:
            json.dump(inventory, f)  # JSON is YAML: the yaml inventory plugin reads it
        env = dict(
            os.environ,
            PEER_API_HOST=url.hostname or "127.0.0.1",
            PEER_API_PORT=str(url.port or 8006),
            PEER_API_USER=user,
            PEER_API_TOKEN_ID=token_name,
            PEER_API_TOKEN_SECRET=args.token_secret,
            ANSIBLE_HOME=home,
            ANSIBLE_LOCAL_TEMP=os.path.join(home, "tmp"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_HOST_KEY_CHECKING="0",
            ANSIBLE_DEPRECATION_WARNINGS="0",
            PYTHONUNBUFFERED="1",
            # the modules talk to a self-signed simulator with validate_certs: false
            PYTHONWARNINGS="ignore:Unverified HTTPS request",
        )
        cmd = ["ansible-playbook", "-i", inv_path, "-f", str(args.forks), playbook]
        launched = time.monotonic()
        started = None
        failed_hosts: dict = {}
        recap = re.compile(
            r"^(\S+)\s+:\s+ok=\d+\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)"
        )
        with subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as p:
            assert p.stdout is not None
            for line in p.stdout:
                sys.stderr.write(line)  # Ansible's own output, for whoever reads stderr
                if started is None and line.startswith("TASK ["):
                    started = time.monotonic()
                if line.startswith("fatal:") or line.startswith("failed:"):
                    print(json.dumps({"error": line.strip()[:2000]}), flush=True)
                m = recap.match(line)
                if m and m.group(1) in hosts:
                    failed_hosts[m.group(1)] = int(m.group(2)) + int(m.group(3))
            code = p.wait()
        ended = time.monotonic()
    if started is None or len(failed_hosts) != args.vms:
        print(
            json.dumps({"error": f"ansible-playbook exited {code} without a recap of every host"}),
            flush=True,
        )
        return 1
    wall = ended - started
    failed = sum(1 for v in failed_hosts.values() if v > 0)
    print(
        json.dumps(
            {
                "wall_s": wall,
                "sim_s": wall / scale,
                "startup_s": started - launched,
                "vms": args.vms,
                "failed": failed,
                "forks": args.forks,
            }
        ),
        flush=True,
    )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
