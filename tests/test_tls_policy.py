"""SMTP_TLS_MINIMUM: a server that offers only older TLS is refused, saying which version it offered."""

from __future__ import annotations

import re
import ssl
import warnings
from pathlib import Path

import pytest

from .apps import make_app
from .helpers import assert_error, call
from .smtp_servers import Certificates, smtp_server

RECIPIENT = "admin@example.net"


def tls_1_1_only(certificates: Certificates) -> ssl.SSLContext:
    """A server context limited to TLS 1.1, as an old appliance's (OpenSSL needs security level 0 for it)."""
    context = certificates.context_for("127.0.0.1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def draft(port: int, encryption: str) -> dict[str, object]:
    return {"smtp_host": "127.0.0.1", "smtp_port": port, "encryption": encryption, "from_email": "a@example.com"}


@pytest.mark.parametrize("encryption", ["TLS", "StartTLS"])
def test_a_server_offering_only_tls_1_1_is_refused_with_its_version_and_the_fix(
    tmp_path: Path, certificates: Certificates, encryption: str
) -> None:
    client = make_app(tmp_path, SMTP_TIMEOUT=3, SMTP_CA_FILE=str(certificates.ca_file)).test_client()
    tls = (
        {"implicit_tls": tls_1_1_only(certificates)}
        if encryption == "TLS"
        else {"starttls": tls_1_1_only(certificates)}
    )
    with smtp_server(**tls) as (port, handler):
        response = call(client, "test", {"to": RECIPIENT, "settings": draft(port, encryption)})
    step = "tls" if encryption == "TLS" else "starttls"
    error = assert_error(response, 400, f"the {step} step failed", "offers only TLSv1.1", "SMTP_TLS_MINIMUM (TLSv1.2)")
    assert "lower SMTP_TLS_MINIMUM to TLSv1.1" in error["message"]
    assert handler.received == []


def test_a_lowered_minimum_lets_the_old_server_through(tmp_path: Path, certificates: Certificates) -> None:
    app = make_app(tmp_path, SMTP_TIMEOUT=3, SMTP_CA_FILE=str(certificates.ca_file), SMTP_TLS_MINIMUM="TLSv1.1")
    with smtp_server(implicit_tls=tls_1_1_only(certificates)) as (port, handler):
        response = call(app.test_client(), "test", {"to": RECIPIENT, "settings": draft(port, "TLS")})
    assert response.status_code == 200, response.get_json()
    tls = next(step for step in response.get_json()["result"]["steps"] if step["name"] == "tls")
    assert tls["detail"].startswith("TLSv1.1;")
    assert len(handler.received) == 1


def test_an_unknown_minimum_stops_the_start_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("SMTP_TLS_MINIMUM must be one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3")):
        make_app(tmp_path, SMTP_TLS_MINIMUM="SSLv3")
