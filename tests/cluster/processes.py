"""Local processes of the test cluster: run a command, pick a free port, find and stop only the
processes of one run directory (a process is ours when its command line names that directory), and
wait for a condition (``poll``, for tests)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STOP_TIMEOUT_S = 15.0


#: Where free_port looks: below Linux's ephemeral range (32768-60999 by default). A port the kernel
#: handed out as free is also the next local port of some outgoing connection (the apiserver's to
#: etcd, kubelets' to the apiserver), which can take it before our server binds it ("address
#: already in use"); a port outside that range is only ever taken by a server that asks for it.
LISTEN_PORTS = range(20000, 32000)


def free_port(host: str = "127.0.0.1") -> int:
    """A port no socket on `host` holds now, outside the ephemeral range (see LISTEN_PORTS)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.choice(LISTEN_PORTS)
        if port_is_free(host, port):
            return port
    raise OSError(f"no free port in {LISTEN_PORTS.start}-{LISTEN_PORTS.stop - 1} on {host}")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def run(cmd: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``cmd`` to completion, its output captured as text; CalledProcessError when ``check`` fails."""
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


def poll(what: str, cond: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5) -> Any:
    """cond()'s first truthy value, checked every `interval` seconds; AssertionError naming `what`
    once `timeout` seconds have passed (cond is asked once more at the deadline). For tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def ours(pid: int, marker: str) -> bool:
    """Only a process whose command line names our run directory is ours (PIDs get reused)."""
    return alive(pid) and marker in cmdline(pid)


def pids_mentioning(marker: str) -> list[int]:
    me = os.getpid()
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and int(p.name) != me and ours(int(p.name), marker)
    ]


def stop_pids(pids: list[int], marker: str, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM each of our process groups, then SIGKILL what is left after ``timeout``."""
    pids = [p for p in pids if ours(p, marker)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                # A component started by us leads its own group (start_new_session), so this also
                # reaches its children; anything else (a shim) gets the signal alone.
                if os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            for p in pids:  # reap our own children so they do not linger as zombies
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(p, os.WNOHANG)
            time.sleep(0.1)
        pids = [p for p in pids if alive(p)]
        if not pids:
            return
