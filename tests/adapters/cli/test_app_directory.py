"""The console script finds the application's own modules when run from its directory, as ``python -m`` does."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from chatledger.adapters.agentchat import chatledger_agent
from chatledger.adapters.scripted import ScriptedChatCompletionClient, call
from chatledger.store import Executor, open_store

SCRIPT = Path(sys.executable).with_name("chatledger")
APP = '''
from chatledger.adapters.agentchat import chatledger_agent
from chatledger.adapters.scripted import ScriptedChatCompletionClient, call

def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny in " + city

TOOLS = {"add": lambda a, b: str(a + b)}
SCRIPT = {"weather Rome": [call("get_weather", city="Rome"), "It is sunny in Rome."]}

def build(session):
    return chatledger_agent(session, name="assistant", model_client=ScriptedChatCompletionClient(SCRIPT),
                            tools=[get_weather])
'''


def cli(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``chatledger`` console script, run from ``app``."""
    env = {k: v for k, v in os.environ.items() if k not in ("CHATLEDGER_URL", "PYTHONPATH")}
    return subprocess.run([str(SCRIPT), *args], cwd=app, capture_output=True, text=True, env=env, timeout=120)


def test_worker_and_replay_load_the_applications_modules_from_its_directory(tmp_path: Path) -> None:
    """`chatledger worker --tools myapp:TOOLS` and `chatledger replay ID --agent myapp:build` work from the app's
    directory without PYTHONPATH."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "myapp.py").write_text(APP, encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'chat.db'}"
    store = open_store(db)
    conv = store.start_conversation("c1")
    call_message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}],
    }
    store.append(conv, [{"role": "user", "content": "add"}, call_message])
    Executor(store, {"add": lambda a, b: str(a + b)}).submit(conv, call_message)

    worker = cli(app, "--db", db, "worker", "--tools", "myapp:TOOLS", "--max-calls", "1", "--idle-exit", "5")
    assert worker.returncode == 0, worker.stderr
    assert store.messages(conv)[-1]["content"] == "3"

    script = {"weather Rome": [call("get_weather", city="Rome"), "It is sunny in Rome."]}

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny in " + city

    agent = chatledger_agent(
        store,
        "c2",
        name="assistant",
        request_id="m1",
        model_client=ScriptedChatCompletionClient(script),
        tools=[get_weather],
    )
    asyncio.run(agent.run(task="weather Rome"))
    replay = cli(app, "--db", db, "replay", "c2", "--agent", "myapp:build", "--json")
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout)["model_answers_from_record"] == 1
