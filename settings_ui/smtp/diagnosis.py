"""What went wrong in an SMTP conversation, and what to change: pure functions from an
error, a reply or a certificate to words a person can act on."""

from __future__ import annotations

import enum
import hashlib
import ssl
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


_TRUST_FIX = (
    "If this is your own server and you trust it, turn on allow_selfsigned_certs "
    "(accept self-signed certificates); better, give the server a certificate from a trusted authority."
)


def certificate(code: int, message: str, host: str) -> tuple[str, str]:
    """Cause and fix for a certificate the TLS handshake refused with verification ``code``."""
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
        return (
            f"The server's certificate is not valid for the host name {host}.",
            "Set smtp_host to a name the certificate lists. " + _TRUST_FIX,
        )
    return f"The server's certificate was rejected: {message.rstrip('.')}.", _TRUST_FIX


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
    return (
        f"{where} did not answer within {waited} (the whole test may take at most SMTP_TIMEOUT).",
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


def describe_certificate(der: bytes) -> str:
    """Subject, names, issuer, validity and SHA-256 fingerprint, in one line."""
    from cryptography import x509  # only when a certificate is refused: kept out of start-up
    from cryptography.x509.oid import ExtensionOID

    certificate = x509.load_der_x509_certificate(der)
    try:
        names = certificate.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        listed = [str(n) for n in names.get_values_for_type(x509.DNSName)] + [
            str(n) for n in names.get_values_for_type(x509.IPAddress)
        ]
    except x509.ExtensionNotFound:
        listed = []
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
    return "; ".join(parts)


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
