"""Each process's Prometheus metrics and its small HTTP server (/metrics, /healthz, /status).

The operator and `swarm run` read `/status` (JSON) of the root; Prometheus scrapes `/metrics` of
every node. The server runs in a daemon thread; the node's loop publishes a fresh status dict with
`publish`, and the handler only reads the latest reference (no locks on the hot path).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class NodeMetrics:
    """The metrics every node exports, in a registry of its own."""

    def __init__(self, node_id: str, role: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"node": node_id, "role": role}
        r = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, list(labels), registry=r)

        self.round = gauge("swarm_round", "Round of the model this node holds").labels(**labels)
        self.loss = gauge("swarm_loss", "Latest training (worker) or test (root) loss").labels(**labels)
        self.accuracy = gauge("swarm_accuracy", "Latest test accuracy (root)").labels(**labels)
        self.samples_per_second = gauge("swarm_samples_per_second", "Training samples per second").labels(
            **labels
        )
        self.bytes_sent = Counter("swarm_bytes_sent", "Bytes sent", list(labels), registry=r).labels(**labels)
        self.bytes_received = Counter(
            "swarm_bytes_received", "Bytes received", list(labels), registry=r
        ).labels(**labels)
        self.model_rollbacks = Counter(
            "swarm_model_rollbacks",
            "Models accepted from the parent for an older round than the one held (a resync)",
            list(labels),
            registry=r,
        ).labels(**labels)
        self._dropped = Counter(
            "swarm_messages_dropped", "Messages dropped, by reason", [*labels, "reason"], registry=r
        )
        # A root replica's agreement (consensus.replica); absent from other nodes' samples.
        self.consensus_seconds = Histogram(
            "swarm_consensus_seconds",
            "Root replicas: time from a round's proposal to its commit",
            list(labels),
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        ).labels(**labels)
        self.view_changes = Counter(
            "swarm_view_changes", "Root replicas: views entered after view 0", list(labels), registry=r
        ).labels(**labels)
        self._labels = labels
        self.round_seconds = Histogram(
            "swarm_round_seconds",
            "Wall time of a round at this node",
            list(labels),
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        ).labels(**labels)
        self.aggregation_seconds = Histogram(
            "swarm_aggregation_seconds",
            "Time to aggregate one round's updates",
            list(labels),
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
        ).labels(**labels)
        self._reputation = Gauge(
            "swarm_reputation",
            "Reputation of a child node, as this aggregator measures it",
            [*labels, "child"],
            registry=r,
        )
        self.dropped_by_reason: dict[str, int] = {}

    def dropped(self, reason: str) -> None:
        self._dropped.labels(**self._labels, reason=reason).inc()
        self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + 1

    def reputation(self, child: str, value: float) -> None:
        self._reputation.labels(**self._labels, child=child).set(value)


class StatusServer:
    """HTTP on (host, port): /metrics, /healthz and /status; port 0 picks a free port."""

    def __init__(self, metrics: NodeMetrics, host: str, port: int) -> None:
        self._status: dict[str, Any] = {}
        registry = metrics.registry
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif path == "/healthz":
                    self._send(200, "text/plain", b"ok")
                elif path == "/status":
                    self._send(200, "application/json", json.dumps(owner._status).encode())
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                try:
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client (a probe that timed out, a scraper) left before its answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # scrapes every few seconds would drown the node's own log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="status-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def publish(self, status: dict[str, Any]) -> None:
        self._status = status

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
