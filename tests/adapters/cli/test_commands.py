"""Every CLI command, run as a subprocess against a real SQLite file, as a user would."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatledger.store import Executor, open_store

from ...conftest import CORPUS

CLI = [sys.executable, "-m", "chatledger.adapters.cli"]
SAMPLE = CORPUS / "autogen_docs.jsonl"


def run(db: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    """Run `chatledger --db sqlite:///DB ARGS...` and check its exit code."""
    env = {k: v for k, v in os.environ.items() if k != "CHATLEDGER_URL"}
    done = subprocess.run(
        [*CLI, "--db", f"sqlite:///{db}", *args], capture_output=True, text=True, env=env, timeout=120
    )
    if check is not None:
        assert done.returncode == check, f"exit {done.returncode}: {done.stderr}"
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store file with one conversation whose tool call went through the executor."""
    path = tmp_path / "cli.db"
    store = open_store(f"sqlite:///{path}")
    conv = store.start_conversation("conv-1", metadata={"user": "ada", "team": "ops"})
    store.append(conv, [{"role": "user", "content": "Quelle heure est-il à Paris ?"}])

    def clock(city: str) -> str:
        return f"it is noon in {city}"

    Executor(store, [clock]).execute(
        conv,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "clock", "arguments": '{"city": "Paris"}'}}
            ],
        },
    )
    store.append(conv, [{"role": "assistant", "content": "Il est midi à Paris."}])
    store.start_conversation("conv-2", metadata={"user": "bob"}, messages=[{"role": "user", "content": "hello"}])
    store.close()
    return path


def test_conversations_lists_and_filters(db: Path) -> None:
    """`conversations` lists every conversation; --where filters on metadata; --json for scripts."""
    rows = as_json(run(db, "conversations", "--json"))
    assert [r["id"] for r in rows] == ["conv-1", "conv-2"]
    assert rows[0]["metadata"] == {"user": "ada", "team": "ops"}
    assert [r["id"] for r in as_json(run(db, "conversations", "--where", "user=bob", "--json"))] == ["conv-2"]
    table = run(db, "conversations").stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "MESSAGES", "TOOL_CALLS"] and "conv-2" in table
    assert rows[0]["messages"] == 4 and rows[0]["tool_calls"] == 1 and rows[0]["status"] == "answered"
    assert [r["id"] for r in as_json(run(db, "conversations", "--status", "awaiting_reply", "--json"))] == ["conv-2"]


def test_show_renders_formats_and_time_travel(db: Path) -> None:
    """`show` renders the chat with tool calls and results, as OpenAI JSON, and as of a version."""
    text = run(db, "show", "conv-1").stdout
    assert "clock" in text and "it is noon in Paris" in text and "Il est midi à Paris." in text
    openai = json.loads(run(db, "show", "conv-1", "--format", "openai").stdout)
    assert [m["role"] for m in openai] == ["user", "assistant", "tool", "assistant"]
    assert json.loads(run(db, "show", "conv-1", "--format", "openai", "--as-of", "2").stdout) == openai[:1]
    assert as_json(run(db, "show", "conv-1", "--json"))["metadata"]["user"] == "ada"


def test_audit_lists_tool_executions(db: Path) -> None:
    """`audit` shows each tool call with its status and result; filters narrow it."""
    rows = as_json(run(db, "audit", "--json"))
    assert [(r["tool"], r["status"], r["result"]) for r in rows] == [("clock", "succeeded", "it is noon in Paris")]
    assert as_json(run(db, "audit", "--tool", "nope", "--json")) == []
    assert "clock" in run(db, "audit").stdout


def test_export_then_import_round_trips(db: Path, tmp_path: Path) -> None:
    """`export -o` then `import` into another store gives back the same conversations."""
    out = tmp_path / "backup.jsonl"
    run(db, "export", "-o", str(out))
    other = tmp_path / "other.db"
    assert as_json(run(other, "import", str(out), "--json")) == {"imported": 2, "skipped": 0, "messages": 5}
    assert run(other, "export").stdout == out.read_text(encoding="utf-8")
    assert as_json(run(other, "import", str(out), "--json"))["skipped"] == 2


@pytest.mark.skipif(not SAMPLE.exists(), reason="no corpus")
def test_import_of_the_corpus_sample(tmp_path: Path) -> None:
    """`import` of a real corpus file stores every conversation; export gives the records back."""
    db = tmp_path / "corpus.db"
    result = as_json(run(db, "import", str(SAMPLE), "--json"))
    sources = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    assert result["imported"] == len(sources)
    exported = [json.loads(line) for line in run(db, "export").stdout.splitlines()]
    assert exported == sources


def test_replay_and_fork(db: Path) -> None:
    """`replay` reproduces recorded tool results with no tool run; `fork --at` branches without re-running."""
    report = as_json(run(db, "replay", "conv-1", "--json"))
    assert report["tool_results_from_record"] == 1 and report["tools_run"] == 0
    fork = as_json(run(db, "fork", "conv-1", "--at", "4", "--json"))
    assert fork["version"] == 4
    assert as_json(run(db, "replay", fork["fork"], "--json"))["tool_results_from_record"] == 1


def test_replay_exits_1_at_the_divergence(db: Path) -> None:
    """A conversation whose tool result was never executed diverges: exit 1 naming the position."""
    store = open_store(f"sqlite:///{db}")
    store.start_conversation(
        "imported",
        messages=[
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "c9", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c9", "content": "made up"},
        ],
    )
    store.close()
    done = run(db, "replay", "imported", check=1)
    assert "diverged at position 1" in done.stderr and done.stderr.count("\n") == 1


def test_verify_detects_a_tampered_file(db: Path, tmp_path: Path) -> None:
    """`verify` passes on an intact file and exits 1 after a payload is changed behind its back.

    The file refuses the change until its append-only trigger is dropped; `--against`
    the heads kept before compares them too.
    """
    assert as_json(run(db, "verify", "--json"))["ok"] is True
    kept = tmp_path / "heads.json"
    kept.write_text(run(db, "verify", "--heads", "--json").stdout, encoding="utf-8")
    edit = (
        "UPDATE events SET payload = replace(payload, 'noon', 'midnight') "
        "WHERE type = (SELECT code FROM event_types WHERE name = 'message.appended')"
    )
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(edit)
    conn.execute("DROP TRIGGER events_no_update")
    assert conn.execute(edit).rowcount > 0
    conn.commit()
    conn.close()
    done = run(db, "verify", check=1)
    assert "BROKEN conv-1" in done.stdout
    against = as_json(run(db, "verify", "--against", str(kept), "--json", check=1))
    assert against["kept"] == 3 and [p["conversation_id"] for p in against["problems"]] == ["conv-1"]


def test_search_rebuild_and_subscriptions(db: Path) -> None:
    """`search` finds unicode text; `rebuild` replays projections; `subscriptions` lists their positions."""
    hits = as_json(run(db, "search", "midi", "--json"))
    assert hits and hits[0]["conversation_id"] == "conv-1"
    run(db, "rebuild")
    assert as_json(run(db, "search", "Paris", "--json"))
    listed = run(db, "subscriptions", "--json")
    names = [s["name"] for s in as_json(listed)]
    assert "search" in " ".join(names)


def test_errors_are_one_line_with_exit_codes(db: Path) -> None:
    """Usage errors exit 2; failures exit 1 with one line on stderr; nothing is printed to stdout."""
    usage = run(db, "show", check=2)
    assert "usage:" in usage.stderr
    missing = run(db, "show", "no-such-conversation", check=1)
    assert missing.stdout == "" and missing.stderr.startswith("chatledger: error:") and missing.stderr.count("\n") == 1
    bad = run(db, "import", str(db.parent / "nope.jsonl"), check=1)
    assert bad.stderr.count("\n") == 1


def test_progress_bar_only_on_a_terminal(db: Path, tmp_path: Path) -> None:
    """Piped, long operations print no progress bar on stderr."""
    out = tmp_path / "x.jsonl"
    done = run(db, "export", "-o", str(out))
    assert "[" not in done.stderr


def test_demo_counts_one_execution_per_call(tmp_path: Path) -> None:
    """`demo` runs offline end to end: one execution per call, replay runs nothing, `replay` agrees."""
    summary = as_json(run(tmp_path / "demo.db", "demo", "--json"))
    assert summary["tools"] == {
        "book_table": {"distinct_calls": 2, "executions": 2},
        "get_weather": {"distinct_calls": 4, "executions": 4},
    }
    assert summary["replay"] == {"model_calls": 0, "tool_runs": 0, "identical": True}
    assert summary["verified"] is True
    replayed = as_json(run(tmp_path / "demo.db", "replay", summary["conversation"], "--json"))
    assert replayed["tool_results_from_record"] == 6 and replayed["tools_run"] == 0
    text = run(tmp_path / "demo.db", "demo").stdout
    for step in ("1. ", "2. ", "3. ", "4. ", "5. "):
        assert f"\n{step}" in text


def test_audit_filters_by_time(db: Path) -> None:
    """`audit --since/--until` select calls by when they were requested."""
    [row] = as_json(run(db, "audit", "--json"))
    assert as_json(run(db, "audit", "--since", row["requested_at"], "--json")) == [row]
    assert as_json(run(db, "audit", "--until", row["requested_at"], "--json")) == []
    assert as_json(run(db, "audit", "--since", "2999-01-01", "--json")) == []


def test_progress_bar_on_a_terminal(db: Path, tmp_path: Path) -> None:
    """On a terminal, a long operation draws a progress bar on stderr."""
    import pty

    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "CHATLEDGER_URL"}
    out = tmp_path / "x.jsonl"
    done = subprocess.run(
        [*CLI, "--db", f"sqlite:///{db}", "export", "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=env,
        timeout=60,
    )
    os.close(secondary)
    drawn = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    os.close(primary)
    assert done.returncode == 0
    assert b"exporting [" in drawn and b"2/2" in drawn
