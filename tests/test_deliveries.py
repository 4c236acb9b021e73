"""The record of deliveries, the page's Mail delivery panel, and its pruning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, insert, select

import settings_ui
from settings_ui import database, deliveries
from settings_ui.models import delivery_table

from .helpers import call, configure, page
from .smtp_servers import RecordingHandler, free_port, smtp_server

RECIPIENT = "customer@example.net"


def send(app: Flask) -> settings_ui.Delivery:
    message = EmailMessage()
    message["To"] = RECIPIENT
    message["Subject"] = "Your order"
    message.set_content("Shipped.")
    return settings_ui.send_message(message, app=app)


def test_the_panel_shows_nothing_sent_yet(client: FlaskClient) -> None:
    assert page(client).find(id="delivery-none") is not None
    assert page(client).find(id="delivery-alert") is None


def test_a_failure_after_a_success_leads_the_page_until_mail_flows_again(app: Flask, client: FlaskClient) -> None:
    with smtp_server() as (port, _):
        configure(client, port)
        assert send(app).sent
    soup = page(client)
    assert "just now" in soup.find(id="delivery-last-success").get_text()
    assert soup.find(id="delivery-alert") is None
    with smtp_server(RecordingHandler(recipient_reply="550 5.7.1 Relaying denied")) as (port, _):
        configure(client, port)
        assert not send(app).sent
    soup = page(client)
    alert = soup.find(id="delivery-alert")
    assert alert is not None and alert["role"] == "alert"
    text = alert.get_text(" ", strip=True)
    assert "Mail is failing since" in text and "550 5.7.1 Relaying denied" in text
    assert RECIPIENT not in str(soup.find(id="delivery"))  # the address is not kept, nor shown
    assert "1 sent, 1 failed" in soup.find(id="delivery-counts").get_text()
    # The alert comes before the form: the first thing read on the page.
    assert str(soup).index('id="delivery-alert"') < str(soup).index('id="settings-form"')
    with smtp_server() as (port, _):
        configure(client, port)
        assert send(app).sent
    assert page(client).find(id="delivery-alert") is None


def test_a_failed_test_email_does_not_say_mail_is_failing(client: FlaskClient) -> None:
    configure(client, free_port())
    call(client, "test", {"to": RECIPIENT})
    soup = page(client)
    assert soup.find(id="delivery-alert") is None  # a test is not the product's mail
    assert "connect" in soup.find(id="delivery-last-failure").get_text()


def _rows(app: Flask) -> int:
    with app.app_context(), database.engine().connect() as connection:
        return connection.execute(select(func.count()).select_from(delivery_table)).scalar_one()


def test_deliveries_older_than_30_days_are_pruned_on_write(app: Flask) -> None:
    old = datetime.now(UTC) - timedelta(days=deliveries.KEEP_DAYS, minutes=1)
    with app.app_context(), database.engine().begin() as connection:
        row = {"surface": "python", "recipients": 1, "sent": True, "temporary": False, "failed_step": ""}
        row |= {"cause": "", "fix": "", "server": "old.example.com:25", "elapsed_ms": 5}
        connection.execute(insert(delivery_table).values(at=old, **row))
    assert _rows(app) == 1
    with app.app_context():
        assert not send(app).sent  # not configured: nothing recorded
    configure(app.test_client(), free_port())
    send(app)
    assert _rows(app) == 1  # the new one; the old one is gone


def test_only_the_newest_rows_are_kept(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deliveries, "KEEP_ROWS", 3)
    configure(app.test_client(), free_port())
    for _ in range(5):
        send(app)
    assert _rows(app) == 3
    status = call(app.test_client(), "status").get_json()["result"]
    assert status["failed_24h"] == 3  # the figures come from what is kept


def test_an_unconfigured_send_is_not_a_delivery(app: Flask, tmp_path: Path) -> None:
    delivery = send(app)
    assert delivery.sent is False and "smtp_host is required" in delivery.message
    assert _rows(app) == 0


def test_the_last_24_hours_count_the_products_mail_apart_from_test_emails(app: Flask, client: FlaskClient) -> None:
    with smtp_server() as (port, _):
        configure(client, port)
        assert call(client, "test", {"to": RECIPIENT}).status_code == 200
        assert call(client, "test", {"to": RECIPIENT}).status_code == 200
        assert send(app).sent
    status = call(client, "status").get_json()["result"]
    assert (status["sent_24h"], status["failed_24h"], status["tests_24h"]) == (1, 0, 2)
    assert page(client).find(id="delivery-counts").get_text(" ", strip=True) == "1 sent, 0 failed (and 2 test emails)"
