"""Waiting in tests: ask a condition again until it holds or a deadline passes, never a fixed sleep.

A test that sleeps a fixed time either waits longer than it needs or, on a loaded machine, not long
enough; `poll` returns as soon as the condition holds and fails with a message naming what it waited
for. An exception raised by the condition ends the wait at once (an `assert proc.poll() is None`
inside it reports a dead process without waiting out the deadline), except those listed in `retry`
(e.g. `OSError` while a server is still starting), which count as "not yet".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(
    what: str | Callable[[], str],
    condition: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.1,
    retry: tuple[type[Exception], ...] = (),
) -> T:
    """The condition's first truthy value, asked every `interval` seconds (and once more at the
    deadline); AssertionError naming `what` once `timeout` seconds have passed. `what` may be a
    function, called only then, to show the state the condition last saw."""

    def failure() -> str:
        return f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}"

    deadline = time.monotonic() + timeout
    while True:
        last_try = time.monotonic() >= deadline
        try:
            value = condition()
        except retry as e:
            if last_try:
                raise AssertionError(f"{failure()}: {e!r}") from e
        else:
            if value:
                return value
            if last_try:
                raise AssertionError(failure())
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
