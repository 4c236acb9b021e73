"""settings-ui as a Flask extension: ``EmailSettings(app, url_prefix=..., authorize=...)``.

It follows Flask-Mail's and Flask-Login's shape: created unbound or with the app, ``init_app``
reads the app's configuration once and keeps its state (a :class:`~settings_ui.runtime.Runtime`)
in ``app.extensions``. It mounts the page, the API, ``/metrics`` and the static files under
``url_prefix`` and leaves the rest of the app as it is: its sign-in, its sessions, its CSRF
protection, its database and migrations.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from . import commands, runtime, web
from .configuration import apply_defaults
from .web.auth import Authorize


class EmailSettings:
    """The email settings page, API and sending, mounted in a Flask app.

    ``url_prefix`` is where the page is (``{url_prefix}/``); the API is under
    ``{url_prefix}/email-settings/``. ``environment_prefix`` is the prefix the app reads its
    configuration from the environment with (``app.config.from_prefixed_env``), if any: messages
    then name a setting as that variable (``SETTINGS_UI_SMTP_CA_FILE``). ``authorize`` is the
    app's own sign-in, called without
    arguments for every request to settings-ui: True allows it, False refuses it (403), and a
    response it returns is sent as is. Without it, settings-ui has its own admin account
    (``ADMIN_USERNAME``, ``ADMIN_PASSWORD_HASH``) and serves only loopback clients until one is set.

    The database is ``EMAIL_SETTINGS_DATABASE_URI`` (by default ``settings_ui.db`` in the app's
    instance folder); its tables and migration history are settings-ui's own.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        url_prefix: str = "",
        authorize: Authorize | None = None,
        environment_prefix: str = "",
    ):
        self.url_prefix = url_prefix.rstrip("/")
        self.authorize = authorize
        self.environment_prefix = environment_prefix
        """How the app's configuration is set from the environment (``SETTINGS_UI_``), when it is:
        messages then name each setting as the variable an administrator types in a shell."""
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, url_prefix: str | None = None, authorize: Authorize | None = None) -> None:
        """Mount settings-ui in ``app``; the arguments override those given to the constructor."""
        prefix = self.url_prefix if url_prefix is None else url_prefix.rstrip("/")
        instance = Path(app.instance_path)
        apply_defaults(app.config, instance)
        commands.init_app(app)
        web.init_app(app, url_prefix=prefix, authorize=authorize or self.authorize)
        app.extensions["settings_ui"] = runtime.start(app.config, instance, self.environment_prefix, app.logger)
