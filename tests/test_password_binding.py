"""The stored SMTP password is only ever sent to the server it was saved for.

Whoever can edit the settings (a stolen session, a rebound web page, another admin) must not be
able to point them at a server of their own and collect the stored password there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from .apps import stored_row
from .helpers import CONFIGURED, EXAMPLE_PASSWORD, assert_error, call, form_values, page
from .processes import AppProcess
from .smtp_servers import Authenticator, smtp_server

POINTING_ELSEWHERE = [
    {"smtp_host": "evil.example.net"},
    {"smtp_port": 2525},
    {"encryption": "Plain"},
    {"encryption": "TLS", "smtp_port": 465},
    {"username": "attacker"},
    {"allow_selfsigned_certs": True},
]


@pytest.mark.parametrize("change", POINTING_ELSEWHERE, ids=lambda change: ",".join(change))
def test_an_edit_pointing_elsewhere_without_the_password_is_refused(
    app: Flask, client: FlaskClient, configured: dict[str, Any], change: dict[str, Any]
) -> None:
    before = stored_row(app)
    error = assert_error(call(client, "edit", change), 400, "password", "only ever sent to the server it was saved for")
    assert set(error["fields"]) == {"password"}
    assert error["fields"]["password"].endswith('(give it, or "" to store none)')
    assert stored_row(app) == before


@pytest.mark.parametrize("change", POINTING_ELSEWHERE, ids=lambda change: ",".join(change))
def test_an_edit_pointing_elsewhere_with_a_password_is_stored(
    app: Flask, client: FlaskClient, configured: dict[str, Any], change: dict[str, Any]
) -> None:
    response = call(client, "edit", change | {"password": "the-new-servers-password"})
    assert response.status_code == 200, response.get_json()
    assert stored_row(app)["password_encrypted"] != ""


def test_an_edit_pointing_elsewhere_may_remove_the_password_instead(
    app: Flask, client: FlaskClient, configured: dict[str, Any]
) -> None:
    response = call(client, "edit", {"smtp_host": "relay.example.net", "username": "", "password": ""})
    assert response.status_code == 200, response.get_json()
    assert stored_row(app)["password_encrypted"] is None


@pytest.mark.parametrize(
    ("first", "same"),
    [
        ("smtp.example.com", "SMTP.Example.COM."),
        ("bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "BÜCHER.example"),
        ("2001:db8::1", "[2001:0DB8:0:0:0:0:0:1]"),
        ("192.0.2.25", "192.0.2.25"),
    ],
)
def test_the_same_server_spelled_differently_keeps_the_password(
    app: Flask, client: FlaskClient, first: str, same: str
) -> None:
    assert call(client, "edit", CONFIGURED | {"smtp_host": first}).status_code == 200
    before = stored_row(app)["password_encrypted"]
    response = call(client, "edit", {"smtp_host": same, "encryption": "StartTLS", "smtp_port": 587})
    assert response.status_code == 200, response.get_json()
    assert stored_row(app)["password_encrypted"] == before


def test_turning_certificate_checks_off_again_keeps_working_once_stored(
    app: Flask, client: FlaskClient, configured: dict[str, Any]
) -> None:
    call(client, "edit", {"allow_selfsigned_certs": True, "password": EXAMPLE_PASSWORD})
    # Already on: a re-save with it on is no change; turning it off is only safer.
    assert call(client, "edit", {"allow_selfsigned_certs": True}).status_code == 200
    assert call(client, "edit", {"allow_selfsigned_certs": False}).status_code == 200


def test_a_harvesting_server_never_sees_the_stored_password(tmp_path: Path) -> None:
    """The attack end to end, on the app as users start it: re-point the settings, then test."""
    owner = Authenticator("mailer", EXAMPLE_PASSWORD)
    harvester = Authenticator("mailer", "anything")
    with (
        smtp_server(authenticator=owner) as (real_port, _),
        smtp_server(authenticator=harvester) as (evil_port, evil),
    ):
        app = AppProcess(tmp_path / "instance", {"SETTINGS_UI_SMTP_TIMEOUT": "3"})
        try:
            settings = CONFIGURED | {"smtp_host": "127.0.0.1", "smtp_port": real_port, "encryption": "Plain"}
            assert app.call("edit", settings)[0] == 200
            status, body, _ = app.call("edit", {"smtp_port": evil_port})
            assert status == 400 and "password" in body["error"]["fields"]
            status, body, _ = app.call("test", {"to": "me@example.net", "settings": {"smtp_port": evil_port}})
            assert status == 400 and "password" in body["error"]["fields"]
            status, body, _ = app.call("test", {"to": "me@example.net"})
            assert status == 200, body
        finally:
            app.stop()
    assert evil.connections == 0 and harvester.attempts == 0
    assert owner.attempts == 1
    assert EXAMPLE_PASSWORD not in app.log.read_text()


def test_the_page_refuses_a_new_host_with_the_password_left_blank(
    app: Flask, client: FlaskClient, configured: dict[str, Any]
) -> None:
    before = stored_row(app)
    values = form_values(page(client)) | {"smtp_host": "evil.example.net"}
    assert values["password"] == ""
    response = client.post("/", data=values)
    assert response.status_code == 400
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    control = soup.find(attrs={"name": "password"})
    assert control["aria-invalid"] == "true"
    message = " ".join(soup.find(id=f"{control['id']}-error").get_text().split())
    assert "Password must be given again because “SMTP server” changed" in message
    assert "the stored password is only ever sent to the server it was saved for" in message
    assert "(type it again, or tick “Remove the stored password”)" in message
    assert '""' not in message and "smtp_host" not in message
    assert stored_row(app) == before
    # Typing the password (for the new server) saves.
    assert client.post("/", data=values | {"password": "for-the-new-server"}).status_code == 303


def test_the_command_line_refuses_a_new_host_without_the_password(
    app: Flask, runner: FlaskCliRunner, configured: dict[str, Any]
) -> None:
    before = stored_row(app)
    result = runner.invoke(args=["email-settings", "edit", "--smtp-host", "evil.example.net"])
    assert result.exit_code != 0
    assert "only ever sent to the server it was saved for" in result.output
    assert "(give it with --password-stdin, or store none with --remove-password)" in result.output
    assert stored_row(app) == before
    # A test of that draft can only bring a password: there is nothing to remove.
    result = runner.invoke(args=["email-settings", "test", "--to", "me@example.net", "--smtp-host", "evil.example.net"])
    assert "(give it with --password-stdin)" in result.output and result.exit_code != 0


def test_an_import_pointing_elsewhere_without_a_password_is_refused(
    app: Flask, runner: FlaskCliRunner, configured: dict[str, Any], tmp_path: Path
) -> None:
    exported = runner.invoke(args=["email-settings", "export"])
    document = json.loads(exported.output)
    document["settings"]["smtp_host"] = "evil.example.net"
    path = tmp_path / "export.json"
    path.write_text(json.dumps(document))
    before = stored_row(app)
    result = runner.invoke(args=["email-settings", "import", str(path)])
    assert result.exit_code != 0
    assert "password" in result.output
    assert stored_row(app) == before
