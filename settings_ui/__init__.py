"""settings-ui: the global email settings page and JSON API.

A product mounts it with :class:`EmailSettings` and sends its mail with :func:`send_message`;
:func:`create_app` builds the standalone app (``python app.py``, ``gunicorn app:app``), which is
one user of the same extension.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from . import configuration, web
from .extension import EmailSettings
from .instance_files import make_private_folder, read_or_create, readable_by_others, tighten_folder
from .sending import Delivery, send_message

__all__ = ["Delivery", "EmailSettings", "create_app", "send_message"]

DEFAULTS: dict[str, Any] = {
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session, so a form left open still saves
    "PERMANENT_SESSION_LIFETIME": 30 * 60,  # idle seconds before a signed-in admin must sign in again
    "SESSION_COOKIE_NAME": "settings_ui_session",
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SECURE": False,  # set True when served over HTTPS
    "PROXY_FIX": 0,  # how many reverse proxies stand in front (0: trust no X-Forwarded-* header)
}
"""The standalone app's own settings (a product that mounts settings-ui keeps its own)."""

ENVIRONMENT_PREFIX = "SETTINGS_UI_"

SETTING_NAMES = configuration.KEYS | {*DEFAULTS, "SECRET_KEY", "SQLALCHEMY_DATABASE_URI"}
"""Every setting the standalone app reads, as a key of instance/config.py (SETTINGS_UI_<key> in the environment)."""


def create_app(
    test_config: dict[str, Any] | None = None, *, instance_path: str | os.PathLike[str] | None = None
) -> Flask:
    """Build the standalone application: settings-ui mounted at the root, with its own admin account.

    Configuration is read in this order, each overriding the one before: ``DEFAULTS`` (and the
    extension's), ``instance/config.py``, ``SETTINGS_UI_*`` environment variables, ``test_config``.
    """
    # Flask's own default: instance/ beside the checkout, <venv>/var/settings_ui-instance when installed.
    instance = instance_path or os.environ.get("SETTINGS_UI_INSTANCE_PATH")
    app = Flask(
        __name__,
        instance_path=str(Path(instance).resolve()) if instance else None,
        instance_relative_config=True,
        static_folder=None,  # settings-ui's blueprint serves its own
    )
    app.config.from_mapping(DEFAULTS)
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env(ENVIRONMENT_PREFIX.rstrip("_"))
    if test_config:
        app.config.from_mapping(test_config)
    make_private_folder(Path(app.instance_path))
    tighten_folder(Path(app.instance_path))
    for name in sorted(SETTING_NAMES & set(os.environ)):
        if f"{ENVIRONMENT_PREFIX}{name}" not in os.environ:
            app.logger.warning(
                "The environment sets %s, which settings-ui does not read: set SETTINGS_UI_%s instead "
                "(or %s in instance/config.py).",
                name,
                name,
                name,
            )
    if readable_by_others(Path(app.instance_path) / "config.py"):
        app.logger.warning(
            "%s can be read by other users: it may hold SECRET_KEY or ADMIN_PASSWORD_HASH. Make it the owner's "
            "only (chmod 600).",
            Path(app.instance_path) / "config.py",
        )
    database = app.config.setdefault("SQLALCHEMY_DATABASE_URI", f"sqlite:///{Path(app.instance_path) / 'settings.db'}")
    app.config.setdefault("EMAIL_SETTINGS_DATABASE_URI", database)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = read_or_create(
            Path(app.instance_path) / "secret_key", lambda: secrets.token_urlsafe(48)
        )

    EmailSettings(app, environment_prefix=ENVIRONMENT_PREFIX)
    # settings-ui applies TRUSTED_HOSTS itself: werkzeug's matcher cannot match "[::1]".
    app.config["TRUSTED_HOSTS"] = None
    # The whole app is settings-ui's: a path it does not know gets its page and headers too.
    app.register_error_handler(HTTPException, web.problem_page)
    app.after_request(web.headers.add_headers)
    if app.config["PROXY_FIX"]:
        # Behind N reverse proxies: trust their X-Forwarded-For/-Proto/-Host/-Prefix, no more.
        hops = int(app.config["PROXY_FIX"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_prefix=hops)  # type: ignore[method-assign]
    return app
