"""settings_ui.send_message from a product's own Flask app that embeds settings-ui as a library."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest
from flask import Flask, jsonify

import settings_ui

from .apps import make_app
from .helpers import EXAMPLE_PASSWORD, SENDER, configure
from .smtp_servers import Authenticator, Certificates, RecordingHandler, free_port, smtp_server


@pytest.fixture
def settings_app(tmp_path: Path, certificates: Certificates) -> Flask:
    return make_app(tmp_path, SMTP_TIMEOUT=3, SMTP_CA_FILE=str(certificates.ca_file))


def product(settings_app: Flask) -> Flask:
    """A product's app: it sends a welcome mail through settings-ui's stored settings."""
    shop = Flask("shop")

    @shop.post("/signup/<address>")
    def signup(address: str):  # type: ignore[no-untyped-def]
        message = EmailMessage()
        message["To"] = address
        message["Subject"] = "Welcome"
        message.set_content("Thanks for signing up.")
        delivery = settings_ui.send_message(message, app=settings_app)
        return jsonify(sent=delivery.sent, reason=delivery.message, temporary=delivery.temporary)

    return shop


def test_a_product_sends_through_the_stored_settings(settings_app: Flask, certificates: Certificates) -> None:
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    with smtp_server(starttls=certificates.server, authenticator=auth, auth_require_tls=True) as (port, handler):
        configure(settings_app, port, encryption="StartTLS", username="mailer", password=EXAMPLE_PASSWORD)
        answer = product(settings_app).test_client().post("/signup/new@example.net").get_json()
    assert answer["sent"] is True, answer
    [received] = handler.received
    assert received.rcpt_tos == ["new@example.net"] and received.tls and received.authenticated_as == "mailer"
    assert received.message["From"] == SENDER and received.message["Message-ID"]
    assert EXAMPLE_PASSWORD not in str(answer)


def test_a_refusal_comes_back_diagnosed_and_says_whether_to_retry(settings_app: Flask) -> None:
    with smtp_server(RecordingHandler(recipient_reply="452 4.2.2 Mailbox full")) as (port, _):
        configure(settings_app, port)
        answer = product(settings_app).test_client().post("/signup/full@example.net").get_json()
    assert answer["sent"] is False and answer["temporary"] is True
    assert "the rcpt_to step failed" in answer["reason"] and "452" in answer["reason"]
    configure(settings_app, free_port())
    down = product(settings_app).test_client().post("/signup/x@example.net").get_json()
    assert down["sent"] is False and "refused the connection" in down["reason"]


def test_without_settings_nothing_is_tried_and_the_reason_says_what_is_missing(settings_app: Flask) -> None:
    answer = product(settings_app).test_client().post("/signup/y@example.net").get_json()
    assert answer["sent"] is False and "smtp_host is required" in answer["reason"]


def test_a_message_without_recipients_is_not_sent(settings_app: Flask) -> None:
    with smtp_server() as (port, handler):
        configure(settings_app, port)
        message = EmailMessage()
        message["Subject"] = "To nobody"
        delivery = settings_ui.send_message(message, app=settings_app)
    assert delivery.sent is False and "no recipient" in delivery.message
    assert handler.connections == 0


def test_the_callers_message_is_left_as_it_was(settings_app: Flask) -> None:
    message = EmailMessage()
    message["To"] = "a@example.net"
    message["Bcc"] = "b@example.net"
    message.set_content("Hello.")
    with smtp_server() as (port, handler):
        configure(settings_app, port)
        assert settings_ui.send_message(message, app=settings_app).sent
    assert message["Bcc"] == "b@example.net" and message["From"] is None and message["Message-ID"] is None
    assert handler.received[0].message["Bcc"] is None
