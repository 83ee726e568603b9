"""Worker processes for the classic multi-process tests: ``python -m tests.adapters.classic.workers MODE ARGS_JSON``.

Modes:
- ``stock``: handle one queued job with stock classic agents (no chatledger).
- ``ledger``: handle one queued job with :func:`chatledger_pair`, the job id as request id (the
  scripted model, or with ``base_url`` AutoGen's real OpenAI client against that server).
- ``subscriber``: run the durable subscription ``notify`` until ``expect`` messages were
  delivered (or a deadline), writing one line per delivered message.

Every worker waits until ``start_at`` (a UNIX time) before working, so that workers
started together really overlap.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from .fakes import LLM_CONFIG, ScriptedModelClient, weather_tool


def _ends(message: dict[str, Any]) -> bool:
    return not message.get("tool_calls") and message.get("role") != "tool"


def _wait(args: dict[str, Any]) -> None:
    delay = float(args.get("start_at", 0)) - time.time()
    if delay > 0:
        time.sleep(delay)


def _model_options(args: dict[str, Any]) -> dict[str, Any]:
    """The scripted model's options a job asks for: a call counter, a rendezvous of requests."""
    options: dict[str, Any] = {}
    if args.get("calls"):
        options["calls_file"] = args["calls"]
    if args.get("meet"):
        folder, expected, timeout = args["meet"]
        options["meet"] = (str(folder), int(expected), float(timeout))
    if args.get("delay"):
        options["delay"] = float(args["delay"])
    if args.get("hang_after_tool"):
        options["hang_after_tool"] = args["hang_after_tool"]
    return options


def stock(args: dict[str, Any]) -> str:
    """The broken pattern: no lease, no ledger; the worker just runs the job."""
    import autogen

    assistant = autogen.AssistantAgent("assistant", llm_config=LLM_CONFIG)
    user = autogen.UserProxyAgent(
        "user", human_input_mode="NEVER", code_execution_config=False, is_termination_msg=_ends
    )
    autogen.register_function(
        weather_tool(Path(args["effects"])), caller=assistant, executor=user, description="Get the weather."
    )
    assistant.register_model_client(ScriptedModelClient)
    _wait(args)
    return str(user.initiate_chat(assistant, message=args["prompt"], silent=True).summary)


def _llm(args: dict[str, Any]) -> dict[str, Any]:
    """The model options of a job: the scripted client, or AutoGen's real OpenAI client at ``base_url``."""
    if not args.get("base_url"):
        return {
            "llm_config": LLM_CONFIG,
            "model_client": ScriptedModelClient,
            "model_client_kwargs": _model_options(args),
        }
    entry = {
        "model": "gpt-4o-mini",
        "base_url": args["base_url"],
        "api_key": "test",
        "stream": bool(args.get("stream")),
    }
    return {"llm_config": {"config_list": [entry]}}


def ledger(args: dict[str, Any]) -> str:
    """The fixed pattern: fresh agents on chatledger, the queue job id as the request id."""
    from chatledger.adapters.classic import chatledger_pair
    from chatledger.store import open_store

    with open_store(args["url"]) as store:
        assistant, user = chatledger_pair(
            store,
            args["conversation"],
            tools=[weather_tool(Path(args["effects"]))],
            request_id=args.get("job"),
            **({"lease_seconds": args["lease_seconds"]} if args.get("lease_seconds") else {}),
            **_llm(args),
        )
        _wait(args)
        try:
            result = user.initiate_chat(assistant, message=args["prompt"], clear_history=False, silent=True)
        except Exception as exc:  # reported to the test, which names the failure
            return f"error: {type(exc).__name__}: {exc}"
        return str(result.summary)


def subscriber(args: dict[str, Any]) -> str:
    """The durable callback: a named subscription, run in whichever process this is."""
    from chatledger.adapters.classic import classic_subscriber
    from chatledger.store import open_store
    from chatledger.store.subscriptions import subscribe

    out = Path(args["out"])

    def notify(sender: str, recipient: str, message: dict[str, Any], event: Any) -> None:
        with out.open("a") as f:
            f.write(f"{event.conversation_id} {sender}->{recipient} {message['role']} {event.event_id}\n")

    deadline = time.time() + float(args.get("timeout", 20))
    with open_store(args["url"]) as store:
        sub = subscribe(store, "notify", classic_subscriber(notify))
        delivered = 0
        while time.time() < deadline:
            sub.run_once()
            delivered = len(out.read_text().splitlines()) if out.exists() else 0
            if delivered >= int(args.get("expect", 0)):
                break
            time.sleep(0.05)
    return str(delivered)


def main() -> None:
    mode, raw = sys.argv[1], sys.argv[2]
    print(json.dumps({"result": {"stock": stock, "ledger": ledger, "subscriber": subscriber}[mode](json.loads(raw))}))


if __name__ == "__main__":
    main()
