"""/email-settings/test against real SMTP servers, one test per failure class."""

from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from settings_ui import database

from .apps import LiveServer, make_app, stored_row
from .helpers import (
    EXAMPLE_PASSWORD,
    SENDER,
    assert_error,
    call,
    configure,
    form_values,
    page,
    post_json,
    post_json_with_headers,
)
from .processes import GunicornProcess
from .smtp_servers import (
    Authenticator,
    Certificates,
    RecordingHandler,
    dripping_server,
    free_port,
    silent_server,
    smtp_server,
)

TIMEOUT = 2.0
RECIPIENT = "admin@example.net"


@pytest.fixture
def app(tmp_path: Path, certificates: Certificates) -> Flask:
    app = make_app(tmp_path, SMTP_TIMEOUT=TIMEOUT, SMTP_CA_FILE=str(certificates.ca_file))
    return app


def send(client: FlaskClient, **params: Any) -> Any:
    return call(client, "test", {"to": RECIPIENT, **params})


def step_names(steps: list[dict[str, Any]]) -> list[str]:
    return [step["name"] for step in steps]


def failed(response: Any, step: str, *fragments: str) -> dict[str, Any]:
    """A 400 naming the failed step; the last step listed is that one, every earlier one passed."""
    error = assert_error(response, 400, f"the {step} step failed", *fragments)
    steps = error["steps"]
    assert steps[-1]["name"] == step and steps[-1]["ok"] is False
    assert all(s["ok"] for s in steps[:-1])
    assert all(isinstance(s["ms"], int) and s["detail"] for s in steps)
    return error


# --- Delivery ---------------------------------------------------------------------------------


def test_plain_delivery_sends_a_real_message(client: FlaskClient) -> None:
    with smtp_server() as (port, handler):
        configure(client, port)
        response = send(client)
    assert response.status_code == 200, response.get_json()
    result = response.get_json()["result"]
    assert result["sent"] is True
    assert step_names(result["steps"]) == ["resolve", "connect", "ehlo", "mail_from", "rcpt_to", "data"]
    assert all(step["ok"] for step in result["steps"])
    assert isinstance(result["elapsed_ms"], int)
    [received] = handler.received
    assert received.mail_from == SENDER and received.rcpt_tos == [RECIPIENT]
    message = received.message
    assert message["From"] == SENDER and message["To"] == RECIPIENT
    assert message["Subject"] == "Test email from settings-ui"
    assert message["Date"] and message["Message-ID"].endswith("@example.com>")
    body = message.get_content()
    assert f"127.0.0.1:{port}" in body and "without encryption" in body
    assert received.tls is False


def test_starttls_with_auth_encrypts_and_signs_in(client: FlaskClient, certificates: Certificates) -> None:
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    with smtp_server(starttls=certificates.server, authenticator=auth, auth_require_tls=True) as (port, handler):
        configure(client, port, encryption="StartTLS", username="mailer", password=EXAMPLE_PASSWORD)
        response = send(client)
    assert response.status_code == 200, response.get_json()
    steps = response.get_json()["result"]["steps"]
    assert step_names(steps) == ["resolve", "connect", "ehlo", "starttls", "auth", "mail_from", "rcpt_to", "data"]
    assert "certificate valid" in steps[3]["detail"]
    [received] = handler.received
    assert received.tls is True
    assert received.authenticated_as == "mailer"
    assert EXAMPLE_PASSWORD not in response.get_data(as_text=True)


def test_implicit_tls_delivery(client: FlaskClient, certificates: Certificates) -> None:
    with smtp_server(implicit_tls=certificates.server) as (port, handler):
        configure(client, port, encryption="TLS")
        response = send(client)
    assert response.status_code == 200, response.get_json()
    assert step_names(response.get_json()["result"]["steps"])[:4] == ["resolve", "connect", "tls", "ehlo"]
    assert handler.received[0].tls is True


def test_the_ehlo_step_lists_the_server_capabilities_before_and_after_starttls(
    client: FlaskClient, certificates: Certificates
) -> None:
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    with smtp_server(starttls=certificates.server, authenticator=auth, auth_require_tls=True) as (port, _):
        configure(client, port, encryption="StartTLS", username="mailer", password=EXAMPLE_PASSWORD)
        steps = {step["name"]: step["detail"] for step in send(client).get_json()["result"]["steps"]}
    # Before TLS the server hides AUTH (auth_require_tls); after STARTTLS it offers its mechanisms.
    assert "capabilities: " in steps["ehlo"] and "STARTTLS" in steps["ehlo"] and "SIZE 33554432" in steps["ehlo"]
    assert "AUTH" not in steps["ehlo"]
    assert "capabilities after STARTTLS: " in steps["starttls"] and "AUTH LOGIN PLAIN" in steps["starttls"]


def test_a_dry_run_checks_sender_and_recipient_and_delivers_nothing(app: Flask, client: FlaskClient) -> None:
    with smtp_server() as (port, handler):
        configure(client, port)
        response = send(client, dry_run=True)
    assert response.status_code == 200, response.get_json()
    result = response.get_json()["result"]
    assert result["sent"] is False and result["checked"] is True
    assert "nothing was sent" in result["message"]
    assert step_names(result["steps"]) == ["resolve", "connect", "ehlo", "mail_from", "rcpt_to"]
    assert handler.accepted_recipients == [RECIPIENT]  # the server did check the recipient
    assert handler.received == [] and handler.resets == 1  # nothing delivered; the envelope reset
    from settings_ui import audit

    with app.app_context(), database.engine().connect() as connection:
        [event, *_] = audit.recent_changes(connection, 1)
    assert event.action == "test email checked (not sent)"


def test_a_dry_run_reports_a_refused_sender_like_a_test(client: FlaskClient) -> None:
    with smtp_server(RecordingHandler(refuse_sender=True)) as (port, handler):
        configure(client, port)
        failed(send(client, dry_run=True), "mail_from", "refused the sender", "from_email")
    assert handler.received == []


def test_a_host_name_is_resolved(client: FlaskClient) -> None:
    with smtp_server() as (port, handler):
        configure(client, port, smtp_host="localhost")
        response = send(client)
    assert response.status_code == 200, response.get_json()
    assert "127.0.0.1" in response.get_json()["result"]["steps"][0]["detail"]
    assert len(handler.received) == 1


# --- Each failure class --------------------------------------------------------------------------


def test_host_not_found(client: FlaskClient) -> None:
    configure(client, 25, smtp_host="no-such-host.invalid")
    failed(send(client), "resolve", "no-such-host.invalid", "smtp_host")


def test_connection_refused(client: FlaskClient) -> None:
    port = free_port()
    configure(client, port)
    failed(send(client), "connect", "refused", "smtp_port")


def test_a_silent_server_times_out_within_the_limit(client: FlaskClient) -> None:
    with silent_server() as port:
        configure(client, port)
        started = time.monotonic()
        error = failed(send(client), "ehlo", "no SMTP greeting", f"within {TIMEOUT:g} s", "TLS")
        took = time.monotonic() - started
    assert error["elapsed_ms"] <= TIMEOUT * 1000 + 500
    assert took < TIMEOUT + 3  # bounded: the deadline, not a performance figure


def test_a_sign_in_the_server_delays_is_explained_as_such_not_as_a_firewall(client: FlaskClient) -> None:
    slow = Authenticator("mailer", "right", delay=TIMEOUT + 1)
    with smtp_server(authenticator=slow) as (port, _handler):
        configure(client, port, username="mailer", password="right")
        error = failed(send(client), "auth", "delaying sign-ins", "Wait a minute before testing again")
    assert "firewall" not in error["message"] and "SMTP_TIMEOUT" not in error["message"]


def test_a_slow_drip_cannot_hold_the_test_past_the_limit(client: FlaskClient) -> None:
    with dripping_server() as port:
        configure(client, port)
        started = time.monotonic()
        failed(send(client), "ehlo", f"within {TIMEOUT:g} s")
        took = time.monotonic() - started
    assert took < TIMEOUT + 3


def test_tls_spoken_to_a_plain_port(client: FlaskClient) -> None:
    with smtp_server() as (port, handler):
        configure(client, port, encryption="TLS")
        failed(send(client), "tls", "did not speak TLS", "StartTLS", "587", "465")
    assert handler.received == []


def test_plain_spoken_to_a_tls_port(client: FlaskClient, certificates: Certificates) -> None:
    with smtp_server(implicit_tls=certificates.server) as (port, handler):
        configure(client, port, encryption="StartTLS")
        failed(send(client), "ehlo", "no SMTP greeting", "set encryption to TLS", "465")
    assert handler.received == []


def test_starttls_not_offered_never_continues_unencrypted(client: FlaskClient) -> None:
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    with smtp_server(authenticator=auth) as (port, handler):
        configure(client, port, encryption="StartTLS", username="mailer", password=EXAMPLE_PASSWORD)
        failed(send(client), "starttls", "does not offer STARTTLS", "unencrypted")
    assert auth.attempts == 0 and handler.received == []


def _assert_certificate_shown(error: dict[str, Any]) -> None:
    for fragment in ("subject", "issuer", "valid from", "SHA-256 fingerprint", "allow_selfsigned_certs"):
        assert fragment in error["message"], fragment


def test_an_untrusted_certificate_is_explained_and_allow_selfsigned_accepts_it(
    tmp_path: Path, certificates: Certificates
) -> None:
    app = make_app(tmp_path, SMTP_TIMEOUT=TIMEOUT)  # no SMTP_CA_FILE: our test CA is unknown here
    client = app.test_client()
    with smtp_server(starttls=certificates.server) as (port, handler):
        configure(client, port, encryption="StartTLS")
        error = failed(send(client), "starttls", "does not trust")
        _assert_certificate_shown(error)
        assert handler.received == []
        configure(client, port, encryption="StartTLS", allow_selfsigned_certs=True)
        response = send(client)
        assert response.status_code == 200, response.get_json()
        assert "certificate not checked" in response.get_json()["result"]["steps"][3]["detail"]
    assert len(handler.received) == 1


def test_an_unknown_authority_is_fixed_with_the_setting_as_typed_where_it_is_read(
    tmp_path: Path, certificates: Certificates
) -> None:
    """The page and the command line name the environment variable that works; the API the key."""
    from bs4 import BeautifulSoup

    app = make_app(tmp_path, SMTP_TIMEOUT=TIMEOUT)  # no SMTP_CA_FILE: our test CA is unknown here
    client = app.test_client()
    with smtp_server(implicit_tls=certificates.server) as (port, handler):
        configure(client, port, encryption="TLS")
        assert "add that authority with SMTP_CA_FILE." in failed(send(client), "tls")["message"]
        on_the_page = client.post("/test", data=_page_values(client) | {"to": RECIPIENT})
        fix = BeautifulSoup(on_the_page.get_data(as_text=True), "html.parser").select_one("#test-result .fix")
        assert "add that authority with SETTINGS_UI_SMTP_CA_FILE." in fix.get_text()
        typed = app.test_cli_runner().invoke(args=["email-settings", "test", "--to", RECIPIENT])
        assert typed.exit_code == 1 and "add that authority with SETTINGS_UI_SMTP_CA_FILE." in typed.output
    assert handler.received == []


def test_an_expired_certificate(client: FlaskClient, certificates: Certificates) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = certificates.context_for(
        "127.0.0.1", not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1)
    )
    with smtp_server(implicit_tls=expired) as (port, _):
        configure(client, port, encryption="TLS")
        error = failed(send(client), "tls", "expired", "Renew")
    _assert_certificate_shown(error)


def test_a_certificate_for_another_host(client: FlaskClient, certificates: Certificates) -> None:
    other = certificates.context_for("mail.other.example")
    with smtp_server(starttls=other) as (port, handler):
        configure(client, port, encryption="StartTLS")
        error = failed(send(client), "starttls", "not valid for the host name 127.0.0.1", "mail.other.example")
    _assert_certificate_shown(error)
    assert handler.received == []


def test_auth_not_offered(client: FlaskClient) -> None:
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)  # AUTH only after TLS, and this is Plain
    with smtp_server(authenticator=auth, auth_require_tls=True) as (port, handler):
        configure(client, port, username="mailer", password=EXAMPLE_PASSWORD)
        failed(send(client), "auth", "does not offer AUTH", "StartTLS or TLS")
    assert handler.received == []


def test_wrong_credentials(client: FlaskClient) -> None:
    from bs4 import BeautifulSoup

    auth = Authenticator("mailer", "the-right-one")
    with smtp_server(authenticator=auth) as (port, handler):
        configure(client, port, username="mailer", password=EXAMPLE_PASSWORD)
        response = send(client)
        failed(response, "auth", "rejected the username or password", "535")
        on_the_page = client.post("/test", data=_page_values(client) | {"to": RECIPIENT})
    assert EXAMPLE_PASSWORD not in response.get_data(as_text=True) + on_the_page.get_data(as_text=True)
    assert handler.received == []
    # The page names its fields by their labels, and leaves the same words in ordinary text alone.
    fix = " ".join(
        BeautifulSoup(on_the_page.get_data(as_text=True), "html.parser")
        .select_one("#test-result .fix")
        .get_text()
        .split()
    )
    assert "Check “Username” and “Password” (some providers need an app password for SMTP)." in fix


def test_a_temporary_sign_in_failure_is_not_blamed_on_the_password(client: FlaskClient) -> None:
    auth = Authenticator("mailer", EXAMPLE_PASSWORD, temporary_failure=True)
    with smtp_server(authenticator=auth) as (port, handler):
        configure(client, port, username="mailer", password=EXAMPLE_PASSWORD)
        error = failed(send(client), "auth", "temporary", "454", "Try again", "not mean the password is wrong")
    assert "rejected the username or password" not in error["message"]
    assert auth.attempts == 1 and handler.received == []


def test_sender_refused(client: FlaskClient) -> None:
    with smtp_server(RecordingHandler(refuse_sender=True)) as (port, _):
        configure(client, port)
        failed(send(client), "mail_from", f"refused the sender {SENDER}", "553", "check from_email".capitalize())


@pytest.mark.parametrize(
    ("reply", "named"),
    [
        ("554 5.7.1 <noreply@example.com>: Sender address rejected: not owned by user mailer", "Check from_email"),
        ("550 5.7.60 SMTP; Client does not have permissions to send as this sender", "Check from_email"),
        ("554 5.2.252 SendAsDenied; mailer@example.com not allowed to send as noreply@example.com", "from_email"),
        ("553 5.1.8 <noreply@example.com>: Sender address rejected: Domain not found", "Check from_email"),
        ("530 5.7.0 Must issue a STARTTLS command first", "set encryption to StartTLS"),
        ("504 5.5.2 <vm>: Helo command rejected: need fully-qualified hostname", "SMTP_EHLO_NAME"),
        ("450 4.7.1 <rcpt@example.org>: Recipient address rejected: greylisted, try again", "try again"),
    ],
)
def test_a_refusal_at_rcpt_names_the_setting_the_reply_is_about(client: FlaskClient, reply: str, named: str) -> None:
    with smtp_server(RecordingHandler(recipient_reply=reply)) as (port, handler):
        configure(client, port)
        error = failed(send(client), "rcpt_to", reply.split(" ", 1)[0], named)
    assert "Check the recipient address" not in error["message"]
    assert handler.received == []


def test_recipient_refused(client: FlaskClient) -> None:
    with smtp_server(RecordingHandler(refuse_recipient=True)) as (port, handler):
        configure(client, port)
        failed(send(client), "rcpt_to", f"refused the recipient {RECIPIENT}", "550", "User unknown")
    assert handler.received == []


# --- Drafts and the stored password ----------------------------------------------------------


def test_a_draft_is_tested_and_never_stored(app: Flask, client: FlaskClient) -> None:
    configure(client, free_port())  # stored: a port where nothing listens
    before = stored_row(app)
    with smtp_server() as (port, handler):
        response = send(client, settings={"smtp_port": port, "from_email": "draft@example.com"})
    assert response.status_code == 200, response.get_json()
    assert handler.received[0].mail_from == "draft@example.com"
    assert stored_row(app) == before | {"version": before["version"]}


def test_a_draft_is_validated_like_edit(app: Flask, client: FlaskClient) -> None:
    with smtp_server() as (port, handler):
        configure(client, port)
        before = stored_row(app)
        error = assert_error(send(client, settings={"smtp_port": "587", "encryption": "SSL"}), 400, "smtp_port")
        assert set(error["fields"]) == {"smtp_port", "encryption"}
    assert handler.connections == 0
    assert stored_row(app) == before


def test_the_stored_password_is_reused_for_the_same_server(client: FlaskClient) -> None:
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    with smtp_server(authenticator=auth) as (port, handler):
        configure(client, port, username="mailer", password=EXAMPLE_PASSWORD)
        response = send(client, settings={"from_email": "other@example.com", "smtp_port": port})
    assert response.status_code == 200, response.get_json()
    assert handler.received[0].authenticated_as == "mailer"


@pytest.mark.parametrize(
    "change",
    [
        {"smtp_host": "localhost"},
        {"encryption": "StartTLS"},
        {"username": "someone-else"},
        {"smtp_port": "other"},
        {"allow_selfsigned_certs": True},
    ],
)
def test_a_draft_for_another_server_must_bring_its_own_password(client: FlaskClient, change: dict[str, Any]) -> None:
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    with smtp_server(authenticator=auth) as (stored_port, _), smtp_server(authenticator=auth) as (other_port, other):
        configure(client, stored_port, username="mailer", password=EXAMPLE_PASSWORD)
        draft = {"smtp_port": other_port} if change == {"smtp_port": "other"} else change
        response = send(client, settings=draft)
        error = assert_error(response, 400, "password", "must be given again", "only ever sent to the server")
        assert set(error["fields"]) == {"password"}
        assert other.connections == 0 and auth.attempts == 0
        # With its own password it goes ahead (and that password is the one used).
        if "smtp_port" in draft:
            ok = send(client, settings=draft | {"password": EXAMPLE_PASSWORD})
            assert ok.status_code == 200, ok.get_json()
            assert other.received[0].authenticated_as == "mailer"


def test_a_stored_password_under_another_key_is_explained(tmp_path: Path, certificates: Certificates) -> None:
    from cryptography.fernet import Fernet

    first = make_app(tmp_path, SMTP_TIMEOUT=TIMEOUT)
    configure(first.test_client(), 2525, username="mailer", password=EXAMPLE_PASSWORD)
    (tmp_path / "instance" / "encryption.key").write_text(Fernet.generate_key().decode() + "\n")
    moved = make_app(tmp_path, SMTP_TIMEOUT=TIMEOUT)
    error = assert_error(send(moved.test_client()), 400, "password", "cannot be decrypted", "again")
    assert set(error["fields"]) == {"password"}


# --- The call itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({}, "to", "to is required"),
        ({"to": ""}, "to", "to is required"),
        ({"to": "a@example.com, b@example.com"}, "to", "one email address"),
        ({"to": 5}, "to", "must be a string"),
        ({"to": "a@example.com\r\nBcc: x@example.com"}, "to", "carriage return"),
        ({"to": RECIPIENT, "settings": []}, "settings", "must be an object"),
        ({"to": RECIPIENT, "cc": RECIPIENT}, "cc", "Unknown parameter"),
        ({"to": RECIPIENT, "dry_run": "yes"}, "dry_run", "must be a boolean"),
    ],
)
def test_bad_test_requests_send_nothing(
    app: Flask, client: FlaskClient, params: dict[str, Any], field: str, fragment: str
) -> None:
    with smtp_server() as (port, handler):
        configure(client, port)
        before = stored_row(app)
        assert_error(call(client, "test", params), 400, field, fragment)
    assert handler.connections == 0
    assert stored_row(app) == before


def test_testing_without_settings_says_what_is_missing(client: FlaskClient) -> None:
    error = assert_error(send(client), 400, "smtp_host is required")
    assert {"smtp_host", "smtp_port", "from_email"} <= set(error["fields"])


def test_tests_are_in_the_audit_trail(app: Flask, client: FlaskClient) -> None:
    with smtp_server() as (port, _):
        configure(client, port)
        send(client)
    configure(client, free_port())
    send(client)
    from settings_ui import audit

    with app.app_context(), database.engine().connect() as connection:
        events = audit.recent_changes(connection, 5)
    assert events[0].action == "test email failed" and "connect" in events[0].detail
    assert events[2].action == "test email sent" and RECIPIENT in events[2].detail


def test_other_requests_are_served_while_a_test_waits(app: Flask, live_server: LiveServer) -> None:
    with silent_server() as port:
        post_json(
            f"{live_server.url}/email-settings/edit",
            {"params": {"smtp_host": "127.0.0.1", "smtp_port": port, "from_email": SENDER}},
        )
        outcome: dict[str, Any] = {}

        def run_test() -> None:
            outcome["test"] = post_json(f"{live_server.url}/email-settings/test", {"params": {"to": RECIPIENT}})

        tester = threading.Thread(target=run_test)
        tester.start()
        time.sleep(0.3)  # the test is now waiting for a greeting that never comes
        status, body = post_json(f"{live_server.url}/email-settings/show", {"params": {}})
        assert status == 200 and body["result"]["smtp_port"] == port
        status, _ = post_json(f"{live_server.url}/email-settings/edit", {"params": {"smtp_port": 2525}})
        assert status == 200
        assert tester.is_alive()  # both answered while the test was still running
        tester.join(timeout=TIMEOUT + 5)
    assert outcome["test"][0] == 400


# --- The page's test button ----------------------------------------------------------------------


def _page_values(client: FlaskClient) -> dict[str, Any]:
    return form_values(page(client))


def test_the_page_tests_the_form_as_a_draft_and_remembers_the_recipient(app: Flask, client: FlaskClient) -> None:
    from bs4 import BeautifulSoup

    configure(client, free_port())
    before = stored_row(app)
    with smtp_server() as (port, handler):
        values = _page_values(client) | {"smtp_port": str(port), "to": RECIPIENT}
        response = client.post("/test", data=values)
    assert response.status_code == 200
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    result = soup.find(id="test-result")
    assert "Sent." in result.get_text() and result["role"] == "status"
    assert [li.find(class_="name").get_text(" ", strip=True) for li in soup.select("ol.steps li")][-1] == "data passed"
    assert soup.find("input", attrs={"name": "smtp_port"})["value"] == str(port)  # the draft stays in the form
    assert "saved only when you press Save settings" in result.get_text()
    assert len(handler.received) == 1
    assert stored_row(app) == before  # testing saved nothing
    later = BeautifulSoup(client.get("/").get_data(as_text=True), "html.parser")
    assert later.find("input", attrs={"name": "to"})["value"] == RECIPIENT
    assert "sent." in later.find(id="last-test").get_text()


def test_the_page_checks_without_sending_when_asked(app: Flask, client: FlaskClient) -> None:
    from bs4 import BeautifulSoup

    with smtp_server() as (port, handler):
        configure(client, port)
        before = stored_row(app)
        response = client.post("/test", data=_page_values(client) | {"to": RECIPIENT, "check_only": "1"})
    assert response.status_code == 200
    result = BeautifulSoup(response.get_data(as_text=True), "html.parser").find(id="test-result")
    assert "Checked." in result.get_text() and "nothing was sent" in result.get_text()
    assert "This tested the saved settings." in result.get_text()  # not "saved only when you press Save"
    assert "saved only when" not in result.get_text()
    assert handler.accepted_recipients == [RECIPIENT] and handler.received == []
    assert stored_row(app) == before
    later = BeautifulSoup(client.get("/").get_data(as_text=True), "html.parser")
    assert "checked, not sent." in later.find(id="last-test").get_text()


def test_the_page_lists_the_warnings_of_a_sent_test_in_its_own_words(client: FlaskClient) -> None:
    from bs4 import BeautifulSoup

    auth = Authenticator("mailer", EXAMPLE_PASSWORD)  # offered without TLS: the password goes in clear
    with smtp_server(authenticator=auth) as (port, handler):
        configure(client, port, username="mailer", password=EXAMPLE_PASSWORD)
        response = client.post("/test", data=_page_values(client) | {"to": RECIPIENT})
    assert response.status_code == 200 and len(handler.received) == 1
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    warnings = [li.get_text(" ", strip=True) for li in soup.select("#test-result .warnings li")]
    assert len(warnings) == 1 and "unencrypted" in warnings[0]
    assert "set “Encryption” to StartTLS or TLS" in warnings[0]  # the page's label, not the API name


def test_the_page_shows_a_failed_step(client: FlaskClient) -> None:
    from bs4 import BeautifulSoup

    configure(client, free_port())
    response = client.post("/test", data=_page_values(client) | {"to": RECIPIENT})
    assert response.status_code == 200
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    result = soup.find(id="test-result")
    assert result["role"] == "alert"
    assert "Not sent." in result.get_text() and "refused the connection" in result.get_text()
    failed_step = soup.select("ol.steps li")[-1]
    assert "connect failed" in failed_step.get_text(" ", strip=True)


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"to": ""}, "to", "Recipient is required"),
        ({"to": "not-an-address"}, "to", "not a valid email address"),
        ({"smtp_port": "99999"}, "smtp_port", "Port must be from 1 to 65535"),
        ({"smtp_host": "localhost"}, "password", "only ever sent to the server it was saved for"),
    ],
)
def test_the_page_shows_test_problems_at_their_field(
    app: Flask, client: FlaskClient, changes: dict[str, str], field: str, fragment: str
) -> None:
    from bs4 import BeautifulSoup

    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    with smtp_server(authenticator=auth) as (port, handler):
        configure(client, port, username="mailer", password=EXAMPLE_PASSWORD)
        before = stored_row(app)
        response = client.post("/test", data=_page_values(client) | {"to": RECIPIENT} | changes)
    assert response.status_code == 400
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    control = soup.find(attrs={"name": field})
    assert control["aria-invalid"] == "true"
    assert fragment in soup.find(id=f"{control['id']}-error").get_text()
    assert "No test email was sent" in soup.find(id="form-problem").get_text()
    assert handler.connections == 0 and auth.attempts == 0
    assert stored_row(app) == before


def test_a_non_ascii_username_and_password_sign_in_as_utf8(client: FlaskClient) -> None:
    auth = Authenticator("jörg@exämple.com", "pässwört-€-" + EXAMPLE_PASSWORD)
    with smtp_server(authenticator=auth) as (port, handler):
        configure(client, port, username="jörg@exämple.com", password="pässwört-€-" + EXAMPLE_PASSWORD)
        response = send(client)
    assert response.status_code == 200, response.get_json()
    assert handler.received[0].authenticated_as == "jörg@exämple.com"


def test_a_wrong_password_is_tried_once_only(client: FlaskClient) -> None:
    auth = Authenticator("mailer", "the-right-one")
    with smtp_server(authenticator=auth) as (port, _):
        configure(client, port, username="mailer", password=EXAMPLE_PASSWORD)
        error = assert_error(send(client), 400, "auth step failed", "rejected the username or password")
    assert auth.attempts == 1
    assert step_names(error["steps"])[-1] == "auth"


def test_a_server_reply_with_terminal_escapes_is_shown_escaped(app: Flask, client: FlaskClient) -> None:
    hostile = "550 5.1.1 \x1b]0;owned\x07\x1b[2J go away"
    with smtp_server(RecordingHandler(recipient_reply=hostile)) as (port, _):
        configure(client, port)
        response = send(client)
        cli = app.test_cli_runner().invoke(args=["email-settings", "test", "--to", RECIPIENT])
    error = assert_error(response, 400, "rcpt_to step failed", "\\x1b]0;owned\\x07\\x1b[2J go away")
    assert "\\u001b" not in response.get_data(as_text=True)  # JSON would write a raw ESC so
    assert "\x1b" not in error["steps"][-1]["detail"] and "\x07" not in error["message"]
    assert cli.exit_code != 0
    assert "\\x1b]0;owned" in cli.output and "\x1b" not in cli.output and "\x07" not in cli.output


def test_concurrent_tests_past_the_limit_get_429_and_the_server_keeps_answering(tmp_path: Path) -> None:
    """Twenty tests against a silent server, on gunicorn as production runs it (one worker)."""
    timeout = 4
    env = {"SETTINGS_UI_SMTP_TIMEOUT": str(timeout), "GUNICORN_WORKERS": "1"}
    with silent_server() as port:
        server = GunicornProcess(tmp_path / "instance", env)
        try:
            settings = {"smtp_host": "127.0.0.1", "smtp_port": port, "encryption": "Plain", "from_email": SENDER}
            outcomes: list[tuple[int, float, Any]] = []

            def one_test() -> None:
                started = time.monotonic()
                status, _, headers = post_json_with_headers(
                    f"{server.url}/email-settings/test", {"params": {"to": RECIPIENT, "settings": settings}}
                )
                outcomes.append((status, time.monotonic() - started, headers.get("Retry-After")))

            threads = [threading.Thread(target=one_test) for _ in range(20)]
            for thread in threads:
                thread.start()
            time.sleep(0.5)  # the tests are in flight
            started = time.monotonic()
            assert post_json(f"{server.url}/email-settings/show", {"params": {}})[0] == 200
            show_took = time.monotonic() - started
            for thread in threads:
                thread.join(timeout=60)
        finally:
            server.stop()
    statuses = sorted(status for status, _, _ in outcomes)
    assert len(outcomes) == 20
    assert statuses.count(400) == 2 and statuses.count(429) == 18  # the two allowed ones time out
    assert all(retry == str(timeout) for status, _, retry in outcomes if status == 429)
    assert max(took for _, took, _ in outcomes) < timeout + 1
    assert show_took < timeout / 2  # it did not wait for a test to end
