"""The email settings' fields, declared once.

Each field's name, JSON type, unconfigured value, limits, published description and the
rule that checks and normalises a value: the API's parsing, the service's rules, the
OpenAPI schema, the form's field list and the tests' key lists all read them from here.
Adding a field means a line here, a column in ``models.py`` with its migration, and its
place in the template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import rules


@dataclass(frozen=True)
class Field:
    name: str
    type: type
    """The JSON type of the published API: bool, int or str."""
    default: Any
    """The unconfigured value (what ``clear`` stores and a fresh install shows)."""
    description: str
    """As published in the API's documentation (and OpenAPI)."""
    normalize: Callable[[Any], Any] | None = None
    """Checks a non-empty value and returns it as stored; raises ValueError saying what is wrong."""
    required: str | None = None
    """Why the merged settings need a value here, when they do."""
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    write_only: bool = False
    """Never shown: the password."""
    multiline: bool = False
    """A text such as a JSON file: line breaks and tabs allowed, up to ``max_length``."""

    def json_schema(self) -> dict[str, Any]:
        """This field's JSON Schema as an edit parameter."""
        schema: dict[str, Any] = {"type": _JSON_TYPES[self.type], "description": self.description}
        if self.choices:
            schema["enum"] = list(self.choices)
        elif self.type is str:
            schema["pattern"] = MULTILINE if self.multiline else NO_CONTROL
        if self.minimum is not None:
            schema.update(minimum=self.minimum, maximum=self.maximum)
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return schema

    def stored_schema(self) -> dict[str, Any]:
        """This field's JSON Schema as stored: a parameter, or the unconfigured default (an empty host, port 0)."""
        schema = self.json_schema()
        if self.minimum is not None:
            schema["minimum"] = min(self.minimum, self.default)
        return schema


_JSON_TYPES = {bool: "boolean", int: "integer", str: "string"}
NO_CONTROL = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"  # no control character (rules.check_no_control_characters)
MULTILINE = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$"  # but for tabs and line breaks


FIELDS: tuple[Field, ...] = (
    Field(
        "allow_selfsigned_certs",
        bool,
        False,
        "switch off every check of the server certificate (issuer, dates, host name): any server "
        "answering for smtp_host is then trusted",
    ),
    Field(
        "auth_method",
        str,
        "password",
        'how to sign in: "password" (username and password), "oauth2" (an OAuth 2.0 access token got by '
        "the client-credentials grant, sent with AUTH XOAUTH2; username is then the mailbox to send as), or "
        '"google_service_account" (a Google Workspace service account with domain-wide delegation acting as '
        "the mailbox in username, by the JWT bearer grant, then AUTH XOAUTH2)",
        normalize=rules.check_auth_method,
        choices=rules.AUTH_METHODS,
    ),
    Field(
        "encryption",
        str,
        "Plain",
        "type of connection to use to SMTP server",
        normalize=rules.check_encryption,
        choices=rules.ENCRYPTIONS,
    ),
    Field(
        "from_email",
        str,
        "",
        "from email address for outgoing emails (one address; stored normalized)",
        normalize=rules.normalize_email,
        required="is required: the address your mail is sent from",
        max_length=rules.TEXT_MAX_LENGTH,
    ),
    Field(
        "google_service_account_key",
        str,
        None,
        'the Google service account\'s JSON key, as downloaded (write-only, stored encrypted; "" removes it). '
        "While one is stored, an edit that changes smtp_host, smtp_port, encryption or username, turns "
        "allow_selfsigned_certs on, or sets or changes pinned_cert_sha256 must give it again",
        normalize=rules.normalize_service_account_key,
        max_length=rules.SERVICE_ACCOUNT_KEY_MAX_LENGTH,
        write_only=True,
        multiline=True,
    ),
    Field(
        "oauth2_client_id",
        str,
        "",
        "OAuth 2.0 client id (Microsoft: the application (client) ID of the app registration)",
        max_length=rules.TEXT_MAX_LENGTH,
    ),
    Field(
        "oauth2_client_secret",
        str,
        None,
        'OAuth 2.0 client secret (write-only, stored encrypted; "" removes it). While one is stored, an edit '
        "that changes oauth2_token_url, oauth2_client_id, smtp_host, smtp_port, encryption or username, turns "
        "allow_selfsigned_certs on, or sets or changes pinned_cert_sha256 must give it again",
        max_length=rules.TEXT_MAX_LENGTH,
        write_only=True,
    ),
    Field(
        "oauth2_scope",
        str,
        "",
        "OAuth 2.0 scope (Microsoft 365: https://outlook.office365.com/.default)",
        max_length=rules.TEXT_MAX_LENGTH,
    ),
    Field(
        "oauth2_token_url",
        str,
        "",
        "OAuth 2.0 token endpoint: an https:// URL (http:// only for a loopback host)",
        normalize=rules.normalize_token_url,
        max_length=2048,
    ),
    Field(
        "password",
        str,
        None,
        'password to use to authenticate to SMTP server (write-only; "" removes it). While one is stored, an '
        "edit that changes smtp_host, smtp_port, encryption or username, turns allow_selfsigned_certs on, or "
        "sets or changes pinned_cert_sha256 must give it again: the stored password is only ever sent to the "
        "server it was saved for",
        max_length=rules.TEXT_MAX_LENGTH,
        write_only=True,
    ),
    Field(
        "pinned_cert_sha256",
        str,
        "",
        "SHA-256 fingerprint of the one certificate the server may present (64 hex digits, colons "
        'allowed; "" for none). With a pin, TLS succeeds only for exactly that certificate, whatever its '
        "issuer, names or dates; setting or changing it, like turning allow_selfsigned_certs on, must give "
        "the password again",
        normalize=rules.normalize_fingerprint,
        max_length=95,  # 32 pairs of digits with 31 colons
    ),
    Field(
        "smtp_host",
        str,
        "",
        "host name or IP address of SMTP server",
        normalize=rules.normalize_host,
        required="is required: the host name or IP address of your SMTP server",
        max_length=rules.HOST_MAX_LENGTH + 2,  # a trailing dot, or brackets around an IPv6 address
    ),
    Field(
        "smtp_port",
        int,
        0,
        "port number of SMTP server",
        normalize=rules.check_port,
        required=f"is required: a port from {rules.PORT_MIN} to {rules.PORT_MAX}",
        minimum=rules.PORT_MIN,
        maximum=rules.PORT_MAX,
    ),
    Field(
        "transport",
        str,
        "smtp",
        'how mail leaves: "smtp" (through smtp_host), or "microsoft_graph" (Microsoft Graph\'s sendMail for '
        "the mailbox in username, with auth_method oauth2; smtp_host, smtp_port and encryption are then not "
        "needed)",
        normalize=rules.check_transport,
        choices=rules.TRANSPORTS,
    ),
    Field(
        "username",
        str,
        "",
        "username to use to authenticate to SMTP server",
        max_length=rules.TEXT_MAX_LENGTH,
    ),
)
"""In the published API's (alphabetical) order."""

BY_NAME: dict[str, Field] = {field.name: field for field in FIELDS}
PARAMETERS: tuple[str, ...] = tuple(BY_NAME)
"""The parameters of ``edit``."""
PUBLIC: tuple[str, ...] = tuple(field.name for field in FIELDS if not field.write_only)
"""The keys of the ``email_settings`` object: every field but the password."""
UNCONFIGURED: dict[str, Any] = {field.name: field.default for field in FIELDS if not field.write_only}
"""The public fields of a fresh install, and after ``clear``."""
SECRETS: tuple[str, ...] = tuple(field.name for field in FIELDS if field.write_only)
"""The write-only parameters: each stored encrypted in its column ``<name>_encrypted``, never shown."""


def encrypted_column(name: str) -> str:
    """The column that holds the secret parameter ``name``, encrypted."""
    return f"{name}_encrypted"
