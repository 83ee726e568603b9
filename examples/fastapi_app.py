"""A FastAPI app whose handler builds fresh AgentChat agents per request, on chatledger.

Run it (offline: the model is scripted)::

    CHATLEDGER_URL=sqlite:///chat.db uvicorn examples.fastapi_app:app --workers 4

``POST /conversations/{id}/messages`` with ``{"message_id": "...", "content": "weather Rome"}``:
the client's message id makes the request idempotent — a duplicate or retried POST
returns the same answer, stores nothing twice, makes no model call and runs no tool
again, whichever worker process receives it. Two different POSTs on one conversation
run one after the other; one that waits longer than ``CHATLEDGER_WAIT_SECONDS``
(default 60) gets 409 with ``Retry-After`` (docs/turns.md). ``CHATLEDGER_LEASE_SECONDS``
(default 30) bounds how long a retry waits after a worker was killed mid-request.
``GET /conversations/{id}/messages`` returns the history.

With ``OPENAI_BASE_URL`` set (any OpenAI-compatible server; install
``chatledger[openai,examples]``), the model is AutoGen's ``OpenAIChatCompletionClient``,
streaming, instead of the offline script.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from autogen_core.models import ChatCompletionClient, LLMMessage
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from chatledger.adapters.agentchat import chatledger_agent
from chatledger.adapters.scripted import FUNCTION_CALLING_MODEL_INFO, ScriptedChatCompletionClient, call, current_prompt
from chatledger.store import ConversationBusy, Store, open_store

app = FastAPI(title="chatledger AgentChat example")


@lru_cache(maxsize=1)
def store() -> Store:
    """This worker process's store handle (the only thing shared between requests)."""
    return open_store(os.environ.get("CHATLEDGER_URL", "sqlite:///chatledger-example.db"))


def _effect(name: str) -> None:
    """Count a side effect in a SQLite table when ``CHATLEDGER_EXAMPLE_EFFECTS`` names one (tests do)."""
    path = os.environ.get("CHATLEDGER_EXAMPLE_EFFECTS")
    if not path:
        return
    with sqlite3.connect(path, timeout=30) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS effects (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO effects (name) VALUES (?)", (name,))


def get_weather(city: str) -> str:
    """The weather in a city."""
    _effect(f"get_weather:{city}")
    return f"sunny in {city}"


def scripted_model(messages: Sequence[LLMMessage]) -> Any:
    """The offline model: ``weather X`` -> call get_weather(X), then answer; anything else is echoed."""
    prompt, step = current_prompt(messages)
    words = prompt.split()
    if len(words) == 2 and words[0] == "weather":
        return call("get_weather", city=words[1]) if step == 0 else f"It is sunny in {words[1]}."
    return f"You said: {prompt}"


class PostMessage(BaseModel):
    """A user message with the client's own id (the idempotency key of the request)."""

    message_id: str
    content: str


def model_client() -> ChatCompletionClient:
    """The model: an OpenAI-compatible server when ``OPENAI_BASE_URL`` is set, else the offline script."""
    base_url = os.environ.get("OPENAI_BASE_URL")
    if not base_url:
        return ScriptedChatCompletionClient(scripted_model, delay=0.02)
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    return OpenAIChatCompletionClient(
        model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
        base_url=base_url,
        api_key=os.environ.get("OPENAI_API_KEY", "unused"),
        model_info=FUNCTION_CALLING_MODEL_INFO,
    )


async def handle_request(conversation_id: str, message_id: str, prompt: str) -> str:
    """Build fresh agents, load the conversation, run one turn, store it."""
    model = model_client()
    agent = chatledger_agent(
        store(),
        conversation_id,
        name="assistant",
        request_id=message_id,
        model_client=model,
        tools=[get_weather],
        system_message="You answer weather questions.",
        reflect_on_tool_use=True,
        model_client_stream=True,
        lease_seconds=float(os.environ.get("CHATLEDGER_LEASE_SECONDS", "30")),
        wait_seconds=float(os.environ.get("CHATLEDGER_WAIT_SECONDS", "60")),
    )
    try:
        result = await agent.run(task=prompt)
    finally:
        await model.close()
    return result.messages[-1].to_text()


@app.post("/conversations/{conversation_id}/messages")
async def post_message(conversation_id: str, body: PostMessage) -> dict[str, str]:
    """Answer a user message (idempotent by ``message_id``); 409 while the conversation stays busy."""
    try:
        answer = await handle_request(conversation_id, body.message_id, body.content)
    except ConversationBusy as busy:
        retry = str(max(1, round(busy.retry_after or 1)))
        raise HTTPException(409, str(busy), headers={"Retry-After": retry}) from None
    return {"message_id": body.message_id, "answer": answer}


@app.get("/conversations/{conversation_id}/messages")
def get_messages(conversation_id: str) -> list[dict[str, Any]]:
    """The conversation's chat history."""
    return store().history(conversation_id, allow_pending=True)


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "ok"}
