"""The `swarm` command.

    swarm run FILE.yaml [--output DIR] [--rounds N]     the whole swarm on this machine
    swarm node --manifest FILE --node-id ID [...]       one node (what each pod runs)

A user's mistake (bad manifest, bad option) prints one line naming the field and exits with 2.
Stopped by a signal, both commands exit with 128 + the signal's number (SIGTERM: 143); `swarm run`
first stops every node process it started.
Every `swarm node` logs one line with its peak memory as it exits (node/peak_memory.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from swarm_contract.manifest import Manifest, load_manifest
from swarm_contract.spec import SpecError
from swarm_worker.protocol.curve import KeyFileError
from swarm_worker.simulation.byzantine import plan_for
from swarm_worker.training.tasks import TaskError, resolve_task, task_metric

EXIT_USAGE = 2
#: Signals that ask `swarm node` to stop. In a pod the node is PID 1, where a signal without a
#: handler is ignored: without these the kubelet's SIGTERM would wait out the grace period.
NODE_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"swarm: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from e
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text) if text != "0" else 0
    if value > 65535:
        raise argparse.ArgumentTypeError(f"port {value} out of range")
    return value


def _peers(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        node, sep, address = item.partition("=")
        if not sep or not node or ":" not in address:
            raise argparse.ArgumentTypeError(f"expected id=host:port, got {item!r}")
        out[node] = address
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="swarm", description="Byzantine-robust, communication-efficient training.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a SwarmTraining manifest as local processes")
    run.add_argument("manifest", type=Path)
    run.add_argument(
        "--output", type=Path, help="directory for summary.json, metrics.jsonl, curves.png, logs"
    )
    run.add_argument("--rounds", type=_positive_int, help="override spec.training.rounds")
    run.add_argument("--threads", type=_positive_int, default=1, help="torch threads per process (default 1)")
    run.add_argument("--quiet", action="store_true", help="print only the summary")

    node = sub.add_parser("node", help="run one node of a swarm (what each pod runs)")
    node.add_argument("--manifest", type=Path, required=True)
    node.add_argument("--node-id", required=True)
    node.add_argument("--parent", help="host:port of the parent aggregator (not for the root)")
    node.add_argument(
        "--peers",
        type=_peers,
        default={},
        help="with topology.reshuffle, every bottom aggregator: agg-0=host:port,agg-1=host:port; "
        "for a root replica, the other replicas' consensus ports: root=host:port,root-2=host:port",
    )
    node.add_argument(
        "--replicas",
        type=_peers,
        default={},
        help="a child of the root with consensus.replicas > 1: each replica, root=host:port,root-1=host:port",
    )
    node.add_argument(
        "--consensus-port", type=_port, default=None, help="a root replica's port for the other replicas"
    )
    node.add_argument("--bind-host", default="0.0.0.0")
    node.add_argument(
        "--bind-port", type=_port, default=None, help="data port (default: spec.network.dataPort)"
    )
    node.add_argument("--metrics-host", default="0.0.0.0")
    node.add_argument("--metrics-port", type=_port, default=None, help="default: spec.network.metricsPort")
    node.add_argument("--workdir", type=Path, default=Path("/var/lib/swarm"))
    node.add_argument(
        "--keys",
        type=Path,
        default=None,
        help="directory of the job's CURVE keys (swarm_contract.keys); without it the links are plain",
    )
    node.add_argument("--threads", type=_positive_int, default=None, help="torch threads (default: torch's)")
    return parser


def _with_rounds(manifest: Manifest, rounds: int | None) -> Manifest:
    if rounds is None:
        return manifest
    training = manifest.spec.training.model_copy(update={"rounds": rounds})
    return manifest.model_copy(update={"spec": manifest.spec.model_copy(update={"training": training})})


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from swarm_worker.local.launcher import LocalSwarm, SwarmFailedError, SwarmInterruptedError
    from swarm_worker.local.placement import describe
    from swarm_worker.local.report import print_summary, progress_line, summarize, write_outputs

    manifest = _with_rounds(load_manifest(args.manifest), args.rounds)
    resolve_task(manifest.spec.task.name)  # a bad entry point fails here, not in every node
    for rank in range(manifest.spec.workers.replicas):
        plan_for(manifest.spec, rank)  # a bad attack setting too, not in a restart loop
    output = args.output or Path("runs") / f"{manifest.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (output / "result.json").exists():
        raise SpecError(f"--output: {output} already holds a finished run; choose another directory")
    console = Console(stderr=False, highlight=False)
    spec = manifest.spec
    console.print(
        f"swarm run {manifest.name}: {spec.workers.replicas} workers, "
        f"branching {spec.topology.branching_factor}, "
        f"task {spec.task.name}, {spec.training.rounds} rounds x {spec.training.sync_every} local steps, "
        f"rule {spec.robustness.rule}, output {output}"
    )
    swarm = LocalSwarm(manifest, output, threads=args.threads)
    placed = describe(swarm.gpu_plan, swarm.gpus)
    if placed is not None:
        console.print(f"GPUs: {placed}", soft_wrap=True)
    rounds = spec.training.rounds
    metric = task_metric(spec.task.name)  # perplexity for a language model

    def on_round(line: dict[str, Any]) -> None:
        if not args.quiet:
            console.print(progress_line(line, rounds, metric), soft_wrap=True)

    try:
        result = swarm.run(on_round)
    except SwarmFailedError as e:
        console.print(f"swarm: failed: {e} (logs in {output / 'logs'})")
        return 1
    except SwarmInterruptedError as e:
        console.print(
            f"swarm: {e.signal_name} received: stopped every node process; the root's checkpoint is "
            "kept, rerun with the same --output to resume"
        )
        return 128 + e.signum
    except KeyboardInterrupt:
        console.print(
            "swarm: interrupted; the root's checkpoint is kept, rerun with the same --output to resume"
        )
        return 130
    lines = swarm.metrics_lines()
    summary = summarize(result, lines, metric)
    write_outputs(output, summary, lines)
    print_summary(console, summary)
    console.print(f"wrote {output / 'summary.json'}, {output / 'metrics.jsonl'}, {output / 'curves.png'}")
    return 0


class NodeStopSignals:
    """The first SIGTERM or SIGINT sets `event` (the runtime's `stop_requested`: the role loops
    return at their next poll turn); a second one exits at once. Handlers stay short: no logging
    (its locks may be held by the code they interrupt), one raw write to stderr."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.event = threading.Event()
        self.signum: int | None = None

    def install(self) -> None:
        for sig in NODE_STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            os.write(2, f"swarm node {self.node_id}: {name} again: exiting now\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        self.event.set()
        os.write(2, f"swarm node {self.node_id}: {name} received: stopping\n".encode())


def cmd_node(args: argparse.Namespace) -> int:
    """Run one node; stopped by a signal, it exits 128 + signum whatever its loop returned, so that
    a stopped root is never taken for one that finished."""
    stops = NodeStopSignals(args.node_id)
    # Before the slow imports: a stop asked for while starting is kept, not lost.
    stops.install()
    code = _run_node(args, stops.event)
    return code if stops.signum is None else 128 + stops.signum


def _run_node(args: argparse.Namespace, stop_requested: threading.Event) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return _serve_node(args, stop_requested)
    finally:
        from swarm_worker.node.peak_memory import peak_memory_line

        logging.getLogger("swarm").info("%s", peak_memory_line(args.node_id))


def _serve_node(args: argparse.Namespace, stop_requested: threading.Event) -> int:
    import torch

    from swarm_worker.node.runtime import NodeRuntime, NodeSettings

    if args.threads:
        torch.set_num_threads(args.threads)
    manifest = load_manifest(args.manifest)
    net = manifest.spec.network
    settings = NodeSettings(
        manifest=manifest,
        node_id=args.node_id,
        parent=args.parent,
        bind_host=args.bind_host,
        bind_port=args.bind_port if args.bind_port is not None else net.data_port,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port if args.metrics_port is not None else net.metrics_port,
        workdir=args.workdir,
        peers=args.peers,
        replicas=args.replicas,
        keys=args.keys,
        consensus_port=args.consensus_port,
    )
    settings.workdir.mkdir(parents=True, exist_ok=True)
    rt = NodeRuntime(settings, stop_requested=stop_requested)
    role = rt.node.role
    if (role == "root") != (settings.parent is None):
        raise SpecError(
            f"--parent: {'must not' if role == 'root' else 'is required'} for the {role} {rt.node.id}"
        )
    rt.start()
    try:
        if role == "worker":
            from swarm_worker.roles.worker import Worker

            return Worker(rt).run()
        if role == "root" and manifest.spec.consensus.replicas > 1:
            from swarm_worker.roles.replica import run_replica

            return run_replica(rt)
        if role == "root":
            from swarm_worker.roles.root import run_root

            return run_root(rt)
        from swarm_worker.roles.aggregator import run_aggregator

        return run_aggregator(rt)
    finally:
        rt.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        return cmd_node(args)
    except (SpecError, TaskError, KeyFileError) as e:
        print(f"swarm: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
