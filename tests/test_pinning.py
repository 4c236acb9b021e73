"""Certificate pinning: trusting one certificate, by its SHA-256 fingerprint, and nothing else.

Against aiosmtpd servers with trustme certificates: from the test CA, from a foreign CA the app
does not trust, for other names, about to expire.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient

from .apps import make_app, stored_row
from .helpers import EXAMPLE_PASSWORD, assert_error, call, configure, form_values, page, step_details
from .smtp_servers import Authenticator, Certificates, smtp_server

TIMEOUT = 3.0
HOST = "127.0.0.1"
RECIPIENT = "admin@example.net"


@pytest.fixture
def app(tmp_path: Path, certificates: Certificates) -> Flask:
    return make_app(tmp_path, SMTP_TIMEOUT=TIMEOUT, SMTP_CA_FILE=str(certificates.ca_file))


def foreign_certificate(*names: str, **validity: Any) -> tuple[ssl.SSLContext, str]:
    """A server context whose certificate comes from an authority nobody here trusts, and its fingerprint."""
    leaf = trustme.CA().issue_cert(*names, **validity)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    return context, hashlib.sha256(der).hexdigest()


def colons(fingerprint: str) -> str:
    """The fingerprint as browsers and openssl show it: upper case, in pairs, with colons."""
    upper = fingerprint.upper()
    return ":".join(upper[i : i + 2] for i in range(0, 64, 2))


def configure_tls(client: FlaskClient, port: int, **overrides: Any) -> None:
    configure(client, port, **({"encryption": "TLS"} | overrides))


# --- The stored value --------------------------------------------------------------------------------


def test_a_pin_is_stored_as_64_lower_case_hex_digits_however_it_was_written(client: FlaskClient) -> None:
    _, fingerprint = foreign_certificate(HOST)
    configure_tls(client, 465, pinned_cert_sha256=colons(fingerprint))
    assert call(client, "show").get_json()["result"]["pinned_cert_sha256"] == fingerprint
    configure_tls(client, 465, pinned_cert_sha256="")
    assert call(client, "show").get_json()["result"]["pinned_cert_sha256"] == ""


@pytest.mark.parametrize("pin", ["abc", "g" * 64, "a" * 63, "a" * 65, 42, "::", " ", ":"])
def test_a_malformed_pin_is_refused_and_nothing_stored(app: Flask, client: FlaskClient, pin: Any) -> None:
    configure_tls(client, 465)
    before = stored_row(app)
    assert_error(call(client, "edit", {"pinned_cert_sha256": pin}), 400, "pinned_cert_sha256")
    assert stored_row(app) == before


def test_setting_changing_or_removing_a_pin_must_bring_the_password(app: Flask, client: FlaskClient) -> None:
    _, first = foreign_certificate(HOST)
    _, second = foreign_certificate(HOST)
    configure_tls(client, 465, username="mailer", password=EXAMPLE_PASSWORD)
    before = stored_row(app)
    error = assert_error(call(client, "edit", {"pinned_cert_sha256": first}), 400, "password", "pinned_cert_sha256")
    assert "password" in error["fields"]
    assert stored_row(app) == before
    configure_tls(client, 465, pinned_cert_sha256=first, password=EXAMPLE_PASSWORD)
    assert_error(call(client, "edit", {"pinned_cert_sha256": second}), 400, "password")
    # Without the pin, any certificate the checks accept (with allow_selfsigned_certs, any at all) is
    # trusted again: removing it, in an edit or a test's draft, needs the password too.
    pinned = stored_row(app)
    assert_error(call(client, "edit", {"pinned_cert_sha256": ""}), 400, "password", "pinned_cert_sha256")
    draft = {"to": "admin@example.net", "settings": {"pinned_cert_sha256": ""}}
    assert_error(call(client, "test", draft), 400, "password", "pinned_cert_sha256")
    assert stored_row(app) == pinned
    assert call(client, "edit", {"pinned_cert_sha256": "", "password": EXAMPLE_PASSWORD}).status_code == 200


# --- The TLS step with a pin -------------------------------------------------------------------------


@pytest.mark.parametrize("encryption", ["TLS", "StartTLS"])
def test_the_pinned_certificate_is_accepted_whatever_its_issuer_and_names(client: FlaskClient, encryption: str) -> None:
    context, fingerprint = foreign_certificate("mail.other.test")  # a foreign CA, another name
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    tls = {"implicit_tls": context} if encryption == "TLS" else {"starttls": context}
    with smtp_server(authenticator=auth, **tls) as (port, handler):
        configure_tls(
            client,
            port,
            encryption=encryption,
            pinned_cert_sha256=fingerprint,
            username="mailer",
            password=EXAMPLE_PASSWORD,
        )
        response = call(client, "test", {"to": RECIPIENT})
    assert response.status_code == 200, response.get_json()
    step = "tls" if encryption == "TLS" else "starttls"
    assert f"certificate pinned (sha256 {fingerprint})" in step_details(response)[step]
    assert response.get_json()["result"]["warnings"] == []
    assert len(handler.received) == 1 and auth.attempts == 1


def test_another_certificate_than_the_pinned_one_is_refused_with_both_fingerprints(
    client: FlaskClient, certificates: Certificates
) -> None:
    _, pinned = foreign_certificate(HOST)
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    # Even a certificate this machine trusts (the test CA's, valid for the host) is not the pinned one.
    with smtp_server(implicit_tls=certificates.server, authenticator=auth) as (port, handler):
        configure_tls(client, port, pinned_cert_sha256=pinned, username="mailer", password=EXAMPLE_PASSWORD)
        response = call(client, "test", {"to": RECIPIENT})
    error = assert_error(response, 400, "the tls step failed", "not the pinned one", pinned, "SHA-256 fingerprint")
    presented = step_details(response)["tls"]
    assert pinned in presented and presented.count("sha256 ") >= 1
    assert auth.attempts == 0 and handler.received == []  # nothing sent past the TLS step
    assert "impersonating" in error["message"]


def test_a_pinned_certificate_about_to_expire_is_a_warning(client: FlaskClient) -> None:
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=10)
    context, fingerprint = foreign_certificate(HOST, not_after=soon)
    with smtp_server(implicit_tls=context) as (port, _):
        configure_tls(client, port, pinned_cert_sha256=fingerprint)
        response = call(client, "test", {"to": RECIPIENT})
    assert response.status_code == 200, response.get_json()
    [warning] = response.get_json()["result"]["warnings"]
    assert "pinned certificate expires in" in warning and "pin will stop matching" in warning


def test_accepting_any_certificate_still_reports_what_it_saw(client: FlaskClient) -> None:
    context, fingerprint = foreign_certificate(HOST)
    with smtp_server(implicit_tls=context) as (port, _):
        configure_tls(client, port, allow_selfsigned_certs=True)
        response = call(client, "test", {"to": RECIPIENT})
    assert response.status_code == 200, response.get_json()
    tls = step_details(response)["tls"]
    assert "not checked" in tls and "subject " in tls and "issuer " in tls and colons(fingerprint) in tls
    [warning] = response.get_json()["result"]["warnings"]
    assert "not checked" in warning and "pinned_cert_sha256" in warning


# --- The page's "Trust this certificate" -----------------------------------------------------------


def test_trust_this_certificate_pins_it_in_the_form_and_saving_it_makes_the_test_pass(
    app: Flask, client: FlaskClient
) -> None:
    context, fingerprint = foreign_certificate(HOST)
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    with smtp_server(implicit_tls=context, authenticator=auth) as (port, handler):
        configure_tls(client, port, username="mailer", password=EXAMPLE_PASSWORD)
        before = stored_row(app)
        values = form_values(page(client)) | {"to": RECIPIENT}
        failed = BeautifulSoup(client.post("/test", data=values).get_data(as_text=True), "html.parser")
        button = failed.find("button", attrs={"name": "trust_certificate"})
        assert button is not None and button["value"] == fingerprint
        trusted = client.post("/trust", data=values | {"trust_certificate": button["value"]})
        soup = BeautifulSoup(trusted.get_data(as_text=True), "html.parser")
        assert soup.find("input", attrs={"name": "pinned_cert_sha256"})["value"] == fingerprint
        assert "Nothing is saved" in soup.find(id="trust-result").get_text()
        assert stored_row(app) == before  # only in the form
        form = form_values(soup)
        refused = client.post("/", data=form)  # a new pin needs the password
        assert refused.status_code == 400 and stored_row(app) == before
        assert client.post("/", data=form | {"password": EXAMPLE_PASSWORD}).status_code == 303
        assert stored_row(app)["pinned_cert_sha256"] == fingerprint
        response = call(client, "test", {"to": RECIPIENT})
    assert response.status_code == 200, response.get_json()
    assert len(handler.received) == 1


def test_the_page_advises_a_pin_where_any_certificate_is_accepted(client: FlaskClient) -> None:
    configure_tls(client, 465, allow_selfsigned_certs=True)
    assert "Pinning the server's own" in page(client).find(id="pin-advice").get_text()
    _, fingerprint = foreign_certificate(HOST)
    configure_tls(client, 465, pinned_cert_sha256=fingerprint)
    assert page(client).find(id="pin-advice") is None


def test_detect_leads_with_the_pin_of_the_certificate_it_could_not_verify(app: Flask, client: FlaskClient) -> None:
    context, fingerprint = foreign_certificate(HOST)
    before = stored_row(app)
    with smtp_server(implicit_tls=context) as (port, _):
        typed = form_values(page(client)) | {"smtp_host": HOST, "smtp_port": str(port), "from_email": "a@example.com"}
        response = client.post("/detect", data=typed)
        detected = BeautifulSoup(response.get_data(as_text=True), "html.parser")
        recommended = call(client, "detect", {"smtp_host": HOST, "ports": [port]}).get_json()["result"]["recommended"]
    assert recommended["pinned_cert_sha256"] == fingerprint and recommended["allow_selfsigned_certs"] is False
    result = detected.find(id="detect-result")
    assert "Detected, with its certificate pinned." in result.get_text()
    assert "notice-success" not in result["class"]  # not a green all-clear
    form = form_values(detected)
    assert (form["smtp_port"], form["encryption"], form["pinned_cert_sha256"]) == (str(port), "TLS", fingerprint)
    assert "allow_selfsigned_certs" not in form  # any certificate is not accepted: this one is pinned
    assert detected.find(id="certificate-section").has_attr("open")
    assert stored_row(app) == before
