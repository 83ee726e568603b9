"""A process that delivers one request through a TurnGate (driven by tests/faults/test_turns_processes.py).

Usage: gate_worker.py URL CONVERSATION REQUEST LEASE HOLD_SECONDS READY_FILE
When admitted it writes READY_FILE, appends a user message (the request's effect) under
its request id, holds the turn HOLD_SECONDS, and completes; it prints the outcome as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from chatledger.store import TurnGate, open_store


def main() -> None:
    url, conv, request_id, lease, hold, ready = sys.argv[1:7]
    store = open_store(url)
    gate = TurnGate(store, lease_seconds=float(lease), poll_seconds=0.02)
    admission = gate.enter(conv, request_id, wait_seconds=120)
    if admission.turn is None:
        print(json.dumps({"recorded": admission.recorded}))
        return
    with admission.turn.kept_alive():
        Path(ready).write_text(str(os.getpid()))
        store.append(
            conv, [{"role": "user", "content": f"effect of {request_id}"}], message_ids=[f"{request_id}/{os.getpid()}"]
        )
        time.sleep(float(hold))
    print(json.dumps({"ran": admission.turn.complete({"pid": os.getpid()})}))


if __name__ == "__main__":
    main()
