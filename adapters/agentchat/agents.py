"""AutoGen AgentChat (autogen-agentchat 0.7) on chatledger: fresh agents per request, one log.

A request handler builds new agents every time; chatledger gives them the
conversation, records their turn, and runs their tools exactly once::

    async def handle_request(conversation_id: str, message_id: str, prompt: str) -> str:
        agent = chatledger_agent(store, conversation_id, name="assistant", request_id=message_id,
                                 model_client=client, tools=[get_weather], system_message="...")
        result = await agent.run(task=prompt)
        return result.messages[-1].to_text()

What each piece does (one module each):

* :class:`~chatledger.adapters.agentchat.context.LedgerModelContext`: the model sees the
  stored conversation before this request, then this request's messages.
* :class:`~chatledger.adapters.agentchat.workbench.ExecutorWorkbench`: every tool call goes
  through ``Executor.aexecute_call`` (once per call id, across processes).
* :class:`~chatledger.adapters.agentchat.models.RecordedChatCompletionClient`: model answers
  are recorded first-writer-wins, so a retried request reuses the same tool-call turn.
* :class:`~chatledger.adapters.agentchat.session.Session`: stores the run's messages under
  their AutoGen ids, one atomic batch per agent turn; retries converge on the first ids.

Teams: build the agents on one :class:`Session` and wrap the stock team with
:func:`chatledger_team`; it stores the team's stream and resumes the speaker order
(round robin, swarm handoffs, the selector's previous speaker) from the log. A
``SelectorGroupChat``'s speaker-selection model is recorded too (as agent
``"selector"``), so a retried request and a replay make no model call at all. :func:`replay` re-drives a recorded
conversation without calling a model or a tool; :func:`fork_and_rerun` re-runs it from
a position in a fork, reusing what was recorded before that position.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import Response, TaskResult
from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    HandoffMessage,
    ModelClientStreamingChunkEvent,
    TextMessage,
)
from autogen_agentchat.teams import SelectorGroupChat
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient
from autogen_core.tools import BaseTool, FunctionTool, StaticWorkbench, Workbench

from chatledger.adapters.agentchat.context import LedgerModelContext, Record
from chatledger.adapters.agentchat.models import RecordedChatCompletionClient
from chatledger.adapters.agentchat.outcomes import admitted, result_outcome
from chatledger.adapters.agentchat.session import SLOT_STREAM, Session
from chatledger.adapters.agentchat.window import WindowOptions
from chatledger.adapters.agentchat.workbench import ExecutorWorkbench, carry_context
from chatledger.store import ReplayDivergence, Store
from chatledger.store.fork import fork
from chatledger.store.responses import record_response, recorded_responses
from chatledger.store.turns import DEFAULT_LEASE_SECONDS, DEFAULT_WAIT_SECONDS

__all__ = [
    "LedgerAssistantAgent",
    "LedgerTeam",
    "ReplayReport",
    "Session",
    "chatledger_agent",
    "chatledger_team",
    "fork_and_rerun",
    "replay",
]

_TOOL_MARK = "__chatledger_tool__"


class LedgerAssistantAgent(AssistantAgent):
    """A stock ``AssistantAgent`` whose run is stored in chatledger (built by :func:`chatledger_agent`).

    Only ``on_messages_stream`` is extended (``run``, ``run_stream``, ``on_messages`` and
    teams all go through it): incoming messages are stored first, then the agent's turn.
    Inside a :func:`chatledger_team` the team stores the whole stream instead.
    """

    def __init__(self, session: Session, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.session = session

    async def on_messages_stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        """The stock stream; each item stored (and yielded) under its stored id."""
        session = self.session
        if session.team_managed:
            async for item in super().on_messages_stream(messages, cancellation_token):
                yield item
            return
        async with session.turn():
            for message in messages:
                session.observe(message)
            async for item in super().on_messages_stream(messages, cancellation_token):
                if isinstance(item, Response):
                    inner = [session.observe(m) for m in item.inner_messages or []]
                    yield Response(chat_message=session.observe(item.chat_message), inner_messages=inner)
                else:
                    yield session.observe(item)

    async def run(
        self,
        *,
        task: str | BaseChatMessage | Sequence[BaseChatMessage] | None = None,
        cancellation_token: CancellationToken | None = None,
        output_task_messages: bool = True,
    ) -> TaskResult:
        """The stock ``run`` under the request's turn; the result's messages (the task too) carry their stored ids.

        A request that finished already (a duplicate delivery, a retry) is answered
        with its recorded result: no model call, no tool run.
        """
        session = self.session
        if session.team_managed:
            return await super().run(
                task=task, cancellation_token=cancellation_token, output_task_messages=output_task_messages
            )
        async with session.turn() as scope:
            messages, recorded = admitted(session, scope.recorded, task)
            if recorded is not None:
                return recorded
            stored = [session.observe(m) for m in messages]
            result = await super().run(
                task=stored or None, cancellation_token=cancellation_token, output_task_messages=output_task_messages
            )
            observed = TaskResult(
                messages=[session.observe(m) for m in result.messages], stop_reason=result.stop_reason
            )
            scope.outcome = result_outcome(messages, observed)
            return observed

    async def run_stream(
        self,
        *,
        task: str | BaseChatMessage | Sequence[BaseChatMessage] | None = None,
        cancellation_token: CancellationToken | None = None,
        output_task_messages: bool = True,
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | TaskResult, None]:
        """The stock ``run_stream`` under the request's turn; every message (the task too) carries its stored id."""
        session = self.session
        if session.team_managed:
            async for item in super().run_stream(
                task=task, cancellation_token=cancellation_token, output_task_messages=output_task_messages
            ):
                yield item
            return

        async def stream(messages: list[BaseChatMessage]) -> AsyncIterator[Item | TaskResult]:
            stored = [session.observe(m) for m in messages]
            async for item in super(LedgerAssistantAgent, self).run_stream(
                task=stored or None, cancellation_token=cancellation_token, output_task_messages=output_task_messages
            ):
                if isinstance(item, ModelClientStreamingChunkEvent):
                    yield item
                elif isinstance(item, TaskResult):
                    yield TaskResult(messages=[session.observe(m) for m in item.messages], stop_reason=item.stop_reason)
                else:
                    yield session.observe(item)

        async for item in under_turn(session, task, stream):
            yield item


Item = BaseAgentEvent | BaseChatMessage


async def under_turn(
    session: Session,
    task: str | BaseChatMessage | Sequence[BaseChatMessage] | None,
    stream: Callable[[list[BaseChatMessage]], AsyncIterator[Item | TaskResult]],
) -> AsyncGenerator[Item | TaskResult, None]:
    """Run ``stream(task messages)`` under the request's turn, recording its ``TaskResult`` as the outcome.

    A request that finished already yields its recorded messages and result instead.
    """
    async with session.turn() as scope:
        messages, recorded = admitted(session, scope.recorded, task)
        if recorded is not None:
            for done in [*recorded.messages, recorded]:
                yield done
            return
        async for item in stream(messages):
            if isinstance(item, TaskResult):
                scope.outcome = result_outcome(messages, item)
            yield item


def _tool_names(tools: Sequence[Any]) -> list[BaseTool[Any, Any]]:
    out: list[BaseTool[Any, Any]] = []
    for t in tools:
        if isinstance(t, BaseTool):
            out.append(t)
        else:
            out.append(FunctionTool(t, description=(t.__doc__ or t.__name__).strip(), name=t.__name__))
    return [carry_context(t) for t in out]


def chatledger_agent(
    store: Store | Session,
    conversation_id: str | None = None,
    *,
    name: str,
    model_client: ChatCompletionClient | None,
    tools: Sequence[Any] = (),
    workbench: Workbench | None = None,
    request_id: str | None = None,
    idempotent: Collection[str] = (),
    buffer_size: int | None = None,
    max_tokens: int | None = None,
    keep_first_user: bool = False,
    token_counter: ChatCompletionClient | None = None,
    candidate: ChatCompletionClient | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    **agent_kwargs: Any,
) -> LedgerAssistantAgent:
    """A fresh ``AssistantAgent`` for one request, wired to chatledger.

    Args:
        store: the log, or the :class:`Session` shared by a team's agents.
        conversation_id: the conversation (with a store; created if missing).
        name: the agent's name.
        model_client: the real model client (wrapped so its answers are recorded).
        tools: plain functions (marked with ``chatledger.store.tools.tool`` for options)
            or AgentChat ``BaseTool``\\ s; mutually exclusive with ``workbench``.
        workbench: any AgentChat workbench (an ``McpWorkbench`` too), wrapped for the executor.
        request_id: the client's message id: a retry with the same id is the same request.
        idempotent: names of tools that may be re-run after a worker crash.
        buffer_size: send at most N messages to the model (AutoGen's Buffered context), never
            separating a tool call from its results (docs/windows.md).
        max_tokens: send at most this many tokens of history (AutoGen's TokenLimited context).
        keep_first_user: keep the conversation's first user message in front (HeadAndTail).
        token_counter: a model client whose ``count_tokens`` counts for ``max_tokens``; by
            default chatledger's estimate, which downloads nothing and gives a replay (with
            another client) the very same window.
        candidate: replay only: a model whose answers are compared with the record.
        lease_seconds: the lease on the request's turn and on each tool call (default 30 s):
            a retry after the worker running the request was killed waits at most this
            long. With a :class:`Session`, set it on the session instead.
        wait_seconds: how long the request waits behind another request on the same
            conversation before ``ConversationBusy`` (default 60 s; see docs/turns.md).
        agent_kwargs: anything else ``AssistantAgent`` takes (``system_message``,
            ``handoffs``, ``reflect_on_tool_use``, ``model_client_stream``, ...).
    """
    if isinstance(store, Session):
        session = store
    else:
        if conversation_id is None:
            raise ValueError("chatledger_agent needs a conversation_id with a store")
        session = Session(
            store, conversation_id, request_id=request_id, lease_seconds=lease_seconds, wait_seconds=wait_seconds
        )
    session.agents.add(name)
    inner = workbench
    marked = set(idempotent)
    if tools:
        if workbench is not None:
            raise ValueError("pass tools or a workbench, not both")
        inner = StaticWorkbench(_tool_names(tools))
        marked |= {getattr(t, "__name__", "") for t in tools if getattr(t, _TOOL_MARK, {}).get("idempotent")}
    if isinstance(inner, StaticWorkbench):
        for t in getattr(inner, "_tools", []):
            carry_context(t)
    wb: ExecutorWorkbench | None = None
    if inner is not None:
        wb = ExecutorWorkbench(
            inner,
            session.store,
            session.conversation_id,
            idempotent=marked,
            replay=session.replay,
            **session.executor_options,
        )
        session.workbenches.append(wb)
    model = RecordedChatCompletionClient(
        model_client,
        session.store,
        session.conversation_id,
        agent=name,
        replay=session.replay,
        candidate=candidate,
    )
    session.models.append(model)
    window = WindowOptions(buffer_size, max_tokens, keep_first_user, token_counter)
    context = LedgerModelContext(session, name, window=window)
    return LedgerAssistantAgent(session, name, model_client=model, workbench=wb, model_context=context, **agent_kwargs)


class _Team(Protocol):
    def run_stream(
        self, *, task: Any = None, cancellation_token: CancellationToken | None = None
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | TaskResult, None]: ...

    async def save_state(self) -> Mapping[str, Any]: ...

    async def load_state(self, state: Mapping[str, Any]) -> None: ...


class LedgerTeam:
    """A stock AgentChat team (RoundRobin, Selector, Swarm) whose runs are stored in chatledger.

    Build it with :func:`chatledger_team`. ``run`` / ``run_stream`` behave like the
    team's; the task is stored before the team starts, every message and event of the
    stream is stored (one batch per agent turn), and the speaker order is resumed
    from the log before the run.
    """

    def __init__(self, session: Session, team: _Team) -> None:
        self.session = session
        self.team = team
        session.team_managed = True
        if isinstance(team, SelectorGroupChat):
            _record_selector(session, team)

    async def run(
        self,
        *,
        task: str | BaseChatMessage | Sequence[BaseChatMessage] | None = None,
        cancellation_token: CancellationToken | None = None,
    ) -> TaskResult:
        """Run the team to completion and return its result (messages under their stored ids)."""
        result: TaskResult | None = None
        async for item in self.run_stream(task=task, cancellation_token=cancellation_token):
            if isinstance(item, TaskResult):
                result = item
        assert result is not None
        return result

    async def run_stream(
        self,
        *,
        task: str | BaseChatMessage | Sequence[BaseChatMessage] | None = None,
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | TaskResult, None]:
        """The team's stream under the request's turn, stored as it goes; streaming chunks pass through unstored.

        A request that finished already is answered with its recorded result.
        """
        session = self.session

        async def stream(messages: list[BaseChatMessage]) -> AsyncIterator[Item | TaskResult]:
            messages = [session.observe(m) for m in messages]
            await self._resume()
            team_task: Any = messages[0] if len(messages) == 1 else (messages or None)
            async for item in self.team.run_stream(task=team_task, cancellation_token=cancellation_token):
                if isinstance(item, TaskResult):
                    session.flush()
                    yield TaskResult(messages=[session.observe(m) for m in item.messages], stop_reason=item.stop_reason)
                elif isinstance(item, ModelClientStreamingChunkEvent):
                    yield item
                else:
                    yield session.observe(item)

        async for item in under_turn(session, task, stream):
            yield item

    async def _resume(self) -> None:
        """Point the fresh team's manager at the next speaker the log implies."""
        state = dict(await self.team.save_state())
        agent_states = dict(state.get("agent_states", {}))
        names = [str(n) for n in getattr(self.team, "_participant_names", [])]
        manager_keys = [k for k in agent_states if k not in names]
        if not names or len(manager_keys) != 1:
            return
        manager = dict(agent_states[manager_keys[0]])
        last_speaker: str | None = None
        thread: list[Mapping[str, Any]] = []
        for message, meta in self.session.prefix():
            meta = meta or {}
            source = meta.get("source")
            if meta.get("autogen_type") == "HandoffMessage" and meta.get("target") in names:
                thread.append(
                    HandoffMessage(
                        content=str(message.get("content")), source=str(source), target=meta["target"]
                    ).dump()
                )
            elif meta.get("llm", True) is True and message.get("role") != "tool" and not message.get("tool_calls"):
                thread.append(
                    TextMessage(content=str(message.get("content") or ""), source=str(source or "user")).dump()
                )
            if source in names and meta.get("llm", True) is True:
                last_speaker = str(source)
        if "next_speaker_index" in manager and last_speaker is not None:
            manager["next_speaker_index"] = (names.index(last_speaker) + 1) % len(names)
        if "previous_speaker" in manager and last_speaker is not None:
            manager["previous_speaker"] = last_speaker
        manager["message_thread"] = thread
        agent_states[manager_keys[0]] = manager
        state["agent_states"] = agent_states
        await self.team.load_state(state)


def _record_selector(session: Session, team: SelectorGroupChat) -> None:
    """Route the selector's speaker-selection calls through a recorded client (agent ``"selector"``).

    ``SelectorGroupChat`` keeps its client in ``_model_client`` and hands it to its
    manager when the team first runs (autogen-agentchat 0.7), so it is swapped here,
    before that. A client that is already a :class:`RecordedChatCompletionClient` is kept.
    """
    client = getattr(team, "_model_client", None)
    if isinstance(client, RecordedChatCompletionClient):
        session.models.append(client)
        return
    if not isinstance(client, ChatCompletionClient) or getattr(team, "_initialized", False):
        raise ValueError(
            "chatledger_team cannot record this SelectorGroupChat's model client (wrap the team before it "
            "runs, or pass model_client=RecordedChatCompletionClient(client, store, conversation_id, "
            'agent="selector") yourself)'
        )
    recorded = RecordedChatCompletionClient(
        client, session.store, session.conversation_id, agent="selector", replay=session.replay
    )
    team._model_client = recorded
    session.models.append(recorded)


def chatledger_team(session: Session, team: _Team) -> LedgerTeam:
    """Wrap a stock team whose agents were built with :func:`chatledger_agent` on ``session``.

    A ``SelectorGroupChat``'s own model client (the one that picks the next speaker)
    is wrapped in a :class:`RecordedChatCompletionClient` with ``agent="selector"``:
    its answers are recorded first-writer-wins like the agents', so a duplicated or
    retried request and :func:`replay` never call it again.
    """
    return LedgerTeam(session, team)


Runner = LedgerAssistantAgent | LedgerTeam
Build = Callable[[Session], Runner | Awaitable[Runner]]


async def _build(build: Build, session: Session) -> Runner:
    runner = build(session)
    if isinstance(runner, Awaitable):
        return await runner
    return runner


@dataclass
class ReplayReport:
    """What a replay did: requests re-driven, messages matched, model answers served from the record."""

    conversation_id: str
    requests: int = 0
    messages: int = 0
    model_calls: int = 0
    tool_calls: int = 0
    transcript: list[Record] = field(default_factory=list)


def _requests(store: Store, conversation_id: str) -> list[tuple[str, dict[str, Any], Mapping[str, Any], int]]:
    """Each stored request: (request id, its first message, its meta, its index in the messages)."""
    seen: dict[str, tuple[str, dict[str, Any], Mapping[str, Any], int]] = {}
    index = 0
    for event in store.events(conversation_id):
        if not hasattr(event, "message_id"):
            continue
        meta = getattr(event, "meta", None) or {}
        rid = meta.get("request")
        if isinstance(rid, str) and rid not in seen:
            seen[rid] = (rid, event.message, meta, index)  # type: ignore[attr-defined]
        index += 1
    return list(seen.values())


def _task_of(message: Mapping[str, Any], meta: Mapping[str, Any]) -> TextMessage:
    return TextMessage(content=str(message.get("content") or ""), source=str(meta.get("source") or "user"))


async def replay(store: Store, conversation_id: str, build: Build) -> ReplayReport:
    """Re-drive a recorded conversation with new agents: no model call, no tool call.

    ``build(session)`` returns the agent (or :func:`chatledger_team`) for one request,
    exactly as the request handler builds it. Each recorded request is re-run with its
    recorded task; model answers come from the record, tool results from the ledger,
    and every message is compared with the stored one.

    Raises:
        ReplayDivergence: the new run asks for a model answer or produces a message the
            record does not have (a changed prompt, tools or model); ``position`` is the
            index in the conversation's messages where it diverged.
    """
    report = ReplayReport(conversation_id)
    for rid, first, meta, _ in _requests(store, conversation_id):
        session = Session(store, conversation_id, request_id=rid, replay=True)
        runner = await _build(build, session)
        try:
            await runner.run(task=_task_of(first, meta))
        except ReplayDivergence as exc:
            raise ReplayDivergence(conversation_id, session.position(), exc.expected, exc.actual) from exc
        for wb in session.workbenches:
            for problem in wb.problems:
                if isinstance(problem, ReplayDivergence):
                    raise ReplayDivergence(conversation_id, session.position(), problem.expected, problem.actual)
        session.check_complete()
        report.requests += 1
        report.messages += len(session.produced)
        report.model_calls += sum(m.served_from_record for m in session.models)
        report.tool_calls += sum(1 for _, msg, _ in session.produced if msg.get("role") == "tool")
        report.transcript.extend(session.produced)
    return report


async def fork_and_rerun(
    store: Store,
    conversation_id: str,
    at_version: int,
    build: Build,
    *,
    prompts: Sequence[str] | None = None,
    reuse_model_answers: bool = True,
) -> tuple[str, list[TaskResult]]:
    """Fork a conversation at ``at_version`` and re-run it from there with new agents.

    The fork holds everything up to ``at_version`` (tool outcomes included, so those
    calls are never re-run). The request that contains ``at_version`` is re-driven
    from its start under its own id, so its stored part is reused and only the rest
    runs; then each later request runs again with its recorded prompt (or ``prompts``,
    which replace them). With ``reuse_model_answers`` the source's recorded model
    answers are copied, so an unchanged agent reproduces the same turns.

    Returns:
        The fork's id and the result of each re-run request.
    """
    fork_id = fork(store, conversation_id, at_version)
    if reuse_model_answers:
        for key, answer in recorded_responses(store, conversation_id):
            record_response(store, fork_id, key, answer)
    requests = _requests(store, conversation_id)
    kept = len(store.messages(fork_id))
    runs: list[tuple[str | None, TextMessage]] = []
    for rid, first, meta, index in requests:
        if index >= kept:
            runs.append((None, _task_of(first, meta)))
        elif _request_is_cut(store, fork_id, rid, conversation_id):
            for key, slot in recorded_responses(store, conversation_id, stream=SLOT_STREAM):
                if key.startswith(f"{rid}/"):
                    record_response(store, fork_id, key, slot, stream=SLOT_STREAM)
            runs.append((rid, _task_of(first, meta)))
    if prompts is not None:
        resumed = [r for r in runs if r[0] is not None]
        runs = resumed + [(None, TextMessage(content=p, source="user")) for p in prompts]
    results = []
    for run_id, task in runs:
        session = Session(store, fork_id, request_id=run_id or uuid.uuid4().hex)
        runner = await _build(build, session)
        results.append(await runner.run(task=task))
    return fork_id, results


def _request_is_cut(store: Store, fork_id: str, rid: str, source_id: str) -> bool:
    """Whether the fork holds only part of request ``rid``'s stored messages."""

    def count(conv: str) -> int:
        return sum(1 for e in store.events(conv) if (getattr(e, "meta", None) or {}).get("request") == rid)

    return count(fork_id) < count(source_id)
