"""The outbox: the product's mail that met a temporary failure is kept, encrypted, and delivered later,
by a retry or by the runner; a permanent failure is never queued; -odi keeps sendmail's old exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

import settings_ui
from settings_ui import database
from settings_ui.models import outbox_message_table

from .apps import make_app
from .helpers import call, configure
from .processes import PROJECT, sendmail
from .smtp_servers import Certificates, RecordingHandler, smtp_server

SUBJECT = "Invoice 2026-117 for Northwind"
RECIPIENT = "frank@example.net"
MESSAGE = f"Subject: {SUBJECT}\nTo: {RECIPIENT}\n\nPlease find the invoice attached.\n".encode()
TRY_LATER = "451 4.3.0 Try again later"


@pytest.fixture
def app(tmp_path: Path, certificates: Certificates) -> Flask:
    return make_app(tmp_path, SMTP_TIMEOUT=3, SMTP_CA_FILE=str(certificates.ca_file))


def _rows(app: Flask) -> list[dict[str, Any]]:
    with app.app_context(), database.engine().connect() as connection:
        return [dict(row) for row in connection.execute(select(outbox_message_table)).mappings()]


def _make_due(app: Flask) -> None:
    with app.app_context(), database.engine().begin() as connection:
        connection.execute(
            update(outbox_message_table).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def _runner(app: Flask, *args: str) -> tuple[list[str], dict[str, str]]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SETTINGS_UI_")}
    environment |= {
        "SETTINGS_UI_INSTANCE_PATH": app.instance_path,
        "SETTINGS_UI_SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
        "SETTINGS_UI_SMTP_TIMEOUT": "3",
    }
    return [sys.executable, "-m", "flask", "--app", "app", "email-settings", "outbox", "run", *args], environment


def test_a_temporary_refusal_is_queued_unreadable_and_delivered_by_a_retry(app: Flask, tmp_path: Path) -> None:
    handler = RecordingHandler(recipient_reply=TRY_LATER)
    with smtp_server(handler) as (port, _):
        configure(app, port)
        result = sendmail(app, "-t", message=MESSAGE)
        assert result.returncode == 0, result.stderr  # accepted: queued, as Postfix's sendmail does
        stderr = result.stderr.decode()
        assert stderr.startswith("Queued, not sent yet:") and "451 4.3.0" in stderr and "outbox" in stderr
        listed = call(app.test_client(), "outbox").get_json()["result"]["messages"]
        assert len(listed) == 1 and listed[0]["recipients"] == 1 and listed[0]["attempts"] == 1
        # Exactly the contract's shape: a count of recipients, never who.
        contract = {"id", "queued_at", "attempts", "next_attempt_at", "last_error", "recipients", "size"}
        assert set(listed[0]) == contract
        text = json.dumps(listed)
        assert RECIPIENT not in text and SUBJECT not in text and "(a recipient)" in listed[0]["last_error"]
        # Not in the database files either: the envelope and content are encrypted.
        stored = b"".join(path.read_bytes() for path in Path(app.instance_path).parent.glob("settings.db*"))
        assert RECIPIENT.encode() not in stored and SUBJECT.encode() not in stored
        handler.recipient_reply = None  # the server accepts again
        outcomes = call(app.test_client(), "outbox/retry").get_json()["result"]["attempts"]
    assert [outcome["outcome"] for outcome in outcomes] == ["sent"]
    assert [received.rcpt_tos for received in handler.received] == [[RECIPIENT]]
    assert handler.received[0].message["Subject"] == SUBJECT
    assert _rows(app) == []


def test_the_runner_delivers_what_is_due_once_the_server_accepts(app: Flask) -> None:
    handler = RecordingHandler(recipient_reply=TRY_LATER)
    with smtp_server(handler) as (port, _):
        configure(app, port)
        assert sendmail(app, RECIPIENT, message=MESSAGE).returncode == 0
        command, environment = _runner(app, "--once")
        not_due = subprocess.run(command, env=environment, cwd=PROJECT, capture_output=True, text=True, timeout=60)
        assert not_due.returncode == 0 and handler.received == []  # not due for 5 minutes
        handler.recipient_reply = None
        _make_due(app)
        due = subprocess.run(command, env=environment, cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert due.returncode == 0, due.stderr
    assert "sent" in due.stdout and len(handler.received) == 1
    assert _rows(app) == []


def test_a_failed_retry_waits_longer_each_time(app: Flask) -> None:
    with smtp_server(RecordingHandler(recipient_reply=TRY_LATER)) as (port, _):
        configure(app, port)
        settings_ui.send_message(_message(), app=app)
        waits = []
        for _ in range(3):
            before = datetime.now(UTC)
            (attempt,) = call(app.test_client(), "outbox/retry").get_json()["result"]["attempts"]
            assert attempt["outcome"] == "queued"
            waits.append((datetime.fromisoformat(attempt["next_attempt_at"]) - before).total_seconds())
    assert [round(wait / 60) for wait in waits] == [10, 20, 40]  # after the 2nd, 3rd and 4th attempts
    assert _rows(app)[0]["attempts"] == 4


def test_a_permanent_refusal_is_never_queued(app: Flask) -> None:
    with smtp_server(RecordingHandler(recipient_reply="550 5.1.1 User unknown")) as (port, _):
        configure(app, port)
        result = sendmail(app, RECIPIENT, message=MESSAGE)
        delivery = settings_ui.send_message(_message(), app=app)
    assert result.returncode == 69 and not delivery.sent and delivery.queued is None
    assert _rows(app) == []


def test_odi_delivers_now_or_exits_75_and_queues_nothing(app: Flask) -> None:
    with smtp_server(RecordingHandler(recipient_reply=TRY_LATER)) as (port, _):
        configure(app, port)
        result = sendmail(app, "-odi", RECIPIENT, message=MESSAGE)
    assert result.returncode == 75 and b"Queued" not in result.stderr
    assert _rows(app) == []


def test_the_python_api_queues_too_and_says_so(app: Flask) -> None:
    with smtp_server(RecordingHandler(recipient_reply=TRY_LATER)) as (port, _):
        configure(app, port)
        delivery = settings_ui.send_message(_message(), app=app)
    assert not delivery.sent and delivery.temporary and delivery.queued == _rows(app)[0]["id"]
    assert "put in the outbox" in delivery.message


def test_a_message_past_the_outbox_max_age_bounces_and_is_deleted(tmp_path: Path) -> None:
    app = make_app(tmp_path, SMTP_TIMEOUT=3, OUTBOX_MAX_AGE=0)
    with smtp_server(RecordingHandler(recipient_reply=TRY_LATER)) as (port, _):
        configure(app, port)
        settings_ui.send_message(_message(), app=app)
        (attempt,) = call(app.test_client(), "outbox/retry").get_json()["result"]["attempts"]
    assert attempt["outcome"] == "bounced" and "OUTBOX_MAX_AGE" in attempt["message"]
    assert _rows(app) == []
    history = app.test_client().get("/").get_data(as_text=True)
    assert "outbox message bounced" in history


def test_a_permanent_failure_on_retry_bounces(app: Flask) -> None:
    handler = RecordingHandler(recipient_reply=TRY_LATER)
    with smtp_server(handler) as (port, _):
        configure(app, port)
        settings_ui.send_message(_message(), app=app)
        handler.recipient_reply = "550 5.1.1 User unknown"
        (attempt,) = call(app.test_client(), "outbox/retry").get_json()["result"]["attempts"]
    assert attempt["outcome"] == "bounced" and "permanent" in attempt["message"] and _rows(app) == []


def test_drop_removes_one_message_unsent(app: Flask) -> None:
    with smtp_server(RecordingHandler(recipient_reply=TRY_LATER)) as (port, _):
        configure(app, port)
        settings_ui.send_message(_message(), app=app)
    (row,) = _rows(app)
    client = app.test_client()
    assert call(client, "outbox/drop", {"id": row["id"]}).get_json()["result"] == {"dropped": True}
    assert _rows(app) == []
    missing = call(client, "outbox/drop", {"id": row["id"]})
    assert missing.status_code == 404 and "no message" in missing.get_json()["error"]["message"].lower()


def test_the_runner_stops_on_sigterm_and_on_sqlite_a_second_one_says_it_waits(app: Flask) -> None:
    configure(app, 25)
    command, environment = _runner(app)
    first = subprocess.Popen(command, env=environment, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(3)  # started, holding the lock, sleeping until something is due
        second = subprocess.Popen(
            command, env=environment, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 20
            said = ""
            while "waits for it" not in said and time.monotonic() < deadline:
                time.sleep(0.5)
                said = _available(second)
            assert "Another outbox runner is working on this SQLite database" in said
        finally:
            second.send_signal(signal.SIGKILL)
            second.wait(timeout=10)
        started = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=10) == 0 and time.monotonic() - started < 5
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def _available(process: subprocess.Popen[str]) -> str:
    import fcntl

    assert process.stderr is not None
    flags = fcntl.fcntl(process.stderr, fcntl.F_GETFL)
    fcntl.fcntl(process.stderr, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    try:
        return process.stderr.read() or ""
    except (BlockingIOError, TypeError):
        return ""


def _message() -> EmailMessage:
    message = EmailMessage()
    message["To"] = RECIPIENT
    message["Subject"] = SUBJECT
    message.set_content("Please find the invoice attached.")
    return message


class _SlowHandler(RecordingHandler):
    """Takes a tenth of a second over each message, so that two runners are at work at the same time."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        await asyncio.sleep(0.1)
        return await super().handle_DATA(server, session, envelope)


def test_two_runners_on_postgresql_deliver_fifty_messages_each_exactly_once(
    tmp_path: Path, certificates: Certificates
) -> None:
    from .apps import database_url

    url = database_url("postgresql", tmp_path)
    app = make_app(tmp_path, SMTP_TIMEOUT=5, SQLALCHEMY_DATABASE_URI=url, SMTP_CA_FILE=str(certificates.ca_file))
    handler = _SlowHandler(recipient_reply=TRY_LATER)
    with smtp_server(handler) as (port, _):
        configure(app, port)
        for number in range(50):
            message = _message()
            message.replace_header("Subject", f"Message {number}")
            assert settings_ui.send_message(message, app=app).queued is not None
        handler.recipient_reply = None
        _make_due(app)
        command, environment = _runner(app, "--once")
        runners = [
            subprocess.Popen(command, env=environment, cwd=PROJECT, stdout=subprocess.PIPE, text=True) for _ in range(2)
        ]
        outputs = [runner.communicate(timeout=120)[0] for runner in runners]
    assert [runner.returncode for runner in runners] == [0, 0]
    subjects = sorted(received.message["Subject"] for received in handler.received)
    assert subjects == sorted(f"Message {number}" for number in range(50))  # each one, exactly once
    sent_by = [{line.split(":")[0] for line in output.splitlines() if ": sent." in line} for output in outputs]
    assert not sent_by[0] & sent_by[1] and len(sent_by[0] | sent_by[1]) == 50
    assert all(sent_by), "both runners took a share of the work"
    assert _rows(app) == []


def test_the_page_lists_the_outbox_with_retry_and_a_confirmed_drop_and_metrics_count_it(app: Flask) -> None:
    from bs4 import BeautifulSoup

    handler = RecordingHandler(recipient_reply=TRY_LATER)
    client = app.test_client()
    with smtp_server(handler) as (port, _):
        configure(app, port)
        settings_ui.send_message(_message(), app=app)
        settings_ui.send_message(_message(), app=app)
        html = client.get("/").get_data(as_text=True)
        assert RECIPIENT not in html and SUBJECT not in html
        soup = BeautifulSoup(html, "html.parser")
        assert "2 messages waiting" in soup.find(id="outbox-summary").get_text()
        metrics = client.get("/metrics").get_data(as_text=True)
        assert "settings_ui_outbox_messages 2.0" in metrics and "settings_ui_outbox_oldest_seconds" in metrics
        first, second = (row["id"] for row in _rows(app))
        handler.recipient_reply = None
        retried = client.post("/outbox/retry", data={"message_id": str(first)}, follow_redirects=True)
        assert f"Message {first}: sent." in retried.get_data(as_text=True)
    confirm = client.get(f"/outbox/drop/{second}")
    assert confirm.status_code == 200 and "will never be sent" in confirm.get_data(as_text=True)
    assert len(_rows(app)) == 1  # asking is not dropping
    dropped = client.post(f"/outbox/drop/{second}", follow_redirects=True)
    assert f"Message {second} was dropped unsent." in dropped.get_data(as_text=True)
    assert _rows(app) == [] and len(handler.received) == 1
    assert "Outbox: empty." in client.get("/").get_data(as_text=True)


class _HangingHandler(RecordingHandler):
    """Holds every message for a long time before answering: a runner killed meanwhile is mid-delivery."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        await asyncio.sleep(30)
        return "451 4.3.0 Too late"


def test_a_runner_killed_mid_delivery_loses_nothing(app: Flask) -> None:
    with smtp_server(RecordingHandler(recipient_reply=TRY_LATER)) as (port, _):
        configure(app, port)
        settings_ui.send_message(_message(), app=app)
    _make_due(app)
    with smtp_server(_HangingHandler()) as (port, _):
        configure(app, port)
        command, environment = _runner(app, "--once")
        runner = subprocess.Popen(command, env=environment, cwd=PROJECT, stdout=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while _rows(app)[0]["claimed_until"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _rows(app)[0]["claimed_until"] is not None  # in hand
        runner.kill()  # SIGKILL: no chance to record anything
        runner.wait(timeout=10)
    (row,) = _rows(app)  # still there, claimed by a process that is gone
    with app.app_context(), database.engine().begin() as connection:  # the claim's lease runs out
        connection.execute(update(outbox_message_table).values(claimed_until=datetime.now(UTC) - timedelta(seconds=1)))
    handler = RecordingHandler()
    with smtp_server(handler) as (port, _):
        configure(app, port)
        (attempt,) = call(app.test_client(), "outbox/retry").get_json()["result"]["attempts"]
    assert attempt == attempt | {"id": row["id"], "outcome": "sent"} and len(handler.received) == 1
