#!/usr/bin/env python3
"""Start fakepve (PyPI, an independent fake Proxmox VE) for hyops-pve's conformance suite.

Job: serve one fakepve on a loopback address, give it the templates and the API token the suite
needs, wait until it answers, then print ONE JSON line on stdout and keep serving until SIGTERM,
SIGINT or the end of stdin (so the server dies with the test process that holds the pipe).

    python3 tests/fakepve/launch.py [--port 0] [--time-scale 0.02] [--no-stdin-watch]

The JSON line:
    {"url": "https://127.0.0.1:PORT/api2/json", "token_id": "root@pam!hyops-conf",
     "token_secret": "...", "node": "pve1", "template_vmid": 9000, "tls": true, "pid": N,
     "fingerprint": "AA:BB:...", "ca_file": "/tmp/.../fakepve.crt", "slow_template_vmid": 9001,
     "slow_clone_secs": S, "fakepve_version": "0.5.0"}

It knows nothing about hyops-pve's Rust code: it only talks fakepve's Python API (FakePve,
add_ceph_storage, ceph_slow, apitokens) and the Proxmox HTTP API. fakepve is AGPL and is not
vendored: it is installed with `python3 -m pip install 'fakepve==0.5.0'`.
"""

import argparse
import asyncio
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import uuid

NODE = 'pve1'
TEMPLATE_VMID = 9000
SLOW_TEMPLATE_VMID = 9001
TOKEN_ID = 'root@pam!hyops-conf'
# PVE seconds the Ceph scenario adds to every operation on the slow template's clones; with the
# default time scale this keeps `lock: clone` visible for about a second of wall time.
SLOW_PVE_SECS = 50


def fail(message):
    print('launch.py: ' + message, file=sys.stderr, flush=True)
    sys.exit(2)


def is_loopback(host):
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def template_params(vmid, name, storage):
    """A cloud-init ready VM as the HyOps templates are built: boot disk, cloud-init drive, one NIC, agent."""
    return {
        'vmid': str(vmid), 'name': name, 'memory': '1024', 'cores': '1', 'ostype': 'l26',
        'scsihw': 'virtio-scsi-pci', 'scsi0': '{0}:8'.format(storage),
        'ide2': '{0}:cloudinit'.format(storage), 'net0': 'virtio,bridge=vmbr0', 'agent': '1',
        'serial0': 'socket', 'boot': 'order=scsi0',
    }


class Api(object):
    """The few Proxmox calls the launcher makes, over HTTPS with the token."""

    def __init__(self, session, base, token_id, token_secret, cafile):
        self.session = session
        self.base = base
        self.headers = {'Authorization': 'PVEAPIToken={0}={1}'.format(token_id, token_secret)}
        self.ssl = ssl.create_default_context(cafile=cafile)

    async def call(self, method, path, data=None):
        async with self.session.request(method, self.base + path, data=data, headers=self.headers,
                                        ssl=self.ssl) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise RuntimeError('{0} {1} answered {2}: {3}'.format(method, path, resp.status, body))
            return body.get('data')

    async def wait_task(self, upid):
        node = upid.split(':')[1]
        for _ in range(600):
            status = await self.call('GET', '/nodes/{0}/tasks/{1}/status'.format(node, upid))
            if status.get('status') == 'stopped':
                if status.get('exitstatus') != 'OK':
                    raise RuntimeError('task {0} failed: {1}'.format(upid, status.get('exitstatus')))
                return
            await asyncio.sleep(0.02)
        raise RuntimeError('task {0} did not end'.format(upid))

    async def ensure_template(self, vmid, name, storage):
        """Create the VM and make it a template unless it exists already."""
        resources = await self.call('GET', '/cluster/resources?type=vm')
        if any(int(r.get('vmid', 0)) == vmid for r in resources):
            return
        await self.wait_task(await self.call('POST', '/nodes/{0}/qemu'.format(NODE),
                                             template_params(vmid, name, storage)))
        await self.wait_task(await self.call('POST', '/nodes/{0}/qemu/{1}/template'.format(NODE, vmid)))


async def serve(args):
    try:
        import aiohttp
        import fakepve
        from fakepve.certs import make_cert
    except ImportError as exc:
        fail('fakepve is not importable ({0}); install it with: python3 -m pip install fakepve==0.5.0'.format(exc))
    if not is_loopback(args.host):
        fail('refusing to listen on {0}: fakepve is a test tool and stays on loopback'.format(args.host))

    pki = tempfile.mkdtemp(prefix='hyops-fakepve-')
    try:
        try:
            certfile, keyfile, der = make_cert(pki, hosts=(args.host,))
        except ImportError as exc:
            fail("fakepve needs the cryptography package for its certificate: "
                 "python3 -m pip install 'fakepve[crypto]==0.5.0' ({0})".format(exc))
        digest = hashlib.sha256(der).hexdigest().upper()
        fingerprint = ':'.join(digest[i:i + 2] for i in range(0, len(digest), 2))

        pve = fakepve.FakePve(user='root@pam', password=secrets.token_urlsafe(18), host=args.host, port=args.port)
        pve.time_scale = args.time_scale
        token_secret = str(uuid.uuid4())
        pve.apitokens[TOKEN_ID] = token_secret
        # An RBD storage whose operations are slow: clones of the slow template stay `lock: clone`
        # long enough for the suite to observe the lock.
        pve.add_ceph_storage('ceph-slow')
        pve.ceph_slow(SLOW_PVE_SECS, health='HEALTH_OK')
        try:
            await pve.start(certfile, keyfile)
        except OSError as exc:
            fail('cannot listen on {0}:{1}: {2}'.format(args.host, args.port, exc))

        base = 'https://{0}:{1}/api2/json'.format(args.host, pve.port)
        async with aiohttp.ClientSession() as session:
            api = Api(session, base, TOKEN_ID, token_secret, certfile)
            version = None
            for _ in range(100):
                try:
                    version = await api.call('GET', '/version')
                    break
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.05)
            if version is None:
                fail('fakepve did not answer on ' + base)
            await api.ensure_template(TEMPLATE_VMID, 'hyops-conf-template', 'local-lvm')
            await api.ensure_template(SLOW_TEMPLATE_VMID, 'hyops-conf-slow-template', 'ceph-slow')

        print(json.dumps({
            'url': base, 'token_id': TOKEN_ID, 'token_secret': token_secret, 'node': NODE,
            'template_vmid': TEMPLATE_VMID, 'tls': True, 'pid': os.getpid(),
            'fingerprint': fingerprint, 'ca_file': certfile, 'slow_template_vmid': SLOW_TEMPLATE_VMID,
            'slow_clone_secs': SLOW_PVE_SECS * args.time_scale, 'time_scale': args.time_scale,
            'fakepve_version': fakepve.__version__,
        }), flush=True)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if not args.no_stdin_watch:
            threading.Thread(target=_wait_stdin_eof, args=(loop, stop), daemon=True).start()
        await stop.wait()
        await pve.stop()
    finally:
        shutil.rmtree(pki, ignore_errors=True)


def _wait_stdin_eof(loop, stop):
    """Block until stdin ends (the parent went away), then ask the server to stop."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    loop.call_soon_threadsafe(stop.set)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1', help='loopback address to bind (default 127.0.0.1)')
    parser.add_argument('--port', type=int, default=0, help='port; 0 lets the system pick a free one')
    parser.add_argument('--time-scale', type=float, default=0.02,
                        help="real seconds per PVE second (fakepve's time_scale; must be > 0 for visible locks)")
    parser.add_argument('--no-stdin-watch', action='store_true',
                        help='keep serving when stdin ends (for running it by hand in the background)')
    args = parser.parse_args()
    if args.time_scale < 0:
        fail('--time-scale must be >= 0, not {0}'.format(args.time_scale))
    asyncio.run(serve(args))


if __name__ == '__main__':
    main()
