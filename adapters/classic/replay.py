"""Replaying a recorded classic AutoGen conversation: no model call, no tool run.

Each recorded request is driven again on a fresh agent pair. The assistant's
model is :class:`ReplayModelClient`, which answers with the assistant messages
the log holds, in order; tool calls go to the executor in replay mode, which
returns recorded outcomes and never calls a tool. Every message the replayed
agents send is compared with the recorded one at the same position, and the
first difference raises ``ReplayDivergence`` naming the position and both sides.
Nothing is written to the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from chatledger.adapters.classic.recording import SendRecorder, StoredSend, autogen_module, ends_turn, load_sends
from chatledger.adapters.classic.tools import ToolBinding
from chatledger.store import ReplayDivergence, Store

__all__ = ["ReplayModelClient", "chat_completion", "replay_classic"]


def chat_completion(message: Mapping[str, Any], *, model: str = "chatledger", response_id: str = "") -> Any:
    """An ``autogen.oai.oai_models.ChatCompletion`` whose one choice is ``message`` (an assistant dict)."""
    ChatCompletion = autogen_module().oai.oai_models.ChatCompletion

    calls = message.get("tool_calls") or None
    body: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if calls:
        body["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]},
            }
            for c in calls
        ]
    return ChatCompletion.model_validate(
        {
            "id": response_id or f"chatcmpl-{time.time_ns()}",
            "created": int(time.time()),
            "model": model,
            "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "tool_calls" if calls else "stop", "message": body}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    )


class ReplayModelClient:
    """A classic ``ModelClient`` answering with recorded assistant messages, in order.

    Name it in the config list (``{"model": "replay", "model_client_cls": "ReplayModelClient"}``)
    and register it with ``agent.register_model_client(ReplayModelClient, responses=...)``.
    """

    def __init__(
        self, config: Mapping[str, Any], responses: Sequence[Mapping[str, Any]] = (), conversation_id: str = ""
    ) -> None:
        self.responses = list(responses)
        self.conversation_id = conversation_id
        self.served = 0

    def create(self, params: Mapping[str, Any]) -> Any:
        """The next recorded assistant message; ReplayDivergence when the record has no more."""
        if self.served >= len(self.responses):
            asked = params.get("messages", [])[-1:] if isinstance(params.get("messages"), list) else None
            raise ReplayDivergence(self.conversation_id, -1, None, {"model_request_after": asked})
        message = self.responses[self.served]
        self.served += 1
        return chat_completion(message, model="chatledger-replay", response_id=f"replay-{self.served}")

    def message_retrieval(self, response: Any) -> list[Any]:
        """The message when it calls tools, else its text (the ``OpenAIClient`` contract)."""
        return [c.message if c.message.tool_calls else c.message.content for c in response.choices]

    def cost(self, response: Any) -> float:
        """Replays cost nothing."""
        return 0.0

    @staticmethod
    def get_usage(response: Any) -> dict[str, Any]:
        """Zero usage."""
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0, "model": response.model}


def _requests(sends: Iterable[StoredSend]) -> list[str]:
    seen: dict[str, None] = {}
    for send in sends:
        if send.request is not None:
            seen.setdefault(send.request, None)
    return list(seen)


def replay_classic(
    store: Store,
    conversation_id: str,
    *,
    llm_config: Mapping[str, Any] | None = None,
    model_client: type | None = None,
    model_client_kwargs: Mapping[str, Any] | None = None,
    assistant_name: str | None = None,
    user_name: str | None = None,
    is_termination_msg: Callable[[dict[str, Any]], bool] | None = None,
) -> list[Any]:
    """Re-drive a recorded two-agent classic conversation without any model or tool call.

    Args:
        llm_config, model_client, model_client_kwargs: a different model to evaluate
            against the record (default: the recorded responses). Tools always come
            from the ledger.
        assistant_name, user_name: the agents' names (default: as recorded).
        is_termination_msg: as given to :func:`chatledger_pair`, when it was not the default.

    Returns:
        One ``ChatResult`` per recorded request, in order.

    Raises:
        ReplayDivergence: the replay sent a message the record does not have at that
            position, or asked for a tool outcome or a model response it lacks.
    """
    autogen = autogen_module()

    sends = [s for s in load_sends(store, conversation_id) if s.request is not None]
    firsts = {s.request: s for s in sends if s.seq == 0}
    user = user_name or next((s.sender for s in firsts.values() if s.sender), "user")
    answer = assistant_name or next((s.recipient for s in firsts.values() if s.recipient), "assistant")
    if llm_config is None:
        responses = [s.message for s in sends if s.sender == answer]
        llm_config = {"config_list": [{"model": "chatledger-replay", "model_client_cls": "ReplayModelClient"}]}
        model_client = ReplayModelClient
        model_client_kwargs = {"responses": responses, "conversation_id": conversation_id}
    assistant = autogen.AssistantAgent(answer, llm_config=dict(llm_config))
    user_proxy = autogen.UserProxyAgent(
        user,
        human_input_mode="NEVER",
        code_execution_config=False,
        is_termination_msg=is_termination_msg or ends_turn,
        max_consecutive_auto_reply=1000,
    )
    if model_client is not None:
        assistant.register_model_client(model_client, **dict(model_client_kwargs or {}))
    from chatledger.adapters.classic.agents import chatledger_agent

    binding = ToolBinding(store, conversation_id, replay=True)
    recorder = SendRecorder(store, conversation_id, "", replay=sends)
    for agent in (assistant, user_proxy):
        chatledger_agent(agent)
        agent.chatledger_tools = binding
        recorder.attach(agent)
    results = []
    for request in _requests(sends):
        first = firsts.get(request)
        if first is None:
            continue
        recorder.start_request(request)
        initiator, other = (user_proxy, assistant) if first.sender != answer else (assistant, user_proxy)
        chat = initiator.initiate_chat(other, message=dict(first.message), clear_history=False, silent=True)
        results.append(chat)
    return results
