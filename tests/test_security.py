"""Admin login, loopback-only mode, the password encrypted at rest, headers, audit, logs."""

from __future__ import annotations

import base64
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from cryptography.fernet import Fernet
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.security import check_password_hash

from settings_ui import crypto, database
from settings_ui.cli import main as cli_main

from .apps import make_app, stored_row
from .helpers import ADMIN, ADMIN_HASH, ADMIN_PASSWORD, EXAMPLE_PASSWORD, assert_error, basic, call

COMPLETE = {"smtp_host": "smtp.example.com", "smtp_port": 587, "from_email": "noreply@example.com"}


GOOD = basic(ADMIN, ADMIN_PASSWORD)


@pytest.fixture
def admin_app(tmp_path: Path) -> Flask:
    app = make_app(tmp_path, ADMIN_USERNAME=ADMIN, ADMIN_PASSWORD_HASH=ADMIN_HASH, LOGIN_THROTTLE_SECONDS=30)
    return app


@pytest.fixture
def admin_client(admin_app: Flask) -> FlaskClient:
    return admin_app.test_client()


def login(client: FlaskClient, username: str = ADMIN, password: str = ADMIN_PASSWORD, next_url: str = "/") -> Any:
    return client.post("/login", data={"username": username, "password": password, "next": next_url})


# --- The admin account ----------------------------------------------------------------


def test_the_page_asks_for_a_login_first(admin_client: FlaskClient) -> None:
    response = admin_client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=/")
    soup = BeautifulSoup(admin_client.get("/login").get_data(as_text=True), "html.parser")
    form = soup.find("form")
    assert {i.get("name") for i in form.find_all("input")} >= {"username", "password"}
    assert soup.find("label", attrs={"for": "username"}) and soup.find("label", attrs={"for": "password"})


@pytest.mark.parametrize("path", ["/", "/clear"])
def test_posts_to_the_page_without_a_login_change_nothing(
    admin_app: Flask, admin_client: FlaskClient, path: str
) -> None:
    call(admin_client, "edit", COMPLETE, headers=GOOD)
    before = stored_row(admin_app)
    response = admin_client.post(path, data={"smtp_host": "evil.example.com", "version": before["version"]})
    assert response.status_code == 302
    assert stored_row(admin_app) == before


def test_a_right_login_opens_the_page_and_renews_the_session(admin_client: FlaskClient) -> None:
    with admin_client.session_transaction() as session:
        session["planted"] = "by someone before the login"
    response = login(admin_client)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    with admin_client.session_transaction() as session:
        assert "planted" not in session
    page = admin_client.get("/")
    assert page.status_code == 200
    assert "Signed in as" in page.get_data(as_text=True)


@pytest.mark.parametrize(("username", "password"), [(ADMIN, "wrong"), ("root", ADMIN_PASSWORD), ("", "")])
def test_a_wrong_login_does_not_say_which_part_was_wrong(
    admin_client: FlaskClient, username: str, password: str
) -> None:
    response = login(admin_client, username, password)
    assert response.status_code in (400, 401)
    text = response.get_data(as_text=True)
    if username and password:
        assert "The username or password is wrong." in text
    assert admin_client.get("/").status_code == 302


def test_logout_ends_the_session(admin_client: FlaskClient) -> None:
    login(admin_client)
    assert admin_client.post("/logout").status_code == 303
    assert admin_client.get("/").status_code == 302
    assert call(admin_client, "show").status_code == 401


def test_an_idle_session_expires(tmp_path: Path) -> None:
    app = make_app(tmp_path, ADMIN_USERNAME=ADMIN, ADMIN_PASSWORD_HASH=ADMIN_HASH, PERMANENT_SESSION_LIFETIME=1)
    client = app.test_client()
    login(client)
    assert client.get("/").status_code == 200
    time.sleep(2.2)
    assert client.get("/").status_code == 302


def test_login_never_redirects_off_site(admin_client: FlaskClient) -> None:
    for target in ["//evil.example.com/", "https://evil.example.com/", "/\\evil.example.com"]:
        admin_client.post("/logout")
        response = login(admin_client, next_url=target)
        assert response.status_code == 303
        assert response.headers["Location"] == "/"


def test_repeated_failed_logins_are_slowed_down(admin_app: Flask, admin_client: FlaskClient) -> None:
    for _ in range(3):
        assert login(admin_client, password="wrong").status_code == 401
    response = login(admin_client)  # even the right password waits now
    assert response.status_code == 429
    assert "Wait" in response.get_data(as_text=True)
    assert admin_client.get("/").status_code == 302
    # Another address is not affected.
    other = admin_app.test_client()
    assert (
        other.post(
            "/login",
            data={"username": ADMIN, "password": ADMIN_PASSWORD, "next": "/"},
            environ_base={"REMOTE_ADDR": "127.0.0.2"},
        ).status_code
        == 303
    )


def test_the_api_takes_basic_credentials(admin_app: Flask, admin_client: FlaskClient) -> None:
    missing = call(admin_client, "show")
    assert_error(missing, 401, "Credentials are missing")
    assert missing.headers["WWW-Authenticate"].startswith("Basic")
    before = stored_row(admin_app)
    wrong = call(admin_client, "edit", {"smtp_port": 2525}, headers=basic(ADMIN, "wrong"))
    assert_error(wrong, 401, "wrong")
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    assert stored_row(admin_app) == before
    assert call(admin_client, "show", headers=GOOD).status_code == 200
    assert call(admin_client, "edit", COMPLETE, headers=GOOD).status_code == 200


def test_unknown_api_paths_also_need_credentials(admin_client: FlaskClient) -> None:
    assert_error(admin_client.post("/email-settings/nope", json={"params": {}}), 401)
    assert_error(admin_client.post("/email-settings/nope", json={"params": {}}, headers=GOOD), 404)


def test_the_api_takes_the_logged_in_session(admin_client: FlaskClient) -> None:
    login(admin_client)
    assert call(admin_client, "edit", COMPLETE).status_code == 200


def test_repeated_wrong_basic_credentials_are_slowed_down(admin_client: FlaskClient) -> None:
    for _ in range(3):
        assert call(admin_client, "show", headers=basic(ADMIN, "guess")).status_code == 401
    response = call(admin_client, "show", headers=GOOD)
    assert_error(response, 429, "Too many failed sign-ins")
    assert int(response.headers["Retry-After"]) > 0


def test_hash_password_prompts_twice_and_prints_a_usable_hash(runner: Any) -> None:
    result = runner.invoke(args=["hash-password"], input="a-long-password\na-long-password\n")
    assert result.exit_code == 0, result.output
    printed = result.output.strip().splitlines()[-1]
    assert check_password_hash(printed, "a-long-password")
    assert "a-long-password" not in result.output.replace(printed, "")
    mismatch = runner.invoke(args=["hash-password"], input="a-long-password\nanother-one\n" * 3)
    assert "do not match" in mismatch.output.lower()
    assert mismatch.exit_code != 0 and "scrypt:" not in mismatch.output


# --- Loopback-only mode without an admin ---------------------------------------------------


@pytest.mark.parametrize("address", ["203.0.113.5", "10.0.0.8", "::ffff:192.0.2.1", "2001:db8::1"])
def test_without_an_admin_remote_clients_are_refused(app: Flask, client: FlaskClient, address: str) -> None:
    call(client, "edit", COMPLETE)
    before = stored_row(app)
    remote = {"REMOTE_ADDR": address}
    page = client.get("/", environ_base=remote)
    assert page.status_code == 403
    assert "ADMIN_USERNAME" in page.get_data(as_text=True)
    assert_error(call(client, "edit", {"smtp_port": 2525}, environ_base=remote), 403, "ADMIN_USERNAME")
    assert stored_row(app) == before


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.53", "::1"])
def test_without_an_admin_loopback_clients_are_served(client: FlaskClient, address: str) -> None:
    assert client.get("/", environ_base={"REMOTE_ADDR": address}).status_code == 200


def test_with_an_admin_remote_clients_may_sign_in(admin_client: FlaskClient) -> None:
    remote = {"REMOTE_ADDR": "203.0.113.5"}
    assert call(admin_client, "show", headers=GOOD, environ_base=remote).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::", "example.com"])
def test_serving_the_network_without_an_admin_refuses_to_start(
    app: Flask, host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(app, ["--host", host])
    assert exit_info.value.code == 2
    assert "hash-password" in capsys.readouterr().err


def test_serving_without_an_admin_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        client = make_app(tmp_path).test_client()
        assert "loopback" not in caplog.text  # made, serving no one yet
        for _ in range(3):
            call(client, "show")
    assert caplog.text.count("only clients on this machine (loopback) are served") == 1


# --- The password encrypted at rest -------------------------------------------------------


def test_a_copy_of_the_database_without_the_key_reveals_no_password(
    tmp_path: Path, app: Flask, configured: dict[str, Any]
) -> None:
    token = stored_row(app)["password_encrypted"]
    assert EXAMPLE_PASSWORD not in token
    for path in tmp_path.glob("settings.db*"):
        assert EXAMPLE_PASSWORD.encode() not in path.read_bytes()
    stranger = Fernet(Fernet.generate_key())
    with pytest.raises(Exception):  # noqa: B017 - any failure: the point is that it does not decrypt
        stranger.decrypt(token.encode())


def test_the_key_from_configuration_is_used_and_never_written(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    app = make_app(tmp_path, SETTINGS_ENCRYPTION_KEY=key)
    call(app.test_client(), "edit", COMPLETE | {"username": "u", "password": EXAMPLE_PASSWORD})
    assert Fernet(key).decrypt(stored_row(app)["password_encrypted"].encode()).decode() == EXAMPLE_PASSWORD
    assert not (tmp_path / "instance" / "encryption.key").exists()


def test_a_password_under_another_key_is_explained_not_a_crash(
    tmp_path: Path, app: Flask, configured: dict[str, Any]
) -> None:
    (tmp_path / "instance" / "encryption.key").write_text(Fernet.generate_key().decode() + "\n")
    moved = make_app(tmp_path)  # the database with a different key, as after a careless move
    client = moved.test_client()
    page = client.get("/")
    assert page.status_code == 200
    problem = BeautifulSoup(page.get_data(as_text=True), "html.parser").find(id="password-problem")
    assert "cannot be decrypted" in problem.get_text()
    assert (
        "password-problem"
        in BeautifulSoup(page.get_data(as_text=True), "html.parser").find(id="password")["aria-describedby"]
    )
    assert call(client, "show").status_code == 200
    token = stored_row(moved)["password_encrypted"]
    assert token  # not silently dropped
    result = moved.test_cli_runner().invoke(args=["rotate-key"])
    assert result.exit_code != 0
    assert "cannot be decrypted" in result.output
    assert stored_row(moved)["password_encrypted"] == token
    # Typing the password again fixes it.
    assert call(client, "edit", {"password": EXAMPLE_PASSWORD}).status_code == 200
    assert client.get("/").get_data(as_text=True).count("cannot be decrypted") == 0


def test_rotate_key_re_encrypts_under_a_new_key_file(tmp_path: Path, app: Flask, configured: dict[str, Any]) -> None:
    key_file = tmp_path / "instance" / "encryption.key"
    old_key = key_file.read_text().strip()
    old_token = stored_row(app)["password_encrypted"]
    result = app.test_cli_runner().invoke(args=["rotate-key"])
    assert result.exit_code == 0, result.output
    new_key = key_file.read_text().strip()
    assert new_key != old_key and "\n" not in new_key
    assert key_file.stat().st_mode & 0o777 == 0o600
    new_token = stored_row(app)["password_encrypted"]
    assert new_token != old_token
    assert Fernet(new_key).decrypt(new_token.encode()).decode() == EXAMPLE_PASSWORD
    restarted = make_app(tmp_path)
    with restarted.app_context():
        assert crypto.decrypt(stored_row(restarted)["password_encrypted"]) == EXAMPLE_PASSWORD


def test_rotate_key_with_configured_keys_uses_the_first(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app = make_app(tmp_path, SETTINGS_ENCRYPTION_KEY=old)
    call(app.test_client(), "edit", COMPLETE | {"username": "u", "password": EXAMPLE_PASSWORD})
    both = make_app(tmp_path, SETTINGS_ENCRYPTION_KEY=f"{new},{old}")
    assert both.test_cli_runner().invoke(args=["rotate-key"]).exit_code == 0
    assert Fernet(new).decrypt(stored_row(both)["password_encrypted"].encode()).decode() == EXAMPLE_PASSWORD


# --- Hardened responses -----------------------------------------------------------------------


def _assert_hardened(response: Any, cacheable: bool = False) -> None:
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"]
    if not cacheable:
        assert response.headers["Cache-Control"] == "no-store"


def test_security_headers_on_every_kind_of_response(client: FlaskClient, configured: dict[str, Any]) -> None:
    _assert_hardened(client.get("/"))
    _assert_hardened(client.get("/clear"))
    _assert_hardened(call(client, "show"))
    _assert_hardened(call(client, "edit", {"smtp_port": "x"}))
    _assert_hardened(client.post("/email-settings/nope", json={}))
    _assert_hardened(client.get("/no-such-page"))
    _assert_hardened(client.get("/static/style.css"), cacheable=True)


def test_security_headers_on_login_and_401(admin_client: FlaskClient) -> None:
    _assert_hardened(admin_client.get("/login"))
    _assert_hardened(call(admin_client, "show"))
    _assert_hardened(admin_client.get("/"))


def test_pages_hold_no_inline_script_or_style(client: FlaskClient, configured: dict[str, Any]) -> None:
    for path in ["/", "/clear", "/no-such-page"]:
        soup = BeautifulSoup(client.get(path).get_data(as_text=True), "html.parser")
        assert not soup.find("style")
        assert not soup.find(attrs={"style": True})
        assert all(script.get("src") for script in soup.find_all("script"))
        assert not soup.find(attrs={re.compile("^on"): True})


def test_session_cookie_flags(tmp_path: Path, admin_client: FlaskClient) -> None:
    admin_client.get("/login")
    response = login(admin_client)
    cookie = next(v for k, v in response.headers.items() if k == "Set-Cookie" and "settings_ui_session" in v)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secure = make_app(
        tmp_path / "secure", ADMIN_USERNAME=ADMIN, ADMIN_PASSWORD_HASH=ADMIN_HASH, SESSION_COOKIE_SECURE=True
    )
    client = secure.test_client()
    response = login(client)
    cookie = next(v for k, v in response.headers.items() if k == "Set-Cookie" and "settings_ui_session" in v)
    assert "Secure" in cookie


# --- Audit trail ------------------------------------------------------------------------------


def test_changes_are_recorded_with_actor_address_and_fields(admin_app: Flask, admin_client: FlaskClient) -> None:
    remote = {"REMOTE_ADDR": "198.51.100.7"}
    call(admin_client, "edit", COMPLETE | {"username": "u", "password": EXAMPLE_PASSWORD}, headers=GOOD)
    call(
        admin_client, "edit", {"smtp_port": 2525, "password": EXAMPLE_PASSWORD + "x"}, headers=GOOD, environ_base=remote
    )
    call(admin_client, "clear", headers=GOOD)
    login(admin_client, password="wrong", next_url="/")
    login(admin_client)
    page = admin_client.get("/")
    html = page.get_data(as_text=True)
    assert EXAMPLE_PASSWORD not in html
    soup = BeautifulSoup(html, "html.parser")
    rows = table_rows(soup, "history-title")
    assert "settings cleared" in rows[0] and "password removed" in rows[0]
    assert "admin (198.51.100.7)" in rows[1]
    assert "“Port”: 587 → 2525" in rows[1] and "password changed" in rows[1]  # the page's label
    assert "password set" in rows[2]
    assert len(rows) == 3
    sign_ins = table_rows(soup, "sign-ins-title")
    assert "signed in" in sign_ins[0]
    assert "sign-in failed" in sign_ins[1]
    state = soup.find(id="settings-state").get_text(" ", strip=True)
    assert state.startswith("Not configured yet") and "Cleared by admin" in state


def table_rows(soup: BeautifulSoup, title_id: str) -> list[str]:
    """The text of each body row of the table under the heading ``title_id``."""
    section = soup.find(id=title_id).find_parent("section")
    return [row.get_text(" ", strip=True) for row in section.find_all("tr")[1:]]


def test_failed_sign_ins_never_push_the_changes_off_the_page(admin_app: Flask, admin_client: FlaskClient) -> None:
    call(admin_client, "edit", COMPLETE | {"username": "u", "password": EXAMPLE_PASSWORD}, headers=GOOD)
    for attempt in range(36):
        # Alternating between 12 addresses: one row with its count, not a row for each run.
        headers = {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}
        address = f"198.51.100.{attempt % 12 + 1}"
        call(admin_client, "show", headers=headers, environ_base={"REMOTE_ADDR": address})
        with admin_app.app_context():
            admin_app.extensions["settings_ui.auth"]["throttle"].reset(address)  # not slowed down here
    login(admin_client)
    soup = BeautifulSoup(admin_client.get("/").get_data(as_text=True), "html.parser")
    changes = table_rows(soup, "history-title")
    assert len(changes) == 1 and "settings edited" in changes[0] and "password set" in changes[0]
    sign_ins = table_rows(soup, "sign-ins-title")
    assert "signed in" in sign_ins[0]
    assert "API sign-in failed, 36 times" in sign_ins[1] and "and 10 other addresses" in sign_ins[1]
    assert len(sign_ins) == 2


def test_the_page_shows_only_the_last_ten_events(client: FlaskClient, configured: dict[str, Any]) -> None:
    for port in range(2000, 2015):
        call(client, "edit", {"smtp_port": port, "password": EXAMPLE_PASSWORD})
    soup = BeautifulSoup(client.get("/").get_data(as_text=True), "html.parser")
    rows = soup.find(id="history-title").find_parent("section").find_all("tr")[1:]
    assert len(rows) == 10
    assert "2014" in rows[0].get_text()


# --- No secret in any log ---------------------------------------------------------------------


def test_the_password_never_reaches_the_log(
    admin_app: Flask, admin_client: FlaskClient, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    call(admin_client, "edit", COMPLETE | {"username": "u", "password": EXAMPLE_PASSWORD}, headers=GOOD)
    call(admin_client, "edit", {"smtp_port": "bad", "password": EXAMPLE_PASSWORD}, headers=GOOD)
    call(admin_client, "edit", {"password": EXAMPLE_PASSWORD + "\n"}, headers=GOOD)
    call(admin_client, "show", headers=basic(ADMIN, EXAMPLE_PASSWORD))  # the SMTP password as admin password
    login(admin_client, username=EXAMPLE_PASSWORD, password=EXAMPLE_PASSWORD)
    login(admin_client, username=ADMIN, password=EXAMPLE_PASSWORD)
    admin_client.post("/email-settings/edit", data=f"password={EXAMPLE_PASSWORD}", headers=GOOD)
    captured = capfd.readouterr()
    assert EXAMPLE_PASSWORD not in caplog.text
    assert EXAMPLE_PASSWORD not in captured.out + captured.err
    with admin_app.app_context(), database.engine().connect() as connection:
        from settings_ui.models import audit_event_table

        for event in connection.execute(select(audit_event_table)):
            assert EXAMPLE_PASSWORD not in f"{event.actor} {event.detail}"
