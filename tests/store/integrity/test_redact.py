"""Secrets are redacted before anything is stored: messages, tool arguments, tool results, metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chatledger.store import Draft, Executor, ToolCallSucceeded, open_store
from chatledger.store.backends.recorder import call_stream_id
from chatledger.store.integrity.redaction import REDACTED, DefaultRedactor

SECRETS = {
    "openai key": "use sk-proj-AbCdEf0123456789XyZ_abcd please",
    "bearer token": "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.abc123",
    "password in url": "connect to postgresql://admin:hunter2pass@db.internal:5432/prod",
    "aws access key": "key id AKIAIOSFODNN7EXAMPLE here",
    "aws secret": "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "github token": "token ghp_0123456789abcdefghijABCDEFGHIJ012345",
    "password assignment": "login with password=Tr0ub4dor&3 now",
    "private key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
}
LEAKS = [
    "sk-proj-AbCd",
    "eyJhbGci",
    "hunter2pass",
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI",
    "ghp_0123",
    "Tr0ub4dor",
    "MIIEpAIB",
]


@pytest.mark.parametrize("name", list(SECRETS))
def test_default_redactor_replaces_common_secrets(name: str) -> None:
    """Each kind of secret is replaced by [REDACTED]; the text around it is kept."""
    out = DefaultRedactor().redact_text(SECRETS[name])
    assert REDACTED in out
    assert not any(leak in out for leak in LEAKS), out
    assert out[:4] == SECRETS[name][:4]


def test_redacted_tool_arguments_stay_json_and_ids_are_kept() -> None:
    """JSON text keeps parsing after redaction; secret-named keys are blanked; id fields are untouched."""
    args = json.dumps({"url": "https://u:p4ssw0rd@h/x", "api_key": "abc123456", "q": "weather"})
    payload = {"message_id": "sk-notasecretbutanid12345", "arguments": args, "password": "x1", "n": 3}
    out = DefaultRedactor().redact(payload)
    assert json.loads(out["arguments"]) == {"url": f"https://u:{REDACTED}@h/x", "api_key": REDACTED, "q": "weather"}
    assert out["message_id"] == payload["message_id"]
    assert out["password"] == REDACTED and out["n"] == 3
    assert payload["password"] == "x1"


def test_store_with_redactor_never_writes_the_secret(tmp_path: Path) -> None:
    """Messages, tool arguments, tool results and metadata reach the SQLite file redacted."""
    path = tmp_path / "chat.db"
    store = open_store(f"sqlite:///{path}", redactor=True)
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "db", "arguments": json.dumps({"dsn": SECRETS["password in url"]})},
    }
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": SECRETS["openai key"]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": SECRETS["aws secret"]},
    ]
    store.start_conversation(
        "c1", metadata={"api_key": "meta-secret-value"}, messages=messages, message_ids=["m1", "m2", "m3"]
    )
    stream = call_stream_id("c1", "call_1")
    with store.transaction() as w:
        w.create_stream(stream, "c1", "tool_call")
        w.append(
            stream,
            [
                Draft(
                    ToolCallSucceeded,
                    {
                        "tool_call_id": "call_1",
                        "worker_id": "w",
                        "attempt": 1,
                        "result": SECRETS["github token"],
                        "duration_ms": 1.0,
                    },
                )
            ],
        )
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for leak in [*LEAKS, "meta-secret-value"]:
        assert leak.encode() not in raw, leak
    with open_store(f"sqlite:///{path}", redactor=True) as store:
        stored = store.messages("c1")
        assert REDACTED in stored[0]["content"]
        assert json.loads(stored[1]["tool_calls"][0]["function"]["arguments"])["dsn"].count(REDACTED) == 1
        assert store.conversation("c1").metadata == {"api_key": REDACTED}
        # A retried delivery of the same (unredacted) messages is recognised as a duplicate.
        assert len(store.append("c1", messages, message_ids=["m1", "m2", "m3"])) == 3
        assert store.version("c1") == 4


def test_a_custom_redactor_plugs_in(tmp_path: Path) -> None:
    """Any object with redact(value) is used, for every payload."""

    class Upper:
        def redact(self, value: Any) -> Any:
            return json.loads(json.dumps(value).replace("Rome", "<city>"))

    with open_store(f"sqlite:///{tmp_path / 'c.db'}", redactor=Upper()) as store:
        store.start_conversation("c1", messages=[{"role": "user", "content": "Weather in Rome?"}])
        assert store.messages("c1") == [{"role": "user", "content": "Weather in <city>?"}]


def test_a_queued_call_whose_arguments_were_redacted_is_refused_by_workers_not_run_blind(tmp_path: Path) -> None:
    """With a redactor on, a call whose arguments held a secret is recorded redacted. Inline it runs with
    the model's arguments; a worker, which only has the recorded ones, never runs the tool with them: the
    call fails, final, and the model is told why. A call without a secret runs on a worker as usual."""
    runs: list[dict[str, Any]] = []

    def connect(host: str, password: str) -> str:
        """A tool that needs the secret."""
        runs.append({"host": host, "password": password})
        return f"connected to {host}"

    secret = {"host": "db", "password": "hunter2-very-secret"}
    plain = {"host": "db", "password": "public"}
    with open_store(f"sqlite:///{tmp_path / 'c.db'}", redactor=True) as store:
        store.start_conversation("c1", messages=[{"role": "user", "content": "connect"}])
        executor = Executor(store, [connect])
        queued = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "q1", "type": "function", "function": {"name": "connect", "arguments": json.dumps(secret)}},
            ],
        }
        executor.submit("c1", queued)
        outcome = Executor(store, [connect]).work_on("c1", "q1")
        assert runs == [] and outcome is not None and outcome.is_error
        assert "redacted" in outcome.content
        assert store.messages("c1")[-1]["content"] == outcome.content
        store.append("c1", [{"role": "user", "content": "again"}])
        inline = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "i1", "type": "function", "function": {"name": "connect", "arguments": json.dumps(secret)}},
                {"id": "p1", "type": "function", "function": {"name": "connect", "arguments": json.dumps(plain)}},
            ],
        }
        results = executor.execute("c1", inline)
        assert [r["content"] for r in results] == ["connected to db", "connected to db"]
        assert runs == [secret, plain]
