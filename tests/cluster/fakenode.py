"""A fake node's heartbeat: keeps one Node Ready (Lease and status) without a kubelet or containers.

The control-plane-only cluster has no kubelet, so KCM's node-lifecycle controller would mark a node
NotReady and taint it `unreachable` 20 s (controlplane.py's grace period) after its last heartbeat. This
process renews the node's Lease in kube-node-lease and re-asserts `Ready=True` every `--period`
seconds, as a kubelet does, so the scheduler keeps binding pods (for example ones that request
`nvidia.com/gpu`) to it. Pods bound to a fake node stay Pending: nothing runs them. Stop this process
to simulate a dead kubelet.

Run by fakenodes.py; stdlib only so it starts in any interpreter:
    python fakenode.py --server https://127.0.0.1:PORT --ca CA --cert CRT --key KEY --node NAME
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from typing import Any


class Api:
    """The few API calls a heartbeat needs, over the node's client certificate."""

    def __init__(self, server: str, ca: str, cert: str, key: str) -> None:
        self.server = server.rstrip("/")
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.load_cert_chain(cert, key)

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, context=self.ctx, timeout=10) as resp:
            return json.loads(resp.read() or b"null")


def now(micro: bool = False) -> str:
    t = dt.datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if micro else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def renew_lease(api: Api, node: str, duration_s: int) -> None:
    path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
    try:
        api.call("PATCH", path, {"spec": {"renewTime": now(micro=True)}}, "application/merge-patch+json")
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
        api.call(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": node,
                    "leaseDurationSeconds": duration_s,
                    "renewTime": now(micro=True),
                },
            },
        )


def assert_ready(api: Api, node: str) -> None:
    """Strategic merge patch: conditions merge by type, so the other conditions stay (trap T12)."""
    t = now()
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "fake node heartbeat (tests/cluster/fakenode.py)",
        "lastHeartbeatTime": t,
    }
    api.call(
        "PATCH",
        f"/api/v1/nodes/{node}/status",
        {"status": {"conditions": [ready]}},
        "application/strategic-merge-patch+json",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--period", type=float, default=5.0)
    args = p.parse_args(argv)
    api = Api(args.server, args.ca, args.cert, args.key)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        try:
            renew_lease(api, args.node, duration_s=40)
            assert_ready(api, args.node)
        except (urllib.error.URLError, OSError, ValueError) as e:
            # The apiserver may be starting or stopping: report and retry on the next beat.
            print(f"fakenode {args.node}: heartbeat failed: {e}", file=sys.stderr, flush=True)
        time.sleep(args.period)


if __name__ == "__main__":
    sys.exit(main())
