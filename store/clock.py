"""The clock leases are measured by: the system's, or a manual one that tests move by hand.

A lease (a tool call's claim, a subscription's hold) is a promise about time:
"nobody else takes this before ``now + lease``". Everything that reads the time
for a lease, sleeps until a lease is due, or waits to renew one asks a
:class:`Clock`, so a test can hand the executor or a subscription a
:class:`ManualClock` and decide exactly when time passes instead of sleeping
and hoping the machine keeps up.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """The time of leases: read it, sleep on it, wait on a condition against it."""

    def now(self) -> float:
        """The current time, in epoch seconds (lease expiries are stored in these)."""

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of this clock's time pass before returning."""

    async def asleep(self, seconds: float) -> None:
        """The async form of :meth:`sleep`."""

    def wait(self, cond: threading.Condition, seconds: float) -> None:
        """Wait on ``cond`` (held by the caller) until notified or ``seconds`` of this clock's time pass."""


class SystemClock:
    """The real clock: ``time.time()``, ``time.sleep`` and condition timeouts."""

    def now(self) -> float:
        """The system time in epoch seconds."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        time.sleep(max(seconds, 0.0))

    async def asleep(self, seconds: float) -> None:
        """Sleep for real without blocking the event loop."""
        await asyncio.sleep(max(seconds, 0.0))

    def wait(self, cond: threading.Condition, seconds: float) -> None:
        """``cond.wait(seconds)``."""
        cond.wait(max(seconds, 0.0))


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that only moves when told to: by :meth:`advance`, or by anyone sleeping on it.

    Sleeping on a manual clock is simulated time: ``sleep(s)`` moves the clock ``s``
    forward at once (waking everyone waiting on it) and returns. A thread in
    :meth:`wait` wakes when the clock reaches its deadline or its condition is
    notified, never because real time passed.

    Args:
        start: the initial time in epoch seconds.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._waiting: dict[int, threading.Condition] = {}
        self._tokens = itertools.count()

    def now(self) -> float:
        """The clock's current time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward and wake every waiter so it can look at the new time."""
        with self._lock:
            self._now += max(seconds, 0.0)
            waiting = list(self._waiting.values())
        for cond in waiting:
            with cond:
                cond.notify_all()

    def sleep(self, seconds: float) -> None:
        """Simulated sleep: move the clock forward by ``seconds``."""
        self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        """Simulated sleep that still yields to the event loop once."""
        self.advance(seconds)
        await asyncio.sleep(0)

    def wait(self, cond: threading.Condition, seconds: float) -> None:
        """Wait on ``cond`` (held) until notified or until the clock reaches now + ``seconds``."""
        with self._lock:
            key = next(self._tokens)
            deadline = self._now + seconds
            self._waiting[key] = cond
        try:
            # Registered before the time is read, so an advance in between still notifies us.
            if self.now() < deadline:
                # The real-time bound only guards against a test that never advances.
                cond.wait(1.0)
        finally:
            with self._lock:
                self._waiting.pop(key, None)
