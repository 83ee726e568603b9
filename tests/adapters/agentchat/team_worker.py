"""One team request handled by a fresh process: ``team_worker.py URL KIND CONV REQUEST PROMPT``.

KIND is ``round_robin`` or ``swarm``. The process builds fresh agents and a fresh
team (as a request handler does), runs the request, and prints one JSON line: the
speakers of the run, and every model call each agent's scripted client received
(call ids left out: they are minted by the model in the first process).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import HandoffTermination, MaxMessageTermination, TextMentionTermination
from autogen_agentchat.messages import HandoffMessage
from autogen_agentchat.teams import RoundRobinGroupChat, Swarm
from autogen_core.models import AssistantMessage, FunctionExecutionResultMessage, LLMMessage

from chatledger.adapters.agentchat import LedgerTeam, Session, chatledger_agent, chatledger_team
from chatledger.adapters.scripted import ScriptedChatCompletionClient, call
from chatledger.store import Store, open_store
from tests.adapters.agentchat.helpers import book_table, get_weather

WEATHER = {
    "Trip to Rome": [call("get_weather", city="Rome"), "Sunny in Rome. TERMINATE"],
    "Book for 2": ["Not my job."],
}
BOOKER = {
    "Trip to Rome": ["Not my job."],
    "Book for 2": [call("book_table", restaurant="Roscioli", people=2), "Booked Roscioli for 2. TERMINATE"],
}
TRIAGE = {"*": [call("transfer_to_concierge")]}
CONCIERGE = {
    "*": [call("get_weather", city="Rome"), call("transfer_to_user")],
    "Book a table": [call("book_table", restaurant="Roscioli", people=2), call("transfer_to_user")],
}


def build(
    kind: str, store: Store, conv: str, request_id: str
) -> tuple[LedgerTeam, dict[str, ScriptedChatCompletionClient]]:
    """The fresh team of one request and the scripted model client of each agent."""
    session = Session(store, conv, request_id=request_id)
    if kind == "round_robin":
        clients = {"weather": ScriptedChatCompletionClient(WEATHER), "booker": ScriptedChatCompletionClient(BOOKER)}
        agents = [
            chatledger_agent(
                session, name="weather", model_client=clients["weather"], tools=[get_weather], reflect_on_tool_use=True
            ),
            chatledger_agent(
                session, name="booker", model_client=clients["booker"], tools=[book_table], reflect_on_tool_use=True
            ),
        ]
        stop = TextMentionTermination("TERMINATE") | MaxMessageTermination(8)
        return chatledger_team(session, RoundRobinGroupChat(agents, termination_condition=stop)), clients
    clients = {"triage": ScriptedChatCompletionClient(TRIAGE), "concierge": ScriptedChatCompletionClient(CONCIERGE)}
    triage = chatledger_agent(session, name="triage", model_client=clients["triage"], handoffs=["concierge"])
    concierge = chatledger_agent(
        session, name="concierge", model_client=clients["concierge"], tools=[get_weather, book_table], handoffs=["user"]
    )
    stop_at_user = HandoffTermination("user") | MaxMessageTermination(12)
    return chatledger_team(session, Swarm([triage, concierge], termination_condition=stop_at_user)), clients


def summary(message: LLMMessage) -> list[Any]:
    """One model-call message as ``[type, source, content]``, tool call ids left out."""
    content: Any = message.content
    if isinstance(message, AssistantMessage) and not isinstance(content, str):
        content = [[c.name, json.loads(c.arguments)] for c in content]
    elif isinstance(message, FunctionExecutionResultMessage):
        content = [[r.name, r.content, bool(r.is_error)] for r in message.content]
    return [type(message).__name__, getattr(message, "source", None), content]


async def handle(url: str, kind: str, conv: str, request_id: str, prompt: str) -> dict[str, Any]:
    """Run one request with a fresh team; what it produced and what its models were sent."""
    store = open_store(url)
    try:
        team, clients = build(kind, store, conv, request_id)
        result = await team.run(task=prompt)
        return {
            "speakers": [[type(m).__name__, m.source] for m in result.messages],
            "calls": {
                name: [[summary(m) for m in c["messages"]] for c in cl.create_calls] for name, cl in clients.items()
            },
        }
    finally:
        store.close()


async def long_lived(kind: str, first: str, second: str) -> dict[str, Any]:
    """The second request as stock AgentChat runs it: one team kept in memory across both requests.

    The stock ``Swarm`` refuses a plain task after a handoff to the user, so its second
    request is the ``HandoffMessage`` back to the agent that handed off (what a
    long-lived swarm needs; chatledger resumes from the log instead).
    """
    if kind == "round_robin":
        clients = {"weather": ScriptedChatCompletionClient(WEATHER), "booker": ScriptedChatCompletionClient(BOOKER)}
        team: Any = RoundRobinGroupChat(
            [
                AssistantAgent(
                    "weather", model_client=clients["weather"], tools=[get_weather], reflect_on_tool_use=True
                ),
                AssistantAgent("booker", model_client=clients["booker"], tools=[book_table], reflect_on_tool_use=True),
            ],
            termination_condition=TextMentionTermination("TERMINATE") | MaxMessageTermination(8),
        )
        task: Any = second
    else:
        clients = {"triage": ScriptedChatCompletionClient(TRIAGE), "concierge": ScriptedChatCompletionClient(CONCIERGE)}
        team = Swarm(
            [
                AssistantAgent("triage", model_client=clients["triage"], handoffs=["concierge"]),
                AssistantAgent(
                    "concierge", model_client=clients["concierge"], tools=[get_weather, book_table], handoffs=["user"]
                ),
            ],
            termination_condition=HandoffTermination("user") | MaxMessageTermination(12),
        )
        task = HandoffMessage(source="user", target="concierge", content=second)
    await team.run(task=first)
    seen = {name: len(cl.create_calls) for name, cl in clients.items()}
    result = await team.run(task=task)
    return {
        "speakers": [[type(m).__name__, m.source] for m in result.messages],
        "calls": {
            name: [[summary(m) for m in c["messages"]] for c in cl.create_calls[seen[name] :]]
            for name, cl in clients.items()
        },
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(handle(*sys.argv[1:6]))), flush=True)
