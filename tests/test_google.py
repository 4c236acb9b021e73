"""auth_method google_service_account: a Google Workspace service account with domain-wide delegation signs
a JWT (RS256) for the mailbox, trades it for a token at the key's token_uri (RFC 7523) and signs in with
AUTH XOAUTH2. Against a local stand-in of Google's token endpoint that checks the JWT's signature with
the key's public key, and aiosmtpd taking XOAUTH2."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient

from .apps import make_app, stored_row
from .helpers import assert_error, call, form_values, page
from .oauth2_servers import (
    GOOGLE_SCOPE,
    MAILBOX,
    TOKEN,
    GoogleTokenEndpoint,
    XOAuth2Handler,
    google_token_endpoint,
    service_account_key,
    xoauth2_server,
)
from .smtp_servers import Certificates

RECIPIENT = "admin@example.net"


@dataclass
class Google:
    app: Flask
    client: FlaskClient
    endpoint: GoogleTokenEndpoint
    key: dict[str, str]
    smtp: XOAuth2Handler
    port: int

    @property
    def key_text(self) -> str:
        return json.dumps(self.key, indent=2)  # as the downloaded file has it: over several lines

    def settings(self, **changes: Any) -> dict[str, Any]:
        return {
            "smtp_host": "127.0.0.1",
            "smtp_port": self.port,
            "encryption": "StartTLS",
            "from_email": MAILBOX,
            "auth_method": "google_service_account",
            "username": MAILBOX,
            "google_service_account_key": self.key_text,
        } | changes


@pytest.fixture
def google(tmp_path: Path, certificates: Certificates) -> Iterator[Google]:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    with google_token_endpoint(GoogleTokenEndpoint()) as endpoint, xoauth2_server(certificates.server) as (port, smtp):
        key = service_account_key(endpoint.url)
        endpoint.public_key = load_pem_private_key(key["private_key"].encode(), None).public_key()
        app = make_app(tmp_path, SMTP_TIMEOUT=4, SMTP_CA_FILE=str(certificates.ca_file))
        yield Google(app, app.test_client(), endpoint, key, smtp, port)


def test_the_service_account_signs_in_as_the_mailbox_and_the_mail_goes_out(google: Google) -> None:
    assert call(google.client, "edit", google.settings()).status_code == 200
    result = call(google.client, "test", {"to": RECIPIENT}).get_json()["result"]
    assert result["sent"] is True, result
    assert [step["name"] for step in result["steps"]][-5:] == ["token", "auth", "mail_from", "rcpt_to", "data"]
    (claims,) = google.endpoint.claims  # the JWT the endpoint verified with the key's public key
    assert claims["iss"] == google.key["client_email"] and claims["sub"] == MAILBOX
    assert claims["scope"] == GOOGLE_SCOPE and claims["aud"] == google.endpoint.url
    assert google.smtp.attempts == [(MAILBOX, TOKEN)] and len(google.smtp.received) == 1


def test_delegation_not_granted_says_where_to_grant_it_with_this_client_id(google: Google) -> None:
    google.endpoint.error = "unauthorized_client"
    google.endpoint.description = "Client is unauthorized to retrieve access tokens using this method."
    call(google.client, "edit", google.settings())
    response = call(google.client, "test", {"to": RECIPIENT})
    assert_error(
        response,
        400,
        "the token step failed",
        "domain-wide delegation",
        "Manage Domain Wide Delegation",
        google.key["client_id"],
        GOOGLE_SCOPE,
    )
    assert google.smtp.attempts == []


@pytest.mark.parametrize(
    ("description", "named"),
    [
        ("Invalid email or User ID", "Check username"),
        ("Invalid JWT Signature.", "new JSON key"),
        ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.", "clock"),
    ],
)
def test_an_invalid_grant_is_told_apart(google: Google, description: str, named: str) -> None:
    google.endpoint.error, google.endpoint.description = "invalid_grant", description
    call(google.client, "edit", google.settings())
    assert_error(call(google.client, "test", {"to": RECIPIENT}), 400, "the token step failed", "invalid_grant", named)


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("not json", "it is not JSON"),
        (json.dumps({"type": "authorized_user"}), '"type": "service_account"'),
        (json.dumps({"type": "service_account", "client_email": "a@b.c"}), "lacks private_key"),
    ],
)
def test_a_key_that_is_not_a_service_account_key_is_refused_and_nothing_stored(
    google: Google, key: str, fragment: str
) -> None:
    before = stored_row(google.app)
    response = call(google.client, "edit", google.settings(google_service_account_key=key))
    error = assert_error(response, 400, "google_service_account_key", fragment)
    assert set(error["fields"]) == {"google_service_account_key"}
    assert stored_row(google.app) == before


def test_a_key_with_a_plain_http_token_uri_elsewhere_is_refused(google: Google) -> None:
    key = dict(google.key, token_uri="http://oauth2.example.com/token")
    response = call(google.client, "edit", google.settings(google_service_account_key=json.dumps(key)))
    assert_error(response, 400, "google_service_account_key", "token_uri", "https://")


def test_the_key_goes_only_to_the_server_it_was_saved_for(google: Google) -> None:
    call(google.client, "edit", google.settings())
    before = stored_row(google.app)
    response = call(google.client, "edit", {"smtp_host": "smtp.gmail.com", "smtp_port": 465, "encryption": "TLS"})
    error = assert_error(response, 400, "google_service_account_key", "must be given again", '"" to store none')
    assert set(error["fields"]) == {"google_service_account_key"}
    draft = call(google.client, "test", {"to": RECIPIENT, "settings": {"smtp_host": "localhost"}})
    assert_error(draft, 400, "google_service_account_key", "must be given again")
    assert stored_row(google.app) == before and google.endpoint.claims == []
    # On the page: paste it again.
    values = form_values(page(google.client)) | {"smtp_host": "localhost"}
    refused = BeautifulSoup(google.client.post("/", data=values).get_data(as_text=True), "html.parser")
    message = refused.find(id="google_service_account_key-error").get_text()
    assert "paste it again, or tick “Remove the stored key”" in message


def test_the_key_is_never_shown_logged_or_exported_in_clear(google: Google, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    call(google.client, "edit", google.settings())
    texts = [
        call(google.client, "show").get_data(as_text=True),
        call(google.client, "test", {"to": RECIPIENT}).get_data(as_text=True),
        google.client.get("/").get_data(as_text=True),
        google.app.test_cli_runner().invoke(args=["email-settings", "export"]).output,
    ]
    sealed = google.app.test_cli_runner().invoke(
        args=["email-settings", "export", "--with-password"], input="a long enough passphrase\n"
    )
    assert sealed.exit_code == 0 and "google_service_account_key" in sealed.output
    secret_part = google.key["private_key"].splitlines()[5]
    for text in [*texts, sealed.output, caplog.text]:
        assert secret_part not in text and TOKEN not in text
    assert "A key is stored" in texts[2]


def test_the_command_line_reads_the_whole_key_file_from_standard_input(google: Google, tmp_path: Path) -> None:
    settings = google.settings()
    del settings["google_service_account_key"]
    args = ["email-settings", "edit", "--google-service-account-key-stdin"]
    for name, value in settings.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    result = google.app.test_cli_runner().invoke(args=args, input=google.key_text)
    assert result.exit_code == 0, result.output
    assert stored_row(google.app)["google_service_account_key_encrypted"]
    assert call(google.client, "test", {"to": RECIPIENT}).get_json()["result"]["sent"] is True


def test_the_google_workspace_preset(tmp_path: Path) -> None:
    client = make_app(tmp_path).test_client()
    response = client.post("/preset", data=form_values(page(client)) | {"preset": "google_workspace"})
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    filled = form_values(soup)
    assert (filled["smtp_host"], filled["smtp_port"], filled["encryption"]) == ("smtp.gmail.com", "465", "TLS")
    assert filled["auth_method"] == "google_service_account"
    assert soup.find(id="google-fields").has_attr("open") and "domain-wide delegation" in soup.find(
        id="preset-result"
    ).get_text(" ")
