"""The worker loop: execute the queued tool calls of one tenant until told to stop.

A worker lists the heads of claimable calls (requested, a retry that is due, a
claim whose lease expired), shuffles them so that workers listing the same
heads rarely collide, and advances each through an :class:`Executor`. Nothing a
client or a model wrote can stop it: a call that cannot be advanced is logged
and passed over.
"""

from __future__ import annotations

import random
import threading
import time

from chatledger.store.backends.recorder import CALL_SEPARATOR
from chatledger.store.clock import SYSTEM_CLOCK, Clock
from chatledger.store.handle import Store
from chatledger.store.tools.executor import Executor, Tools

__all__ = ["run_worker"]


def _call_id_of(stream_id: str) -> str:
    return stream_id.split(CALL_SEPARATOR, 2)[2]


def run_worker(
    store: Store,
    tools: Tools,
    *,
    worker_id: str | None = None,
    poll_seconds: float = 0.2,
    stop: threading.Event | None = None,
    max_calls: int | None = None,
    idle_exit_seconds: float | None = None,
    lease_seconds: float = 30.0,
    max_attempts: int = 1,
    backoff_seconds: float = 0.0,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """Execute pending tool calls of this store's tenant until stopped; return how many it finished.

    Any number of workers, in any number of processes, may run on one store:
    each call is claimed by exactly one of them at a time. A worker also takes
    over calls whose lease expired (re-running idempotent tools, marking the
    others outcome-unknown).

    Args:
        stop: set it to make the worker return after its current call.
        max_calls: return after finishing this many calls.
        idle_exit_seconds: return after this long without any claimable call.
        lease_seconds: the lease of each claim (see :class:`Executor`).
        clock: the time leases are measured by.
    """
    executor = Executor(
        store,
        tools,
        worker_id=worker_id,
        lease_seconds=lease_seconds,
        max_attempts=max_attempts,
        backoff_seconds=backoff_seconds,
        clock=clock,
    )
    rng = random.Random()
    finished = 0
    idle_since = time.monotonic()

    def done() -> bool:
        return (stop is not None and stop.is_set()) or (max_calls is not None and finished >= max_calls)

    while not done():
        now = clock.now()
        heads = store.recorder.list_heads("tool_call", store.tenant, 128, ["requested", "retry"])
        heads += store.recorder.list_heads("tool_call", store.tenant, 128, ["claimed"])
        ready = [h for h in heads if h.status == "requested" or (h.lease_until or 0.0) <= now]
        if not ready:
            if idle_exit_seconds is not None and time.monotonic() - idle_since >= idle_exit_seconds:
                break
            if stop is not None:
                stop.wait(poll_seconds)
            else:
                time.sleep(poll_seconds)
            continue
        # Workers listing the same heads start at different places, so they rarely collide.
        rng.shuffle(ready)
        if max_calls is not None:
            ready = ready[: max_calls - finished]
        refused = executor.passed_over
        advanced = executor.work_through([(h.conversation_id, _call_id_of(h.stream_id)) for h in ready], done)
        finished += advanced
        idle_since = time.monotonic()
        if not advanced and executor.passed_over > refused and not done():
            # Every call the store could not advance: do not spin on them.
            if stop is not None:
                stop.wait(poll_seconds)
            else:
                time.sleep(poll_seconds)
    return finished
