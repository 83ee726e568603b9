"""Offline stand-ins for the classic tests: a scripted model client and a tool that counts its runs.

The scripted model behaves like a real one where it matters: it answers a user
prompt with a ``get_weather`` tool call whose id is random (a re-sampled reply
gets new ids), and answers tool results with text. Nothing here touches the
network.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatledger.adapters.classic.replay import chat_completion

LLM_CONFIG = {"config_list": [{"model": "scripted", "model_client_cls": "ScriptedModelClient"}]}


class ScriptedModelClient:
    """A classic ``ModelClient``: prompt -> tool call (random id), tool result -> text answer."""

    def __init__(
        self,
        config: dict[str, Any],
        calls_file: str | None = None,
        fail_after_tool: int = 0,
        seen: list[list[dict[str, Any]]] | None = None,
    ) -> None:
        self.calls_file = calls_file
        self.fail_after_tool = fail_after_tool
        self.seen = seen

    def create(self, params: dict[str, Any]) -> Any:
        if self.calls_file:
            with open(self.calls_file, "a") as f:
                f.write("model\n")
        if self.seen is not None:
            self.seen.append([dict(m) for m in params["messages"]])
        last = params["messages"][-1]
        if last.get("role") == "tool":
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


def runs(effects: Path) -> list[str]:
    """The side effects recorded so far, one entry per tool run."""
    return effects.read_text().split() if effects.exists() else []
