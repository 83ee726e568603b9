"""The AgentChat example under ``uvicorn --workers 4``, with AutoGen's real OpenAI client (streaming) against a
strict OpenAI-compatible server: concurrent duplicates, concurrent different requests, retries and SIGKILLed
workers, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from chatledger.store import open_store
from chatledger.store.validity import is_provider_valid

from ..support.openai_server import Running, free_port, serve

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    """AgentChat's loop."""
    return "asyncio"


def effect_counts(path: Path) -> dict[str, int]:
    """Tool runs per target."""
    if not path.exists():
        return {}
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT name, count(*) FROM effects GROUP BY name").fetchall())


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (uvicorn's workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


@asynccontextmanager
async def app(url: str, effects: Path, model: Running, lease: float) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    """The example app under uvicorn with 4 workers; yields an HTTP client and the master's pid."""
    port = free_port()
    env = {
        **os.environ,
        "CHATLEDGER_URL": url,
        "CHATLEDGER_EXAMPLE_EFFECTS": str(effects),
        "OPENAI_BASE_URL": model.url,
        "CHATLEDGER_LEASE_SECONDS": str(lease),
        "CHATLEDGER_WAIT_SECONDS": "60",
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--workers", "4"]
    command += ["--port", str(port), "--host", "127.0.0.1", "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=90) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await client.get("/health")).status_code == 200 and len(children(server.pid)) >= 4:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the app did not start"
                await asyncio.sleep(0.2)
            yield client, server.pid
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


async def post(client: httpx.AsyncClient, conv: str, mid: str, text: str) -> httpx.Response:
    """POST a user message; a 409 (busy) or a dropped connection is retried with the same id, as a client would."""
    for _ in range(40):
        try:
            reply = await client.post(f"/conversations/{conv}/messages", json={"message_id": mid, "content": text})
        except httpx.TransportError:
            await asyncio.sleep(0.2)
            continue
        if reply.status_code != 409:
            return reply
        await asyncio.sleep(float(reply.headers.get("Retry-After", "1")))
    raise AssertionError(f"{mid} never got an answer")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_four_workers_under_duplicates_concurrency_retries_and_sigkill(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Duplicates cost one request's model calls and one tool run; concurrent different requests all succeed
    with no provider rejection; a request whose worker was SIGKILLed is finished by its retry after the lease,
    its tool run once; every stored history is provider-valid."""
    url = f"sqlite:///{tmp_path / 'chat.db'}" if kind == "sqlite" else str(request.getfixturevalue("postgres_url"))
    effects = tmp_path / "effects.db"
    with serve(delay=0.3) as model:
        async with app(url, effects, model, lease=2.0) as (client, master):
            # Eight concurrent deliveries of one request.
            replies = await asyncio.gather(*(post(client, "dup", "m1", "weather Rome") for _ in range(8)))
            assert {r.json()["answer"] for r in replies} == {"It is sunny in Rome."}
            assert model.stats.as_json()["by_prompt"]["weather Rome"] == 2
            # Different requests at once on one conversation.
            cities = ["Paris", "Oslo", "Lima", "Kyiv"]
            replies = await asyncio.gather(*(post(client, "many", f"m-{c}", f"weather {c}") for c in cities))
            assert [r.json()["answer"] for r in replies] == [f"It is sunny in {c}." for c in cities]
            # A retry of a finished request: the same answer, no model request.
            before = model.stats.as_json()["requests"]
            assert (await post(client, "dup", "m1", "weather Rome")).json()["answer"] == "It is sunny in Rome."
            assert model.stats.as_json()["requests"] == before
            # SIGKILL every worker while one holds a request mid-model-call; the client retries.
            inflight = asyncio.create_task(
                client.post("/conversations/crash/messages", json={"message_id": "m9", "content": "weather Bern"})
            )
            deadline = time.monotonic() + 60
            while not model.stats.as_json()["by_prompt"].get("weather Bern"):
                assert time.monotonic() < deadline, "the request never reached the model"
                await asyncio.sleep(0.02)
            for pid in children(master):
                os.kill(pid, signal.SIGKILL)
            with pytest.raises(httpx.TransportError):
                await inflight
            retried = await post(client, "crash", "m9", "weather Bern")
            assert retried.json()["answer"] == "It is sunny in Bern."
        assert model.stats.as_json()["rejected"] == 0
    counts = effect_counts(effects)
    assert counts == {f"get_weather:{c}": 1 for c in ["Rome", "Bern", *cities]}
    store = open_store(url)
    try:
        for conv in ["dup", "many", "crash"]:
            assert is_provider_valid(store.history(conv)), conv
        assert sorted(m["content"] for m in store.history("many") if m["role"] == "user") == sorted(
            f"weather {c}" for c in cities
        )
    finally:
        store.close()
