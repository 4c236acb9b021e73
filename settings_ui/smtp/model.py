"""The words of an SMTP conversation: where to (:class:`SmtpTarget`), how (:class:`Options`),
what (:class:`Mail`), and what happened (:class:`Report`, made of :class:`Step`)."""

from __future__ import annotations

import hashlib
import ssl
import urllib.parse
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from ..shapes import Schema, to_json
from . import oauth2


@dataclass(frozen=True)
class SmtpTarget:
    """Everything needed to reach the SMTP server (the password in clear: keep it in memory only)."""

    smtp_host: str
    smtp_port: int
    encryption: str
    from_email: str
    username: str
    password: str = field(repr=False)
    allow_selfsigned_certs: bool
    pinned_cert_sha256: str = ""
    password_problem: str = ""
    """Why the password could not be had (SMTP_PASSWORD_FILE): the auth step fails with it."""
    auth_method: str = "password"
    oauth2_token_url: str = ""
    oauth2_client_id: str = ""
    oauth2_scope: str = ""
    oauth2_client_secret: str = field(default="", repr=False)
    transport: str = "smtp"
    """How mail leaves: "smtp", or "microsoft_graph" (sendMail as ``username``)."""
    google_service_account_key: str = field(default="", repr=False)

    @property
    def token_client(self) -> oauth2.TokenClient:
        """Who gets the OAuth 2.0 token for AUTH XOAUTH2: the app registration, or the Google service account."""
        if self.auth_method == "google_service_account":
            return oauth2.ServiceAccount(self.google_service_account_key, self.username)
        return oauth2.Client(self.oauth2_token_url, self.oauth2_client_id, self.oauth2_client_secret, self.oauth2_scope)

    @property
    def pinned(self) -> bool:
        """Whether one certificate, by its fingerprint, is all this target trusts."""
        return bool(self.pinned_cert_sha256) and self.encryption != "Plain"

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], password: str, **secrets: str) -> SmtpTarget:
        """The target the settings ``values`` (with more keys, perhaps), ``password`` and the other
        ``secrets`` (``oauth2_client_secret``, ``google_service_account_key``, ``password_problem``) describe."""
        described: dict[str, Any] = {name: values[name] for name in _TARGET_FIELDS}
        return cls(**(described | secrets | {"password": password}))


_TARGET_FIELDS = tuple(
    name
    for name in SmtpTarget.__dataclass_fields__
    if name not in ("password", "password_problem", "oauth2_client_secret", "google_service_account_key")
)


STEP_NAMES = (
    "resolve",
    "connect",
    "tls",
    "ehlo",
    "starttls",
    "token",
    "auth",
    "mail_from",
    "rcpt_to",
    "data",
    "send",
)


@dataclass
class Step:
    """One step of a conversation: how long it took, and what it found or why it failed."""

    name: Annotated[str, Schema(enum=list(STEP_NAMES))]
    ok: bool
    ms: Annotated[int, Schema(minimum=0)]
    detail: str


@dataclass
class Report:
    """The outcome of one test: ``sent`` only when the server accepted the message data;
    ``checked`` when the server accepted everything up to it (a dry run stops there)."""

    sent: bool
    steps: list[Step]
    elapsed_ms: int
    message: str
    warnings: list[str] = field(default_factory=list)
    # A failure in parts, for a page to lay out: why, what the certificate says (when one was
    # refused), what to change. ``message`` says all of it in one paragraph.
    cause: str = ""
    certificate: list[str] = field(default_factory=list)
    fix: str = ""
    checked: bool = False
    temporary: bool = False
    """A failure that may pass by itself (a time-out, the network, a 4xx reply): worth retrying."""
    # What the server showed: its EHLO capabilities by the step that read them (ehlo, and
    # starttls after encrypting), its certificate (DER), and whether that was verified.
    capabilities: dict[str, list[str]] = field(default_factory=dict)
    peer_certificate: bytes | None = field(default=None, repr=False)
    certificate_verified: bool = False

    def step_dicts(self) -> list[dict[str, Any]]:
        """The steps as the API lists them."""
        listed: list[dict[str, Any]] = to_json(self.steps)
        return listed

    @property
    def certificate_sha256(self) -> str | None:
        """The SHA-256 fingerprint of the certificate the server presented, if it presented one."""
        return hashlib.sha256(self.peer_certificate).hexdigest() if self.peer_certificate else None

    @property
    def failed_step(self) -> str | None:
        return next((step.name for step in self.steps if not step.ok), None)


@dataclass(frozen=True)
class Options:
    """How this machine talks to SMTP servers: the configuration's part of every conversation."""

    timeout: float
    """Seconds the whole conversation may take (SMTP_TIMEOUT)."""
    ca_file: str | None = None
    """Authorities trusted besides the system's (SMTP_CA_FILE)."""
    ehlo_name: str | None = None
    """The name given in EHLO (SMTP_EHLO_NAME); by default this machine's fully qualified domain
    name, or the address literal of the connection's local end (``[192.0.2.1]``) when it has none."""
    tls_minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    """The oldest TLS version accepted (SMTP_TLS_MINIMUM)."""
    graph_url: str = "https://graph.microsoft.com"
    """Microsoft Graph, or a national cloud's (MICROSOFT_GRAPH_URL)."""


TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


def tls_version(name: str) -> ssl.TLSVersion:
    """The TLS version named as OpenSSL and SMTP_TLS_MINIMUM spell it (``TLSv1.2``)."""
    if name not in TLS_VERSIONS:
        raise ValueError(f"must be one of {', '.join(TLS_VERSIONS)} (got {name!r})")
    with warnings.catch_warnings():  # TLSv1 and TLSv1_1 are deprecated names: naming them is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        return ssl.TLSVersion[name.replace(".", "_")]


def server_of(target: SmtpTarget, options: Options) -> tuple[str, int]:
    """Where ``target``'s mail goes: the SMTP server, or Graph's host (HTTPS)."""
    if target.transport == "microsoft_graph":
        graph = urllib.parse.urlsplit(options.graph_url)
        return graph.hostname or "", graph.port or (80 if graph.scheme == "http" else 443)
    return target.smtp_host, target.smtp_port


@dataclass(frozen=True)
class Mail:
    """One message to send: its envelope, and its bytes as they go out."""

    sender: str
    recipients: tuple[str, ...]
    content: bytes = field(repr=False)
    message_id: str = ""
    what: str = "The message"
    """How the report names it ("The test email")."""

    @property
    def international(self) -> bool:
        return not all(address.isascii() for address in (self.sender, *self.recipients))


NO_MAIL = Mail("", (), b"")
"""For a conversation that stops before MAIL FROM (detect's probes)."""
