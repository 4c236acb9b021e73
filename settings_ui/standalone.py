"""The standalone app (``python app.py``, ``gunicorn app:app``): settings-ui mounted at the root of a
Flask app of its own, with its own admin account."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from . import web
from .extension import EmailSettings
from .instance_files import read_or_create
from .runtime import ENVIRONMENT_PREFIX, private_instance_folder, read_configuration


def create_app(
    test_config: dict[str, Any] | None = None, *, instance_path: str | os.PathLike[str] | None = None
) -> Flask:
    """Build the standalone application: settings-ui mounted at the root, with its own admin account.

    Configuration is read in this order, each overriding the one before: the standalone defaults
    (and the extension's), ``instance/config.py``, ``SETTINGS_UI_*`` environment variables,
    ``test_config`` (:func:`settings_ui.runtime.read_configuration`, which sendmail reads too).
    """
    app = Flask(
        "settings_ui",
        instance_path=str(private_instance_folder(instance_path)),
        static_folder=None,  # settings-ui's blueprint serves its own
    )
    app.config.from_mapping(read_configuration(Path(app.instance_path), app.logger, test_config))
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = read_or_create(
            Path(app.instance_path) / "secret_key", lambda: secrets.token_urlsafe(48)
        )

    EmailSettings(app, environment_prefix=ENVIRONMENT_PREFIX)
    # settings-ui applies TRUSTED_HOSTS itself: werkzeug's matcher cannot match "[::1]".
    app.config["TRUSTED_HOSTS"] = None
    # The whole app is settings-ui's: a path it does not know gets its page and headers too.
    app.register_error_handler(HTTPException, web.problem_page)
    app.after_request(web.headers.add_headers_outside_the_blueprint)
    if app.config["PROXY_FIX"]:
        # Behind N reverse proxies: trust their X-Forwarded-For/-Proto/-Host/-Prefix, no more.
        hops = int(app.config["PROXY_FIX"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_prefix=hops)  # type: ignore[method-assign]
    return app
