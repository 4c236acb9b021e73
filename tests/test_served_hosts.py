"""Only the names in TRUSTED_HOSTS are served, and browsers' cross-site API calls are refused.

Without an admin the app trusts its loopback clients; a web page that rebinds its own name to
127.0.0.1 is such a client, so the Host header is what tells it apart.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .apps import make_app, stored_row
from .helpers import assert_error, call
from .processes import AppProcess
from .smtp_servers import smtp_server

COMPLETE = {"smtp_host": "smtp.example.com", "smtp_port": 587, "from_email": "noreply@example.com"}


def request(app: AppProcess, method: str, path: str, host: str, body: Any = None, **headers: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        data = None if body is None else json.dumps(body)
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        connection.putrequest(method, path, skip_host=True)
        connection.putheader("Host", host)
        for name, value in headers.items():
            connection.putheader(name, value)
        if data is not None:
            connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data.encode() if data is not None else None)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    app = AppProcess(tmp_path_factory.mktemp("served") / "instance", {"SETTINGS_UI_SMTP_TIMEOUT": "2"})
    yield app
    app.stop()


@pytest.mark.parametrize("host", ["rebound.attacker.example", "localhost.attacker.example", "127.0.0.1.nip.io", ""])
def test_another_host_name_gets_400_and_nothing_runs(running: AppProcess, host: str) -> None:
    shown = running.call("show", {})[1]
    with smtp_server() as (port, handler):
        status, page = request(running, "GET", "/", f"{host}:{running.port}" if host else "")
        assert status == 400 and "does not answer to the name" in page
        params = {"to": "a@example.net", "settings": COMPLETE | {"smtp_host": "127.0.0.1", "smtp_port": port}}
        for call_name, body in [("edit", {"params": COMPLETE}), ("test", {"params": params}), ("show", {"params": {}})]:
            status, text = request(running, "POST", f"/email-settings/{call_name}", f"{host}:{running.port}", body)
            envelope = json.loads(text)
            assert status == 400 and envelope["successful"] is False
            assert "does not answer to the name" in envelope["error"]["message"]
    assert handler.connections == 0  # the test call was no port scanner
    assert running.call("show", {})[1] == shown


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LocalHost"])
def test_the_loopback_names_are_served_on_any_port(running: AppProcess, host: str) -> None:
    for with_port in (f"{host}:{running.port}", host):
        status, _ = request(running, "POST", "/email-settings/show", with_port, {"params": {}})
        assert status == 200, with_port


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://rebound.attacker.example"},
        {"Origin": "http://localhost:1"},  # another local program's page
        {"Origin": "null"},  # a sandboxed frame or a file
    ],
)
def test_a_cross_site_api_call_from_a_browser_is_refused(
    app: Flask, client: FlaskClient, headers: dict[str, str]
) -> None:
    before = stored_row(app)
    for action, params in [("edit", COMPLETE), ("clear", {}), ("test", {"to": "a@example.net"})]:
        assert_error(call(client, action, params, headers=headers), 403, "another site")
    assert stored_row(app) == before


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"}, {}])
def test_a_same_origin_api_call_or_a_script_is_served(client: FlaskClient, headers: dict[str, str]) -> None:
    assert call(client, "edit", COMPLETE, headers=headers).status_code == 200


def test_trusted_hosts_names_the_served_hosts(tmp_path: Path) -> None:
    app = make_app(tmp_path, TRUSTED_HOSTS=["settings.example.com", ".internal.example"])
    client = app.test_client()
    for host in ["settings.example.com", "settings.example.com:8443", "a.internal.example", "internal.example"]:
        assert client.post("/email-settings/show", json={"params": {}}, headers={"Host": host}).status_code == 200
    for host in ["localhost", "example.com", "settings.example.com.attacker.example", "xinternal.example"]:
        response = client.post("/email-settings/show", json={"params": {}}, headers={"Host": host})
        assert_error(response, 400, "does not answer to the name")


def test_trusted_hosts_from_the_environment_is_a_list_of_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SETTINGS_UI_TRUSTED_HOSTS", '["settings.example.com"]')
    client = make_app(tmp_path).test_client()
    assert client.get("/", headers={"Host": "settings.example.com"}).status_code == 200
    assert client.get("/", headers={"Host": "localhost"}).status_code == 400


def test_with_an_admin_and_no_trusted_hosts_any_name_is_served(tmp_path: Path) -> None:
    from werkzeug.security import generate_password_hash

    app = make_app(tmp_path, ADMIN_USERNAME="admin", ADMIN_PASSWORD_HASH=generate_password_hash("pw"))
    response = app.test_client().get("/login", headers={"Host": "settings.example.com"})
    assert response.status_code == 200
