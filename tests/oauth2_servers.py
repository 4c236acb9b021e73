"""An OAuth 2.0 token endpoint and an SMTP server that takes XOAUTH2, for the tests.

The token endpoint is a small HTTP(S) server on 127.0.0.1 that answers what the test tells it and
records every request; the SMTP server is aiosmtpd with a handler method ``auth_XOAUTH2`` that
checks ``user=`` and the bearer token.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from .smtp_servers import Authenticator, RecordingHandler, free_port

TOKEN = "eyJ0eXAi.test-access-token.never-shown"
CLIENT_ID = "0b5c2a5e-1111-2222-3333-444455556666"
CLIENT_SECRET = "client-secret-Value-8Q~never-shown"
SCOPE = "https://outlook.office365.com/.default"
MAILBOX = "sender@contoso.example"


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 (HTTPS with ``tls``) until the block ends; yield its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls is not None else 'http'}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class TokenEndpoint:
    """What the endpoint answers (status and body, JSON unless bytes) and what it was asked."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3599})
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    redirect_to: str = ""
    """Answer 302 to this address instead."""
    drip: float = 0.0
    """Send the answer one byte every this many seconds."""
    hung_up_at: float | None = None
    """When (time.monotonic) the client hung up on a dripping answer."""


@contextlib.contextmanager
def token_endpoint(
    endpoint: TokenEndpoint | None = None, *, tls: ssl.SSLContext | None = None
) -> Iterator[TokenEndpoint]:
    """Serve ``endpoint`` on 127.0.0.1 (HTTPS with ``tls``); its ``url`` is the token URL."""
    endpoint = endpoint or TokenEndpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            endpoint.requests.append({name: values[0] for name, values in form.items()})
            body = endpoint.body if isinstance(endpoint.body, bytes) else json.dumps(endpoint.body).encode()
            if endpoint.redirect_to:
                self.send_response(302)
                self.send_header("Location", endpoint.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(endpoint.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not endpoint.drip:
                self.wfile.write(body)
                return
            try:
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(endpoint.drip)
            except OSError:
                endpoint.hung_up_at = time.monotonic()

        def log_message(self, *args: Any) -> None:  # quiet: pytest shows failures, not every request
            pass

    with serving(Handler, tls) as base:
        endpoint.url = f"{base}/tenant-id/oauth2/v2.0/token"
        yield endpoint


@dataclass
class XOAuth2Handler(RecordingHandler):
    """Accepts AUTH XOAUTH2 for ``mailbox`` with ``token``; records every attempt (user, token)."""

    mailbox: str = MAILBOX
    token: str = TOKEN
    refusal: str = "535 5.7.3 Authentication unsuccessful"
    attempts: list[tuple[str, str]] = field(default_factory=list)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        decoded = base64.b64decode(args[1]).decode()
        fields = dict(part.split("=", 1) for part in decoded.split("\x01") if "=" in part)
        user, bearer = fields.get("user", ""), fields.get("auth", "").removeprefix("Bearer ")
        self.attempts.append((user, bearer))
        if (user, bearer) == (self.mailbox, self.token):
            return AuthResult(success=True, auth_data=user)
        await server.push(self.refusal)
        return AuthResult(success=False, handled=True)


@contextlib.contextmanager
def xoauth2_server(
    starttls: ssl.SSLContext, handler: XOAuth2Handler | None = None
) -> Iterator[tuple[int, XOAuth2Handler]]:
    """A StartTLS SMTP server on 127.0.0.1 offering XOAUTH2 (and PLAIN/LOGIN, which refuse everyone)."""
    handler = handler or XOAuth2Handler()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        ready_timeout=5,
        tls_context=starttls,
        require_starttls=True,
        authenticator=Authenticator("nobody", "never"),
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield controller.port, handler
    finally:
        controller.stop()


def graph_token(*roles: str) -> str:
    """An access token shaped like Entra ID's for Graph: a JWT whose claims carry ``roles``."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    claims = {"aud": "https://graph.microsoft.com", "roles": list(roles)}
    return f"{part({'typ': 'JWT', 'alg': 'RS256'})}.{part(claims)}.sig"


@dataclass
class GraphEndpoint:
    """Microsoft Graph's sendMail, as the test tells it to answer; records every message it was given."""

    token: str = ""
    answers: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    """(status, JSON body, headers) for each request in turn; 202 Accepted once they run out."""
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@contextlib.contextmanager
def graph_endpoint(endpoint: GraphEndpoint, *, tls: ssl.SSLContext | None = None) -> Iterator[GraphEndpoint]:
    """Serve ``endpoint`` on 127.0.0.1 (HTTPS with ``tls``); its ``url`` is what MICROSOFT_GRAPH_URL names."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            endpoint.received.append(
                {
                    "path": self.path,
                    "authorization": self.headers.get("Authorization", ""),
                    "content_type": self.headers.get("Content-Type", ""),
                    "mime": base64.b64decode(body) if body else b"",
                }
            )
            if self.headers.get("Authorization") != f"Bearer {endpoint.token}":
                status, answer, headers = 401, {"error": {"code": "InvalidAuthenticationToken"}}, {}
            elif endpoint.answers:
                status, answer, headers = endpoint.answers.pop(0)
            else:
                status, answer, headers = 202, {}, {}
            payload = json.dumps(answer).encode() if answer else b""
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler, tls) as base:
        endpoint.url = base
        yield endpoint


GOOGLE_SCOPE = "https://mail.google.com/"


def service_account_key(token_uri: str, client_email: str = "mailer@project.iam.gserviceaccount.com") -> dict[str, str]:
    """A service account's JSON key as Google hands it out, with a fresh RSA key (PKCS #8 PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "project",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": client_email,
        "client_id": "109876543210987654321",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }


@dataclass
class GoogleTokenEndpoint:
    """Google's token endpoint for the JWT bearer grant: checks the JWT's signature with the key's public
    key and its claims, then answers ``error`` (and ``description``) if set, else a token."""

    public_key: Any = None
    mailbox: str = MAILBOX
    error: str = ""
    description: str = ""
    claims: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@contextlib.contextmanager
def google_token_endpoint(endpoint: GoogleTokenEndpoint) -> Iterator[GoogleTokenEndpoint]:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    def decoded(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
            answer: dict[str, Any] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3599}
            status = 200
            try:
                assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
                header, claims, signature = form["assertion"][0].split(".")
                endpoint.public_key.verify(
                    decoded(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
                )
                said = json.loads(decoded(claims))
                endpoint.claims.append(said)
                assert json.loads(decoded(header))["alg"] == "RS256"
                assert said["aud"] == endpoint.url and said["scope"] == GOOGLE_SCOPE
                assert 0 < said["exp"] - said["iat"] <= 3600 and abs(said["iat"] - time.time()) < 60
            except (AssertionError, KeyError, ValueError, InvalidSignature):
                status, answer = 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            if status == 200 and endpoint.error:
                status, answer = (
                    400 if endpoint.error != "unauthorized_client" else 401,
                    {
                        "error": endpoint.error,
                        "error_description": endpoint.description,
                    },
                )
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler, None) as base:
        endpoint.url = f"{base}/token"
        yield endpoint
