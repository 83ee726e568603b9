"""Real faults for the PostgreSQL tests: a TCP proxy that drops traffic, a private server to restart,
and worker processes (module-level so that ``spawn`` can import them)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ....conftest import with_search_path

if TYPE_CHECKING:
    from chatledger.store import Store

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class DroppingProxy:
    """Forwards TCP to a PostgreSQL server; armed, it drops the next request or reply and hangs up."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed: str | None = None
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, direction: str) -> None:
        """Drop the next chunk travelling in ``direction`` ("request" or "reply"), then close."""
        self.armed = direction

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for src, dst, direction in ((client, server, "request"), (server, client, "reply")):
                threading.Thread(target=self._pump, args=(src, dst, direction, client, server), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str, *both: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    drop = self.armed == direction
                    if drop:
                        self.armed = None
                if drop:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in both:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()


class PrivateServer:
    """A throw-away PostgreSQL cluster on its own port in a temp dir, for restarts mid-run.

    Args:
        settings: server parameters given on the command line at every start (``-c name=value``;
            values must not need shell quoting).
        initdb: create the cluster (False for a data directory made otherwise: a base backup).
        start: start it now.
    """

    def __init__(self, settings: Mapping[str, str] | None = None, *, initdb: bool = True, start: bool = True) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.skip(f"no PostgreSQL server binaries in {PG_BIN}: the restart test needs initdb and pg_ctl")
        self.settings = dict(settings or {})
        self.dir = Path(tempfile.mkdtemp(prefix="cl_pg_"))
        self.data = self.dir / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.dir, "postgres")
            self._prefix = ["runuser", "-u", "postgres", "--"]
        else:
            self._prefix = []
        if initdb:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        if start:
            self.start()

    def _run(self, tool: str, *args: str) -> None:
        try:
            subprocess.run(
                [*self._prefix, str(PG_BIN / tool), *args], check=True, capture_output=True, timeout=60, cwd=self.dir
            )
        except subprocess.CalledProcessError as exc:
            # Keep what the tool said: a failed initdb, pg_basebackup or pg_upgrade is otherwise silent.
            exc.add_note(f"{tool} said: {(exc.stdout or b'').decode()[-2000:]}{(exc.stderr or b'').decode()[-2000:]}")
            raise

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        opts += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def standby(self, name: str, settings: Mapping[str, str] | None = None) -> PrivateServer:
        """A streaming replica of this server, started on its own port.

        Made with ``pg_basebackup -R`` (which writes ``primary_conninfo`` and ``standby.signal``);
        it connects as ``application_name=name``, the name ``synchronous_standby_names`` lists.
        """
        replica = PrivateServer(settings, initdb=False, start=False)
        conninfo = f"host=127.0.0.1 port={self.port} user=postgres application_name={name}"
        replica._run("pg_basebackup", "-D", str(replica.data), "-R", "-X", "stream", "-c", "fast", "-d", conninfo)
        replica.start()
        return replica

    def promote(self) -> None:
        """Promote a standby (``pg_ctl promote``), waiting until it accepts writes."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "promote")

    def upgrade_into(self, new: PrivateServer, *, link: bool = False) -> None:
        """Stop this server and ``pg_upgrade`` it into ``new`` (an initdb'ed cluster, not running), then start ``new``.

        The data files are copied (pg_upgrade's default), or hard-linked with ``link``. The servers
        pg_upgrade runs meanwhile listen on the two servers' own ports, sockets in ``new``'s dir.
        """
        self.stop("fast")
        new._run(
            "pg_upgrade",
            "-b", str(PG_BIN), "-B", str(PG_BIN),
            "-d", str(self.data), "-D", str(new.data),
            "-p", str(self.port), "-P", str(new.port),
            "-s", str(new.dir), "-U", "postgres", "--no-sync", *(["--link"] if link else []),
        )  # fmt: skip
        new.start()

    def advance_xids(self, next_xid: int = 1 << 24) -> None:
        """Move the server's transaction id counter forward to ``next_xid`` (``pg_resetwal -x``).

        ``next_xid`` must start a pg_xact segment (a multiple of 1,048,576), so the server can
        start on it; the default puts it about 16.8 million ahead of a fresh cluster.
        """
        self.stop("fast")
        self._run("pg_resetwal", "-x", str(next_xid), "-D", str(self.data))
        self.start()

    def dump(self, path: Path) -> None:
        """``pg_dump`` the ``postgres`` database in the custom format to ``path``."""
        subprocess.run(
            [str(PG_BIN / "pg_dump"), "-Fc", "-f", str(path), "-d", self.url],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def restore(self, path: Path) -> None:
        """``pg_restore`` a custom-format dump into the ``postgres`` database."""
        subprocess.run(
            [str(PG_BIN / "pg_restore"), "--exit-on-error", "-d", self.url, str(path)],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("fast")
        shutil.rmtree(self.dir, ignore_errors=True)


def append_worker(url: str, worker: int, own: int, shared: int, barrier: Any) -> None:
    """A writer process: ``own`` appends to its own conversation and ``shared`` to "shared", interleaved."""
    from chatledger.store import open_store

    store = open_store(url, pool_min=1, pool_max=2)
    conv = store.start_conversation(f"w{worker}")
    barrier.wait()
    for i in range(max(own, shared)):
        if i < own:
            store.append(conv, [{"role": "user", "content": f"{worker}-own-{i}"}])
        if i < shared:
            store.append("shared", [{"role": "user", "content": f"{worker}-shared-{i}"}])
    store.close()


def chat_url(server: PrivateServer) -> str:
    """``server``'s URL with its tables in the schema ``chat`` (made by :func:`chat_log`)."""
    return with_search_path(server.url, "chat")


def chat_log(server: PrivateServer) -> Store:
    """A store on ``server`` in a new schema ``chat``, holding three conversations (c0, c1, c2) of four
    messages each: 15 events. Reads wait at most a second for a gap."""
    import psycopg

    from chatledger.store import open_store

    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA chat")
    store = open_store(chat_url(server), read_wait=1)
    convs = [store.start_conversation(f"c{n}") for n in range(3)]
    for i in range(4):
        for conv in convs:
            store.append(conv, [{"role": "user", "content": f"{conv} before {i}"}])
    return store


def wait_until(predicate: Any, seconds: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``seconds`` pass."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# -- the multi-process executor test: agents submit, workers execute, tools count in PostgreSQL --

_RUNS: Any = None  # the counting tools' own connection, one per worker process


def count_run(url: str) -> None:
    """Count one run of the current tool call in ``tool_runs`` (one row per idempotency key)."""
    import psycopg

    from chatledger.store import current_idempotency_key

    global _RUNS
    if _RUNS is None:
        _RUNS = psycopg.connect(url, autocommit=True)
    _RUNS.execute(
        "INSERT INTO tool_runs (call_key, runs) VALUES (%s, 1) "
        "ON CONFLICT (call_key) DO UPDATE SET runs = tool_runs.runs + 1",
        (current_idempotency_key(),),
    )


def counting_tools(url: str) -> Any:
    """The registry every worker runs: ``lookup(item)`` counts its run and echoes the item."""
    from chatledger.store import ToolRegistry

    tools = ToolRegistry()

    @tools.register
    def lookup(item: int) -> str:
        """Count a run and echo the item."""
        count_run(url)
        return f"item {item}"

    return tools


def tool_turn(agent: int, conv: int, turn: int, calls: int) -> dict[str, Any]:
    """The final assistant message of one turn: ``calls`` lookups with ids unique in the run."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"a{agent}-c{conv}-t{turn}-{i}",
                "type": "function",
                "function": {"name": "lookup", "arguments": f'{{"item": {i}}}'},
            }
            for i in range(calls)
        ],
    }


def executor_agent(url: str, agent: int, convs: int, turns: int, calls: int, barrier: Any) -> None:
    """An agent process: starts ``convs`` conversations and submits ``turns`` tool turns to each,
    a new turn once the workers have answered every call of the previous one."""
    from chatledger.store import Executor, PendingToolCallsError, open_store

    store = open_store(url, pool_min=1, pool_max=2)
    executor = Executor(store, [])
    ids = [
        store.start_conversation(f"a{agent}-c{c}", messages=[{"role": "user", "content": "look them up"}])
        for c in range(convs)
    ]
    barrier.wait()
    for turn in range(turns):
        for c, conv in enumerate(ids):
            while True:
                try:
                    executor.submit(conv, tool_turn(agent, c, turn, calls))
                    break
                except PendingToolCallsError:
                    time.sleep(0.05)  # the previous turn's calls are still running
    store.close()


def executor_worker(url: str, barrier: Any, agents_done: Any, finished: Any) -> None:
    """A worker process: runs ``run_worker`` until it has been idle for a second after every agent
    finished submitting, then reports how many calls it completed."""
    from chatledger.store import open_store, run_worker

    store = open_store(url, pool_min=1, pool_max=2)
    tools = counting_tools(url)
    barrier.wait()
    total = 0
    while True:
        last_round = agents_done.is_set()
        total += run_worker(store, tools, poll_seconds=0.05, idle_exit_seconds=1.0, lease_seconds=10.0)
        if last_round:
            break
    store.close()
    finished.put(total)
