"""Classic AutoGen (``autogen`` 0.14, ``ConversableAgent``) on top of chatledger.

Build fresh agents for every request; chatledger holds the history, runs each
tool call once and records every message::

    def handle_request(conversation_id: str, prompt: str) -> str:
        assistant, user_proxy = chatledger_pair(store, conversation_id, llm_config=..., tools=[get_weather])
        result = user_proxy.initiate_chat(assistant, message=prompt, clear_history=False)
        return result.summary

What the agents get:

* their histories preloaded from the log, each from its own point of view, in a
  provider-valid view (:mod:`.preload`);
* ``initiate_chat`` run as one *turn* (:mod:`.turn`): every send is buffered and
  the turn is stored as one batch, so requests running at once on a conversation
  never interleave inside a tool-call exchange; a request already stored is
  answered from the record;
* a ``process_message_before_send`` hook recording every send under position ids
  (``classic:{request}:{step}``) (:mod:`.recording`);
* ``execute_function`` / ``a_execute_function`` going through the executor
  (:mod:`.tools`);
* a store-backed model cache as the default ``initiate_chat(cache=...)``
  (:mod:`.cache`).

``autogen`` is imported only when one of these functions is called, so
``chatledger.adapters`` imports without the ``classic`` extra.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from chatledger.adapters.classic.cache import LedgerCache
from chatledger.adapters.classic.preload import preload_group, preload_pair, provider_view
from chatledger.adapters.classic.recording import (
    SendRecorder,
    StoredSend,
    ends_turn,
    load_sends,
    to_openai,
)
from chatledger.adapters.classic.recording import autogen_module as _autogen
from chatledger.adapters.classic.tools import ExecutorMixin, ToolBinding, aexecute_through, execute_through
from chatledger.adapters.classic.turn import arun_turn, run_turn
from chatledger.adapters.classic.window import install_window
from chatledger.store import Executor, MessageAppended, Store, TurnGate
from chatledger.store.messages import pending_tool_calls
from chatledger.store.turns import DEFAULT_LEASE_SECONDS, DEFAULT_WAIT_SECONDS

__all__ = [
    "ChatledgerMixin",
    "chatledger_agent",
    "chatledger_group_chat",
    "chatledger_pair",
    "classic_subscriber",
]


class ChatledgerMixin(ExecutorMixin):
    """Executor-backed tools plus chat defaults: keep the preloaded history, use the store's cache.

    For agent classes of your own: ``class MyAgent(ChatledgerMixin, ConversableAgent)``.
    Agents handed to :func:`chatledger_group_chat` get the same behaviour
    through :func:`chatledger_agent`.
    """

    chatledger_cache: LedgerCache | None = None
    chatledger_recorder: SendRecorder | None = None

    def initiate_chat(self, recipient: Any, clear_history: bool = False, **kwargs: Any) -> Any:
        """``ConversableAgent.initiate_chat`` as one stored turn (:mod:`.turn`), cached in the store.

        ``clear_history=True`` would hide the stored history from the model (the log keeps it).
        """
        kwargs["cache"] = kwargs.get("cache") or self.chatledger_cache
        chat = cast(Any, super()).initiate_chat
        return run_turn(
            self, recipient, kwargs.get("message"), lambda: chat(recipient, clear_history=clear_history, **kwargs)
        )

    async def a_initiate_chat(self, recipient: Any, clear_history: bool = False, **kwargs: Any) -> Any:
        """The async form of :meth:`initiate_chat`."""
        kwargs["cache"] = kwargs.get("cache") or self.chatledger_cache
        chat = cast(Any, super()).a_initiate_chat
        return await arun_turn(
            self, recipient, kwargs.get("message"), lambda: chat(recipient, clear_history=clear_history, **kwargs)
        )


_CLASSES: dict[type, type] = {}


def _chatledger_class(cls: type) -> type:
    """A direct subclass of ``cls`` with the overrides of :class:`ChatledgerMixin`.

    A mixin base would change the instance layout that ``__class__`` assignment
    checks (the Protocol bases of ``Agent``), so the overrides are written into
    a single-base subclass that falls back to ``cls`` explicitly.
    """
    base: Any = cls

    def execute_function(
        self: Any, func_call: dict[str, Any], call_id: str | None = None, verbose: bool = False
    ) -> tuple[bool, dict[str, Any]]:
        if self.chatledger_tools is None:
            result: tuple[bool, dict[str, Any]] = base.execute_function(
                self, func_call, call_id=call_id, verbose=verbose
            )
            return result
        return execute_through(self, self.chatledger_tools, func_call, call_id)

    async def a_execute_function(
        self: Any, func_call: dict[str, Any], call_id: str | None = None, verbose: bool = False
    ) -> tuple[bool, dict[str, Any]]:
        if self.chatledger_tools is None:
            result: tuple[bool, dict[str, Any]] = await base.a_execute_function(
                self, func_call, call_id=call_id, verbose=verbose
            )
            return result
        return await aexecute_through(self, self.chatledger_tools, func_call, call_id)

    def initiate_chat(self: Any, recipient: Any, clear_history: bool = False, **kwargs: Any) -> Any:
        kwargs["cache"] = kwargs.get("cache") or self.chatledger_cache
        return run_turn(
            self,
            recipient,
            kwargs.get("message"),
            lambda: base.initiate_chat(self, recipient, clear_history=clear_history, **kwargs),
        )

    async def a_initiate_chat(self: Any, recipient: Any, clear_history: bool = False, **kwargs: Any) -> Any:
        kwargs["cache"] = kwargs.get("cache") or self.chatledger_cache
        return await arun_turn(
            self,
            recipient,
            kwargs.get("message"),
            lambda: base.a_initiate_chat(self, recipient, clear_history=clear_history, **kwargs),
        )

    namespace = {
        "chatledger_tools": None,
        "chatledger_cache": None,
        "chatledger_recorder": None,
        "execute_function": execute_function,
        "a_execute_function": a_execute_function,
        "initiate_chat": initiate_chat,
        "a_initiate_chat": a_initiate_chat,
        "__doc__": ChatledgerMixin.__doc__,
        "__module__": cls.__module__,
    }
    return type(f"Chatledger{cls.__name__}", (cls,), namespace)


def chatledger_agent(agent: Any) -> Any:
    """Give an existing agent the chatledger behaviour (executor tools, chat defaults); return it.

    The agent's class is swapped for a direct subclass carrying the overrides of
    :class:`ChatledgerMixin`; nothing else about the agent changes.
    """
    cls = type(agent)
    if isinstance(agent, ChatledgerMixin) or cls in _CLASSES.values():
        return agent
    sub = _CLASSES.get(cls)
    if sub is None:
        sub = _CLASSES[cls] = _chatledger_class(cls)
    agent.__class__ = sub
    return agent


def _start(store: Store, conversation_id: str, request_id: str | None, metadata: Mapping[str, Any] | None) -> str:
    """Create the conversation if needed; return the request id (default: ``at{version}``)."""
    store.start_conversation(conversation_id, metadata=metadata, exist_ok=True)
    return request_id if request_id is not None else f"at{store.version(conversation_id)}"


def _history(store: Store, conversation_id: str, request: str) -> list[StoredSend]:
    """The provider-valid history other requests left, for a fresh agent to be preloaded with.

    Tool calls left without a result by a request that crashed under an older
    version (which stored each send on its own) are closed first (the executor
    appends a result saying so); a history interleaved by such a version is
    repaired in the view (:func:`.preload.provider_view`), never in the log.
    """
    history = [s for s in load_sends(store, conversation_id) if s.request != request]
    messages = [m for s in history for m in to_openai(s.message, s.role)]
    if pending_tool_calls(messages):
        Executor(store, {}).close_pending(conversation_id, "the request that made the call did not finish")
        history = [s for s in load_sends(store, conversation_id) if s.request != request]
    return provider_view(history, conversation_id)


def _loader(
    store: Store,
    conversation_id: str,
    recorder: SendRecorder,
    clear: Callable[[], None],
    preload: Callable[[list[StoredSend]], object],
) -> Callable[[], None]:
    """Load the history into the agents now, and return what reloads it when the log moved on."""
    loaded = [-1]

    def load() -> None:
        version = store.version(conversation_id)
        if version == loaded[0]:
            return
        history = _history(store, conversation_id, recorder.request_id)
        clear()
        preload(history)
        loaded[0] = version

    load()
    return load


def _gate(store: Store, lease_seconds: float | None, wait_seconds: float | None, options: dict[str, Any]) -> TurnGate:
    """The turn gate of one request; its lease is also the executor's unless ``executor_options`` say otherwise."""
    if lease_seconds is not None:
        options.setdefault("lease_seconds", lease_seconds)
    return TurnGate(
        store,
        lease_seconds=DEFAULT_LEASE_SECONDS if lease_seconds is None else lease_seconds,
        wait_seconds=DEFAULT_WAIT_SECONDS if wait_seconds is None else wait_seconds,
    )


def _bind(
    agents: Sequence[Any], store: Store, conversation_id: str, recorder: SendRecorder, options: dict[str, Any]
) -> None:
    binding = ToolBinding(store, conversation_id, executor_options=options)
    cache = LedgerCache(store, conversation_id, positions=recorder.next_model_position)
    for agent in agents:
        chatledger_agent(agent)
        agent.chatledger_tools = binding
        agent.chatledger_cache = cache
        agent.chatledger_recorder = recorder
        recorder.attach(agent)


def _register_tools(tools: Sequence[Callable[..., Any]], callers: Sequence[Any], executor: Any) -> None:
    autogen = _autogen()

    for fn in tools:
        description = (fn.__doc__ or fn.__name__).strip().splitlines()[0]
        for caller in callers:
            autogen.register_function(fn, caller=caller, executor=executor, description=description)


def chatledger_pair(
    store: Store,
    conversation_id: str,
    *,
    llm_config: Mapping[str, Any] | Any,
    tools: Sequence[Callable[..., Any]] = (),
    request_id: str | None = None,
    system_message: str | None = None,
    assistant_name: str = "assistant",
    user_name: str = "user",
    model_client: type | None = None,
    model_client_kwargs: Mapping[str, Any] | None = None,
    max_consecutive_auto_reply: int = 10,
    is_termination_msg: Callable[[dict[str, Any]], bool] | None = None,
    executor_options: Mapping[str, Any] | None = None,
    lease_seconds: float | None = None,
    wait_seconds: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    window: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """A fresh ``AssistantAgent`` and ``UserProxyAgent`` for one request on a stored conversation.

    Args:
        store: where the conversation lives (created if missing).
        conversation_id: the conversation this request continues.
        llm_config: the assistant's ``llm_config``.
        tools: functions the assistant may call and the user proxy executes (through the executor).
        request_id: the request's idempotency key (a queue job id, an HTTP idempotency key).
            A request whose turn is stored is answered from the record (no model call, no
            tool run); duplicates running at once converge on what was recorded first.
            Default: the conversation's version when the agents are built plus a hash of the
            opening message, so the same prompt delivered twice is one request and two
            different prompts sent at once are two.
        system_message: the assistant's system message (AutoGen's default when None).
        assistant_name, user_name: the agents' names, also stored as sender/recipient.
        model_client: a custom ``ModelClient`` class named in ``llm_config``; registered
            after the tools, as AutoGen requires.
        model_client_kwargs: the custom client's constructor arguments.
        max_consecutive_auto_reply: a bound on the tool loop of one request.
        is_termination_msg: when the user proxy stops (default: a reply without tool calls).
        executor_options: options of :class:`chatledger.store.Executor` (``lease_seconds``...).
        lease_seconds: how long the request holds the conversation's turn (and its tool calls)
            without renewal (default 30): a retry after the worker died waits at most this long.
        wait_seconds: how long the request waits while another holds the conversation's turn
            before ``ConversationBusy`` (default 60; see docs/turns.md).
        metadata: conversation metadata, used only when the conversation is created.
        window: bounds of the history the assistant sends its model, as keyword arguments of
            :func:`chatledger.adapters.classic.window.install_window` (``max_tokens``,
            ``max_messages``, ``keep_first_user``); None: the whole history.

    Returns:
        ``(assistant, user_proxy)``; call ``user_proxy.initiate_chat(assistant, message=...)``.
    """
    autogen = _autogen()

    request = _start(store, conversation_id, request_id, metadata)
    extra = {} if system_message is None else {"system_message": system_message}
    assistant = autogen.AssistantAgent(assistant_name, llm_config=llm_config, **extra)
    user_proxy = autogen.UserProxyAgent(
        user_name,
        human_input_mode="NEVER",
        code_execution_config=False,
        is_termination_msg=is_termination_msg or ends_turn,
        max_consecutive_auto_reply=max_consecutive_auto_reply,
    )
    _register_tools(tools, [assistant], user_proxy)
    if model_client is not None:
        assistant.register_model_client(model_client, **dict(model_client_kwargs or {}))
    if window is not None:
        install_window(assistant, **dict(window))
    options = dict(executor_options or {})
    gate = _gate(store, lease_seconds, wait_seconds, options)
    recorder = SendRecorder(store, conversation_id, request, named=request_id is not None, gate=gate)
    _bind([assistant, user_proxy], store, conversation_id, recorder, options)
    by_name = {assistant.name: assistant, user_proxy.name: user_proxy}

    def resolve(send: StoredSend) -> tuple[Any, Any]:
        sender = by_name.get(send.sender or "")
        if sender is None:
            sender = assistant if send.role == "assistant" else user_proxy
        recipient = user_proxy if sender is assistant else assistant
        return sender, recipient

    def clear() -> None:
        assistant.chat_messages[user_proxy].clear()
        user_proxy.chat_messages[assistant].clear()

    recorder.reload = _loader(store, conversation_id, recorder, clear, lambda sends: preload_pair(sends, resolve))
    return assistant, user_proxy


def chatledger_group_chat(
    store: Store,
    conversation_id: str,
    agents: Sequence[Any],
    *,
    tools: Sequence[Callable[..., Any]] = (),
    executor: Any | None = None,
    request_id: str | None = None,
    model_client: type | None = None,
    model_client_kwargs: Mapping[str, Any] | None = None,
    speaker_selection_method: str | Callable[..., Any] = "round_robin",
    max_round: int = 10,
    manager_name: str = "chat_manager",
    manager_llm_config: Mapping[str, Any] | Any = False,
    is_termination_msg: Callable[[dict[str, Any]], bool] | None = None,
    executor_options: Mapping[str, Any] | None = None,
    lease_seconds: float | None = None,
    wait_seconds: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Any:
    """A fresh ``GroupChatManager`` over fresh agents, preloaded with the stored group conversation.

    Every message an agent sends to the manager is recorded once; the manager's
    relays to the other agents are not (they repeat it). Tools are offered to
    every agent with an ``llm_config`` and executed by ``executor`` (default:
    the first agent without one).

    Args:
        agents: the participants, built for this request (their classes gain
            :class:`ChatledgerMixin`). Register your own model clients after the tools,
            or pass ``model_client`` to have it registered on every LLM agent.
        is_termination_msg: when the manager stops (default: an LLM agent replied
            without tool calls).
        Others: as :func:`chatledger_pair`.

    Returns:
        The manager; call ``user_proxy.initiate_chat(manager, message=...)``.
    """
    autogen = _autogen()

    request = _start(store, conversation_id, request_id, metadata)
    llm_agents = [a for a in agents if getattr(a, "llm_config", False)]
    runner = executor or next((a for a in agents if not getattr(a, "llm_config", False)), None)
    if tools and runner is not None:
        _register_tools(tools, [a for a in llm_agents if a is not runner], runner)
    if model_client is not None:
        for agent in llm_agents:
            agent.register_model_client(model_client, **dict(model_client_kwargs or {}))
    names = {a.name for a in llm_agents}

    def ends(message: dict[str, Any]) -> bool:
        return message.get("name") in names and ends_turn(message)

    groupchat = autogen.GroupChat(
        agents=list(agents),
        messages=[],
        max_round=max_round,
        speaker_selection_method=speaker_selection_method,
    )
    manager = autogen.GroupChatManager(
        groupchat,
        name=manager_name,
        llm_config=manager_llm_config,
        is_termination_msg=is_termination_msg or ends,
    )
    options = dict(executor_options or {})
    gate = _gate(store, lease_seconds, wait_seconds, options)
    recorder = SendRecorder(
        store, conversation_id, request, skip=lambda agent: agent is manager, named=request_id is not None, gate=gate
    )
    _bind(agents, store, conversation_id, recorder, options)
    by_name = {a.name: a for a in agents}
    fallback_user = runner or agents[0]
    fallback_llm = llm_agents[0] if llm_agents else agents[0]

    def resolve(send: StoredSend) -> Any:
        speaker = by_name.get(send.sender or "")
        if speaker is None:
            speaker = fallback_llm if send.role == "assistant" else fallback_user
        return speaker

    def clear() -> None:
        groupchat.messages.clear()
        for agent in agents:
            manager.chat_messages[agent].clear()
            agent.chat_messages[manager].clear()

    recorder.reload = _loader(
        store, conversation_id, recorder, clear, lambda sends: preload_group(sends, manager, resolve)
    )
    return manager


def classic_subscriber(
    callback: Callable[[str, str, dict[str, Any], MessageAppended], object],
) -> Callable[[Any], None]:
    """A durable-subscription handler that calls ``callback(sender, recipient, message, event)``.

    Register it with ``chatledger.store.subscriptions.subscribe(store, name, ...)``
    and run the subscription in any process: the callback sees every message
    every worker recorded, once, in log order, whichever process ran the agents.
    Messages not written by this adapter are passed with sender and recipient
    taken from their role.
    """

    def handle(event: Any) -> None:
        if not isinstance(event, MessageAppended):
            return
        meta = event.meta or {}
        role = str(event.message.get("role"))
        sender = str(meta.get("sender") or role)
        recipient = str(meta.get("recipient") or "")
        callback(sender, recipient, event.message, event)

    return handle
