"""The rules for email settings, each defined once.

The WTForms form and the JSON API both take their choices, ranges and checks
from here, so a value the page accepts is a value the API accepts and the
other way round.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import urllib.parse
from typing import Any

import idna
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

ENCRYPTIONS: tuple[str, ...] = ("Plain", "StartTLS", "TLS")
AUTH_METHODS: tuple[str, ...] = ("password", "oauth2", "google_service_account")
"""How to sign in: a password (AUTH PLAIN, LOGIN or CRAM-MD5), or an OAuth 2.0 token (AUTH XOAUTH2) got by
the client-credentials grant, or by a Google service account acting as the mailbox (RFC 7523)."""

SERVICE_ACCOUNT_KEY_MAX_LENGTH = 8 * 1024
"""A Google service account's JSON key is about 2.3 KB."""

TRANSPORTS: tuple[str, ...] = ("smtp", "microsoft_graph")
"""How mail leaves: through the SMTP server, or by Microsoft Graph's sendMail (for Microsoft 365 tenants
that keep SMTP AUTH off)."""

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
"""The scope a Graph token is asked for when oauth2_scope is empty."""

MICROSOFT_365_GRAPH: dict[str, Any] = {
    "transport": "microsoft_graph",
    "auth_method": "oauth2",
    "oauth2_token_url": "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token",
    "oauth2_scope": GRAPH_SCOPE,
}
"""The page's Microsoft 365 (Graph) preset: the admin replaces <tenant> and types the client id and secret."""

GOOGLE_WORKSPACE: dict[str, Any] = {
    "transport": "smtp",
    "smtp_host": "smtp.gmail.com",
    "smtp_port": 465,
    "encryption": "TLS",
    "auth_method": "google_service_account",
}
"""The page's Google Workspace preset: the admin pastes the service account's key and gives the mailbox."""

MICROSOFT_365: dict[str, Any] = {
    "transport": "smtp",
    "smtp_host": "smtp.office365.com",
    "smtp_port": 587,
    "encryption": "StartTLS",
    "auth_method": "oauth2",
    "oauth2_token_url": "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token",
    "oauth2_scope": "https://outlook.office365.com/.default",
}
"""The page's Microsoft 365 preset: the admin replaces <tenant> and types the client id and secret."""
"""Connection types, in the spelling of the published API."""

CONVENTIONAL_PORTS: dict[str, int] = {"Plain": 25, "StartTLS": 587, "TLS": 465}

PORT_MIN, PORT_MAX = 1, 65535
HOST_MAX_LENGTH = 253
TEXT_MAX_LENGTH = 1024
"""Longest username, password or address we store; no real SMTP value comes near it."""

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_INVALID_HOST = (
    "is not a valid host name: use letters, digits and hyphens between dots "
    "(for example smtp.example.com), or an IP address"
)
_NAMED_CHARACTERS = {"\r": "a carriage return", "\n": "a line break", "\0": "a NUL character"}
# Control characters (C0, DEL, C1) and lone surrogates, which are not text at all.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_no_control_characters(value: str, *, multiline_up_to: int | None = None) -> None:
    """Reject control characters, lone surrogates and overlong text. ``multiline_up_to``: a text such
    as a JSON file, never put in a command or a header, that may hold line breaks and tabs and be
    that long.

    CR, LF and NUL would inject lines into SMTP commands or mail headers; ESC and the
    other control characters drive the terminals that show a value; a lone surrogate
    cannot be stored or sent.
    """
    checked = value if multiline_up_to is None else value.translate(_LINE_BREAKS)
    found = _UNPRINTABLE.search(checked)
    if found:
        char = found.group()
        if "\ud800" <= char <= "\udfff":
            raise ValueError(f"must not contain a lone surrogate (U+{ord(char):04X}): it is not valid text")
        name = _NAMED_CHARACTERS.get(char) or f"a control character (U+{ord(char):04X})"
        raise ValueError(f"must not contain {name}")
    limit = multiline_up_to or TEXT_MAX_LENGTH
    if len(value) > limit:
        raise ValueError(f"must be at most {limit} characters")


_LINE_BREAKS = str.maketrans("", "", "\r\n\t")


def printable(text: str) -> str:
    """``text`` with control characters and lone surrogates escaped (ESC as ``\\x1b``): what a
    server or a user sent, safe to show on a terminal, a page or in a log."""
    return _UNPRINTABLE.sub(lambda found: found.group().encode("unicode_escape", "backslashreplace").decode(), text)


def normalize_host(value: str) -> str:
    """Return the host in canonical form: an IP literal or a lower-case DNS name.

    International names are accepted and stored in their ASCII (punycode) form, by UTS 46.
    """
    host = value.strip()
    if not host:
        raise ValueError("is required: the host name or IP address of your SMTP server")
    # The length and character rules hold for every form of host, IP literals included.
    if len(host.removesuffix(".")) > HOST_MAX_LENGTH:
        raise ValueError(f"must be at most {HOST_MAX_LENGTH} characters long")
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if "%" in literal:
        # Python's ipaddress accepts "fe80::1%anything" (a zone id); a zone names an
        # interface of this machine, never a mail server's address, and lets text through.
        raise ValueError("must not contain a zone id (the part after %): give the address alone")
    try:
        return str(ipaddress.ip_address(literal))
    except ValueError:
        pass
    if any(c.isspace() for c in host):
        raise ValueError("must be a host name without spaces, such as smtp.example.com")
    try:
        # UTS 46 with IDNA 2008, as browsers convert names ("straße.de" is xn--strae-oqa.de, not
        # strasse.de as Python's own IDNA 2003 codec makes it: another domain).
        ascii_host = host.lower() if host.isascii() else idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise ValueError(_INVALID_HOST) from None
    name = ascii_host.removesuffix(".")
    if len(name) > HOST_MAX_LENGTH:
        raise ValueError(f"must be at most {HOST_MAX_LENGTH} characters long")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise ValueError(_INVALID_HOST)
    return name


def check_port(value: int) -> int:
    if not PORT_MIN <= value <= PORT_MAX:
        raise ValueError(f"must be from {PORT_MIN} to {PORT_MAX}")
    return value


def check_encryption(value: str) -> str:
    if value not in ENCRYPTIONS:
        raise ValueError(f"must be one of {', '.join(ENCRYPTIONS)} (exactly as written)")
    return value


def normalize_service_account_key(value: str) -> str:
    """A Google service account's JSON key, checked and stored compact: a ``service_account`` key with
    ``private_key`` (an RSA key in PEM), ``client_email``, ``client_id`` and ``token_uri`` (https://)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = json.loads(value)
    except ValueError:
        raise ValueError("must be the service account's JSON key file, as downloaded (it is not JSON)") from None
    if not isinstance(key, dict) or key.get("type") != "service_account":
        raise ValueError('must be a service account\'s JSON key ("type": "service_account")')
    missing = [name for name in ("private_key", "client_email", "client_id", "token_uri") if not key.get(name)]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}: download a new JSON key for the service account")
    if not all(isinstance(key[name], str) for name in ("private_key", "client_email", "client_id", "token_uri")):
        raise ValueError("must hold private_key, client_email, client_id and token_uri as text")
    try:
        private_key = load_pem_private_key(key["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("holds a private_key that is not a PEM private key") from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ValueError("holds a private_key that is not an RSA key (Google signs with RS256)")
    try:
        normalize_token_url(key["token_uri"])
    except ValueError as problem:
        raise ValueError(f"has a token_uri that {problem}") from None
    return json.dumps(key, separators=(",", ":"), sort_keys=True)


def check_transport(value: str) -> str:
    if value not in TRANSPORTS:
        raise ValueError(f"must be one of {', '.join(TRANSPORTS)} (exactly as written)")
    return value


def check_auth_method(value: str) -> str:
    if value not in AUTH_METHODS:
        raise ValueError(f"must be one of {', '.join(AUTH_METHODS)} (exactly as written)")
    return value


def normalize_token_url(value: str) -> str:
    """An OAuth 2.0 token endpoint: an https:// URL, or http:// for a loopback host only."""
    url = value.strip()
    if not url:
        return ""
    if "<tenant>" in url:
        raise ValueError("still holds <tenant>: replace it with your tenant's ID or domain (onmicrosoft.com)")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(
            "must be an https:// URL, for example https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token"
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError("must use https:// (http:// only for a token endpoint on this machine)")
    if parts.username or parts.password:
        raise ValueError("must not hold a user name or password: the client id and secret have their own fields")
    try:
        port_ok = parts.port is None or PORT_MIN <= parts.port <= PORT_MAX
    except ValueError:  # not a number, or past 65535
        port_ok = False
    if not port_ok:
        raise ValueError(f"must have a port from {PORT_MIN} to {PORT_MAX} after the host name, or none")
    normalize_host(parts.hostname)
    return url


@functools.lru_cache(maxsize=4096)  # asked on every request while no admin is configured
def is_loopback(address: str | None) -> bool:
    """Whether ``address`` (an IP address, possibly in brackets, or ``localhost``) is this machine."""
    if not address:
        return False
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def normalize_fingerprint(value: str) -> str:
    """A SHA-256 certificate fingerprint as 64 lower-case hex digits; given with or without colons,
    in any case (as browsers, ``openssl x509 -fingerprint -sha256`` and the test's report show it);
    empty for no pin."""
    if value == "":
        return ""  # no pin
    digits = value.strip().replace(":", "").lower()
    if not _FINGERPRINT.match(digits):  # "::" or " " is not a way to say "no pin": it is refused
        raise ValueError(
            "must be a SHA-256 fingerprint: 64 hexadecimal digits, with or without colons "
            "(for example AB:12:…, as the test shows it)"
        )
    return digits


def normalize_email(value: str) -> str:
    """Return one email address in normalized form, or raise ValueError saying why not.

    Only the syntax is checked: no DNS look-up, so saving never waits on the network.
    """
    address = value.strip()
    if not address:
        raise ValueError("is required")
    if "," in address or ";" in address:
        raise ValueError("must be one email address, not a list")
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as error:
        problem = error
    local, _, domain = address.rpartition("@")
    if _is_internal(domain):
        # Internal names (corp.local, home.arpa, *.test, localhost) are common where this product
        # runs; email-validator refuses them as special-use, so only their syntax is checked.
        try:
            checked = validate_email(f"{local}@example.com", check_deliverability=False)
            return f"{checked.local_part}@{normalize_host(domain)}"
        except (EmailNotValidError, ValueError):
            pass
    raise ValueError(f"is not a valid email address: {problem}") from None


def _is_internal(domain: str) -> bool:
    name = domain.lower().removesuffix(".")
    return any(name == special or name.endswith("." + special) for special in SPECIAL_USE_DOMAIN_NAMES)
