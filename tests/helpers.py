"""Small helpers shared by the tests."""

from __future__ import annotations

import base64
import os
from typing import Any, NoReturn

import pytest
from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash
from werkzeug.test import TestResponse

from settings_ui import fields


def skip_or_fail(message: str, required_by: str) -> NoReturn:
    """Skip a test whose outside tool is missing; fail instead where CI sets ``required_by`` to 1."""
    if os.environ.get(required_by) == "1":
        pytest.fail(message)
    pytest.skip(message)


EXAMPLE_PASSWORD = "s3cret-Pa55word-never-shown"
"""A password distinctive enough that finding it anywhere in output is a real leak."""

CONFIGURED = {
    "smtp_host": "smtp.example.com",
    "smtp_port": 587,
    "encryption": "StartTLS",
    "from_email": "noreply@example.com",
    "username": "mailer",
    "password": EXAMPLE_PASSWORD,
    "allow_selfsigned_certs": False,
}
"""A complete configuration with a password (what the ``configured`` fixture stores)."""

UNCONFIGURED = {
    "allow_selfsigned_certs": False,
    "auth_method": "password",
    "encryption": "Plain",
    "from_email": "",
    "oauth2_client_id": "",
    "oauth2_scope": "",
    "oauth2_token_url": "",
    "pinned_cert_sha256": "",
    "smtp_host": "",
    "smtp_port": 0,
    "transport": "smtp",
    "username": "",
}
"""What show answers on a fresh installation: the published API's keys and this project's additions."""


def shown(params: dict[str, Any]) -> dict[str, Any]:
    """What show answers once ``params`` (edit parameters) are stored over a fresh installation."""
    return UNCONFIGURED | {name: value for name, value in params.items() if name != "password"}


ADMIN = "admin"
ADMIN_PASSWORD = "correct horse battery staple"
ADMIN_HASH = generate_password_hash(ADMIN_PASSWORD)


SENDER = "noreply@example.com"
"""The ``from_email`` that :func:`configure` stores."""


def configure(target: FlaskClient | Flask, port: int, **overrides: Any) -> None:
    """Store settings for the SMTP server on 127.0.0.1:``port`` (Plain, from :data:`SENDER`), with
    ``overrides``, through the API; ``target`` is the app or a client of it."""
    client = target.test_client() if isinstance(target, Flask) else target
    params = {"smtp_host": "127.0.0.1", "smtp_port": port, "encryption": "Plain", "from_email": SENDER}
    response = call(client, "edit", params | overrides)
    assert response.status_code == 200, response.get_json()


def basic(username: str, password: str) -> dict[str, str]:
    """The Authorization header of HTTP Basic credentials."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


PUBLIC_KEYS = set(fields.PUBLIC)
"""The keys of the API's ``email_settings`` object."""


def call(client: FlaskClient, action: str, params: dict[str, Any] | None = None, **kwargs: Any) -> TestResponse:
    return client.post(f"/email-settings/{action}", json={"params": params if params is not None else {}}, **kwargs)


def assert_error(response: TestResponse, status: int, *fragments: str) -> dict[str, Any]:
    """The documented error envelope, with a message that contains each fragment."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["successful"] is False
    assert set(body) == {"error", "successful"}
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert EXAMPLE_PASSWORD not in response.get_data(as_text=True)
    return body["error"]


def post_json(url: str, body: Any, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, Any]:
    """POST a JSON body over real HTTP; return the status and the decoded JSON answer."""
    status, answer, _ = post_json_with_headers(url, body, headers, timeout)
    return status, answer


def post_json_with_headers(
    url: str, body: Any, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, Any, Any]:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


def page(client: FlaskClient, path: str = "/") -> BeautifulSoup:
    response = client.get(path)
    assert response.status_code == 200
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def form_values(soup: BeautifulSoup) -> dict[str, Any]:
    """What a browser would submit for the settings form as it is shown."""
    form = soup.find("form", id="settings-form")
    values: dict[str, Any] = {}
    for element in form.find_all(["input", "select"]):
        name = element.get("name")
        if not name:
            continue
        if element.name == "select":
            chosen = element.find("option", selected=True) or element.find("option")
            values[name] = chosen["value"]
        elif element.get("type") == "checkbox":
            if element.has_attr("checked"):
                values[name] = element.get("value", "y")
        else:
            values[name] = element.get("value", "")
    return values


def step_details(response: TestResponse) -> dict[str, str]:
    """Each step of a test email's answer (sent or not) by name: its detail."""
    body = response.get_json()
    listed = body["result"]["steps"] if body["successful"] else body["error"]["steps"]
    return {step["name"]: step["detail"] for step in listed}


SENDMAIL_MESSAGE = b"""\
Subject: Quarterly report
To: Alice <alice@example.net>
Cc: bob@example.net
Bcc: carol@example.net

Hello.
"""
"""A message as a program hands it to sendmail: To, Cc and a Bcc, no From, Date or Message-ID."""
