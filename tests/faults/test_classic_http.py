"""Classic AutoGen pairs with AutoGen's real OpenAI client over HTTP, in several worker processes.

The model is the local OpenAI-compatible server (``tests/support/openai_server.py``), which
refuses provider-invalid histories with OpenAI's 400 and counts requests; the stores are
SQLite and PostgreSQL shared by the workers.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chatledger.store import open_store
from chatledger.store.validity import provider_violations

from ..adapters.classic.fakes import runs
from ..adapters.classic.test_classic_seeds import results, spawn
from ..support.openai_server import serve

pytest.importorskip("autogen")
pytest.importorskip("openai")

CITIES = ["Rome", "Oslo", "Lima"]


@pytest.mark.parametrize(
    ("backend", "stream"), [("sqlite", True), ("postgres", False)], ids=["sqlite-streaming", "postgres-plain"]
)
def test_workers_with_the_real_client_keep_one_conversation_valid_and_pay_once_per_request(
    backend: str, stream: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Three different requests and two duplicates of one of them, in five processes at once, through the real
    OpenAI client: the provider never refuses a history, each request costs two model requests (duplicates none),
    each tool runs once, and the stored history is provider-valid."""
    if backend == "sqlite":
        shared_url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        shared_url = str(request.getfixturevalue("postgres_url"))
    with serve(delay=0.2) as server:
        common = {
            "url": shared_url,
            "conversation": "c1",
            "effects": str(tmp_path / "effects"),
            "base_url": server.url,
            "stream": stream,
            "start_at": time.time() + 1.5,
        }
        jobs = [{"job": f"job-{c}", "prompt": f"weather {c}"} for c in CITIES]
        jobs += [jobs[0], jobs[0]]
        answers = list(results([spawn("ledger", **common, **job) for job in jobs]))
        stats = server.stats.as_json()
    assert answers == [f"It is sunny in {c}." for c in CITIES] + [f"It is sunny in {CITIES[0]}."] * 2
    assert stats["rejected"] == 0
    assert stats["by_prompt"] == {f"weather {c}": 2 for c in CITIES}
    assert sorted(runs(tmp_path / "effects")) == sorted(CITIES)
    with open_store(shared_url) as store:
        stored = store.messages("c1")
    assert provider_violations(stored) == [] and len(stored) == 4 * len(CITIES)
