"""A one-way delay on every TCP link of a local swarm, inside a network namespace of its own.

    with delayed_namespace(delay_ms=50) as ns:
        subprocess.run(ns.command([".venv/bin/swarm", "run", "examples/digits.yaml", "--output", out]))

Everything runs inside a fresh namespace (`ip netns add`), whose loopback is the only link of the
swarm; the host's interfaces are never touched, and the namespace is deleted on the way out
(`finally`), also when the body raises. Two ways to delay, the first one the kernel supports:
- `netem`: `tc qdisc add dev lo root netem delay <D>ms` in the namespace. On loopback each packet
  crosses lo once, so each direction of every connection sees D.
- `proxy`, for kernels built without sch_netem (this project's CI machine has none): iptables in the
  namespace (nat OUTPUT, REDIRECT) sends every new TCP connection to a transparent proxy in the
  namespace (this module's `proxy` command), which reads the connection's original destination
  (SO_ORIGINAL_DST), connects there from 127.0.0.2 (exempt from the rule) and forwards every chunk it
  reads D later, in order, in both directions. Data is delayed as with netem; a TCP handshake is not
  (ZeroMQ keeps its connections open, so only its first greeting is affected).
Needs root (namespaces), `ip` (iproute2; `apt-get install -y iproute2`) and `tc` or `iptables`.

    python -m benchmarks.netdelay proxy --port P --delay-ms D     (started by `delayed_namespace`)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

#: Source address of the proxy's outgoing connections; the REDIRECT rule exempts it.
PROXY_SOURCE = "127.0.0.2"
PROXY_PORT = 15001
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
CHUNK = 1 << 16
Mechanism = Literal["netem", "proxy"]
_names = itertools.count()


class NetDelayError(RuntimeError):
    """The delay cannot be set up on this machine (the message says why)."""


@dataclass(frozen=True)
class DelayedNamespace:
    name: str
    delay_ms: float
    mechanism: Mechanism

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


def unavailable() -> str | None:
    """Why `delayed_namespace` cannot work here, or None."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2: apt-get install -y iproute2)"
    if shutil.which("tc") is None and shutil.which("iptables") is None:
        return "neither `tc` (iproute2) nor `iptables` is installed"
    return None


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=30)


def _must(argv: Sequence[str]) -> None:
    done = _run(argv)
    if done.returncode != 0:
        raise NetDelayError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")


def _start_proxy(ns: DelayedNamespace) -> subprocess.Popen[str]:
    if shutil.which("iptables") is None:
        raise NetDelayError("no netem qdisc in this kernel and no `iptables` for the proxy")
    rule = ["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-o", "lo", "!", "-s", PROXY_SOURCE]
    _must(ns.command([*rule, "-j", "REDIRECT", "--to-ports", str(PROXY_PORT)]))
    argv = [sys.executable, "-m", "benchmarks.netdelay", "proxy", "--port", str(PROXY_PORT)]
    proc = subprocess.Popen(
        ns.command([*argv, "--delay-ms", str(ns.delay_ms)]), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":  # printed once it listens
        proc.kill()
        proc.stdout.close()
        raise NetDelayError(f"the delay proxy did not start (exit status {proc.wait()})")
    return proc


@contextmanager
def delayed_namespace(delay_ms: float, mechanism: Mechanism | None = None) -> Iterator[DelayedNamespace]:
    """A namespace whose every TCP link delays each direction by `delay_ms`; deleted on exit."""
    reason = unavailable()
    if reason is not None:
        raise NetDelayError(reason)
    if delay_ms < 0:
        raise NetDelayError(f"the delay must not be negative, got {delay_ms} ms")
    name = f"swarm-delay-{os.getpid()}-{next(_names)}"
    _must(["ip", "netns", "add", name])
    proxy: subprocess.Popen[str] | None = None
    try:
        ns = DelayedNamespace(name, delay_ms, "netem")
        _must(ns.command(["ip", "link", "set", "lo", "up"]))
        netem = ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", f"{delay_ms}ms"]
        has_tc = shutil.which("tc") is not None
        if mechanism != "proxy" and has_tc and _run(ns.command(netem)).returncode == 0:
            yield ns
            return
        if mechanism == "netem":
            raise NetDelayError("the kernel has no netem qdisc (or `tc` is missing)")
        ns = DelayedNamespace(name, delay_ms, "proxy")
        proxy = _start_proxy(ns)
        yield ns
    finally:
        if proxy is not None:
            proxy.terminate()
            try:
                proxy.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()
            if proxy.stdout is not None:
                proxy.stdout.close()
        _run(["ip", "netns", "delete", name])


# -- the proxy (runs inside the namespace) ----------------------------------------------------------


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where a redirected connection was going (struct sockaddr_in from SO_ORIGINAL_DST)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, address = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(address), port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy reader to writer, each chunk `delay_s` after it was read, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        while chunk := await reader.read(CHUNK):
            queue.put_nowait((loop.time() + delay_s, chunk))
        queue.put_nowait((loop.time() + delay_s, b""))

    reading = asyncio.create_task(read())
    try:
        while True:
            due, chunk = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass  # the other side went away: the connection ends, like a cut link
    finally:
        reading.cancel()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    sock = writer.get_extra_info("socket")
    host, port = original_destination(sock)
    try:
        up_reader, up_writer = await asyncio.open_connection(host, port, local_addr=(PROXY_SOURCE, 0))
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(reader, up_writer, delay_s), _pipe(up_reader, writer, delay_s))
    for w in (writer, up_writer):
        w.close()


async def _serve(port: int, delay_s: float) -> None:
    server = await asyncio.start_server(lambda r, w: _handle(r, w, delay_s), "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.netdelay")
    sub = parser.add_subparsers(dest="command", required=True)
    proxy = sub.add_parser("proxy", help="the transparent delay proxy (inside a namespace only)")
    proxy.add_argument("--port", type=int, default=PROXY_PORT)
    proxy.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
