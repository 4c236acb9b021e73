"""/email-settings/detect against real SMTP servers on several ports of 127.0.0.1.

Each server is aiosmtpd with trustme certificates: implicit TLS, StartTLS, plain, with a
certificate from an authority this machine does not trust, or a port that never answers.
Servers with an Authenticator record every AUTH they receive, so a test can prove a
password never reached one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from flask import Flask
from flask.testing import FlaskClient

from settings_ui import audit, database

from .apps import make_app, stored_row
from .helpers import EXAMPLE_PASSWORD, assert_error, call, form_values, page
from .smtp_servers import Authenticator, Certificates, RecordingHandler, free_port, silent_server, smtp_server

TIMEOUT = 2.0
HOST = "127.0.0.1"


@pytest.fixture
def app(tmp_path: Path, certificates: Certificates) -> Flask:
    return make_app(tmp_path, SMTP_TIMEOUT=TIMEOUT, SMTP_CA_FILE=str(certificates.ca_file))


def detect(client: FlaskClient, ports: list[int], **params: Any) -> dict[str, Any]:
    response = call(client, "detect", {"smtp_host": HOST, "ports": ports, **params})
    assert response.status_code == 200, response.get_json()
    assert EXAMPLE_PASSWORD not in response.get_data(as_text=True)
    return response.get_json()["result"]


def candidate(result: dict[str, Any], port: int, encryption: str) -> dict[str, Any]:
    return next(c for c in result["candidates"] if c["smtp_port"] == port and c["encryption"] == encryption)


def untrusted_context() -> Any:
    """A server certificate for 127.0.0.1 from an authority this machine does not trust."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert(HOST, "localhost").configure_cert(context)
    return context


@contextlib.contextmanager
def tls_server(context: Any, **kwargs: Any) -> Iterator[tuple[int, RecordingHandler]]:
    with smtp_server(implicit_tls=context, **kwargs) as server:
        yield server


@contextlib.contextmanager
def starttls_server(context: Any, **kwargs: Any) -> Iterator[tuple[int, RecordingHandler]]:
    with smtp_server(starttls=context, **kwargs) as server:
        yield server


# --- What is recommended ---------------------------------------------------------------------------


def test_verified_tls_is_preferred_to_starttls_and_starttls_to_plain(
    app: Flask, client: FlaskClient, certificates: Certificates
) -> None:
    before = stored_row(app)
    with (
        tls_server(certificates.server) as (tls_port, _),
        starttls_server(certificates.server) as (starttls_port, _),
        smtp_server() as (plain_port, _),
    ):
        everything = detect(client, [plain_port, starttls_port, tls_port])
        without_tls = detect(client, [plain_port, starttls_port])
        plain_only = detect(client, [plain_port])
    assert everything["recommended"] == {
        "smtp_host": HOST,
        "smtp_port": tls_port,
        "encryption": "TLS",
        "allow_selfsigned_certs": False,
    }
    assert "certificate is valid" in everything["message"]
    tls = candidate(everything, tls_port, "TLS")
    assert tls["ok"] and tls["connected"] and tls["greeted"] and tls["tls"]
    assert tls["certificate"]["verified"] is True and len(tls["certificate"]["sha256"]) == 64
    assert any(line.startswith("issuer ") for line in tls["certificate"]["details"])
    assert "SIZE 33554432" in tls["capabilities"]
    assert without_tls["recommended"]["smtp_port"] == starttls_port
    assert without_tls["recommended"]["encryption"] == "StartTLS"
    plain = candidate(without_tls, starttls_port, "Plain")
    assert plain["ok"] and "STARTTLS" in plain["capabilities"] and "offers StartTLS" in plain["detail"]
    # Only a server without any encryption, and no one to sign in: Plain, said to be readable.
    assert plain_only["recommended"]["encryption"] == "Plain"
    assert "readable" in plain_only["message"]
    assert not candidate(plain_only, plain_port, "TLS")["ok"]
    assert "does not offer STARTTLS" in candidate(plain_only, plain_port, "StartTLS")["detail"]
    assert stored_row(app) == before  # detect stores nothing


def test_plain_is_not_recommended_where_encryption_is_offered_even_unverified(client: FlaskClient) -> None:
    with starttls_server(untrusted_context()) as (port, handler):
        result = detect(client, [port])
    assert candidate(result, port, "Plain")["ok"] is True  # it would work, unencrypted
    starttls = candidate(result, port, "StartTLS")
    assert starttls["ok"] and starttls["certificate"]["verified"] is False
    assert "not trust" in starttls["certificate"]["problem"]
    assert result["recommended"]["encryption"] == "StartTLS"
    # The certificate it showed is pinned rather than any certificate accepted.
    assert result["recommended"]["allow_selfsigned_certs"] is False
    assert result["recommended"]["pinned_cert_sha256"] == starttls["certificate"]["sha256"]
    assert "pinned_cert_sha256 set to the certificate it showed" in result["message"]
    assert handler.received == []  # no mail is sent


def test_plain_is_never_recommended_to_someone_who_signs_in(client: FlaskClient) -> None:
    with smtp_server() as (port, _):
        result = detect(client, [port], username="mailer")
    assert candidate(result, port, "Plain")["ok"] is True
    assert result["recommended"] is None
    assert "never cross the network unencrypted" in result["message"]


def test_nothing_listening_recommends_nothing_and_says_why(client: FlaskClient) -> None:
    port = free_port()
    result = detect(client, [port])
    assert result["recommended"] is None
    assert all(not c["ok"] and not c["connected"] for c in result["candidates"])
    assert "refused the connection" in candidate(result, port, "TLS")["detail"]
    assert "Nothing worked" in result["message"]


def test_starttls_asked_of_a_tls_port_is_explained(client: FlaskClient, certificates: Certificates) -> None:
    with tls_server(certificates.server) as (port, _):
        result = detect(client, [port])
    assert result["recommended"]["encryption"] == "TLS"
    starttls = candidate(result, port, "StartTLS")
    # Not waited for (TLS on this port already won), or diagnosed as a TLS port: never "ok".
    assert not starttls["ok"] and starttls["detail"]


# --- Where a password may go -------------------------------------------------------------------------


def test_a_password_never_reaches_a_plain_port_or_an_unverified_certificate(client: FlaskClient) -> None:
    plain_auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    untrusted_auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    with (
        smtp_server(authenticator=plain_auth) as (plain_port, _),  # offers AUTH without encryption
        tls_server(untrusted_context(), authenticator=untrusted_auth) as (tls_port, _),
    ):
        result = detect(client, [plain_port, tls_port], username="mailer", password=EXAMPLE_PASSWORD)
    assert plain_auth.attempts == 0 and untrusted_auth.attempts == 0
    assert "AUTH LOGIN PLAIN" in candidate(result, plain_port, "Plain")["capabilities"]  # it was offered
    assert all(c["auth"] == "not tried" for c in result["candidates"])
    best = candidate(result, tls_port, "TLS")
    assert "sign-in was not tried" in best["detail"] and "verified" in best["detail"]
    assert result["recommended"]["smtp_port"] == tls_port and result["recommended"]["username"] == "mailer"


def test_credentials_are_tried_once_on_the_best_verified_candidate(
    client: FlaskClient, certificates: Certificates
) -> None:
    best_auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    other_auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    with (
        tls_server(certificates.server, authenticator=best_auth) as (tls_port, _),
        starttls_server(certificates.server, authenticator=other_auth, auth_require_tls=True) as (starttls_port, _),
    ):
        good = detect(client, [starttls_port, tls_port], username="mailer", password=EXAMPLE_PASSWORD)
        wrong = detect(client, [starttls_port, tls_port], username="mailer", password="not-the-password")
    assert best_auth.attempts == 2 and other_auth.attempts == 0  # once per detect, on the best only
    assert candidate(good, tls_port, "TLS")["auth"] == "ok" and "sign-in as mailer works" in good["message"]
    wrong_best = candidate(wrong, tls_port, "TLS")
    assert wrong_best["auth"] == "failed" and "rejected the username or password" in wrong_best["detail"]
    assert wrong["recommended"]["smtp_port"] == tls_port  # the port is right; the password is not


def test_the_stored_password_goes_only_where_it_was_saved_for(client: FlaskClient, certificates: Certificates) -> None:
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    with tls_server(certificates.server, authenticator=auth) as (tls_port, _):
        stored = {"smtp_host": HOST, "from_email": "noreply@example.com", "username": "mailer"}
        # Saved for another port: the detect's best candidate is not where the password belongs.
        call(client, "edit", stored | {"smtp_port": free_port(), "encryption": "TLS", "password": EXAMPLE_PASSWORD})
        elsewhere = detect(client, [tls_port], username="mailer")
        another_user = detect(client, [tls_port], username="someone")
        assert auth.attempts == 0
        assert "stored password goes only to the port and encryption" in candidate(elsewhere, tls_port, "TLS")["detail"]
        assert candidate(another_user, tls_port, "TLS")["auth"] == "not tried"
        # Saved for this very port and encryption: used, once.
        call(client, "edit", stored | {"smtp_port": tls_port, "encryption": "TLS", "password": EXAMPLE_PASSWORD})
        same = detect(client, [tls_port], username="mailer")
    assert auth.attempts == 1 and candidate(same, tls_port, "TLS")["auth"] == "ok"


# --- Bounded in time and in number ----------------------------------------------------------------


def test_a_silent_port_cannot_hold_detect_past_smtp_timeout(client: FlaskClient) -> None:
    with silent_server() as silent:
        started = time.monotonic()
        result = detect(client, [silent])
        took = time.monotonic() - started
    assert took < TIMEOUT + 1.5, took  # the behaviour: bounded by SMTP_TIMEOUT (bench/ has figures)
    assert result["recommended"] is None
    silent_tls = candidate(result, silent, "TLS")
    assert silent_tls["connected"] and not silent_tls["ok"]
    assert f"{TIMEOUT:g} s" in silent_tls["detail"]


def test_a_silent_port_ranked_above_a_verified_answer_gets_a_little_longer_only(
    tmp_path: Path, certificates: Certificates
) -> None:
    client = make_app(tmp_path, SMTP_TIMEOUT=8, SMTP_CA_FILE=str(certificates.ca_file)).test_client()
    with silent_server() as silent, tls_server(certificates.server) as (tls_port, _):
        result = detect(client, [silent, tls_port])
    assert result["recommended"]["smtp_port"] == tls_port
    assert f"after port {tls_port} (TLS, verified) had answered" in candidate(result, silent, "TLS")["detail"]
    assert result["elapsed_ms"] < 8000  # not the whole SMTP_TIMEOUT


def test_a_silent_port_ranked_below_a_verified_answer_is_not_waited_for(
    client: FlaskClient, certificates: Certificates
) -> None:
    with silent_server() as silent, tls_server(certificates.server) as (tls_port, _):
        result = detect(client, [tls_port, silent])
    assert result["recommended"]["smtp_port"] == tls_port
    assert "Not waited for" in candidate(result, silent, "TLS")["detail"]
    assert candidate(result, silent, "TLS")["waited"] is False  # not a failure: shown as not needed
    assert candidate(result, tls_port, "TLS")["waited"] is True
    assert result["elapsed_ms"] < TIMEOUT * 1000


def test_a_host_that_cannot_be_found_is_one_line_not_a_row_per_port(client: FlaskClient) -> None:
    result = detect(client, [465, 587, 25], smtp_host="nowhere.invalid")
    assert result["candidates"] == [] and result["recommended"] is None
    assert result["message"].startswith("nowhere.invalid cannot be found")


def test_detect_while_tests_hold_every_place_is_429(tmp_path: Path, certificates: Certificates) -> None:
    app = make_app(tmp_path, SMTP_TIMEOUT=TIMEOUT, MAX_CONCURRENT_TESTS=1)
    with silent_server() as silent, smtp_server() as (port, handler):
        call(app.test_client(), "edit", {"smtp_host": HOST, "smtp_port": silent, "from_email": "a@example.com"})
        waiting = threading.Thread(target=call, args=(app.test_client(), "test", {"to": "b@example.com"}))
        waiting.start()
        time.sleep(0.3)  # the test now waits for a greeting that never comes
        response = call(app.test_client(), "detect", {"smtp_host": HOST, "ports": [port]})
        waiting.join(timeout=TIMEOUT + 5)
    assert_error(response, 429, "Other test emails or detections are running")
    assert response.headers["Retry-After"] == str(round(TIMEOUT))
    assert handler.connections == 0


# --- Bad input changes nothing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({}, "smtp_host", "is required"),
        ({"smtp_host": "bad host"}, "smtp_host", "without spaces"),
        ({"smtp_host": HOST, "ports": []}, "ports", "non-empty list"),
        ({"smtp_host": HOST, "ports": "587"}, "ports", "not a string"),
        ({"smtp_host": HOST, "ports": [587, 587]}, "ports", "twice"),
        ({"smtp_host": HOST, "ports": [0]}, "ports", "from 1 to 65535"),
        ({"smtp_host": HOST, "ports": [True]}, "ports", "an integer"),
        ({"smtp_host": HOST, "ports": [1, 2, 3, 4, 5, 6, 7]}, "ports", "at most 6"),
        ({"smtp_host": HOST, "password": EXAMPLE_PASSWORD}, "username", "required when a password"),
        ({"smtp_host": HOST, "encryption": "TLS"}, "encryption", "Unknown parameter"),
    ],
)
def test_bad_detect_requests_probe_nothing_and_store_nothing(
    app: Flask, client: FlaskClient, params: dict[str, Any], field: str, fragment: str
) -> None:
    before = stored_row(app)
    response = call(client, "detect", params)
    error = assert_error(response, 400, field, fragment)
    assert field in error["fields"]
    assert EXAMPLE_PASSWORD not in response.get_data(as_text=True)
    assert stored_row(app) == before


def test_each_detect_is_in_the_audit_trail_without_the_password(
    app: Flask, client: FlaskClient, certificates: Certificates
) -> None:
    with tls_server(certificates.server, authenticator=Authenticator("mailer", EXAMPLE_PASSWORD)) as (port, _):
        detect(client, [port], username="mailer", password=EXAMPLE_PASSWORD)
    with app.app_context(), database.engine().connect() as connection:
        [event] = audit.recent_changes(connection, 1)
    assert event.action == "settings detected"
    assert f"{HOST}: {port} TLS; sign-in ok" in event.detail
    assert EXAMPLE_PASSWORD not in repr(event)


# --- The command line --------------------------------------------------------------------------------


def test_cli_detect_prints_the_table_and_the_recommendation(app: Flask, certificates: Certificates) -> None:
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    runner = app.test_cli_runner()
    with tls_server(certificates.server, authenticator=auth) as (tls_port, _), smtp_server() as (plain_port, _):
        ports = f"{plain_port},{tls_port}"
        args = ["email-settings", "detect", HOST, "--ports", ports, "--username", "mailer", "--password-stdin"]
        result = runner.invoke(args=args, input=f"{EXAMPLE_PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert EXAMPLE_PASSWORD not in result.output
    lines = result.output.splitlines()
    assert any(line.split()[:5] == [str(tls_port), "TLS", "ok", "verified", "ok"] for line in lines)
    assert any(line.split()[:3] == [str(plain_port), "Plain", "ok"] for line in lines)
    assert f'"smtp_port": {tls_port}' in result.output and auth.attempts == 1


def test_cli_detect_shows_a_probe_it_did_not_wait_for_as_skipped_not_failed(
    app: Flask, certificates: Certificates
) -> None:
    with silent_server() as silent, tls_server(certificates.server) as (tls_port, _):
        args = ["email-settings", "detect", HOST, "--ports", f"{tls_port},{silent}"]
        result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.split()[:3] == [str(silent), "TLS", "skip"] for line in lines), result.output


def test_cli_detect_exits_non_zero_when_nothing_works(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["email-settings", "detect", HOST, "--ports", str(free_port())])
    assert result.exit_code == 1
    assert "Nothing worked" in result.output and "refused the connection" in result.output
    bad = app.test_cli_runner().invoke(args=["email-settings", "detect", HOST, "--ports", "25,x"])
    assert bad.exit_code == 1 and "ports" in bad.output


# --- The page, without JavaScript ----------------------------------------------------------------


def test_the_page_detect_button_fills_port_and_encryption_without_saving(
    app: Flask, client: FlaskClient, certificates: Certificates
) -> None:
    from bs4 import BeautifulSoup

    before = stored_row(app)
    typed = form_values(page(client)) | {"smtp_host": "localhost", "from_email": "ops@example.com"}
    with tls_server(certificates.server) as (tls_port, _):
        # The port typed is tried first, then the usual ones (465, 587, 25, 2525).
        response = client.post("/detect", data=typed | {"smtp_port": str(tls_port), "encryption": "Plain"})
    assert response.status_code == 200
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    result = soup.find(id="detect-result")
    assert "Detected." in result.get_text() and "Nothing is saved" in result.get_text()
    assert soup.find("input", attrs={"name": "smtp_port"})["value"] == str(tls_port)
    assert soup.find("select", attrs={"name": "encryption"}).find("option", selected=True)["value"] == "TLS"
    assert soup.find("input", attrs={"name": "from_email"})["value"] == "ops@example.com"  # the rest as typed
    rows = soup.select("#detect-candidates tbody tr")
    assert [cell.get_text(strip=True) for cell in rows[0].find_all("td")][:4] == [
        str(tls_port),
        "TLS",
        "works",
        "verified",
    ]
    assert stored_row(app) == before


def test_the_page_shows_detect_problems_at_their_field(app: Flask, client: FlaskClient) -> None:
    from bs4 import BeautifulSoup

    before = stored_row(app)
    response = client.post("/detect", data=form_values(page(client)) | {"smtp_host": "bad host"})
    assert response.status_code == 400
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert "without spaces" in soup.find(id="smtp_host-error").get_text()
    assert soup.find(id="detect-result") is None
    assert stored_row(app) == before
