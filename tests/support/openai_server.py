"""An OpenAI-compatible chat-completions server for tests: strict about histories, counts requests.

``POST /v1/chat/completions`` answers like OpenAI, streaming (SSE, tool calls split
across chunks: the id and name first, the arguments in pieces) or not. It refuses,
with OpenAI's 400 body, any history that breaks the provider rule
(:mod:`chatledger.store.validity`): "... tool_call_ids did not have response messages".

The model is scripted on the last user message:

* ``weather A B ...``: one tool call ``get_weather(city=...)`` per city (parallel calls,
  fresh random call ids as OpenAI gives), then, once the results are in, ``It is sunny in A, B.``
* anything else: ``You said: <text>``.

``GET /stats`` returns ``{"requests", "rejected", "by_prompt": {prompt: n}}`` (across every
client process); ``POST /reset`` zeroes them. Start it in-process with :func:`serve`
(a context manager yielding the base URL, ``http://127.0.0.1:PORT/v1``) or as a
process: ``python tests/support/openai_server.py PORT [DELAY]``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chatledger.store.validity import provider_violations

MODEL = "gpt-4o-mini"
RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"  # what OpenAI names the model in its answers


class Stats:
    """What the server saw (shared by its handlers; one lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.rejected = 0
        self.by_prompt: Counter[str] = Counter()

    def as_json(self) -> dict[str, Any]:
        """A snapshot."""
        with self.lock:
            return {"requests": self.requests, "rejected": self.rejected, "by_prompt": dict(self.by_prompt)}


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return "" if content is None else str(content)


def rejection(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """OpenAI's 400 message for a history that breaks the provider rule, or None when it is valid."""
    found = provider_violations(messages)
    if not found:
        return None
    first = found[0]
    if "result" in first.reason and "answers no call" in first.reason:
        return (
            "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with "
            f"'tool_calls'. (message {first.index})"
        )
    ids = [v.call_id for v in found if v.call_id is not None]
    return (
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(map(str, ids))}"
    )


def answer(messages: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """The scripted model: (text, tool calls) for a history."""
    last_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)
    prompt = _text(messages[last_user].get("content")) if last_user is not None else ""
    words = prompt.split()
    if words[:1] == ["weather"] and len(words) > 1:
        cities = words[1:]
        answered = last_user is not None and any(m.get("role") == "tool" for m in messages[last_user + 1 :])
        if not answered:
            calls = [
                {
                    "id": f"call_{uuid.uuid4().hex[:20]}",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"city": c})},
                }
                for c in cities
            ]
            return None, calls
        return f"It is sunny in {', '.join(cities)}.", []
    return f"You said: {prompt}", []


def _completion(text: str | None, calls: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": RESPONSE_MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _chunk(cid: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": RESPONSE_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


async def _stream(text: str | None, calls: list[dict[str, Any]], include_usage: bool) -> AsyncIterator[bytes]:
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    yield _chunk(cid, {"role": "assistant", "content": None if calls else ""})
    for start in range(0, len(text or ""), 8):
        yield _chunk(cid, {"content": (text or "")[start : start + 8]})
        await asyncio.sleep(0)
    for index, call in enumerate(calls):
        args = call["function"]["arguments"]
        head = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"]}}
        yield _chunk(cid, {"tool_calls": [{**head, "function": {**head["function"], "arguments": ""}}]})
        for start in range(0, len(args), 5):
            yield _chunk(cid, {"tool_calls": [{"index": index, "function": {"arguments": args[start : start + 5]}}]})
            await asyncio.sleep(0)
    yield _chunk(cid, {}, "tool_calls" if calls else "stop")
    if include_usage:
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        body = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": RESPONSE_MODEL,
            "choices": [],
            "usage": usage,
        }
        yield f"data: {json.dumps(body)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def build_app(delay: float = 0.0) -> tuple[Starlette, Stats]:
    """The server's app and its stats; ``delay`` seconds pass before each answer (to make races real)."""
    stats = Stats()

    async def completions(request: Request) -> Response:
        body = await request.json()
        messages = body.get("messages") or []
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        with stats.lock:
            stats.requests += 1
            stats.by_prompt[_text(last_user.get("content"))] += 1
        problem = rejection(messages)
        if problem is not None:
            with stats.lock:
                stats.rejected += 1
            error = {"message": problem, "type": "invalid_request_error", "param": "messages", "code": None}
            return JSONResponse({"error": error}, status_code=400)
        if delay:
            await asyncio.sleep(delay)
        text, calls = answer(messages)
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_stream(text, calls, usage), media_type="text/event-stream")
        return JSONResponse(_completion(text, calls))

    async def get_stats(request: Request) -> Response:
        return JSONResponse(stats.as_json())

    async def reset(request: Request) -> Response:
        with stats.lock:
            stats.requests = stats.rejected = 0
            stats.by_prompt.clear()
        return JSONResponse({"ok": True})

    routes = [
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/stats", get_stats, methods=["GET"]),
        Route("/reset", reset, methods=["POST"]),
    ]
    return Starlette(routes=routes), stats


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    """A server running in a thread of this process."""

    def __init__(self, url: str, stats: Stats) -> None:
        self.url = url
        self.stats = stats


@contextmanager
def serve(delay: float = 0.0) -> Iterator[Running]:
    """Run the server in a background thread; yields its ``/v1`` base URL and stats."""
    app, stats = build_app(delay)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test OpenAI server did not start")
        time.sleep(0.01)
    try:
        yield Running(f"http://127.0.0.1:{port}/v1", stats)
    finally:
        server.should_exit = True
        thread.join(10)


def client(base_url: str, **kwargs: Any) -> Any:
    """AutoGen's real ``OpenAIChatCompletionClient`` pointed at this server."""
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    info = {"vision": False, "function_calling": True, "json_output": False, "family": "unknown"}
    return OpenAIChatCompletionClient(
        model=MODEL, base_url=base_url, api_key="test", model_info={**info, "structured_output": False}, **kwargs
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    port_arg = int(sys.argv[1])
    app_, _ = build_app(float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
    uvicorn.run(app_, host="127.0.0.1", port=port_arg, log_level="warning")
