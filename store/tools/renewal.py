"""Lease renewal: keeping the claims of running tools alive, without ever racing their outcome.

A claim's lease is renewed by appending ``tool_call.lease_renewed`` with the
claim's version as ``expected_version``; the outcome is later appended the same
way. Both move the same version forward, so within one executor they must never
run at the same time: a renewal in flight while the tool returns would make the
outcome expect a version that the renewal has just moved past, and the real
result would be thrown away as ``LeaseLost``. :meth:`LeaseRenewer.holding`
therefore does not return until any renewal of its claim has finished; after it,
the claim's version is final and the outcome can be written against it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from chatledger.store.clock import Clock
from chatledger.store.errors import LeaseLost
from chatledger.store.handle import Store
from chatledger.store.tools.ledger import Claim, renew_lease

__all__ = ["LeaseRenewer"]

_log = logging.getLogger("chatledger.executor")

_IDLE_SECONDS = 60.0
"""How long the renewal thread stays without any claim to renew before it exits."""


class LeaseRenewer:
    """One background thread per executor that renews the leases of the calls it is running.

    A thread per call would cost a start and a join on every tool call; this one
    starts on first use and wakes when the earliest lease is a third used up.

    Args:
        store: where the claims live.
        lease_seconds: the length of each renewed lease.
        clock: the time leases are measured by.
    """

    def __init__(self, store: Store, lease_seconds: float, clock: Clock) -> None:
        self._store, self._lease, self._clock = store, lease_seconds, clock
        self._due: dict[int, tuple[float, Claim]] = {}
        self._renewing: int | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, claim: Claim) -> Iterator[None]:
        """Keep ``claim``'s lease alive while the block runs; on exit no renewal of it is in flight."""
        key = id(claim)
        with self._cond:
            self._due[key] = (self._clock.now() + self._lease / 3, claim)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="chatledger-lease", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._due.pop(key, None)
                # The outcome expects the claim's version: wait out a renewal that is moving it.
                while self._renewing == key:
                    self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._due:
                    # Exit only after a while with nothing held; a wake-up whose claim was
                    # already released again (a fast tool) keeps the thread for the next one.
                    self._cond.wait(_IDLE_SECONDS)
                    if not self._due:
                        self._thread = None
                        return
                    continue
                key, (due, claim) = min(self._due.items(), key=lambda item: item[1][0])
                wait = due - self._clock.now()
                if wait > 0:
                    self._clock.wait(self._cond, wait)
                    continue
                self._due[key] = (self._clock.now() + self._lease / 3, claim)
                self._renewing = key
            try:
                renew_lease(self._store, claim, self._lease, self._clock.now())
            except LeaseLost:
                # Taken over or closed: the outcome append will say so (LeaseLost) and discard.
                with self._cond:
                    self._due.pop(key, None)
            except Exception:
                # The store is unreachable for now: try again at the next third of the lease.
                _log.warning("renewing the lease of tool call %s failed", claim.tool_call_id, exc_info=True)
            finally:
                with self._cond:
                    self._renewing = None
                    self._cond.notify_all()
