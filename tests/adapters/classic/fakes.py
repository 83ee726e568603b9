"""Offline stand-ins for the classic tests: a scripted model client and a tool that counts its runs.

The scripted model behaves like a real one where it matters: it answers a user
prompt with a ``get_weather`` tool call whose id is random (a re-sampled reply
gets new ids), and answers tool results with text. Nothing here touches the
network.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatledger.adapters.classic.replay import chat_completion
from chatledger.store.validity import provider_violations

LLM_CONFIG = {"config_list": [{"model": "scripted", "model_client_cls": "ScriptedModelClient"}]}


class ProviderRejected(Exception):
    """What a provider answers to an invalid history: HTTP 400, the conversation is stuck."""


def rendezvous(folder: str, expected: int, timeout: float = 3.0) -> None:
    """Wait until ``expected`` callers arrived in ``folder`` (one file each), or ``timeout`` passed.

    Requests that run at once all reach the model before any goes on; requests
    that a store runs one after the other each wait out the timeout once.
    """
    os.makedirs(folder, exist_ok=True)
    Path(folder, f"{os.getpid()}-{uuid.uuid4().hex}").touch()
    deadline = time.monotonic() + timeout
    while len(os.listdir(folder)) < expected and time.monotonic() < deadline:
        time.sleep(0.01)


class ScriptedModelClient:
    """A classic ``ModelClient``: prompt -> tool call (random id), tool result -> text answer.

    Like a provider, it refuses a history that breaks the provider rule
    (:class:`ProviderRejected`, OpenAI's "tool_call_ids did not have response messages").
    With ``meet=(folder, n[, timeout])`` its first answer of a request waits until ``n``
    requests reached the model (see :func:`rendezvous`). With ``hang_after_tool=path`` it touches
    ``path`` when asked to answer a tool result, then hangs (a worker to kill mid-turn).
    ``delay`` seconds pass before each answer.
    """

    def __init__(
        self,
        config: dict[str, Any],
        calls_file: str | None = None,
        fail_after_tool: int = 0,
        seen: list[list[dict[str, Any]]] | None = None,
        meet: tuple[str, int] | tuple[str, int, float] | None = None,
        hang_after_tool: str | None = None,
        delay: float = 0.0,
    ) -> None:
        self.calls_file = calls_file
        self.fail_after_tool = fail_after_tool
        self.seen = seen
        self.meet = meet
        self.hang_after_tool = hang_after_tool
        self.delay = delay

    def create(self, params: dict[str, Any]) -> Any:
        if self.calls_file:
            fd = os.open(self.calls_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                os.write(fd, b"model\n")
            finally:
                os.close(fd)
        if self.seen is not None:
            self.seen.append([dict(m) for m in params["messages"]])
        if self.delay:
            time.sleep(self.delay)  # a model that takes its time: duplicates arrive while it thinks
        found = provider_violations(params["messages"])
        if found:
            raise ProviderRejected(f"400 invalid history: {'; '.join(map(str, found))}")
        last = params["messages"][-1]
        if self.meet is not None and last.get("role") != "tool":
            rendezvous(*self.meet)
        if last.get("role") == "tool":
            if self.hang_after_tool:
                Path(self.hang_after_tool).touch()  # the tool ran; now the worker can be killed
                time.sleep(3600)
            if self.fail_after_tool > 0:
                self.fail_after_tool -= 1
                raise ConnectionError("model endpoint went away")
            return chat_completion({"content": f"Forecast: {last.get('content')}"})
        words = str(last.get("content") or "").split()
        city = words[-1].strip("?.!") if words else "nowhere"
        call = {
            "id": f"call_{uuid.uuid4().hex[:10]}",
            "function": {"name": "get_weather", "arguments": f'{{"city": "{city}"}}'},
        }
        return chat_completion({"content": None, "tool_calls": [call]})

    def message_retrieval(self, response: Any) -> list[Any]:
        return [c.message if c.message.tool_calls else c.message.content for c in response.choices]

    def cost(self, response: Any) -> float:
        return 0.0

    @staticmethod
    def get_usage(response: Any) -> dict[str, Any]:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0, "model": "scripted"}


def weather_tool(effects: Path) -> Callable[[str], str]:
    """A ``get_weather`` tool whose every run appends one line to ``effects`` (the side-effect counter)."""

    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        fd = os.open(effects, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            os.write(fd, f"{city}\n".encode())
        finally:
            os.close(fd)
        return f"sunny in {city}"

    return get_weather


def async_weather_tool(effects: Path) -> Callable[..., Any]:
    """The async form of :func:`weather_tool`."""
    sync = weather_tool(effects)

    async def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        return sync(city)

    return get_weather


def model_calls(calls_file: Path) -> int:
    """How many model requests a ``calls_file`` counted."""
    return len(calls_file.read_text().splitlines()) if calls_file.exists() else 0


def runs(effects: Path) -> list[str]:
    """The side effects recorded so far, one entry per tool run."""
    return effects.read_text().split() if effects.exists() else []
