"""Classic AutoGen windows: an agent replies from a bounded, provider-valid window of its stored history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatledger.adapters.classic import chatledger_pair
from chatledger.adapters.classic.window import install_window
from chatledger.store import Store, ValidationError
from chatledger.store.validity import is_provider_valid

from .fakes import LLM_CONFIG, ScriptedModelClient, weather_tool

pytest.importorskip("autogen")


def ask(store: Store, prompt: str, effects: Path, seen: list[list[dict[str, Any]]], **window: Any) -> str:
    """One request with fresh agents whose assistant replies from a window."""
    assistant, user = chatledger_pair(
        store,
        "c1",
        llm_config=LLM_CONFIG,
        tools=[weather_tool(effects)],
        model_client=ScriptedModelClient,
        model_client_kwargs={"seen": seen},
        window=window,
    )
    return str(user.initiate_chat(assistant, message=prompt, clear_history=False, silent=True).summary)


@pytest.mark.parametrize("window", [{"max_messages": 2}, {"max_messages": 3}, {"max_tokens": 40}])
def test_a_windowed_assistant_sends_the_newest_whole_turns(
    store: Store, tmp_path: Path, window: dict[str, Any]
) -> None:
    """Request after request, the model gets at most the bound (beyond the newest unit), never a split tool call,
    and the provider accepts every history; the stored conversation keeps everything."""
    seen: list[list[dict[str, Any]]] = []
    for city in ["Rome", "Oslo", "Lima", "Kyiv"]:
        assert ask(store, f"Weather in {city}?", tmp_path / "effects", seen, **window) == f"Forecast: sunny in {city}"
    for sent in seen:
        history = [m for m in sent if m.get("role") != "system"]
        assert is_provider_valid(history, allow_pending_tail=True)
        if "max_messages" in window:
            assert len(history) <= max(window["max_messages"], 2)
    assert len(store.messages("c1")) == 16  # 4 x (user, assistant call, tool, assistant)


def test_bad_bounds_are_refused_when_installed(store: Store) -> None:
    """A bound that is not a positive integer is a ValidationError at once, not at the first reply."""
    assistant, _ = chatledger_pair(store, "c2", llm_config=LLM_CONFIG, model_client=ScriptedModelClient)
    with pytest.raises(ValidationError, match="max_messages"):
        install_window(assistant, max_messages=0)
