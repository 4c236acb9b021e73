"""Response headers that keep the page and the API from being framed, sniffed or cached.

Added by a small WSGI middleware rather than an ``after_request`` hook: it sees every
response, error pages included, and appending to the header list costs a fraction of
werkzeug's header handling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

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


class SecureHeaders:
    def __init__(self, app: Callable[..., Iterable[bytes]], static_prefix: str):
        self.app = app
        self.static_prefix = static_prefix

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        extra = list(_ALWAYS)
        if not environ.get("PATH_INFO", "").startswith(self.static_prefix):
            extra += _NOT_STORED
        if environ.get("wsgi.url_scheme") == "https":
            extra += _HTTPS_ONLY
        names = {name.lower() for name, _ in extra}

        def with_headers(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(name, value) for name, value in headers if name.lower() not in names]
            return start_response(status, kept + extra, exc_info)

        return self.app(environ, with_headers)


def init_app(app: Flask) -> None:
    # Inside any ProxyFix added later, so that it sees the scheme the proxy reports.
    app.wsgi_app = SecureHeaders(app.wsgi_app, f"{app.static_url_path}/")  # type: ignore[method-assign]
