"""Alerts to ALERT_WEBHOOK_URL: failing, recovered and bounced, against a local webhook that records what it
is sent. Never a credential, an address or a subject; never holding up a send."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import settings_ui
from settings_ui import alerts, database

from .apps import make_app
from .helpers import EXAMPLE_PASSWORD, call, configure
from .oauth2_servers import serving
from .smtp_servers import Authenticator, RecordingHandler, smtp_server

RECIPIENT = "customer@example.net"
SUBJECT = "Your order 4411 has shipped"
TRY_LATER = "451 4.3.0 Try again later"


@dataclass
class Webhook:
    """Records each POST; answers ``status``; holds each answer until ``release`` is set."""

    status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def wait_for(self, count: int, seconds: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.release.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hook.release.wait(timeout=10)
            hook.received.append(json.loads(body) | {"_raw": body.decode()})
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler, None) as base:
        hook.url = f"{base}/hooks/mail"
        yield hook
    hook.release.set()


@pytest.fixture
def app(tmp_path: Path, webhook: Webhook) -> Flask:
    return make_app(tmp_path, SMTP_TIMEOUT=3, ALERT_WEBHOOK_URL=webhook.url)


def _message() -> EmailMessage:
    message = EmailMessage()
    message["To"] = RECIPIENT
    message["Subject"] = SUBJECT
    message.set_content("Hello.")
    return message


def test_the_webhook_hears_one_failing_and_one_recovered(app: Flask, webhook: Webhook) -> None:
    handler = RecordingHandler(recipient_reply=TRY_LATER)
    with smtp_server(handler, authenticator=Authenticator("mailer", EXAMPLE_PASSWORD)) as (port, _):
        configure(app, port, username="mailer", password=EXAMPLE_PASSWORD)
        settings_ui.send_message(_message(), app=app)
        settings_ui.send_message(_message(), app=app)  # still failing, within the hour: no second alert
        (failing,) = webhook.wait_for(1)
        handler.recipient_reply = None
        assert settings_ui.send_message(_message(), app=app).sent
        alerts = webhook.wait_for(2)
    time.sleep(0.5)
    assert [alert["event"] for alert in alerts] == ["failing", "recovered"]
    assert failing["failed_step"] == "rcpt_to" and "451" in failing["message"] and failing["queued"] == 1
    assert failing["since"] and failing["text"].startswith("settings-ui: Mail is failing")
    assert alerts[1]["since"] == failing["since"] and alerts[1]["failed_step"] is None
    for alert in alerts:
        assert set(alert) - {"_raw"} == {"event", "since", "failed_step", "message", "queued", "text"}
        for secret in (RECIPIENT, SUBJECT, EXAMPLE_PASSWORD, "mailer"):
            assert secret not in alert["_raw"]
    page = app.test_client().get("/").get_data(as_text=True)
    assert "recovered" in page and "delivered" in page


def test_test_emails_never_alert(app: Flask, webhook: Webhook) -> None:
    with smtp_server(RecordingHandler(recipient_reply=TRY_LATER)) as (port, _):
        configure(app, port)
        call(app.test_client(), "test", {"to": RECIPIENT})
    time.sleep(0.5)
    assert webhook.received == []


def test_a_bounce_is_alerted(tmp_path: Path, webhook: Webhook) -> None:
    app = make_app(tmp_path, SMTP_TIMEOUT=3, ALERT_WEBHOOK_URL=webhook.url, OUTBOX_MAX_AGE=0)
    with smtp_server(RecordingHandler(recipient_reply=TRY_LATER)) as (port, _):
        configure(app, port)
        settings_ui.send_message(_message(), app=app)
        call(app.test_client(), "outbox/retry")
    alerts = webhook.wait_for(2)
    assert [alert["event"] for alert in alerts] == ["failing", "bounced"]
    assert "OUTBOX_MAX_AGE" in alerts[1]["text"] and alerts[1]["queued"] == 0
    assert RECIPIENT not in alerts[1]["_raw"]


def test_a_slow_webhook_never_holds_up_a_send(app: Flask, webhook: Webhook) -> None:
    webhook.release.clear()  # the webhook answers only when told
    with smtp_server(RecordingHandler(recipient_reply=TRY_LATER)) as (port, _):
        configure(app, port)
        delivery = settings_ui.send_message(_message(), app=app)  # returns while the webhook still holds
        assert delivery.queued is not None and webhook.received == []
    webhook.release.set()
    assert [alert["event"] for alert in webhook.wait_for(1)] == ["failing"]


def test_a_webhook_that_fails_is_tried_again_and_the_page_says_it_was_not_delivered(
    app: Flask, webhook: Webhook
) -> None:

    webhook.status = 500
    with smtp_server(RecordingHandler(recipient_reply=TRY_LATER)) as (port, _):
        configure(app, port)
        settings_ui.send_message(_message(), app=app)
    webhook.wait_for(1)
    time.sleep(0.3)
    page = app.test_client().get("/").get_data(as_text=True)
    assert "not delivered" in page and "HTTP 500" in page
    with app.app_context(), database.engine().connect() as connection:
        last = alerts.last_alert(connection)
        assert last is not None and not last.delivered


def test_an_alert_names_no_address_not_even_the_senders(app: Flask, webhook: Webhook) -> None:
    from .helpers import SENDER

    with smtp_server(RecordingHandler(refuse_sender=True)) as (port, _):
        configure(app, port)
        assert not settings_ui.send_message(_message(), app=app).sent
    (failing,) = webhook.wait_for(1)
    assert failing["failed_step"] == "mail_from" and "(an address)" in failing["message"]
    assert SENDER not in failing["_raw"] and RECIPIENT not in failing["_raw"]
