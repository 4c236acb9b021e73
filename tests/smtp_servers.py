"""Real SMTP servers for the tests: aiosmtpd in a thread, with trustme certificates."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    mail_options: list[str]
    tls: bool
    authenticated_as: str | None


@dataclass
class RecordingHandler:
    """Accepts (or refuses, when told) and records every message with its envelope."""

    refuse_sender: bool = False
    refuse_recipient: bool = False
    recipient_reply: str | None = None  # answer RCPT with this instead
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    accepted_recipients: list[str] = field(default_factory=list)
    resets: int = 0

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> Any:
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.refuse_sender:
            return f"553 5.7.1 <{address}>: Sender address rejected: not owned by user"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.refuse_recipient:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if self.recipient_reply is not None:
            return self.recipient_reply
        envelope.rcpt_tos.append(address)
        self.accepted_recipients.append(address)
        return "250 OK"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.resets += 1
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data if session.authenticated else None
        self.received.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=message_from_bytes(envelope.original_content, policy=policy.default),  # type: ignore[arg-type]
                mail_options=list(envelope.mail_options),
                tls=session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
                authenticated_as=login.decode() if isinstance(login, bytes) else login,
            )
        )
        return "250 2.0.0 Ok: queued as TEST"


class Authenticator:
    """Accepts exactly one user name and password; counts the attempts."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        temporary_failure: bool = False,
        refusal: str | None = None,
        delay: float = 0.0,
    ):
        self.username, self.password = username.encode(), password.encode()
        self.delay = delay  # hold the answer, as a server does after failed sign-ins (Dovecot's penalty)
        self.temporary_failure = temporary_failure  # answer 454, as when the server's password store is down
        self.refusal = refusal  # answer this to every attempt (a provider that turned passwords off)
        self.attempts = 0

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        self.attempts += 1
        time.sleep(self.delay)
        if self.temporary_failure:
            return AuthResult(success=False, handled=False, message="454 4.7.0 Temporary authentication failure")
        if self.refusal:
            return AuthResult(success=False, handled=False, message=self.refusal)
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            self.username,
            self.password,
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


class _TLSController(Controller):
    """aiosmtpd's readiness probe would speak plain SMTP to an implicit-TLS port; skip it."""

    def _trigger_server(self) -> None:
        with contextlib.suppress(OSError), socket.create_connection((self.hostname, self.port), 1.0) as raw:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with context.wrap_socket(raw) as tls:
                tls.recv(1024)


@contextlib.contextmanager
def smtp_server(
    handler: RecordingHandler | None = None,
    *,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    authenticator: Authenticator | None = None,
    auth_require_tls: bool = False,
) -> Iterator[tuple[int, RecordingHandler]]:
    """Run an SMTP server on 127.0.0.1; yield its port and the handler that records what arrived."""
    handler = handler or RecordingHandler()
    kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": free_port(), "ready_timeout": 5}
    if starttls is not None:
        kwargs.update(tls_context=starttls, require_starttls=True)
    if authenticator is not None:
        kwargs.update(authenticator=authenticator, auth_require_tls=auth_require_tls)
    if implicit_tls is not None:
        controller: Controller = _TLSController(handler, ssl_context=implicit_tls, **kwargs)
    else:
        controller = Controller(handler, **kwargs)
    controller.start()
    try:
        yield controller.port, handler
    finally:
        controller.stop()


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel completes them) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@contextlib.contextmanager
def dripping_server(interval: float = 0.2) -> Iterator[int]:
    """Answers every connection with a greeting that never ends, one byte at a time."""
    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)

    def serve() -> None:
        clients = []
        while not stop.is_set():
            try:
                client, _ = listener.accept()
                client.sendall(b"220")
                clients.append(client)
            except TimeoutError:
                pass
            for client in clients:
                with contextlib.suppress(OSError):
                    client.sendall(b"-")
            stop.wait(interval)
        for client in clients:
            client.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@dataclass
class Certificates:
    ca_file: Path
    server: ssl.SSLContext  # a certificate for 127.0.0.1 and localhost from our test CA
    ca: trustme.CA

    def context_for(self, *names: str, **validity: Any) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*names, **validity).configure_cert(context)
        return context


def make_certificates(folder: Path) -> Certificates:
    """A test CA (its PEM file in ``folder``) and a server certificate for 127.0.0.1 and localhost."""
    ca = trustme.CA()
    ca_file = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return Certificates(ca_file, context, ca)
