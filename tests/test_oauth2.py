"""Signing in with OAuth 2.0 (XOAUTH2): a token endpoint and an SMTP server started in the test."""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .apps import make_app, stored_row
from .helpers import EXAMPLE_PASSWORD, assert_error, call, configure, form_values, page, step_details
from .oauth2_servers import (
    CLIENT_ID,
    CLIENT_SECRET,
    MAILBOX,
    SCOPE,
    TOKEN,
    TokenEndpoint,
    token_endpoint,
    xoauth2_server,
)
from .smtp_servers import Authenticator, Certificates, free_port, smtp_server

RECIPIENT = "admin@example.net"


@pytest.fixture
def app(tmp_path: Path, certificates: Certificates) -> Flask:
    return make_app(tmp_path, SMTP_TIMEOUT=3, SMTP_CA_FILE=str(certificates.ca_file))


def configure_oauth2(client: FlaskClient, port: int, token_url: str, **overrides: Any) -> None:
    oauth2 = {"auth_method": "oauth2", "oauth2_token_url": token_url, "oauth2_client_id": CLIENT_ID}
    oauth2 |= {"oauth2_client_secret": CLIENT_SECRET, "oauth2_scope": SCOPE}
    mailbox = {"encryption": "StartTLS", "from_email": MAILBOX, "username": MAILBOX}
    configure(client, port, **(mailbox | oauth2 | overrides))


def never_shown(*texts: str) -> None:
    for text in texts:
        assert CLIENT_SECRET not in text and TOKEN not in text


# --- Delivery ---------------------------------------------------------------------------------------


def test_a_token_signs_in_with_xoauth2_and_the_mail_is_delivered(
    client: FlaskClient, certificates: Certificates
) -> None:
    with token_endpoint() as endpoint, xoauth2_server(certificates.server) as (port, handler):
        configure_oauth2(client, port, endpoint.url)
        response = call(client, "test", {"to": RECIPIENT})
    assert response.status_code == 200, response.get_json()
    names = [step["name"] for step in response.get_json()["result"]["steps"]]
    assert names == ["resolve", "connect", "ehlo", "starttls", "token", "auth", "mail_from", "rcpt_to", "data"]
    assert handler.attempts == [(MAILBOX, TOKEN)]
    assert handler.received[0].authenticated_as == MAILBOX and handler.received[0].tls
    [asked] = endpoint.requests
    assert asked == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": SCOPE,
    }
    never_shown(response.get_data(as_text=True))


def test_the_token_is_kept_until_it_expires_then_fetched_again(client: FlaskClient, certificates: Certificates) -> None:
    # 61 s of life: kept while more than the minute's margin is left, so for one second here.
    answer = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 61}
    with token_endpoint(TokenEndpoint(body=answer)) as endpoint, xoauth2_server(certificates.server) as (port, _):
        configure_oauth2(client, port, endpoint.url)
        first = call(client, "test", {"to": RECIPIENT})
        second = call(client, "test", {"to": RECIPIENT})
        time.sleep(1.2)
        third = call(client, "test", {"to": RECIPIENT})
    assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
    assert "kept from an earlier sign-in" in step_details(second)["token"]
    assert "received from" in step_details(third)["token"]
    assert len(endpoint.requests) == 2


def test_a_token_endpoint_over_https_is_verified_with_smtp_ca_file(
    client: FlaskClient, certificates: Certificates
) -> None:
    with token_endpoint(tls=certificates.server) as endpoint, xoauth2_server(certificates.server) as (port, _):
        configure_oauth2(client, port, endpoint.url)
        response = call(client, "test", {"to": RECIPIENT})
    assert response.status_code == 200, response.get_json()
    assert endpoint.url.startswith("https://")


def test_a_token_endpoint_with_an_untrusted_certificate_is_refused(
    client: FlaskClient, certificates: Certificates
) -> None:
    import ssl

    import trustme

    foreign = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(foreign)
    with token_endpoint(tls=foreign) as endpoint, xoauth2_server(certificates.server) as (port, handler):
        configure_oauth2(client, port, endpoint.url)
        response = call(client, "test", {"to": RECIPIENT})
    assert_error(response, 400, "the token step failed", "certificate was refused", "oauth2_token_url")
    assert endpoint.requests == [] and handler.attempts == []  # the secret never left over unverified TLS


def test_sendmail_and_the_python_api_sign_in_with_oauth2_too(app: Flask, certificates: Certificates) -> None:
    from email.message import EmailMessage

    import settings_ui

    with token_endpoint() as endpoint, xoauth2_server(certificates.server) as (port, handler):
        configure_oauth2(app.test_client(), port, endpoint.url)
        message = EmailMessage()
        message["To"] = RECIPIENT
        message.set_content("Hello.")
        delivery = settings_ui.send_message(message, app=app)
    assert delivery.sent, delivery.message
    assert handler.received[0].authenticated_as == MAILBOX


def test_detect_signs_in_with_the_stored_oauth2_client_toward_the_stored_server(
    client: FlaskClient, certificates: Certificates
) -> None:
    with token_endpoint() as endpoint, xoauth2_server(certificates.server) as (port, handler):
        configure_oauth2(client, port, endpoint.url)
        found = call(client, "detect", {"smtp_host": "127.0.0.1", "ports": [port], "username": MAILBOX})
    assert found.status_code == 200, found.get_json()
    [starttls] = [c for c in found.get_json()["result"]["candidates"] if c["encryption"] == "StartTLS"]
    assert starttls["auth"] == "ok" and handler.attempts == [(MAILBOX, TOKEN)]
    never_shown(found.get_data(as_text=True))


# --- Each way a token can fail ------------------------------------------------------------------------


def _entra(code: str, error: str = "invalid_request") -> dict[str, str]:
    return {"error": error, "error_description": f"{code}: something went wrong. Trace ID: 1"}


@pytest.mark.parametrize(
    ("status", "body", "fragments"),
    [
        (401, _entra("AADSTS7000215", "invalid_client"), ["client secret is wrong", "oauth2_client_secret"]),
        (
            400,
            _entra("AADSTS700016", "unauthorized_client"),
            ["no application with this client id", "oauth2_client_id"],
        ),
        (400, _entra("AADSTS90002"), ["tenant", "does not exist", "oauth2_token_url"]),
        (400, _entra("AADSTS70011", "invalid_scope"), ["scope is not valid", "oauth2_scope"]),
        (401, {"error": "invalid_client"}, ["invalid_client", "oauth2_client_id and oauth2_client_secret"]),
        (200, b"<html>Sign in</html>", ["not JSON", "oauth2_token_url"]),
        (200, {"token_type": "Bearer"}, ["without an access_token", "oauth2_scope"]),
    ],
    ids=["wrong-secret", "unknown-app", "wrong-tenant", "invalid-scope", "invalid-client", "not-json", "no-token"],
)
def test_each_token_failure_is_explained_naming_the_parameter(
    client: FlaskClient, certificates: Certificates, status: int, body: Any, fragments: list[str]
) -> None:
    with (
        token_endpoint(TokenEndpoint(status=status, body=body)) as endpoint,
        xoauth2_server(certificates.server) as (port, handler),
    ):
        configure_oauth2(client, port, endpoint.url)
        response = call(client, "test", {"to": RECIPIENT})
    assert_error(response, 400, "the token step failed", *fragments)
    assert handler.attempts == [] and handler.received == []
    never_shown(response.get_data(as_text=True))


def test_an_unreachable_token_endpoint_is_explained(client: FlaskClient, certificates: Certificates) -> None:
    with xoauth2_server(certificates.server) as (port, _):
        configure_oauth2(client, port, f"http://127.0.0.1:{free_port()}/token")
        response = call(client, "test", {"to": RECIPIENT})
    assert_error(response, 400, "the token step failed", "cannot be reached", "oauth2_token_url")


def test_a_refused_token_points_at_smtp_auth_and_the_app_permissions(
    client: FlaskClient, certificates: Certificates
) -> None:
    wrong = TokenEndpoint(body={"access_token": "a-token-for-another-app", "expires_in": 3599})
    with token_endpoint(wrong) as endpoint, xoauth2_server(certificates.server) as (port, _):
        configure_oauth2(client, port, endpoint.url)
        response = call(client, "test", {"to": RECIPIENT})
    assert_error(
        response, 400, "the auth step failed", "535 5.7.3", "SMTP AUTH", "SMTP.SendAsApp", "Microsoft 365 (OAuth 2.0)"
    )


def test_a_password_turned_off_by_the_provider_suggests_oauth2(client: FlaskClient) -> None:
    refusal = "535 5.7.30 Basic authentication is not supported for Client Submission"
    with smtp_server(authenticator=Authenticator("mailer", EXAMPLE_PASSWORD, refusal=refusal)) as (port, _):
        params = {"smtp_host": "127.0.0.1", "smtp_port": port, "encryption": "Plain", "from_email": MAILBOX}
        call(client, "edit", params | {"username": "mailer", "password": EXAMPLE_PASSWORD})
        response = call(client, "test", {"to": RECIPIENT})
    assert_error(
        response, 400, "the auth step failed", "5.7.30", "set auth_method to oauth2", "Microsoft 365 (OAuth 2.0)"
    )


def test_smtp_auth_switched_off_by_the_tenant_says_how_to_switch_it_on_or_use_graph(client: FlaskClient) -> None:
    refusal = (
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. "
        "Visit https://aka.ms/smtp_auth_disabled for more information."
    )
    with smtp_server(authenticator=Authenticator("mailer", EXAMPLE_PASSWORD, refusal=refusal)) as (port, handler):
        params = {"smtp_host": "127.0.0.1", "smtp_port": port, "encryption": "Plain", "from_email": MAILBOX}
        call(client, "edit", params | {"username": "mailer", "password": EXAMPLE_PASSWORD})
        response = call(client, "test", {"to": RECIPIENT})
    error = assert_error(response, 400, "the auth step failed", "5.7.139", "Authenticated SMTP", "microsoft_graph")
    assert "wrong password" not in error["message"] and handler.received == []


def test_a_mailbox_the_app_cannot_log_on_to_is_named(client: FlaskClient) -> None:
    from .smtp_servers import RecordingHandler

    storedrv = "430 4.2.0 STOREDRV; mailbox logon failure; Failed to process message due to a transient exception"
    with smtp_server(RecordingHandler(recipient_reply=storedrv)) as (port, handler):
        configure(client, port)
        response = call(client, "test", {"to": RECIPIENT})
    error = assert_error(response, 400, "the rcpt_to step failed", "STOREDRV", "no access to the mailbox")
    assert "Add-MailboxPermission" in error["message"] and handler.received == []


def test_a_password_that_works_on_microsoft_365_warns_that_basic_auth_is_ending(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    # smtp.office365.com cannot be reached from here: its name leads to the local server instead.
    real = socket.getaddrinfo

    def office365_here(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "smtp.office365.com" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", office365_here)
    with smtp_server(authenticator=Authenticator("mailer", EXAMPLE_PASSWORD)) as (port, handler):
        params = {"smtp_host": "smtp.office365.com", "smtp_port": port, "encryption": "Plain", "from_email": MAILBOX}
        call(client, "edit", params | {"username": "mailer", "password": EXAMPLE_PASSWORD})
        result = call(client, "test", {"to": RECIPIENT}).get_json()["result"]
    assert result["sent"] and len(handler.received) == 1
    warning = next(warning for warning in result["warnings"] if "Basic authentication" in warning)
    assert "end of December 2026" in warning and "OAuth 2.0" in warning and "Microsoft 365 preset" in warning


# --- What is stored, and the binding rule ---------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"oauth2_token_url": "http://login.example.com/token"}, "oauth2_token_url", "must use https://"),
        (
            {"oauth2_token_url": "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token"},
            "oauth2_token_url",
            "<tenant>",
        ),
        ({"oauth2_token_url": "https://a.example:abc/token"}, "oauth2_token_url", "a port from 1 to 65535"),
        ({"oauth2_token_url": "https://a.example:99999/token"}, "oauth2_token_url", "a port from 1 to 65535"),
        ({"oauth2_client_id": ""}, "oauth2_client_id", "required with auth_method oauth2"),
        ({"username": ""}, "username", "the mailbox to send as"),
        ({"password": EXAMPLE_PASSWORD}, "password", "must be empty with auth_method oauth2"),
        ({"auth_method": "kerberos"}, "auth_method", "must be one of password, oauth2"),
    ],
)
def test_invalid_oauth2_settings_are_refused_and_nothing_stored(
    app: Flask, client: FlaskClient, change: dict[str, Any], field: str, fragment: str
) -> None:
    configure_oauth2(client, 587, "https://login.example.com/token")
    before = stored_row(app)
    assert field in assert_error(call(client, "edit", change), 400, field, fragment)["fields"]
    assert stored_row(app) == before


@pytest.mark.parametrize(
    "change",
    [
        {"oauth2_token_url": "https://attacker.example/token"},
        {"oauth2_client_id": "another-client"},
        {"smtp_host": "smtp.attacker.example"},
        {"smtp_port": 2525},
        {"encryption": "TLS"},
        {"username": "someone@contoso.example"},
        {"allow_selfsigned_certs": True},
    ],
    ids=["token-url", "client-id", "host", "port", "encryption", "username", "selfsigned"],
)
def test_the_stored_secret_goes_only_where_it_was_saved_for(
    app: Flask, client: FlaskClient, change: dict[str, Any]
) -> None:
    configure_oauth2(client, 587, "https://login.example.com/token")
    before = stored_row(app)
    error = assert_error(call(client, "edit", change), 400, "oauth2_client_secret", "must be given again")
    assert "oauth2_client_secret" in error["fields"]
    # The page likewise: a blank secret field keeps the stored one only for the same endpoint and server.
    values = form_values(page(client)) | {k: ("y" if v is True else str(v)) for k, v in change.items()}
    assert client.post("/", data=values).status_code == 400
    assert stored_row(app) == before
    assert call(client, "edit", change | {"oauth2_client_secret": "the-new-secret"}).status_code == 200


def test_a_draft_test_toward_another_endpoint_must_bring_the_secret(
    client: FlaskClient, certificates: Certificates
) -> None:
    with token_endpoint() as endpoint, token_endpoint() as elsewhere, xoauth2_server(certificates.server) as (port, _):
        configure_oauth2(client, port, endpoint.url)
        draft = {"oauth2_token_url": elsewhere.url}
        assert_error(call(client, "test", {"to": RECIPIENT, "settings": draft}), 400, "oauth2_client_secret")
    assert elsewhere.requests == []


def test_the_secret_appears_in_no_response_page_log_or_plain_export(
    app: Flask, client: FlaskClient, certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with token_endpoint() as endpoint, xoauth2_server(certificates.server) as (port, _):
        configure_oauth2(client, port, endpoint.url)
        answers = [
            call(client, "test", {"to": RECIPIENT}).get_data(as_text=True),
            call(client, "show").get_data(as_text=True),
            client.get("/").get_data(as_text=True),
        ]
    plain = app.test_cli_runner().invoke(args=["email-settings", "export"]).output
    sealed = app.test_cli_runner().invoke(
        args=["email-settings", "export", "--with-password"], input="a long passphrase\na long passphrase\n"
    )
    assert "oauth2_client_secret" in json.loads(sealed.stdout)  # sealed with the passphrase
    never_shown(caplog.text, plain, sealed.output, *answers)
    assert "oauth2_client_secret" not in json.loads(plain)["settings"]
    assert CLIENT_SECRET.encode() not in repr(stored_row(app)).encode()


def test_an_export_with_the_secret_moves_to_another_installation(app: Flask, tmp_path: Path) -> None:
    configure_oauth2(app.test_client(), 587, "https://login.example.com/token")
    exported = (
        app.test_cli_runner()
        .invoke(args=["email-settings", "export", "--with-password"], input="a long passphrase\na long passphrase\n")
        .stdout
    )
    (tmp_path / "export.json").write_text(exported)
    other = make_app(tmp_path / "other")
    result = other.test_cli_runner().invoke(
        args=["email-settings", "import", str(tmp_path / "export.json")], input="a long passphrase\n"
    )
    assert result.exit_code == 0, result.output
    assert stored_row(other)["oauth2_client_secret_encrypted"]
    never_shown(result.output)


# --- The page -------------------------------------------------------------------------------------


def test_the_microsoft_365_preset_fills_the_form_unsaved(app: Flask, client: FlaskClient) -> None:
    before = stored_row(app)
    response = client.post("/preset", data=form_values(page(client)) | {"preset": "microsoft365"})
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    values = form_values(soup)
    assert values["smtp_host"] == "smtp.office365.com" and values["smtp_port"] == "587"
    assert values["encryption"] == "StartTLS" and values["auth_method"] == "oauth2"
    assert "<tenant>" in values["oauth2_token_url"] and values["oauth2_scope"] == SCOPE
    assert "Replace <tenant>" in soup.find(id="preset-result").get_text()
    assert stored_row(app) == before


def test_the_page_keeps_a_blank_secret_and_can_remove_it(app: Flask, client: FlaskClient) -> None:
    configure_oauth2(client, 587, "https://login.example.com/token")
    soup = page(client)
    assert soup.find("input", attrs={"name": "oauth2_client_secret"}).get("value") in (None, "")
    assert CLIENT_SECRET not in str(soup)
    secret_before = stored_row(app)["oauth2_client_secret_encrypted"]
    assert client.post("/", data=form_values(soup) | {"from_email": "other@contoso.example"}).status_code == 303
    assert stored_row(app)["oauth2_client_secret_encrypted"] == secret_before
    switched = form_values(page(client)) | {"auth_method": "password", "remove_oauth2_client_secret": "y"}
    switched |= {"password": EXAMPLE_PASSWORD}
    assert client.post("/", data=switched).status_code == 303
    assert stored_row(app)["oauth2_client_secret_encrypted"] is None


def test_a_token_endpoint_that_drips_its_answer_is_cut_off_at_smtp_timeout_and_named(
    client: FlaskClient, certificates: Certificates
) -> None:
    with (
        token_endpoint(TokenEndpoint(drip=0.5)) as endpoint,
        xoauth2_server(certificates.server) as (port, handler),
    ):
        configure_oauth2(client, port, endpoint.url)
        started = time.monotonic()
        response = call(client, "test", {"to": RECIPIENT})
        took = time.monotonic() - started
        time.sleep(1.0)  # a drip or two more: the endpoint notices the hang-up when it writes
    where = urllib.parse.urlsplit(endpoint.url).netloc
    assert_error(response, 400, "the token step failed", f"The token endpoint {where} did not answer within")
    assert took < 3 + 0.5  # SMTP_TIMEOUT is 3 here
    # The fetch let go of the endpoint (and its thread) by the deadline, not at the end of the answer.
    assert endpoint.hung_up_at is not None and endpoint.hung_up_at - started < 3 + 1.0
    assert handler.attempts == []


def test_a_redirect_from_the_token_endpoint_is_refused_and_not_followed(
    client: FlaskClient, certificates: Certificates
) -> None:
    with (
        token_endpoint() as elsewhere,
        token_endpoint(TokenEndpoint(redirect_to="")) as endpoint,
        xoauth2_server(certificates.server) as (port, handler),
    ):
        endpoint.redirect_to = elsewhere.url
        configure_oauth2(client, port, endpoint.url)
        response = call(client, "test", {"to": RECIPIENT})
    assert_error(response, 400, "the token step failed", "redirect (HTTP 302)", "oauth2_token_url")
    assert elsewhere.requests == [] and handler.attempts == []
    never_shown(response.get_data(as_text=True))
