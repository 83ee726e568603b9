"""The FastAPI example under uvicorn with 4 worker processes: concurrent, duplicate and retried POSTs."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chatledger.store import open_store
from chatledger.store.messages import pending_tool_calls

REPO = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def effect_counts(path: Path) -> dict[str, int]:
    """Side effects per tool call target."""
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT name, count(*) FROM effects GROUP BY name").fetchall())


async def test_four_workers_handle_concurrent_duplicate_and_retried_posts(tmp_path: Path) -> None:
    """Every tool runs once per distinct request and every conversation's history is whole and ordered."""
    db, effects = tmp_path / "chat.db", tmp_path / "effects.db"
    port = free_port()
    env = {**os.environ, "CHATLEDGER_URL": f"sqlite:///{db}", "CHATLEDGER_EXAMPLE_EFFECTS": str(effects)}
    env["PYTHONPATH"] = str(REPO)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.fastapi_app:app",
            "--workers",
            "4",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not start"
                await asyncio.sleep(0.2)

            cities = ["Rome", "Paris", "Oslo"]
            posts = []
            for c, conv in enumerate(["a", "b", "c"]):
                for n, city in enumerate(cities):
                    body = {"message_id": f"{conv}-{n}", "content": f"weather {city}{c}"}
                    posts += [(conv, body), (conv, body)]  # every POST is delivered twice, concurrently
            replies = await asyncio.gather(
                *(client.post(f"/conversations/{conv}/messages", json=body) for conv, body in posts)
            )
            assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200]
            # A retried POST after completion answers the same and runs nothing.
            again = await client.post("/conversations/a/messages", json=posts[0][1])
            assert again.json()["answer"] == replies[0].json()["answer"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    counts = effect_counts(effects)
    assert counts == {f"get_weather:{city}{c}": 1 for c in range(3) for city in cities}
    store = open_store(f"sqlite:///{db}")
    try:
        for conv in ["a", "b", "c"]:
            history = store.history(conv)
            assert pending_tool_calls(history) == []
            assert len(history) == 4 * len(cities)  # user, tool call, tool result, answer: once each
            users = [m["content"] for m in history if m["role"] == "user"]
            assert sorted(users) == sorted({b["content"] for cv, b in posts if cv == conv})
            for i, m in enumerate(history):
                if m.get("tool_calls"):
                    call_id = m["tool_calls"][0]["id"]
                    result = next(j for j, r in enumerate(history) if r.get("tool_call_id") == call_id)
                    assert result > i
    finally:
        store.close()
