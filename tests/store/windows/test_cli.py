"""`chatledger show --window`: the window a model would get, from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from chatledger.store import open_store
from chatledger.store.validity import is_provider_valid

CLI = [sys.executable, "-m", "chatledger.adapters.cli"]


def test_show_window_prints_a_valid_window_of_the_newest_turns(tmp_path: Path) -> None:
    """`show --window-messages` prints the head and the newest whole units, never a split tool call."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    store = open_store(url)
    conv = store.start_conversation()
    store.append(conv, [{"role": "system", "content": "sys"}, {"role": "user", "content": "go"}])
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    store.append(
        conv,
        [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            {"role": "assistant", "content": "done"},
        ],
    )
    store.close()
    out = subprocess.run(
        [*CLI, "--db", url, "show", conv, "--window-messages", "3", "--format", "openai"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shown = json.loads(out)
    assert is_provider_valid(shown)
    assert shown == [{"role": "system", "content": "sys"}, {"role": "assistant", "content": "done"}]
    out = subprocess.run(
        [*CLI, "--db", url, "show", conv, "--window", "10000", "--keep-first-user", "--format", "openai"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [m["role"] for m in json.loads(out)] == ["system", "user", "assistant", "tool", "assistant"]
