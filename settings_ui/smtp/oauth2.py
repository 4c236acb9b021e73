"""OAuth 2.0 access tokens for AUTH XOAUTH2: the client-credentials grant, each failure explained.

A token is kept in this process until a minute before it expires, then fetched again; each
process (web worker, sendmail run) keeps its own. TLS to the token endpoint is always verified,
with SMTP_CA_FILE's authorities too; http:// is accepted for a loopback endpoint only (checked
when the URL is stored).
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from . import bounded_http

# Renew a token this long before the endpoint says it expires.
_RENEW_BEFORE = 60.0


@dataclass(frozen=True)
class Client:
    """An OAuth 2.0 client of the token endpoint (the secret in clear: keep it in memory only)."""

    token_url: str
    client_id: str
    secret: str = field(repr=False)
    scope: str = ""

    @property
    def _key(self) -> str:
        # The secret is part of the key, hashed: a new secret never gets a token fetched with the old one.
        material = "\0".join((self.token_url, self.client_id, self.scope, self.secret))
        return hashlib.sha256(material.encode()).hexdigest()

    def grant(self) -> dict[str, str]:
        """The token request's form: the client-credentials grant."""
        body = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.secret}
        if self.scope:
            body["scope"] = self.scope
        return body


GOOGLE_MAIL_SCOPE = "https://mail.google.com/"
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_ASSERTION_LIFETIME = 3600  # seconds: Google's longest


@dataclass(frozen=True)
class ServiceAccount:
    """A Google service account acting as the mailbox ``subject`` (domain-wide delegation): its token
    is got by the JWT bearer grant (RFC 7523), a JWT signed with its private key (RS256)."""

    key: str = field(repr=False)
    """The service account's JSON key, as stored (checked by rules.normalize_service_account_key)."""
    subject: str
    scope: str = GOOGLE_MAIL_SCOPE

    @property
    def _fields(self) -> dict[str, str]:
        parsed: dict[str, str] = json.loads(self.key)
        return parsed

    @property
    def token_url(self) -> str:
        return self._fields["token_uri"]

    @property
    def client_id(self) -> str:
        return self._fields["client_id"]

    @property
    def client_email(self) -> str:
        return self._fields["client_email"]

    @property
    def _key(self) -> str:
        return hashlib.sha256("\0".join((self.key, self.subject, self.scope)).encode()).hexdigest()

    def grant(self) -> dict[str, str]:
        """The token request's form: the JWT bearer grant, with a JWT signed now."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = self._fields
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": key.get("private_key_id", "")}
        claims = {
            "iss": key["client_email"],
            "sub": self.subject,
            "scope": self.scope,
            "aud": key["token_uri"],
            "iat": now,
            "exp": now + _ASSERTION_LIFETIME,
        }
        signing_input = f"{_base64url(header)}.{_base64url(claims)}".encode()
        private_key = load_pem_private_key(key["private_key"].encode(), password=None)
        if not isinstance(private_key, rsa.RSAPrivateKey):  # checked when the key was stored
            raise TokenError(
                "The service account's private key is not an RSA key.", "Check google_service_account_key."
            )
        signature = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        assertion = signing_input.decode() + "." + base64.urlsafe_b64encode(signature).decode().rstrip("=")
        return {"grant_type": _JWT_BEARER, "assertion": assertion}


def _base64url(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


TokenClient = Client | ServiceAccount


class TokenError(Exception):
    """No token: ``cause`` says why, ``fix`` names the parameter to change."""

    def __init__(self, cause: str, fix: str, *, temporary: bool = False):
        super().__init__(cause)
        self.cause, self.fix, self.temporary = cause, fix, temporary


_tokens: dict[str, tuple[str, float]] = {}
_tokens_lock = threading.Lock()

# What Microsoft Entra ID's error codes mean, and which parameter to change.
_ENTRA = {
    "AADSTS7000215": (
        "the client secret is wrong (AADSTS7000215)",
        "Check oauth2_client_secret: copy the secret's Value (not its Secret ID) from the app registration's "
        "Certificates & secrets, and make sure it has not expired.",
    ),
    "AADSTS7000222": (
        "the client secret has expired (AADSTS7000222)",
        "Create a new secret in the app registration and set oauth2_client_secret to its Value.",
    ),
    "AADSTS700016": (
        "no application with this client id exists in the tenant (AADSTS700016)",
        "Check oauth2_client_id (the Application (client) ID of the app registration) and that the "
        "tenant in oauth2_token_url is the one the app is registered in.",
    ),
    "AADSTS90002": (
        "the tenant in the token URL does not exist (AADSTS90002)",
        "Check the tenant in oauth2_token_url: your directory (tenant) ID, or a domain such as "
        "contoso.onmicrosoft.com.",
    ),
    "AADSTS70011": (
        "the scope is not valid (AADSTS70011)",
        "Set oauth2_scope to https://outlook.office365.com/.default for Microsoft 365 SMTP.",
    ),
}


def cached(client: TokenClient) -> str | None:
    """A token for ``client`` that is still good, if this process has one."""
    with _tokens_lock:
        token, expires = _tokens.get(client._key, ("", 0.0))
    return token if token and time.monotonic() < expires else None


def forget(client: TokenClient) -> None:
    """Drop the kept token (the server refused it): the next sign-in fetches a new one."""
    with _tokens_lock:
        _tokens.pop(client._key, None)


def fetch(client: TokenClient, *, timeout: float, ca_file: str | None) -> str:
    """Get a token by the client's grant and keep it; raise :class:`TokenError` explaining why not.

    The whole exchange ends within ``timeout``, however slowly the endpoint answers. Redirects are
    refused: a token endpoint answers itself (RFC 6749), and a redirect could lead the secret anywhere.
    """
    body = client.grant()
    where = urllib.parse.urlsplit(client.token_url).netloc
    too_slow = TokenError(
        f"The token endpoint {where} did not answer within {timeout:g} s.",
        "Check oauth2_token_url, and that this machine may reach it (a proxy or firewall).",
        temporary=True,
    )
    try:
        answered = bounded_http.request(
            "POST",
            client.token_url,
            urllib.parse.urlencode(body).encode(),
            {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            timeout=timeout,
            ca_file=ca_file,
        )
    except bounded_http.TooSlow:
        raise too_slow from None
    except bounded_http.Unreachable as failure:
        raise _unreachable(where, failure.reason) from None
    except ValueError as problem:  # a port that is not a number
        raise TokenError(f"The token endpoint's address is not valid: {problem}.", "Check oauth2_token_url.") from None
    status, raw = answered.status, answered.body
    if 300 <= status < 400:
        raise TokenError(
            f"The token endpoint {where} answered with a redirect (HTTP {status}), which was not followed: "
            "a token endpoint answers itself.",
            "Check oauth2_token_url: give the token endpoint's own address.",
        )
    try:
        answer = json.loads(raw)
        if not isinstance(answer, dict):
            raise ValueError
    except ValueError:
        raise TokenError(
            f"The token endpoint {where} answered HTTP {status} with something that is not JSON.",
            "Check oauth2_token_url: it must be the OAuth 2.0 token endpoint "
            "(https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token for Microsoft 365).",
            temporary=status >= 500,
        ) from None
    if "error" in answer or status >= 400:
        raise (
            _google_refusal(where, client, answer)
            if isinstance(client, ServiceAccount)
            else _refusal(where, status, answer)
        )
    token = answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise TokenError(
            f"The token endpoint {where} answered without an access_token.",
            "Check oauth2_token_url and oauth2_scope: the endpoint must grant a token for SMTP.",
        )
    lifetime = answer.get("expires_in")
    lifetime = float(lifetime) if isinstance(lifetime, int | float | str) and str(lifetime).isdigit() else 3600.0
    with _tokens_lock:
        _tokens[client._key] = (token, time.monotonic() + max(lifetime - _RENEW_BEFORE, 0))
    return token


def _unreachable(where: str, reason: object) -> TokenError:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return TokenError(
            f"TLS to the token endpoint {where} failed: its certificate was refused ({reason.verify_message}).",
            "Check oauth2_token_url: the endpoint must present a certificate this machine trusts "
            "(SMTP_CA_FILE adds an authority). Tokens are never fetched without a verified certificate.",
        )
    if isinstance(reason, ssl.SSLError):
        return TokenError(
            f"TLS to the token endpoint {where} failed: {reason.reason or reason}.", "Check oauth2_token_url."
        )
    if isinstance(reason, TimeoutError):
        return TokenError(
            f"The token endpoint {where} did not answer in time.",
            "Check oauth2_token_url, and that this machine may reach it (a proxy or firewall).",
            temporary=True,
        )
    text = getattr(reason, "strerror", None) or str(reason)
    return TokenError(
        f"The token endpoint {where} cannot be reached: {text}.",
        "Check oauth2_token_url (its host name and port), and that this machine may reach it.",
        temporary=True,
    )


def _refusal(where: str, status: int, answer: dict[str, object]) -> TokenError:
    code = str(answer.get("error") or f"HTTP {status}")
    description = " ".join(str(answer.get("error_description") or "").split())[:300]
    for known, (meaning, fix) in _ENTRA.items():
        if known in description:
            return TokenError(f"The token endpoint {where} refused: {meaning}.", fix)
    if code == "invalid_client":
        return TokenError(
            f"The token endpoint {where} refused the client (invalid_client): {description or 'no detail given'}.",
            "Check oauth2_client_id and oauth2_client_secret.",
        )
    if code == "invalid_scope":
        return TokenError(
            f"The token endpoint {where} refused the scope (invalid_scope): {description or 'no detail given'}.",
            "Check oauth2_scope.",
        )
    return TokenError(
        f"The token endpoint {where} refused ({code}): {description or 'no detail given'}.",
        "Check oauth2_token_url, oauth2_client_id, oauth2_client_secret and oauth2_scope.",
        temporary=status >= 500,
    )


def _google_refusal(where: str, account: ServiceAccount, answer: dict[str, object]) -> TokenError:
    code = str(answer.get("error") or "")
    description = " ".join(str(answer.get("error_description") or "").split())[:300]
    said = f"{code}: {description}" if description else code
    if code == "unauthorized_client":
        return TokenError(
            f"Google refused to let the service account {account.client_email} act as {account.subject} ({said}): "
            "domain-wide delegation is not granted for its client ID and this scope.",
            "In the Google Admin console, go to Security, Access and data control, API controls, Manage Domain "
            f"Wide Delegation, and Add new: Client ID {account.client_id}, OAuth scopes {account.scope} "
            "(it can take some minutes to apply).",
        )
    if code == "invalid_grant":
        lowered = description.lower()
        if "signature" in lowered or "not found" in lowered or "disabled" in lowered:
            cause = "the key was deleted or disabled, or is not this service account's"
            fix = "Create a new JSON key for the service account and set google_service_account_key to it."
        elif "iat" in lowered or "exp" in lowered or "timeframe" in lowered or "time" in lowered:
            cause = "the JWT's times were refused: this machine's clock is off"
            fix = "Set this machine's clock right (NTP); the JWT is valid for an hour from now."
        else:
            cause = (
                f"the mailbox {account.subject} is unknown to the domain, the key was deleted or disabled, "
                "or the clock is off"
            )
            fix = (
                f"Check username: {account.subject} must be a user of the Workspace domain that granted the "
                "delegation. Else create a new key, or set this machine's clock right."
            )
        return TokenError(f"Google refused the token request ({said}): {cause}.", fix)
    return TokenError(
        f"Google's token endpoint {where} refused ({said or 'no detail given'}).",
        "Check google_service_account_key (a current JSON key of the service account) and username.",
        temporary=code in ("temporarily_unavailable", "server_error"),
    )
