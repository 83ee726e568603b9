"""chatledger verify and erase on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatledger.adapters.cli import main
from chatledger.store import open_store
from chatledger.store.integrity.crypto import generate_master_key
from chatledger.store.integrity.verify import heads

from .scenario import build, tamper_sqlite


def test_verify_exits_0_when_intact_and_1_naming_the_tampered_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify prints ok and exits 0; after a direct edit it names stream, version, position and kind, exits 1."""
    path = tmp_path / "chat.db"
    url = f"sqlite:///{path}"
    with open_store(url) as store:
        build(store)
    assert main(["--db", url, "verify"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok: 3 streams, 9 events") and err == ""
    tamper_sqlite(str(path), ["UPDATE events SET payload = replace(payload, 'hello', 'HELLO') WHERE version = 3"])
    assert main(["--db", url, "verify"]) == 1
    out, err = capsys.readouterr()
    assert "BROKEN c1 version 3 (position 3): changed" in out and err == ""
    assert main(["--db", url, "verify", "c2"]) == 0
    capsys.readouterr()
    assert main(["--db", url, "verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert [(p["stream_id"], p["version"], p["kind"]) for p in report["problems"]] == [("c1", 3, "changed")]


def test_verify_heads_lists_each_conversation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """verify --heads --json prints id, head hash and version for every conversation of the tenant."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    with open_store(url) as store:
        build(store)
        expected = [{"id": c, "head_hash": h, "version": v} for c, h, v in heads(store)]
    assert main(["--db", url, "verify", "--heads", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    assert main(["--db", url, "--tenant", "other", "verify", "--heads", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["--db", url, "--tenant", "other", "verify", "c1"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_verify_against_kept_heads_names_what_the_file_cannot_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify --against the kept --heads --json names the deleted last event of the log, which verify alone
    cannot see; exit 1."""
    path = tmp_path / "chat.db"
    url = f"sqlite:///{path}"
    kept = tmp_path / "heads.json"
    with open_store(url) as store:
        build(store)
    assert main(["--db", url, "verify", "--heads", "--json"]) == 0
    kept.write_text(capsys.readouterr().out, encoding="utf-8")
    assert main(["--db", url, "verify", "--against", str(kept)]) == 0
    assert capsys.readouterr().out.endswith("(unsigned chains), 3 kept heads compared\n")
    tamper_sqlite(
        str(path), ["DELETE FROM events WHERE sid = (SELECT sid FROM streams WHERE stream_id = 'c2') AND version = 2"]
    )
    assert main(["--db", url, "verify"]) == 0
    capsys.readouterr()
    assert main(["--db", url, "verify", "--against", str(kept)]) == 1
    out, err = capsys.readouterr()
    assert "BROKEN c2 version 2: removed: the kept head is version 2, 1 events are stored" in out and err == ""
    assert main(["--db", url, "verify", "c1", "--against", str(kept)]) == 0
    capsys.readouterr()
    assert main(["--db", url, "verify", "--against", str(kept), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["kept"]) == (False, 3)
    assert [(p["stream_id"], p["version"], p["kind"], p["position"]) for p in report["problems"]] == [
        ("c2", 2, "removed", None)
    ]


def test_verify_against_refuses_a_file_that_is_not_kept_heads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file, bad JSON or other JSON is one error line and exit 1; --against with --heads is a usage error."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    with open_store(url) as store:
        build(store)
    other = tmp_path / "other.json"
    for text in ("not json", '{"ok": true}', '[{"id": "c1", "head_hash": "00", "version": "5"}]'):
        other.write_text(text, encoding="utf-8")
        assert main(["--db", url, "verify", "--against", str(other)]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("chatledger: error: --against:") and err.count("\n") == 1
    assert main(["--db", url, "verify", "--against", str(tmp_path / "nope.json")]) == 1
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["--db", url, "verify", "--heads", "--against", str(other)])
    assert usage.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_erase_needs_confirmation_and_a_master_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """erase refuses without --yes; with it the conversation becomes unreadable and verify still passes."""
    monkeypatch.setenv("CHATLEDGER_MASTER_KEY", generate_master_key())
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    with open_store(url) as store:
        store.start_conversation("c1", messages=[{"role": "user", "content": "forget me"}])
    assert main(["--db", url, "erase", "c1"]) == 2
    assert main(["--db", url, "show", "c1"]) == 0
    capsys.readouterr()
    assert main(["--db", url, "erase", "c1", "--yes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": "c1", "erased": True, "key_destroyed": True, "certain": True}
    assert main(["--db", url, "show", "c1"]) == 1
    assert "was erased" in capsys.readouterr().err
    assert main(["--db", url, "verify"]) == 0
