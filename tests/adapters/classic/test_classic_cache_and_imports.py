"""The store-backed classic model cache, and importing the adapters without the classic extra."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from chatledger.adapters.classic.cache import LedgerCache
from chatledger.adapters.classic.replay import chat_completion
from chatledger.store import Store
from chatledger.store.responses import recorded_responses

pytest.importorskip("autogen")

KEY = {"messages": [{"role": "user", "content": "Weather in Rome?"}], "model": "scripted"}


def call(call_id: str) -> dict[str, Any]:
    """An assistant message calling get_weather under ``call_id``."""
    function = {"name": "get_weather", "arguments": '{"city": "Rome"}'}
    return {"content": None, "tool_calls": [{"id": call_id, "function": function}]}


def test_the_first_recorded_response_wins_and_rewrites_a_later_one(store: Store) -> None:
    """A second worker caching another sample for the same request ends up holding the first one."""
    store.start_conversation("c1")
    cache = LedgerCache(store, "c1")
    assert cache.get(KEY) is None
    first, second = chat_completion(call("call_a")), chat_completion(call("call_b"))
    cache.set(KEY, first)
    cache.set(KEY, second)
    assert second.choices[0].message.tool_calls[0].id == "call_a"
    assert cache.get(KEY).choices[0].message.tool_calls[0].id == "call_a"
    assert len(recorded_responses(store, "c1")) == 1


def test_the_cache_survives_being_closed_by_autogen(store: Store) -> None:
    """OpenAIWrapper enters and closes the cache around each call; the store stays usable."""
    store.start_conversation("c1")
    with LedgerCache(store, "c1") as cache:
        cache.set(KEY, chat_completion({"content": "hi"}))
    assert LedgerCache(store, "c1").get(KEY).choices[0].message.content == "hi"
    assert store.version("c1") == 1


def test_adapters_import_without_the_classic_extra() -> None:
    """With every autogen module blocked, the classic adapter modules still import; using them says why not."""
    code = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'autogen':
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import chatledger.adapters, chatledger.adapters.classic, chatledger.adapters.classic.tools
import chatledger.adapters.classic.cache, chatledger.adapters.classic.recording
from chatledger.store import open_store
try:
    chatledger.adapters.classic.chatledger_pair(open_store('memory://'), 'c1', llm_config={})
except ImportError as exc:
    print('import error:', exc)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "import error: blocked autogen" in out
