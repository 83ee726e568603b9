"""SelectorGroupChat on chatledger: the speaker-selection model call is recorded like the agents'."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.teams import SelectorGroupChat
from autogen_core.models import LLMMessage

from chatledger.adapters.agentchat import LedgerTeam, Session, chatledger_agent, chatledger_team, replay
from chatledger.adapters.agentchat.models import RecordedChatCompletionClient
from chatledger.adapters.scripted import ScriptedChatCompletionClient, call
from chatledger.store import Store
from chatledger.store.messages import pending_tool_calls

from .helpers import book_table, effects, get_weather

pytestmark = pytest.mark.anyio

WEATHER = {"*": [call("get_weather", city="Rome"), "Sunny in Rome."], "Book again": ["Still sunny."]}
BOOKER = {"*": [call("book_table", restaurant="Roscioli", people=2), "Booked Roscioli for 2. TERMINATE"]}


def pick(messages: Sequence[LLMMessage]) -> str:
    """The scripted selector: the weather agent first, then the booker."""
    prompt = str(messages[-1].content)
    return "booker" if "weather: Sunny in Rome." in prompt else "weather"


class Team:
    """A fresh selector team for one request, and the scripted clients it was given."""

    def __init__(self, store: Store, request_id: str, *, replaying: bool = False, repeat: bool = True) -> None:
        empty: dict[str, list[Any]] = {}
        self.clients = {
            "weather": ScriptedChatCompletionClient(empty if replaying else WEATHER),
            "booker": ScriptedChatCompletionClient(empty if replaying else BOOKER),
            "selector": ScriptedChatCompletionClient(empty if replaying else pick),
        }
        self.request_id = request_id
        self.store = store
        self.repeat = repeat

    def build(self, session: Session) -> LedgerTeam:
        """The team, as a request handler builds it (also the build function of a replay)."""
        weather = chatledger_agent(
            session,
            name="weather",
            model_client=self.clients["weather"],
            tools=[get_weather],
            reflect_on_tool_use=True,
            description="Knows the weather.",
        )
        booker = chatledger_agent(
            session,
            name="booker",
            model_client=self.clients["booker"],
            tools=[book_table],
            reflect_on_tool_use=True,
            description="Books tables.",
        )
        stop = TextMentionTermination("TERMINATE") | MaxMessageTermination(10)
        team = SelectorGroupChat(
            [weather, booker],
            model_client=self.clients["selector"],
            termination_condition=stop,
            allow_repeated_speaker=self.repeat,  # repeated speakers allowed: every turn is a selection call
        )
        return chatledger_team(session, team)

    async def run(self, task: str) -> list[str]:
        """Run one request; the sources of its chat messages."""
        result = await self.build(Session(self.store, "sel", request_id=self.request_id)).run(task=task)
        return [m.source for m in result.messages if not type(m).__name__.endswith("Event")]

    def model_calls(self) -> dict[str, int]:
        """How many times each scripted model (the selector's too) was called."""
        return {name: len(client.create_calls) for name, client in self.clients.items()}


async def test_a_duplicated_selector_request_makes_no_model_call_and_runs_each_tool_once(sqlite_store: Store) -> None:
    """The second delivery calls no model (selector included) and no tool; replay calls none either."""
    first = Team(sqlite_store, "m1")
    assert await first.run("Trip to Rome") == ["user", "weather", "booker"]
    assert first.model_calls() == {"weather": 2, "booker": 2, "selector": 2}
    count = len(sqlite_store.messages("sel"))

    again = Team(sqlite_store, "m1")
    assert await again.run("Trip to Rome") == ["user", "weather", "booker"]
    assert again.model_calls() == {"weather": 0, "booker": 0, "selector": 0}
    assert (effects("get_weather"), effects("book_table")) == (1, 1)
    assert len(sqlite_store.messages("sel")) == count
    assert pending_tool_calls(sqlite_store.history("sel")) == []

    replaying = Team(sqlite_store, "m1", replaying=True)
    report = await replay(sqlite_store, "sel", replaying.build)
    assert report.requests == 1 and report.model_calls == 6  # 2 per agent, 2 speaker selections
    assert replaying.model_calls() == {"weather": 0, "booker": 0, "selector": 0}
    assert (effects("get_weather"), effects("book_table")) == (1, 1)


async def test_the_next_selector_request_skips_the_last_speaker_like_a_long_lived_team(sqlite_store: Store) -> None:
    """A fresh team resumes the selector's previous speaker, so the booker may not speak first again."""
    await Team(sqlite_store, "m1", repeat=False).run("Trip to Rome")
    second = Team(sqlite_store, "m2", repeat=False)
    assert (await second.run("Book again"))[:2] == ["user", "weather"]
    assert second.model_calls()["selector"] == 0  # one candidate left: no selection call needed


async def test_a_selector_client_wrapped_by_hand_is_kept(sqlite_store: Store) -> None:
    """An explicit RecordedChatCompletionClient(agent="selector") is used as given and counted by replay."""
    session = Session(sqlite_store, "sel", request_id="m1")
    own = RecordedChatCompletionClient(ScriptedChatCompletionClient(pick), sqlite_store, "sel", agent="selector")
    team = Team(sqlite_store, "m1")
    agents = [
        chatledger_agent(session, name=n, model_client=team.clients[n], tools=[t], reflect_on_tool_use=True)
        for n, t in (("weather", get_weather), ("booker", book_table))
    ]
    chatledger_team(
        session, SelectorGroupChat(agents, model_client=own, termination_condition=MaxMessageTermination(2))
    )
    assert session.models[-1] is own
