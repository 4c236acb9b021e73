"""GET /metrics: Prometheus's text format, behind the API's access rules."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

import settings_ui
from settings_ui import deliveries

from .apps import make_app
from .helpers import ADMIN, ADMIN_HASH, ADMIN_PASSWORD, basic, call, configure
from .smtp_servers import free_port, smtp_server


def samples(client: FlaskClient, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def send(app: Flask) -> bool:
    message = EmailMessage()
    message["To"] = "customer@example.net"
    message.set_content("Hello.")
    return settings_ui.send_message(message, app=app).sent


def test_deliveries_by_surface_outcome_and_failed_step_with_their_times(app: Flask, client: FlaskClient) -> None:
    with smtp_server() as (port, _):
        configure(client, port)
        assert call(client, "test", {"to": "me@example.net"}).status_code == 200
        assert send(app)
    configure(client, free_port())
    assert not send(app)
    found = samples(client)
    sent = (("failed_step", ""), ("outcome", "sent"))
    assert found[("settings_ui_deliveries_total", (*sent, ("surface", "test")))] == 1
    assert found[("settings_ui_deliveries_total", (*sent, ("surface", "python")))] == 1
    failed = (("failed_step", "connect"), ("outcome", "failed"), ("surface", "python"))
    assert found[("settings_ui_deliveries_total", failed)] == 1
    python_failed = (("outcome", "failed"), ("surface", "python"))
    assert found[("settings_ui_delivery_seconds_count", python_failed)] == 1
    assert found[("settings_ui_delivery_seconds_bucket", (("le", "+Inf"), *python_failed))] == 1
    assert found[("settings_ui_delivery_seconds_bucket", (("le", "30.0"), *python_failed))] == 1
    requests = (("endpoint", "api.edit"), ("method", "POST"), ("status", "200"))
    assert found[("settings_ui_requests_total", requests)] == 2
    assert found[("settings_ui_request_seconds_count", (("endpoint", "api.edit"),))] == 2


def test_pruning_never_makes_a_counter_go_down(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deliveries, "KEEP_ROWS", 1)
    configure(client, free_port())
    for _ in range(3):
        send(app)
    failed = (("failed_step", "connect"), ("outcome", "failed"), ("surface", "python"))
    assert samples(client)[("settings_ui_deliveries_total", failed)] == 3


def test_metrics_take_the_api_credentials(tmp_path: Path) -> None:
    client = make_app(tmp_path, ADMIN_USERNAME=ADMIN, ADMIN_PASSWORD_HASH=ADMIN_HASH).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=basic(ADMIN, "wrong")).status_code == 401
    assert samples(client, **basic(ADMIN, ADMIN_PASSWORD))


def test_without_an_admin_metrics_answer_this_machine_only(client: FlaskClient) -> None:
    assert client.get("/metrics", environ_overrides={"REMOTE_ADDR": "192.0.2.9"}).status_code == 403
    assert client.get("/metrics").status_code == 200


def test_made_up_methods_and_paths_add_no_series(client: FlaskClient) -> None:
    def series() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {key for key in samples(client) if key[0].startswith("settings_ui_request")}

    for number in range(3):  # each kind of refusal, and a scrape, once: so their series exist
        client.open(f"/email-settings/nope{number}", method="PUT")
        client.open("/email-settings/edit", method="ZQ000000X")
    series()
    known = series()
    for number in range(40):
        client.open(f"/email-settings/nope{number}", method=f"ZQ{number:06}X")
        client.open(f"/email-settings/x{number}/y", method="PUT")
        client.open(f"/nope{number}", method=f"ZQ{number:06}X")
    grown = series() - known
    assert grown == set()
    answer = client.open("/email-settings/edit", method="ZQ000001X")
    assert answer.status_code == 405 and answer.get_json()["successful"] is False  # the envelope, not a page
