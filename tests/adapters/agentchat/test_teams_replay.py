"""Teams stored and resumed with fresh agents; replay and fork of a recorded conversation."""

from __future__ import annotations

from typing import Any

import pytest
from autogen_agentchat.conditions import HandoffTermination, MaxMessageTermination, TextMentionTermination
from autogen_agentchat.teams import RoundRobinGroupChat, Swarm

from chatledger.adapters.agentchat import LedgerTeam, Session, chatledger_agent, chatledger_team, fork_and_rerun, replay
from chatledger.adapters.scripted import ScriptedChatCompletionClient, call
from chatledger.store import ReplayDivergence, Store, open_store
from chatledger.store.messages import pending_tool_calls

from .helpers import effects, get_weather

pytestmark = pytest.mark.anyio

PLANNER = {
    "*": ["Plan: check the weather."],
    "Trip to Rome": ["Plan: check the weather."],
    "And tomorrow?": ["Plan again."],
}
RESEARCHER = {"*": [call("get_weather", city="Rome"), "Sunny. TERMINATE"]}


def round_robin(store: Store, request_id: str) -> LedgerTeam:
    """A fresh two-agent round-robin team for one request."""
    session = Session(store, "t1", request_id=request_id)
    planner = chatledger_agent(session, name="planner", model_client=ScriptedChatCompletionClient(PLANNER))
    researcher = chatledger_agent(
        session,
        name="researcher",
        model_client=ScriptedChatCompletionClient(RESEARCHER),
        tools=[get_weather],
        reflect_on_tool_use=True,
    )
    team = RoundRobinGroupChat(
        [planner, researcher], termination_condition=TextMentionTermination("TERMINATE") | MaxMessageTermination(6)
    )
    return chatledger_team(session, team)


async def test_round_robin_team_is_stored_and_resumed_by_fresh_agents(db_url: str) -> None:
    """A team turn is stored whole; a retried request stores nothing new; the next request resumes the order."""
    store = open_store(db_url)
    try:
        first = await round_robin(store, "m1").run(task="Trip to Rome")
        assert [m.source for m in first.messages if m.__class__.__name__ == "TextMessage"][:2] == ["user", "planner"]
        count = len(store.messages("t1"))
        await round_robin(open_store(db_url), "m1").run(task="Trip to Rome")  # a duplicate delivery
        assert len(store.messages("t1")) == count
        assert effects("get_weather") == 1
        history = store.history("t1")
        assert pending_tool_calls(history) == []
        kinds = [(m["role"], m.get("name")) for m in history]
        assert kinds[:2] == [("user", None), ("assistant", "planner")]
        types = [e.meta["autogen_type"] for e in store.events("t1") if getattr(e, "meta", None)]
        assert "ToolCallRequestEvent" in types and "ToolCallExecutionEvent" in types
        # The next request: the last speaker was the researcher, so the planner speaks first again.
        second = await round_robin(open_store(db_url), "m2").run(task="And tomorrow?")
        speakers = [m.source for m in second.messages if m.__class__.__name__ == "TextMessage"]
        assert speakers[:2] == ["user", "planner"]
    finally:
        store.close()


def swarm(store: Store, request_id: str) -> LedgerTeam:
    """A fresh swarm: the triage agent hands off to the weather agent, which asks the user back."""
    session = Session(store, "s1", request_id=request_id)
    triage = chatledger_agent(
        session,
        name="triage",
        model_client=ScriptedChatCompletionClient({"*": [call("transfer_to_weather")]}),
        handoffs=["weather"],
    )
    weather = chatledger_agent(
        session,
        name="weather",
        model_client=ScriptedChatCompletionClient(
            {
                "Is it sunny?": [call("transfer_to_weather", id=None), "unused"],
                "*": [call("get_weather", city="Rome"), call("transfer_to_user")],
            }
        ),
        tools=[get_weather],
        handoffs=["user"],
    )
    return chatledger_team(session, Swarm([triage, weather], termination_condition=HandoffTermination("user")))


async def test_swarm_resumes_with_the_agent_it_handed_off_to(db_url: str) -> None:
    """After a handoff, the next request (fresh agents, fresh team) starts with the handoff's target."""
    store = open_store(db_url)
    try:
        await swarm(store, "m1").run(task="Weather please")
        handoffs = [e.meta for e in store.events("s1") if getattr(e, "meta", None) and e.meta.get("target")]
        assert [h["target"] for h in handoffs] == ["weather", "user"]
        assert effects("get_weather") == 1
        second = await swarm(open_store(db_url), "m2").run(task="Rome again")
        speakers = [m.source for m in second.messages if m.__class__.__name__ != "TextMessage"]
        assert speakers[0] == "weather"  # not triage: the swarm resumed where it stopped
        assert pending_tool_calls(store.history("s1")) == []
    finally:
        store.close()


SCRIPT: dict[str, list[Any]] = {
    "Weather in Rome?": [call("get_weather", city="Rome"), "It is sunny in Rome."],
    "And Paris?": [call("get_weather", city="Paris"), "Sunny in Paris too."],
}


def single(system: str = "You are a concierge.", script: dict[str, list[Any]] | None = None) -> Any:
    """A build function: the agent of one request, as the handler builds it."""

    def build(session: Session) -> Any:
        return chatledger_agent(
            session,
            name="assistant",
            model_client=ScriptedChatCompletionClient(script or SCRIPT),
            tools=[get_weather],
            system_message=system,
            reflect_on_tool_use=True,
        )

    return build


async def record(store: Store) -> None:
    """Two requests recorded live."""
    for rid, prompt in [("m1", "Weather in Rome?"), ("m2", "And Paris?")]:
        session = Session(store, "r1", request_id=rid)
        await single()(session).run(task=prompt)


async def test_replay_reproduces_the_transcript_without_model_or_tool_calls(sqlite_store: Store) -> None:
    """Replaying with the same agents calls no model and no tool and yields the stored transcript."""
    await record(sqlite_store)
    before = (effects(), sqlite_store.version("r1"))
    report = await replay(sqlite_store, "r1", single(script={}))  # an empty script: any model call fails
    assert report.requests == 2 and report.model_calls == 4
    assert [m for _, m, _ in report.transcript] == sqlite_store.messages("r1")
    assert (effects(), sqlite_store.version("r1")) == before


async def test_replay_with_a_changed_prompt_reports_where_it_diverges(sqlite_store: Store) -> None:
    """A changed system prompt diverges at the first model call: at the first request's first answer."""
    await record(sqlite_store)
    with pytest.raises(ReplayDivergence) as info:
        await replay(sqlite_store, "r1", single(system="You are a pirate."))
    assert info.value.position == 1  # message 0 (the task) matched; the assistant turn did not
    assert effects() == 2


async def test_fork_and_rerun_reuses_tool_results_before_the_fork_point(sqlite_store: Store) -> None:
    """Re-running from the end of the first request reuses its tool result and re-runs only what follows."""
    await record(sqlite_store)
    at = next(
        i
        for i, e in enumerate(sqlite_store.events("r1"), 1)
        if getattr(e, "message", {}).get("content") == "It is sunny in Rome."
    )
    fork_id, results = await fork_and_rerun(sqlite_store, "r1", at, single())
    assert len(results) == 1 and results[0].messages[-1].to_text() == "Sunny in Paris too."
    assert effects("get_weather") == 3  # Rome once (reused in the fork), Paris in the source and in the fork
    assert [m["role"] for m in sqlite_store.history(fork_id)] == [m["role"] for m in sqlite_store.history("r1")]
