"""settings-ui: the global email settings page and JSON API."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import commands, crypto, database, testmail, web
from .instance_files import make_private_folder, read_or_create
from .sending import Delivery, send_message

__all__ = ["Delivery", "create_app", "send_message"]

DEFAULTS: dict[str, Any] = {
    "SMTP_TIMEOUT": 10,
    "SMTP_TLS_MINIMUM": "TLSv1.2",  # the oldest TLS version spoken to an SMTP server
    "MAX_CONCURRENT_TESTS": 2,  # test emails running at once per process; more get 429
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "SQLITE_BUSY_TIMEOUT_MS": 15_000,
    "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session, so a form left open still saves
    "PERMANENT_SESSION_LIFETIME": 30 * 60,  # idle seconds before a signed-in admin must sign in again
    "SESSION_ABSOLUTE_LIFETIME": 12 * 3600,  # seconds after sign-in when a session ends, however busy
    "SESSION_COOKIE_NAME": "settings_ui_session",
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SECURE": False,  # set True when served over HTTPS
    "LOGIN_THROTTLE_SECONDS": 1.0,  # first wait after repeated failed sign-ins; doubles each time
    "PROXY_FIX": 0,  # how many reverse proxies stand in front (0: trust no X-Forwarded-* header)
}


def create_app(
    test_config: dict[str, Any] | None = None, *, instance_path: str | os.PathLike[str] | None = None
) -> Flask:
    """Build the application.

    Configuration is read in this order, each overriding the one before: ``DEFAULTS``,
    ``instance/config.py``, ``SETTINGS_UI_*`` environment variables, ``test_config``.
    """
    # Flask's own default: instance/ beside the checkout, <venv>/var/settings_ui-instance when installed.
    instance = instance_path or os.environ.get("SETTINGS_UI_INSTANCE_PATH")
    app = Flask(
        __name__,
        instance_path=str(Path(instance).resolve()) if instance else None,
        instance_relative_config=True,
        template_folder="templates",
        static_folder="static",
    )
    app.config.from_mapping(DEFAULTS)
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("SETTINGS_UI")
    if test_config:
        app.config.from_mapping(test_config)
    make_private_folder(Path(app.instance_path))
    app.config.setdefault("SQLALCHEMY_DATABASE_URI", f"sqlite:///{Path(app.instance_path) / 'settings.db'}")
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = read_or_create(
            Path(app.instance_path) / "secret_key", lambda: secrets.token_urlsafe(48)
        )

    crypto.install(app)
    testmail.init_app(app)
    commands.init_app(app)
    web.init_app(app)
    if app.config["PROXY_FIX"]:
        # Behind N reverse proxies: trust their X-Forwarded-For/-Proto/-Host/-Prefix, no more.
        hops = int(app.config["PROXY_FIX"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_prefix=hops)  # type: ignore[method-assign]
    database.init_app(app, app.config["SQLALCHEMY_DATABASE_URI"])
    return app
