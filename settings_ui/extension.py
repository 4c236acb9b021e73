"""settings-ui as a Flask extension: ``EmailSettings(app, url_prefix=..., authorize=...)``.

It follows Flask-Mail's and Flask-Login's shape: created unbound or with the app, ``init_app``
reads the app's configuration once and keeps its state in ``app.extensions``. It mounts the page,
the API, ``/metrics`` and the static files under ``url_prefix`` and leaves the rest of the app
as it is: its sign-in, its sessions, its CSRF protection, its database and migrations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from . import commands, crypto, database, targets, web
from .web.auth import Authorize

DEFAULTS: dict[str, Any] = {
    "SMTP_TIMEOUT": 10,
    "SMTP_TLS_MINIMUM": "TLSv1.2",  # the oldest TLS version spoken to an SMTP server
    "MAX_CONCURRENT_TESTS": 2,  # test emails running at once per process; more get 429
    "SQLITE_BUSY_TIMEOUT_MS": 15_000,
    "SESSION_ABSOLUTE_LIFETIME": 12 * 3600,  # seconds after sign-in when an admin session ends, however busy
    "LOGIN_THROTTLE_SECONDS": 1.0,  # first wait after repeated failed sign-ins; doubles each time
    "LOGIN_FAILING_ADDRESSES_PER_MINUTE": 50,  # past this many, every new sign-in waits a minute
    "SENDMAIL_MAX_MESSAGE_BYTES": 10 * 1024 * 1024,  # the largest message sendmail reads from standard input
}
"""settings-ui's own configuration keys, where the app sets no value of its own."""


class EmailSettings:
    """The email settings page, API and sending, mounted in a Flask app.

    ``url_prefix`` is where the page is (``{url_prefix}/``); the API is under
    ``{url_prefix}/email-settings/``. ``authorize`` is the app's own sign-in, called without
    arguments for every request to settings-ui: True allows it, False refuses it (403), and a
    response it returns is sent as is. Without it, settings-ui has its own admin account
    (``ADMIN_USERNAME``, ``ADMIN_PASSWORD_HASH``) and serves only loopback clients until one is set.

    The database is ``EMAIL_SETTINGS_DATABASE_URI`` (by default ``settings_ui.db`` in the app's
    instance folder); its tables and migration history are settings-ui's own.
    """

    def __init__(self, app: Flask | None = None, *, url_prefix: str = "", authorize: Authorize | None = None):
        self.url_prefix = url_prefix.rstrip("/")
        self.authorize = authorize
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, url_prefix: str | None = None, authorize: Authorize | None = None) -> None:
        """Mount settings-ui in ``app``; the arguments override those given to the constructor."""
        prefix = self.url_prefix if url_prefix is None else url_prefix.rstrip("/")
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        default_database = f"sqlite:///{Path(app.instance_path) / 'settings_ui.db'}"
        app.config.setdefault("EMAIL_SETTINGS_DATABASE_URI", default_database)
        app.extensions["settings_ui"] = self
        crypto.install(app)
        targets.init_app(app)
        commands.init_app(app)
        web.init_app(app, url_prefix=prefix, authorize=authorize or self.authorize)
        database.init_app(app, str(app.config["EMAIL_SETTINGS_DATABASE_URI"]))
