"""Concurrent writers, several app processes on one database, and a SIGKILL mid-stream.

The thread and process tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import http.client
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from settings_ui import crypto

from .apps import DATABASES, LiveServer, database_url, stored_row
from .helpers import post_json, shown
from .processes import AppProcess, app_processes

THREADS = 24
EDITS_PER_THREAD = 8
COMPLETE = {"smtp_host": "smtp.example.com", "smtp_port": 25, "from_email": "a@example.com"}


@pytest.fixture
def app(any_database_app: Flask) -> Flask:
    return any_database_app


@pytest.fixture
def live_server(app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(app)
    yield server
    server.stop()


def _configuration(thread: int) -> dict[str, Any]:
    return {
        "smtp_host": f"host{thread}.example.com",
        "smtp_port": 1000 + thread,
        "encryption": ("Plain", "StartTLS", "TLS")[thread % 3],
        "from_email": f"sender{thread}@example.com",
        "username": f"user{thread}",
        "password": f"password-of-{thread}",
        "allow_selfsigned_certs": thread % 2 == 0,
    }


def _public(configuration: dict[str, Any]) -> dict[str, Any]:
    return shown(configuration)


def _run_threads(count: int, target: Any) -> None:
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)


def _assert_one_whole_state(row: dict[str, Any], acknowledged: int) -> None:
    winner = int(row["smtp_host"].removeprefix("host").split(".")[0])
    expected = _configuration(winner)
    assert {k: row[k] for k in _public(expected)} == _public(expected)
    assert crypto.decrypt(row["password_encrypted"]) == expected["password"]
    # Every acknowledged write is one version: none was lost or applied twice.
    assert row["version"] == acknowledged


def test_concurrent_edits_from_many_threads_end_in_one_whole_state(app: Flask, live_server: LiveServer) -> None:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def writer(thread: int) -> None:
        start.wait()
        for _ in range(EDITS_PER_THREAD):
            status, body = post_json(f"{live_server.url}/email-settings/edit", {"params": _configuration(thread)})
            with lock:
                statuses[status] += 1
            if status == 200:
                assert body["result"] == _public(_configuration(thread))
            else:
                assert status == 409 and body["successful"] is False, body

    _run_threads(THREADS, writer)
    assert statuses[200] + statuses[409] == THREADS * EDITS_PER_THREAD, statuses
    assert statuses[200] >= THREADS * EDITS_PER_THREAD * 0.9, statuses
    with app.app_context():
        _assert_one_whole_state(stored_row(app), statuses[200])


def test_concurrent_partial_edits_lose_none_of_each_other(app: Flask, live_server: LiveServer) -> None:
    assert post_json(f"{live_server.url}/email-settings/edit", {"params": COMPLETE})[0] == 200
    start = threading.Barrier(2)
    results: list[int] = []
    changes = [{"smtp_port": 2525}, {"from_email": "b@example.com"}]

    def set_field(n: int) -> None:
        start.wait()
        for _ in range(20):
            results.append(post_json(f"{live_server.url}/email-settings/edit", {"params": changes[n]})[0])

    _run_threads(2, set_field)
    assert set(results) == {200}
    row = stored_row(app)
    assert (row["smtp_port"], row["from_email"]) == (2525, "b@example.com")


# --- Two app processes, one database ---------------------------------------------------------


@pytest.fixture(params=DATABASES)
def shared_database(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Environment for app processes that share one database (and one instance folder, for the keys)."""
    return {"SETTINGS_UI_SQLALCHEMY_DATABASE_URI": database_url(request.param, tmp_path)}


def test_two_processes_never_tear_a_row(tmp_path: Path, shared_database: dict[str, str]) -> None:
    with app_processes(2, tmp_path / "instance", shared_database) as servers:
        statuses: Counter[int] = Counter()
        lock = threading.Lock()

        def writer(thread: int) -> None:
            server = servers[thread % 2]
            for _ in range(6):
                status, body, _ = server.call("edit", _configuration(thread))
                with lock:
                    statuses[status] += 1
                assert status in (200, 409), body
                if status == 200:
                    assert body["result"] == _public(_configuration(thread))

        _run_threads(12, writer)
        results = [server.call("show", {})[1]["result"] for server in servers]
        assert results[0] == results[1]
        winner = int(results[0]["smtp_host"].removeprefix("host").split(".")[0])
        assert results[0] == _public(_configuration(winner))
        assert int(servers[0].call("show", {})[2]["ETag"].strip('"')) == statuses[200]


def test_if_match_holds_across_processes(tmp_path: Path, shared_database: dict[str, str]) -> None:
    with app_processes(2, tmp_path / "instance", shared_database) as (first, second):
        assert first.call("edit", COMPLETE)[0] == 200
        etag = first.call("show", {})[2]["ETag"]
        assert second.call("edit", {"smtp_port": 2525}, {"If-Match": etag})[0] == 200
        status, body, headers = first.call("edit", {"smtp_port": 2626}, {"If-Match": etag})
        assert status == 412, body
        assert headers["ETag"] != etag
        assert second.call("show", {})[1]["result"]["smtp_port"] == 2525
        status, _, _ = first.call("clear", {}, {"If-Match": etag})
        assert status == 412
        assert second.call("show", {})[1]["result"]["smtp_port"] == 2525


# --- Crash safety -------------------------------------------------------------------------------


def test_a_sigkill_mid_stream_loses_no_acknowledged_write(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    server = AppProcess(instance)
    try:
        assert server.call("edit", COMPLETE)[0] == 200
        acknowledged: list[int] = []
        stop = threading.Event()

        def stream() -> None:
            port = 1
            while not stop.is_set():
                port += 1
                try:
                    status, _, _ = server.call("edit", {"smtp_port": port})
                except (OSError, http.client.HTTPException):
                    return  # the server is gone (perhaps halfway through an answer: not acknowledged)
                if status == 200:
                    acknowledged.append(port)

        writers = [threading.Thread(target=stream) for _ in range(1)]
        for writer in writers:
            writer.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()  # SIGKILL: no chance to flush or close anything
        stop.set()
        for writer in writers:
            writer.join(timeout=30)
    finally:
        server.stop()
    assert len(acknowledged) >= 50

    database = instance / "settings.db"
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    restarted = AppProcess(instance)
    try:
        status, body, headers = restarted.call("show", {})
        assert status == 200
        stored_port = body["result"]["smtp_port"]
        last = acknowledged[-1]
        # The last acknowledged write survived; at most the one in flight went further.
        assert stored_port in (last, last + 1)
        assert int(headers["ETag"].strip('"')) >= len(acknowledged) + 1
    finally:
        restarted.stop()
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
