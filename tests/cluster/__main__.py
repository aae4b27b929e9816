"""Run the test cluster by hand.

    python -m tests.cluster up [--nodes N] [--fake-nodes N] [--gpus N] [--name NAME] [--images]
    python -m tests.cluster status [--name NAME]
    python -m tests.cluster down [--name NAME]

`up` prints `export KUBECONFIG=...` for the admin kubeconfig and leaves the processes running;
`down` stops them and undoes every host change. Binaries: tests/cluster/build.sh (or
NCRSH_CLUSTER_BIN); run directory: NCRSH_CLUSTER_DIR or /tmp/ncrsh-cluster/NAME.
"""

from __future__ import annotations

import argparse
import json
import sys

from .harness import Cluster, ClusterError, ClusterSpec
from .imagetars import our_image_tars


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["up", "down", "status"])
    p.add_argument("--name", default="default", help="run directory /tmp/ncrsh-cluster/NAME")
    p.add_argument("--nodes", type=int, default=0, help="real nodes (kubelet+containerd), 0-2; needs root")
    p.add_argument("--fake-nodes", type=int, default=1, help="heartbeat-only nodes (control-plane mode)")
    p.add_argument("--gpus", type=int, default=4, help="nvidia.com/gpu capacity per node")
    p.add_argument(
        "--images",
        action="store_true",
        help="also import our worker and operator images (built by images.sh) into the nodes",
    )
    args = p.parse_args(argv)
    cluster = Cluster(
        ClusterSpec(
            name=args.name,
            nodes=args.nodes,
            fake_nodes=args.fake_nodes,
            gpus_per_node=args.gpus,
            image_tars=our_image_tars() if args.images else (),
        )
    )
    try:
        if args.command == "up":
            cluster.up()
            print(json.dumps({k: round(v, 1) for k, v in cluster.timings.items()}), file=sys.stderr)
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "down":
            cluster.down()
            print(json.dumps({k: round(v, 1) for k, v in cluster.timings.items()}), file=sys.stderr)
        else:
            print(json.dumps(cluster.status(), indent=1))
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
