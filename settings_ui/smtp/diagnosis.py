"""What went wrong in an SMTP conversation, and what to change: pure functions from an
error, a reply or a certificate to words a person can act on."""

from __future__ import annotations

import enum
import hashlib
import re
import ssl
import urllib.parse
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import aiosmtplib

if TYPE_CHECKING:
    from cryptography import x509


class VerifyError(enum.IntEnum):
    """OpenSSL's certificate verification codes (``X509_V_ERR_*``) that we explain."""

    UNABLE_TO_GET_ISSUER_CERT = 2
    CERT_NOT_YET_VALID = 9
    CERT_HAS_EXPIRED = 10
    DEPTH_ZERO_SELF_SIGNED_CERT = 18
    SELF_SIGNED_CERT_IN_CHAIN = 19
    UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
    UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
    HOSTNAME_MISMATCH = 62
    IP_ADDRESS_MISMATCH = 64


_SWITCH_WARNING = (
    "Turning on allow_selfsigned_certs also makes the test pass, but it switches off every "
    "certificate check: then any server that answers for this host is trusted."
)
_TRUST_FIX = "Best, give the server a certificate from an authority this machine trusts. " + _SWITCH_WARNING

EHLO_NAME_FIX = (
    "The server refused the name this machine gives in EHLO: set SMTP_EHLO_NAME to this machine's "
    "fully qualified domain name (one the server can look up)."
)

# Enhanced status codes that blame the sender address: RFC 3463's bad sender's mailbox and
# system address, and Exchange Online's SendAsDenied (5.2.252) and "no permission to send as" (5.7.60).
_SENDER_STATUSES = {"5.1.7", "5.1.8", "4.1.7", "4.1.8", "5.2.252", "5.7.60"}
_ENHANCED_STATUS = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3})\b")


def certificate(code: int, message: str, host: str, der: bytes | None = None) -> tuple[str, str]:
    """Cause and fix for a certificate the TLS handshake refused with verification ``code``.

    ``der`` is the certificate, when it could be fetched: a host name mismatch then names the
    host names it is valid for.
    """
    if code == VerifyError.CERT_HAS_EXPIRED:
        return "The server's certificate has expired.", "Renew the server's certificate. " + _TRUST_FIX
    if code == VerifyError.CERT_NOT_YET_VALID:
        return "The server's certificate is not valid yet (check the clocks).", _TRUST_FIX
    if code in (VerifyError.DEPTH_ZERO_SELF_SIGNED_CERT, VerifyError.SELF_SIGNED_CERT_IN_CHAIN):
        return f"The server's certificate is self-signed, so nothing vouches that this is really {host}.", _TRUST_FIX
    if code in (
        VerifyError.UNABLE_TO_GET_ISSUER_CERT,
        VerifyError.UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        VerifyError.UNABLE_TO_VERIFY_LEAF_SIGNATURE,
    ):
        return (
            "The server's certificate is signed by an authority this machine does not trust.",
            _TRUST_FIX + " Or add that authority with SMTP_CA_FILE.",
        )
    if code in (VerifyError.HOSTNAME_MISMATCH, VerifyError.IP_ADDRESS_MISMATCH):
        names = certificate_names(der) if der else []
        listed = " or ".join(names[:3])
        return (
            f"The server's certificate is not valid for the host name {host}"
            + (f"; it is valid for {', '.join(names)}." if names else "."),
            (f"Set smtp_host to {listed}, the name the certificate was made for. " if names else "")
            + "Or give the server a certificate for this host name. "
            + _SWITCH_WARNING,
        )
    return f"The server's certificate was rejected: {message.rstrip('.')}.", _TRUST_FIX


def pin_mismatch(presented: str, pinned: str) -> tuple[str, str]:
    """Cause and fix for a certificate that is not the pinned one (both SHA-256, lower-case hex)."""
    return (
        f"The server's certificate is not the pinned one: it presented sha256 {presented}, and "
        f"pinned_cert_sha256 is {pinned}.",
        "If the server's certificate was replaced on purpose, check the new one below and pin it instead "
        "(Trust this certificate, then save with the password). If not, something between this machine and "
        "the server may be impersonating it: do not trust it.",
    )


def expects_tls(where: str, port: int) -> tuple[str, str]:
    """Cause and fix for a server that sends no greeting but answers a TLS handshake."""
    return (
        f"{where} sent no SMTP greeting, but answered a TLS handshake: port {port} expects TLS "
        "from the start, as port 465 usually does.",
        "To use this port, set encryption to TLS; for StartTLS, use the server's submission port (usually 587).",
    )


def timeout(step: str, where: str, port: int, encryption: str, seconds: float) -> tuple[str, str]:
    """Cause and fix for a step that reached the deadline."""
    waited = f"{seconds:g} s"
    if step == "ehlo" and encryption != "TLS":
        return (
            f"{where} accepted the connection but sent no SMTP greeting within {waited}.",
            f"If port {port} expects TLS from the start (port 465 usually does), "
            "set encryption to TLS. Otherwise the server is overloaded or something between "
            "us holds the connection open.",
        )
    if step == "tls":
        return (
            f"{where} did not complete the TLS handshake and its SMTP greeting within {waited}.",
            f"If port {port} speaks plain SMTP, choose StartTLS (usually port 587) "
            "or Plain; for TLS use the server's TLS port (usually 465).",
        )
    if step == "auth":
        return (
            f"{where} took the sign-in but did not answer it within {waited}, though the connection, the "
            "greeting and the encryption all worked: the server is delaying sign-ins. Mail servers slow "
            "down after failed sign-ins (Dovecot's penalty grows with each one), or their sign-in "
            "service is slow.",
            "Wait a minute before testing again. If it goes on, check username and password: each wrong "
            "try makes the wait longer.",
        )
    if step == "starttls":
        return (
            f"{where} did not complete the StartTLS handshake within {waited}.",
            f"The server or something between us holds the encrypted connection. If port {port} expects "
            "TLS from the start (port 465 usually does), set encryption to TLS.",
        )
    if step in ("mail_from", "rcpt_to", "data"):
        return (
            f"{where} accepted the connection and the steps before, then did not answer the {step} step "
            f"within {waited}.",
            "The server is overloaded or checks mail slowly (a spam or virus scan). Try again later; if it "
            "goes on, tell the server's administrator.",
        )
    return (
        f"{where} did not answer within {waited}.",
        "Check that the host and port are right and that no firewall drops the traffic.",
    )


def error(step: str, problem: Exception, where: str) -> tuple[str, str]:
    """Cause and fix for an exception raised during ``step`` (a time-out aside)."""
    if isinstance(problem, aiosmtplib.SMTPServerDisconnected | ConnectionResetError | BrokenPipeError):
        return (
            f"{where} closed the connection during {step}.",
            "The server may limit connections from this machine, or expect another encryption on this port.",
        )
    if isinstance(problem, ssl.SSLError):
        return f"The TLS connection to {where} failed: {problem.reason or problem}.", ""
    if isinstance(problem, aiosmtplib.SMTPResponseException):
        return f"{where} answered {reply(problem.code, problem.message)}.", ""
    if isinstance(problem, OSError):
        return f"A network error occurred talking to {where}: {problem.strerror or problem}.", ""
    return f"An unexpected error occurred during {step}: {type(problem).__name__}.", ""


def is_temporary(code: int) -> bool:
    """A 4xx reply: the server may accept the same thing later (RFC 5321 4.2.1)."""
    return 400 <= code < 500


def refusal_fix(code: int, text: str, username: str, sender: str = "from_email") -> str:
    """What to change for a refused MAIL, RCPT or DATA, read from the reply's code and words.
    ``sender`` names where the envelope sender came from (``from_email``, or what a caller gave).

    Servers check many things at RCPT (Postfix's default ``smtpd_delay_reject``), so a refused
    recipient is often about the sender, the encryption, the client's name or its sign-in.
    Empty when the reply names none of those.
    """
    lowered = text.lower()
    status = enhanced_status(text)
    if "starttls" in lowered:
        return "The server accepts mail only over an encrypted connection: set encryption to StartTLS."
    if "helo" in lowered or "ehlo" in lowered:
        return EHLO_NAME_FIX
    if status in _SENDER_STATUSES or "sender address" in lowered or "sendasdenied" in lowered:
        if username:
            return f"Check {sender}: the server lets {username} send only as its own addresses."
        return f"Check {sender}: the server does not accept it as a sender."
    if "storedrv" in lowered and "logon failure" in lowered:
        return (
            f"On Microsoft 365 this means the app has no access to the mailbox {username or 'named in username'}: "
            "give its service principal permission on the mailbox (Add-MailboxPermission ... -AccessRights "
            "FullAccess), or send as a mailbox it may use."
        )
    if "authentication required" in lowered or (status == "5.7.0" and "auth" in lowered):
        return "The server accepts mail only after signing in: set username and password."
    if "relay" in lowered and not username:
        return "Without signing in, this server delivers only to its own domains: set username and password."
    if is_temporary(code):
        return "The server refused for now (a temporary failure): try again in a few minutes."
    return ""


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply's text, if any."""
    found = _ENHANCED_STATUS.match(text)
    return found.group(1) if found else None


_OAUTH_README = 'the README\'s "Microsoft 365 (OAuth 2.0)" section'
_GOOGLE_README = 'the README\'s "Google Workspace (service account)" section'
_MICROSOFT_535 = (
    "On Microsoft 365, 535 5.7.3 usually means that SMTP AUTH is off for the mailbox (admin center: the "
    "user, Mail, Manage email apps, Authenticated SMTP) or for the whole tenant"
)


_SMTP_AUTH_DISABLED = (
    "Microsoft 365 has SMTP AUTH switched off for this mailbox or the whole tenant (5.7.139). Switch it on for "
    "the mailbox (admin center: the user, Mail, Manage email apps, Authenticated SMTP; or "
    "Set-CASMailbox -SmtpClientAuthenticationDisabled $false), or, where the tenant keeps it off, send through "
    f"Microsoft Graph instead (transport microsoft_graph); see {_OAUTH_README}."
)


MICROSOFT_365_HOSTS = ("smtp.office365.com", "smtp-legacy.office365.com", "smtp.office365.us")

BASIC_AUTH_ENDING = (
    "Microsoft 365 switches password sign-in for SMTP (Basic authentication) off by default from the end of "
    "December 2026: it is time to sign in with OAuth 2.0 instead (the page's Microsoft 365 preset; see "
    f"{_OAUTH_README})."
)


def is_microsoft_365(host: str) -> bool:
    """Whether ``host`` is Microsoft 365's SMTP submission service."""
    return host.lower().rstrip(".") in MICROSOFT_365_HOSTS


def password_refusal_fix(code: int, text: bytes | str) -> str:
    """What to change when the server refused the username and password."""
    said = one_line(text)
    if "5.7.139" in said:
        return _SMTP_AUTH_DISABLED
    if "5.7.30" in said or "basic authentication is not supported" in said.lower():
        return (
            "This server no longer takes passwords for SMTP (Microsoft 365 is switching them off): set "
            f"auth_method to oauth2 and give the app registration's details; see {_OAUTH_README}."
        )
    if "5.7.3" in said and "authentication unsuccessful" in said.lower():
        return (
            f"{_MICROSOFT_535}, rather than a wrong password. Check that first, then username and password; "
            f"or sign in with OAuth 2.0 instead (see {_OAUTH_README})."
        )
    return "Check username and password (some providers need an app password for SMTP)."


def xoauth2_fix(code: int, text: bytes | str, *, google: bool = False) -> str:
    """What to change when the server refused an OAuth 2.0 token (AUTH XOAUTH2)."""
    said = one_line(text)
    if google:
        return (
            "Check username: the Workspace mailbox the service account acts as, in the domain that granted it "
            "domain-wide delegation with the scope https://mail.google.com/; and that Gmail is on for that user. "
            f"See {_GOOGLE_README}."
        )
    if "5.7.139" in said:
        return _SMTP_AUTH_DISABLED
    if "5.7.3" in said or "authentication unsuccessful" in said.lower():
        return (
            f"{_MICROSOFT_535}; or the app registration lacks the SMTP.SendAsApp application permission (with "
            "admin consent); or the app's service principal has no permission on the mailbox named in username "
            f"(Add-MailboxPermission). See {_OAUTH_README}."
        )
    return (
        "Check username (the mailbox to send as) and that the token is meant for this server "
        f"(oauth2_scope); see {_OAUTH_README}."
    )


def host_port_of(url: str) -> str:
    """The host (and port, if given) of ``url``, as a diagnosis names it."""
    return urllib.parse.urlsplit(url).netloc


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::1]:2525``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def certificate_names(der: bytes) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    from cryptography import x509

    return _names(x509.load_der_x509_certificate(der))


def _names(certificate: x509.Certificate) -> list[str]:
    from cryptography import x509

    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in names.get_values_for_type(x509.DNSName)] + [
        str(n) for n in names.get_values_for_type(x509.IPAddress)
    ]


def days_until_expiry(der: bytes) -> int:
    """Whole days until the certificate's end of validity (negative once expired)."""
    from cryptography import x509

    return (x509.load_der_x509_certificate(der).not_valid_after_utc - datetime.now(UTC)).days


def certificate_details(der: bytes) -> list[str]:
    """Subject, names, issuer, validity and SHA-256 fingerprint, one line each."""
    from cryptography import x509  # only when a certificate is refused: kept out of start-up

    certificate = x509.load_der_x509_certificate(der)
    listed = _names(certificate)
    fingerprint = hashlib.sha256(der).hexdigest().upper()
    fingerprint = ":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2))
    subject = _common_name(certificate.subject) or certificate.subject.rfc4514_string() or "(empty)"
    issuer = _common_name(certificate.issuer) or certificate.issuer.rfc4514_string() or "(empty)"
    parts = [f"subject {subject}"]
    if listed:
        parts.append(f"names {', '.join(listed)}")
    parts += [
        f"issuer {issuer}",
        f"valid from {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
        f"to {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
        f"SHA-256 fingerprint {fingerprint}",
    ]
    return parts


def _common_name(name: x509.Name) -> str:
    from cryptography.x509.oid import NameOID

    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def reply(code: int, text: bytes | str) -> str:
    return f"{code} {one_line(text)}".strip()


def one_line(text: bytes | str) -> str:
    """A server's (possibly multi-line) reply on one line, cut to a readable length."""
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return " ".join(message.split())[:300]
