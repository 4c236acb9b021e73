"""The app settings-ui serves: its configuration, instance folder, database engine and keys.

In a Flask app that mounts settings-ui, this is the state the extension keeps in
``app.extensions["settings_ui"]``. sendmail, which programs start once per message, builds the same
state from the standalone app's configuration without Flask (:func:`standalone`): importing Flask,
the page and the API would cost a message more than sending it does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .instance_files import make_private_folder, readable_by_others, tighten_folder

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet
    from sqlalchemy import Engine

ENVIRONMENT_PREFIX = "SETTINGS_UI_"
"""The standalone app reads its configuration from variables named SETTINGS_UI_<key>."""

STANDALONE_DEFAULTS: dict[str, Any] = {
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


@dataclass(eq=False)
class Runtime:
    """What settings-ui reads while it works, whichever process it runs in."""

    config: Mapping[str, Any]
    """The app's configuration (the Flask app's ``config`` itself, so a later change is seen)."""
    instance_path: Path
    environment_prefix: str
    """How the app's configuration is set from the environment (``SETTINGS_UI_``), if it is:
    messages then name each setting as the variable an administrator types in a shell."""
    logger: logging.Logger
    cipher: MultiFernet
    """The keys of the stored secrets: the first encrypts, every one decrypts."""
    running_tests: threading.BoundedSemaphore
    """The MAX_CONCURRENT_TESTS places for talking to SMTP servers from the page and the API."""
    engine: Engine
    """On the settings database, brought up to date."""


def start(config: Mapping[str, Any], instance_path: Path, environment_prefix: str, logger: logging.Logger) -> Runtime:
    """settings-ui's state on ``config`` (its defaults applied): the keys, the places for tests, and
    the database connected and up to date. Raises ValueError for a value settings-ui cannot use."""
    from . import crypto, database, targets

    return Runtime(
        config=config,
        instance_path=instance_path,
        environment_prefix=environment_prefix,
        logger=logger,
        cipher=crypto.cipher(config, instance_path),
        running_tests=targets.places(config),
        engine=database.connect(config, instance_path),
    )


_active: ContextVar[Runtime | None] = ContextVar("settings_ui_runtime", default=None)


def current() -> Runtime:
    """The runtime in use: the one :func:`using` made active, else the current Flask app's."""
    active = _active.get()
    if active is not None:
        return active
    from flask import current_app  # only a Flask app comes here, and it has imported Flask already

    state: Runtime = current_app.extensions["settings_ui"]
    return state


@contextlib.contextmanager
def using(state: Runtime) -> Iterator[Runtime]:
    """Make ``state`` the runtime of this thread (a thread starts without one) until the block ends."""
    token = _active.set(state)
    try:
        yield state
    finally:
        _active.reset(token)


def instance_folder(given: str | os.PathLike[str] | None = None) -> Path:
    """The standalone app's instance folder: ``given``, else SETTINGS_UI_INSTANCE_PATH, else Flask's
    default for the package (``instance/`` beside a checkout, ``<prefix>/var/settings_ui-instance``
    when installed)."""
    chosen = given or os.environ.get("SETTINGS_UI_INSTANCE_PATH")
    if chosen:
        return Path(chosen).resolve()
    package_parent = Path(__file__).resolve().parent.parent
    installed_under = _installation_prefix(package_parent)
    if installed_under is None:
        return package_parent / "instance"
    return installed_under / "var" / "settings_ui-instance"


def private_instance_folder(given: str | os.PathLike[str] | None = None) -> Path:
    """:func:`instance_folder`, made if missing and kept to its owner (it holds keys and the database)."""
    instance = instance_folder(given)
    make_private_folder(instance)
    tighten_folder(instance)
    return instance


def _installation_prefix(package_parent: Path) -> Path | None:
    """The prefix the package is installed under, as Flask finds it (``flask.sansio.scaffold.find_package``)."""
    prefix = Path(os.path.abspath(sys.prefix))
    if package_parent.is_relative_to(prefix):
        return prefix
    if package_parent.name.lower() != "site-packages":
        return None
    site_parent = package_parent.parent
    if site_parent.name.lower() == "lib":
        return site_parent.parent
    if site_parent.parent.name.lower() == "lib":
        return site_parent.parent.parent
    return site_parent


def read_configuration(
    instance: Path, logger: logging.Logger, test_config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The standalone app's configuration, each source overriding the one before: ``STANDALONE_DEFAULTS``,
    ``instance/config.py``, ``SETTINGS_UI_*`` environment variables (JSON values where they parse as
    JSON, as Flask's ``from_prefixed_env`` reads them), ``test_config``."""
    config = dict(STANDALONE_DEFAULTS)
    config_file = instance / "config.py"
    if config_file.is_file():
        namespace: dict[str, Any] = {"__file__": str(config_file)}
        # The admin's own file, run as Flask's from_pyfile runs it.
        exec(compile(config_file.read_bytes(), str(config_file), "exec"), namespace)
        config.update({key: value for key, value in namespace.items() if key.isupper()})
        if readable_by_others(config_file):
            logger.warning(
                "%s can be read by other users: it may hold SECRET_KEY or ADMIN_PASSWORD_HASH. Make it the owner's "
                "only (chmod 600).",
                config_file,
            )
    for variable in sorted(os.environ):
        if variable.startswith(ENVIRONMENT_PREFIX):
            value: Any = os.environ[variable]
            with contextlib.suppress(ValueError):
                value = json.loads(value)
            config[variable.removeprefix(ENVIRONMENT_PREFIX)] = value
    config.update(test_config or {})
    from .configuration import KEYS

    for name in sorted((KEYS | {*STANDALONE_DEFAULTS, "SECRET_KEY", "SQLALCHEMY_DATABASE_URI"}) & set(os.environ)):
        if f"{ENVIRONMENT_PREFIX}{name}" not in os.environ:
            logger.warning(
                "The environment sets %s, which settings-ui does not read: set SETTINGS_UI_%s instead "
                "(or %s in instance/config.py).",
                name,
                name,
                name,
            )
    config.setdefault("SQLALCHEMY_DATABASE_URI", f"sqlite:///{instance / 'settings.db'}")
    config.setdefault("EMAIL_SETTINGS_DATABASE_URI", config["SQLALCHEMY_DATABASE_URI"])
    return config


def standalone(instance_path: str | os.PathLike[str] | None = None) -> Runtime:
    """The standalone app's runtime, built without Flask: for sendmail, a process per message."""
    from .configuration import apply_defaults

    instance = private_instance_folder(instance_path)
    logger = logging.getLogger("settings_ui")  # the standalone Flask app's logger has this name too
    config = read_configuration(instance, logger)
    apply_defaults(config, instance)
    return start(config, instance, ENVIRONMENT_PREFIX, logger)
