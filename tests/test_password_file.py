"""SMTP_PASSWORD_FILE: the password kept in a file a secret store mounts, read at each use.

The file's whole life: read, rotated without a restart, missing, empty, too open, not a file;
edits that would set the password or move it elsewhere are refused; the file's contents never
appear in a response, a page or a log line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .apps import make_app, stored_row
from .helpers import assert_error, call, form_values, page
from .smtp_servers import Authenticator, Certificates, smtp_server

FILE_PASSWORD = "from-the-vault-7Qx9-never-shown"
ROTATED_PASSWORD = "rotated-in-the-vault-3Kd8-never-shown"
RECIPIENT = "admin@example.net"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "smtp-password"
    path.write_text(FILE_PASSWORD + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def app(tmp_path: Path, certificates: Certificates, secret: Path) -> Flask:
    return make_app(tmp_path, SMTP_TIMEOUT=3, SMTP_CA_FILE=str(certificates.ca_file), SMTP_PASSWORD_FILE=str(secret))


def configure_from_the_command_line(app: Flask, port: int, **overrides: Any) -> None:
    """Store settings as the operator does while the file is set: from the command line."""
    values = {"--smtp-host": "127.0.0.1", "--smtp-port": str(port), "--encryption": "StartTLS"}
    values |= {"--from-email": "noreply@example.com", "--username": "mailer"}
    values |= {f"--{name.replace('_', '-')}": str(value) for name, value in overrides.items()}
    args = ["email-settings", "edit", "--move-password-file", *(item for pair in values.items() for item in pair)]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output


def starttls_server(certificates: Certificates, password: str) -> Any:
    return smtp_server(
        starttls=certificates.server, authenticator=Authenticator("mailer", password), auth_require_tls=True
    )


def never_shown(*texts: str) -> None:
    for text in texts:
        assert FILE_PASSWORD not in text and ROTATED_PASSWORD not in text


# --- Read at each use --------------------------------------------------------------------------------


def test_the_test_email_signs_in_with_the_file_and_follows_its_rotation_without_a_restart(
    app: Flask, client: FlaskClient, certificates: Certificates, secret: Path
) -> None:
    with starttls_server(certificates, ROTATED_PASSWORD) as (port, handler):
        configure_from_the_command_line(app, port)
        before = call(client, "test", {"to": RECIPIENT})  # the file still holds the old password
        secret.write_text(ROTATED_PASSWORD + "\n")  # the secret store rotates it
        after = call(client, "test", {"to": RECIPIENT})
    assert_error(before, 400, "the auth step failed", "rejected the username or password")
    assert after.status_code == 200, after.get_json()
    assert handler.received[0].authenticated_as == "mailer"
    never_shown(before.get_data(as_text=True), after.get_data(as_text=True))


@pytest.mark.parametrize(
    ("spoil", "fragment"),
    [
        (lambda path: path.unlink(), "does not exist"),
        (lambda path: path.write_text(""), "is empty"),
        (lambda path: path.write_text("\n"), "is empty"),
        (lambda path: path.chmod(0o644), "can be read by other users (mode 0644)"),
        (lambda path: (path.unlink(), path.mkdir()), "is not a regular file"),
        (lambda path: path.write_text("x" * 5000), "is larger than a password"),
    ],
    ids=["missing", "empty", "only-a-newline", "too-open", "a-directory", "too-large"],
)
def test_a_spoiled_file_fails_the_auth_step_and_shows_on_the_page(
    app: Flask, client: FlaskClient, certificates: Certificates, secret: Path, spoil: Any, fragment: str
) -> None:
    with starttls_server(certificates, FILE_PASSWORD) as (port, handler):
        configure_from_the_command_line(app, port)
        spoil(secret)
        response = call(client, "test", {"to": RECIPIENT})
    error = assert_error(response, 400, "the auth step failed", "SMTP_PASSWORD_FILE", fragment)
    assert [step["name"] for step in error["steps"]][-2:] == ["starttls", "auth"]  # the steps before still ran
    assert handler.received == []
    problem = page(client).find(id="password-file-problem")
    assert problem is not None and fragment in problem.get_text()


def test_a_fifo_as_the_password_file_is_refused_without_waiting_for_a_writer(
    app: Flask, client: FlaskClient, secret: Path
) -> None:
    secret.unlink()
    os.mkfifo(secret, 0o600)
    answers: list[str] = []
    viewer = threading.Thread(target=lambda: answers.append(client.get("/").get_data(as_text=True)))
    viewer.start()
    viewer.join(timeout=10)
    if viewer.is_alive():  # the page hangs on the FIFO: give it a writer so that the thread ends
        os.close(os.open(secret, os.O_WRONLY))
        viewer.join(timeout=10)
    assert answers and "is not a regular file" in answers[0], "the page waited for a writer to the FIFO"


def test_the_page_says_where_the_password_comes_from_and_has_no_password_field(
    app: Flask, client: FlaskClient, secret: Path
) -> None:
    soup = page(client)
    assert soup.find("input", attrs={"name": "password"}) is None
    assert soup.find("input", attrs={"name": "remove_password"}) is None
    managed = soup.find(id="password-managed").get_text()
    assert "Managed outside the application (SETTINGS_UI_SMTP_PASSWORD_FILE" in managed and str(secret) in managed
    assert "The file is readable." in soup.find(id="password-file-state").get_text()


# --- What edits may do ------------------------------------------------------------------------------


def test_edit_refuses_a_password_and_says_where_it_comes_from(app: Flask, client: FlaskClient) -> None:
    configure_from_the_command_line(app, 587)
    before = stored_row(app)
    error = assert_error(call(client, "edit", {"password": "typed"}), 400, "password", "SMTP_PASSWORD_FILE")
    assert "password" in error["fields"]
    assert stored_row(app) == before


@pytest.mark.parametrize(
    "change",
    [
        {"smtp_host": "mail.attacker.example"},
        {"smtp_port": 2525},
        {"username": "other"},
        {"allow_selfsigned_certs": True},
    ],
    ids=["host", "port", "username", "selfsigned"],
)
def test_the_page_and_api_cannot_point_the_file_password_elsewhere(
    app: Flask, client: FlaskClient, change: dict[str, Any]
) -> None:
    configure_from_the_command_line(app, 587)
    before = stored_row(app)
    assert_error(call(client, "edit", change), 400, "password", "SMTP_PASSWORD_FILE", "--move-password-file")
    values = form_values(page(client)) | {k: ("y" if v is True else str(v)) for k, v in change.items()}
    assert client.post("/", data=values).status_code == 400
    assert stored_row(app) == before


def test_the_command_line_moves_the_settings_when_told_to(app: Flask) -> None:
    configure_from_the_command_line(app, 587)
    refused = app.test_cli_runner().invoke(args=["email-settings", "edit", "--smtp-port", "2525"])
    assert refused.exit_code != 0 and "--move-password-file" in refused.output
    configure_from_the_command_line(app, 2525)
    assert stored_row(app)["smtp_port"] == 2525


def test_a_draft_for_another_server_must_bring_its_own_password(
    app: Flask, client: FlaskClient, certificates: Certificates
) -> None:
    with starttls_server(certificates, "the-other-servers-password") as (port, handler):
        configure_from_the_command_line(app, 587)
        draft = {"smtp_port": port}
        assert_error(call(client, "test", {"to": RECIPIENT, "settings": draft}), 400, "password", "SMTP_PASSWORD_FILE")
        own = draft | {"password": "the-other-servers-password"}
        response = call(client, "test", {"to": RECIPIENT, "settings": own})
    assert response.status_code == 200, response.get_json()
    assert len(handler.received) == 1


def test_after_clear_the_file_password_still_goes_only_to_its_own_server(
    app: Flask, client: FlaskClient, certificates: Certificates
) -> None:
    with starttls_server(certificates, FILE_PASSWORD) as (port, handler):
        configure_from_the_command_line(app, port)
        assert call(client, "clear").status_code == 200
        home = {"smtp_host": "127.0.0.1", "smtp_port": port, "encryption": "StartTLS", "username": "mailer"}
        home |= {"from_email": "noreply@example.com"}
        with starttls_server(certificates, FILE_PASSWORD) as (elsewhere, impostor):
            cleared = stored_row(app)
            draft = home | {"smtp_port": elsewhere}
            assert_error(call(client, "test", {"to": RECIPIENT, "settings": draft}), 400, "password")
            assert_error(call(client, "edit", draft), 400, "password", "--move-password-file")
            assert stored_row(app) == cleared
        assert impostor.connections == 0
        assert call(client, "edit", home).status_code == 200  # its own server: saved, and it signs in there
        assert call(client, "test", {"to": RECIPIENT}).status_code == 200
    assert handler.received[0].authenticated_as == "mailer"


def test_a_fresh_install_binds_the_file_password_at_its_first_save_and_only_the_command_line_moves_it(
    app: Flask, client: FlaskClient, certificates: Certificates
) -> None:
    with (
        starttls_server(certificates, FILE_PASSWORD) as (port, _handler),
        starttls_server(certificates, FILE_PASSWORD) as (other, moved_to),
    ):
        first = {"smtp_host": "127.0.0.1", "smtp_port": port, "encryption": "StartTLS", "username": "mailer"}
        first |= {"from_email": "noreply@example.com"}
        assert call(client, "edit", first).status_code == 200  # the first save, through the API, binds it
        assert call(client, "clear").status_code == 200
        assert_error(call(client, "edit", first | {"smtp_port": other}), 400, "--move-password-file")
        configure_from_the_command_line(app, other)  # the operator moves it
        assert call(client, "test", {"to": RECIPIENT}).status_code == 200
        assert_error(call(client, "edit", first), 400, "--move-password-file")  # bound to the new server now
    assert moved_to.received[0].authenticated_as == "mailer"


def test_detect_uses_the_file_only_toward_the_stored_port_and_encryption(
    app: Flask, client: FlaskClient, certificates: Certificates
) -> None:
    auth = Authenticator("mailer", FILE_PASSWORD)
    with smtp_server(implicit_tls=certificates.server, authenticator=auth) as (port, _):
        configure_from_the_command_line(app, port, encryption="TLS")
        found = call(client, "detect", {"smtp_host": "127.0.0.1", "ports": [port], "username": "mailer"})
    assert found.status_code == 200, found.get_json()
    [tls] = [c for c in found.get_json()["result"]["candidates"] if c["encryption"] == "TLS"]
    assert tls["auth"] == "ok" and auth.attempts == 1
    never_shown(found.get_data(as_text=True))


def test_export_leaves_the_password_out(app: Flask) -> None:
    configure_from_the_command_line(app, 587)
    result = app.test_cli_runner().invoke(args=["email-settings", "export", "--with-password"])
    assert result.exit_code == 0, result.output
    assert "password" not in json.loads(result.stdout) and "SMTP_PASSWORD_FILE" in result.stderr
    never_shown(result.output)


def test_nothing_logged_or_answered_holds_the_file_contents(
    app: Flask, client: FlaskClient, certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with starttls_server(certificates, "not-what-the-file-holds") as (port, _):
        configure_from_the_command_line(app, port)
        answers = [
            call(client, "test", {"to": RECIPIENT}).get_data(as_text=True),
            call(client, "show").get_data(as_text=True),
            client.get("/").get_data(as_text=True),
        ]
    never_shown(caplog.text, *answers)
    with app.app_context():
        never_shown(repr(stored_row(app)))


def test_without_the_file_set_nothing_changes(tmp_path: Path) -> None:
    client = make_app(tmp_path).test_client()
    assert page(client).find("input", attrs={"name": "password"}) is not None


def test_oauth2_needs_no_password_while_the_file_is_set(app: Flask) -> None:
    configure_from_the_command_line(app, 587)
    result = app.test_cli_runner().invoke(
        args=[
            "email-settings", "edit", "--move-password-file", "--auth-method", "oauth2",
            "--oauth2-token-url", "https://login.example.com/token", "--oauth2-client-id", "client",
            "--oauth2-client-secret-stdin",
        ],
        input="the-client-secret\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert stored_row(app)["auth_method"] == "oauth2" and "the-client-secret" not in result.output
