"""Which requests are served at all, and the headers every response carries.

Only the names in ``TRUSTED_HOSTS`` are served, so a web page that rebinds its own name
to this machine reaches nothing; API calls a browser marks as cross-site are refused.
Response headers keep the page and the API from being framed, sniffed or cached.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import BadRequest, Forbidden

from ..sign_in import admin_configured
from .envelope import in_api

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""What ``TRUSTED_HOSTS`` is while no admin is configured (on any port)."""

# A Host header: a bracketed IPv6 literal or a name, then an optional port.
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::([0-9]{1,5}))?")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

_ALWAYS = [
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]
# Settings, forms and API answers must never be kept by a browser or proxy cache.
_NOT_STORED = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
_HTTPS_ONLY = [("Strict-Transport-Security", "max-age=31536000")]


def add_headers(response: Response) -> Response:
    for name, value in _ALWAYS:
        response.headers[name] = value
    if request.endpoint != "settings_ui.static":
        for name, value in _NOT_STORED:
            response.headers[name] = value
    if request.scheme == "https":
        for name, value in _HTTPS_ONLY:
            response.headers[name] = value
    return response


def add_headers_outside_the_blueprint(response: Response) -> Response:
    """The same headers for an app's answers outside settings-ui's blueprint (a 404 for a path it does
    not know): for an app that is settings-ui alone. The blueprint's own answers have them already."""
    return add_headers(response) if request.blueprint is None else response


def host_is_trusted(host: str, trusted: Collection[str] | None) -> bool:
    """Whether ``host`` (a Host header, port optional) is one of ``trusted``, as Flask's
    ``TRUSTED_HOSTS`` reads: any port; a leading dot accepts subdomains; None accepts all.

    Werkzeug's own matcher cannot match an IPv6 literal such as ``[::1]``, hence this one.
    """
    found = _HOST.fullmatch(host.lower())
    if found is None or (found.group(2) and not 1 <= int(found.group(2)) <= 65535):
        return False
    if trusted is None:
        return True
    name = found.group(1)
    for entry in trusted:
        entry = entry.lower()
        if entry == name or (entry.startswith(".") and (name.endswith(entry) or name == entry[1:])):
            return True
    return False


def _configured_hosts(app: Flask) -> list[str] | None:
    """``TRUSTED_HOSTS`` as configured (a list, or a comma-separated string), else the default:
    loopback names without an admin account, any name with one (its login protects it)."""
    configured = app.config.get("TRUSTED_HOSTS")
    if configured is None:
        return None if admin_configured(app.config) else list(LOOPBACK_HOSTS)
    if isinstance(configured, str):
        return [name.strip() for name in configured.split(",") if name.strip()]
    return list(configured)


def refuse_untrusted_requests() -> None:
    """Runs before everything else: an unknown ``Host`` gets 400, a cross-site API call 403."""
    checks_hosts, trusted = current_app.extensions["settings_ui.trusted_hosts"]
    if checks_hosts and not host_is_trusted(request.host, trusted):
        names = ", ".join(trusted or ())
        raise BadRequest(
            f"This server does not answer to the name {request.host!r}; it answers to: {names}. "
            "Use one of those, or add the name to TRUSTED_HOSTS."
        )
    if in_api() and _cross_site():
        raise Forbidden(
            "API calls from another site's web page are refused. Call the API from a script, or use the settings page."
        )


def _cross_site() -> bool:
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # not sent by a browser for this request, or a same-origin GET
    parts = urlsplit(origin)
    return origin == "null" or parts.scheme != request.scheme or parts.netloc.lower() != request.host.lower()


def init_app(app: Flask, *, checks_hosts: bool) -> None:
    """``checks_hosts``: whether settings-ui applies ``TRUSTED_HOSTS`` itself (with its own sign-in;
    a product that decides who gets in decides which names it answers to)."""
    app.extensions["settings_ui.trusted_hosts"] = (checks_hosts, _configured_hosts(app))
