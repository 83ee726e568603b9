"""One request handled by a fresh process (used by the multi-process tests): ``worker.py URL CONV REQUEST PROMPT``."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from chatledger.adapters.agentchat import Session, chatledger_agent
from chatledger.adapters.scripted import ScriptedChatCompletionClient, call
from chatledger.store import open_store
from tests.adapters.agentchat.helpers import charge_card, get_weather

SCRIPT: dict[str, list[Any]] = {
    "Charge 10": [call("charge_card", amount=10), "Charged 10."],
    "Weather in Rome?": [call("get_weather", city="Rome"), "It is sunny in Rome."],
}


async def handle(url: str, conv: str, request_id: str, prompt: str, lease: float) -> str:
    """Build fresh agents, run one turn, return the answer."""
    store = open_store(url)
    try:
        session = Session(store, conv, request_id=request_id, lease_seconds=lease)
        agent = chatledger_agent(
            session,
            name="assistant",
            model_client=ScriptedChatCompletionClient(SCRIPT),
            tools=[charge_card, get_weather],
            reflect_on_tool_use=True,
        )
        result = await agent.run(task=prompt)
        return result.messages[-1].to_text()
    finally:
        store.close()


if __name__ == "__main__":
    url, conv, request_id, prompt = sys.argv[1:5]
    lease = float(sys.argv[5]) if len(sys.argv) > 5 else 30.0
    print(asyncio.run(handle(url, conv, request_id, prompt, lease)), flush=True)
