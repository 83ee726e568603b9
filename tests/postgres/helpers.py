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
from pathlib import Path
from typing import Any

import pytest

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
    """A throw-away PostgreSQL cluster on its own port in a temp dir, for restarts mid-run."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.skip(f"no PostgreSQL server binaries in {PG_BIN}: the restart test needs initdb and pg_ctl")
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
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._prefix, str(PG_BIN / tool), *args], check=True, capture_output=True, timeout=60)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

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


def wait_until(predicate: Any, seconds: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``seconds`` pass."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())
