"""transport microsoft_graph: mail sent by Microsoft Graph's sendMail, against local stand-ins of the
token endpoint and of Graph (over HTTP on loopback, and over HTTPS with a certificate of our test CA)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import settings_ui

from .apps import make_app, stored_row
from .helpers import assert_error, call
from .oauth2_servers import (
    CLIENT_ID,
    CLIENT_SECRET,
    MAILBOX,
    GraphEndpoint,
    TokenEndpoint,
    graph_endpoint,
    graph_token,
    token_endpoint,
)
from .smtp_servers import Certificates

RECIPIENT = "admin@example.net"
MAIL_SEND = graph_token("Mail.Send")


def graph_settings(token_url: str) -> dict[str, Any]:
    return {
        "transport": "microsoft_graph",
        "auth_method": "oauth2",
        "username": MAILBOX,
        "from_email": MAILBOX,
        "oauth2_token_url": token_url,
        "oauth2_client_id": CLIENT_ID,
        "oauth2_client_secret": CLIENT_SECRET,
    }


class StandIns:
    """A token endpoint granting ``token`` and Graph expecting it, with the app configured for both."""

    def __init__(self, app: Flask, token: TokenEndpoint, graph: GraphEndpoint):
        self.app, self.token, self.graph = app, token, graph
        self.client: FlaskClient = app.test_client()


@pytest.fixture
def stand_ins(tmp_path: Path) -> Iterator[StandIns]:
    token = TokenEndpoint(body={"access_token": MAIL_SEND, "token_type": "Bearer", "expires_in": 3599})
    with token_endpoint(token), graph_endpoint(GraphEndpoint(token=MAIL_SEND)) as graph:
        app = make_app(tmp_path, SMTP_TIMEOUT=4, MICROSOFT_GRAPH_URL=graph.url)
        world = StandIns(app, token, graph)
        assert call(world.client, "edit", graph_settings(token.url)).status_code == 200
        yield world


def test_a_test_email_goes_through_graph_sendmail_as_the_mailbox(stand_ins: StandIns) -> None:
    result = call(stand_ins.client, "test", {"to": RECIPIENT}).get_json()["result"]
    assert result["sent"] is True
    assert [step["name"] for step in result["steps"]] == ["token", "send"]
    assert "Microsoft Graph" in result["message"] and MAILBOX in result["message"]
    (request,) = stand_ins.graph.received
    assert request["path"] == f"/v1.0/users/{MAILBOX}/sendMail" and request["content_type"] == "text/plain"
    sent = message_from_bytes(request["mime"])
    assert sent["To"] == RECIPIENT and sent["From"] == MAILBOX
    # Graph's own scope is asked for when oauth2_scope is empty.
    assert stand_ins.token.requests[0]["scope"] == "https://graph.microsoft.com/.default"
    shown = call(stand_ins.client, "show").get_json()["result"]
    assert shown["transport"] == "microsoft_graph" and shown["smtp_host"] == ""  # no SMTP server needed


def test_graph_over_https_is_verified_against_the_trusted_authorities(
    tmp_path: Path, certificates: Certificates
) -> None:
    token = TokenEndpoint(body={"access_token": MAIL_SEND, "expires_in": 3599})
    with (
        token_endpoint(token),
        graph_endpoint(GraphEndpoint(token=MAIL_SEND), tls=certificates.server) as graph,
    ):
        trusted = make_app(
            tmp_path / "a", SMTP_TIMEOUT=4, MICROSOFT_GRAPH_URL=graph.url, SMTP_CA_FILE=str(certificates.ca_file)
        )
        client = trusted.test_client()
        call(client, "edit", graph_settings(token.url))
        assert call(client, "test", {"to": RECIPIENT}).get_json()["result"]["sent"] is True
        stranger = make_app(tmp_path / "b", SMTP_TIMEOUT=4, MICROSOFT_GRAPH_URL=graph.url)  # our CA unknown
        client = stranger.test_client()
        call(client, "edit", graph_settings(token.url))
        response = call(client, "test", {"to": RECIPIENT})
    assert_error(response, 400, "the send step failed", "cannot be reached", "certificate")
    assert len(graph.received) == 1  # nothing was posted over the refused connection


@pytest.mark.parametrize(
    ("status", "code", "fragments"),
    [
        (
            403,
            "ErrorAccessDenied",
            ["denied access", "Mail.Send", "Grant admin consent", "Test-ApplicationAccessPolicy"],
        ),
        (404, "ErrorInvalidUser", ["no mailbox", "Check username"]),
        (404, "MailboxNotEnabledForRESTAPI", ["no mailbox", "Exchange Online mailbox"]),
        (403, "ErrorSendAsDenied", ["From address", "Send As"]),
    ],
)
def test_graph_refusals_name_what_to_change(stand_ins: StandIns, status: int, code: str, fragments: list[str]) -> None:
    stand_ins.graph.answers.append((status, {"error": {"code": code, "message": "Refused by the stand-in."}}, {}))
    error = assert_error(
        call(stand_ins.client, "test", {"to": RECIPIENT}), 400, "the send step failed", code, *fragments
    )
    assert [step["name"] for step in error["steps"]] == ["token", "send"]


def test_a_busy_graph_is_asked_again_after_its_retry_after(stand_ins: StandIns) -> None:
    stand_ins.graph.answers.append((429, {"error": {"code": "ApplicationThrottled"}}, {"Retry-After": "1"}))
    result = call(stand_ins.client, "test", {"to": RECIPIENT}).get_json()["result"]
    assert result["sent"] is True and len(stand_ins.graph.received) == 2


def test_a_retry_after_past_the_time_limit_is_reported_as_temporary(stand_ins: StandIns) -> None:
    stand_ins.graph.answers.append((503, {"error": {"code": "ServiceUnavailable"}}, {"Retry-After": "120"}))
    delivery = settings_ui.send_message(_message(), app=stand_ins.app)
    assert not delivery.sent and delivery.temporary
    assert "in 120 s, as Graph asks (Retry-After)" in delivery.message
    assert len(stand_ins.graph.received) == 1


def test_a_message_past_graphs_limit_is_refused_before_sending(stand_ins: StandIns) -> None:
    message = _message()
    message.add_attachment(b"\0" * (3_200_000), maintype="application", subtype="octet-stream", filename="big.bin")
    delivery = settings_ui.send_message(message, app=stand_ins.app)
    assert not delivery.sent and delivery.failed_step == "send" and "at most 4194304 bytes" in delivery.message
    assert stand_ins.graph.received == []


def test_a_dry_run_checks_the_token_and_its_permission_and_sends_nothing(stand_ins: StandIns) -> None:
    result = call(stand_ins.client, "test", {"to": RECIPIENT, "dry_run": True}).get_json()["result"]
    assert result["checked"] is True and result["sent"] is False
    assert [step["name"] for step in result["steps"]] == ["token"] and "Mail.Send" in result["steps"][0]["detail"]
    assert "Only a sent message proves the mailbox" in result["message"]
    assert stand_ins.graph.received == []


def test_a_token_without_mail_send_fails_at_the_token_step(tmp_path: Path) -> None:
    token = TokenEndpoint(body={"access_token": graph_token("User.Read.All"), "expires_in": 3599})
    with token_endpoint(token), graph_endpoint(GraphEndpoint(token="")) as graph:
        client = make_app(tmp_path, SMTP_TIMEOUT=4, MICROSOFT_GRAPH_URL=graph.url).test_client()
        call(client, "edit", graph_settings(token.url))
        response = call(client, "test", {"to": RECIPIENT, "dry_run": True})
    assert_error(response, 400, "the token step failed", "does not carry Graph's Mail.Send", "User.Read.All")
    assert graph.received == []


def test_sendmail_recipients_outside_the_headers_reach_graph_as_bcc(stand_ins: StandIns) -> None:
    from settings_ui import sending

    with stand_ins.app.app_context():
        delivery = sending.deliver(
            _message(), ["hidden@example.org"], take_recipients_from_headers=True, surface="sendmail"
        )
    assert delivery.sent
    sent = message_from_bytes(stand_ins.graph.received[0]["mime"])
    assert sent["To"] == RECIPIENT and sent["Bcc"] == "hidden@example.org"


def test_graph_needs_oauth2_and_refusals_store_nothing(stand_ins: StandIns) -> None:
    before = stored_row(stand_ins.app)
    response = call(stand_ins.client, "edit", {"auth_method": "password", "password": "x"})
    assert_error(response, 400, "auth_method", "must be oauth2 with transport microsoft_graph")
    assert stored_row(stand_ins.app) == before


def test_the_client_secret_goes_to_graph_only_as_long_as_the_transport_stays(stand_ins: StandIns) -> None:
    before = stored_row(stand_ins.app)
    back_to_smtp = {"transport": "smtp", "smtp_host": "smtp.example.net", "smtp_port": 587, "encryption": "StartTLS"}
    error = assert_error(call(stand_ins.client, "edit", back_to_smtp), 400, "oauth2_client_secret", "transport")
    assert "must be given again" in error["fields"]["oauth2_client_secret"]
    assert stored_row(stand_ins.app) == before


def test_no_secret_or_token_appears_in_answers_or_logs(stand_ins: StandIns, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    stand_ins.graph.answers.append((403, {"error": {"code": "ErrorAccessDenied"}}, {}))
    texts = [call(stand_ins.client, "test", {"to": RECIPIENT}).get_data(as_text=True)]
    texts.append(call(stand_ins.client, "test", {"to": RECIPIENT}).get_data(as_text=True))
    texts.append(stand_ins.client.get("/").get_data(as_text=True))
    texts.append(stand_ins.app.test_cli_runner().invoke(args=["email-settings", "export"]).output)
    for text in [*texts, caplog.text]:
        assert CLIENT_SECRET not in text and MAIL_SEND not in text


def _message() -> EmailMessage:
    message = EmailMessage()
    message["To"] = RECIPIENT
    message["Subject"] = "Through Graph"
    message.set_content("Hello.")
    return message


def test_the_page_saves_a_graph_setup_without_an_smtp_server(tmp_path: Path) -> None:
    from .helpers import form_values, page

    app = make_app(tmp_path)
    client = app.test_client()
    typed = form_values(page(client)) | graph_settings("https://login.microsoftonline.com/contoso/oauth2/v2.0/token")
    typed |= {"smtp_host": "", "smtp_port": ""}
    response = client.post("/", data=typed)
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    row = stored_row(app)
    assert (row["transport"], row["smtp_host"], row["username"]) == ("microsoft_graph", "", MAILBOX)
    # The same form for SMTP still asks for the server.
    response = client.post("/", data=form_values(page(client)) | {"transport": "smtp", "smtp_host": ""})
    assert response.status_code == 400 and "SMTP server is required" in response.get_data(as_text=True)


def test_the_graph_preset_fills_graph_and_says_which_permission_it_needs(tmp_path: Path) -> None:
    from bs4 import BeautifulSoup

    from .helpers import form_values, page

    client = make_app(tmp_path).test_client()
    response = client.post("/preset", data=form_values(page(client)) | {"preset": "microsoft365_graph"})
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    filled = form_values(soup)
    assert (filled["transport"], filled["auth_method"]) == ("microsoft_graph", "oauth2")
    assert filled["oauth2_scope"] == "https://graph.microsoft.com/.default"
    assert "Mail.Send" in soup.find(id="preset-result").get_text()
    assert soup.find(id="oauth2-fields").has_attr("open")


def test_detect_on_microsoft_365_recommends_oauth2_or_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from .smtp_servers import smtp_server

    real = socket.getaddrinfo  # smtp.office365.com cannot be reached from here: its name leads to a local server

    def office365_here(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "smtp.office365.com" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", office365_here)
    client = make_app(tmp_path, SMTP_TIMEOUT=4).test_client()
    with smtp_server() as (port, _):
        result = call(client, "detect", {"smtp_host": "smtp.office365.com", "ports": [port]}).get_json()["result"]
    assert "sign in with OAuth 2.0" in result["message"] and "transport microsoft_graph" in result["message"]


def test_a_token_graph_refuses_is_dropped_and_the_scope_named(tmp_path: Path) -> None:
    token = TokenEndpoint(body={"access_token": MAIL_SEND, "expires_in": 3599})
    with token_endpoint(token), graph_endpoint(GraphEndpoint(token="another-token")) as graph:
        client = make_app(tmp_path, SMTP_TIMEOUT=4, MICROSOFT_GRAPH_URL=graph.url).test_client()
        call(client, "edit", graph_settings(token.url))
        first = call(client, "test", {"to": RECIPIENT})
        call(client, "test", {"to": RECIPIENT})
    assert_error(first, 400, "the send step failed", "refused the token", "HTTP 401", "graph.microsoft.com/.default")
    assert len(token.requests) == 2  # the refused token was not kept for the next send
