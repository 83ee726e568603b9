"""A subscription consumer process for the fault tests: a slow handler that logs each delivery.

Usage: ``python -m tests.faults.consumer URL LOG TOTAL HANDLER_SECONDS LEASE_SECONDS``. It runs the
subscription ``slow`` until TOTAL events are delivered (by anyone) or 30 s passed, appending
``<pid> <event_id>`` to LOG for every event its handler receives.
"""

from __future__ import annotations

import os
import sys
import time

from chatledger.store import LeaseLost, open_store
from chatledger.store.events import Event
from chatledger.store.subscriptions import subscribe


def main(url: str, log: str, total: int, handler_seconds: float, lease_seconds: float) -> None:
    """Consume until the subscription delivered ``total`` events."""
    store = open_store(url)

    def handler(event: Event) -> None:
        with open(log, "a") as out:
            out.write(f"{os.getpid()} {event.event_id}\n")
        time.sleep(handler_seconds)

    sub = subscribe(store, "slow", handler, lease_seconds=lease_seconds, poll_interval=0.05)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            delivered = sub.run_once()
        except LeaseLost:
            delivered = 0
        state = sub.state()
        if state is not None and state.delivered >= total:
            break
        if delivered == 0:
            time.sleep(0.05)
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
