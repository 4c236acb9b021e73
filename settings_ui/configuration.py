"""settings-ui's configuration keys: their defaults, and how a message names them."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from . import runtime

DEFAULTS: dict[str, Any] = {
    "SMTP_TIMEOUT": 10,
    "SMTP_TLS_MINIMUM": "TLSv1.2",  # the oldest TLS version spoken to an SMTP server
    "MAX_CONCURRENT_TESTS": 2,  # test emails running at once per process; more get 429
    "SQLITE_BUSY_TIMEOUT_MS": 15_000,
    "SESSION_ABSOLUTE_LIFETIME": 12 * 3600,  # seconds after sign-in when an admin session ends, however busy
    "LOGIN_THROTTLE_SECONDS": 1.0,  # first wait after repeated failed sign-ins; doubles each time
    "LOGIN_FAILING_ADDRESSES_PER_MINUTE": 50,  # past this many, every new sign-in waits a minute
    "SENDMAIL_MAX_MESSAGE_BYTES": 10 * 1024 * 1024,  # the largest message sendmail reads from standard input
    "MICROSOFT_GRAPH_URL": "https://graph.microsoft.com",  # or a national cloud's Graph
    "OUTBOX_MAX_AGE": 5 * 24 * 3600,  # seconds a queued message is retried before it bounces
    "ALERT_WEBHOOK_URL": "",  # where alerts about the product's mail are POSTed (JSON), if anywhere
}
"""settings-ui's own configuration keys, where the app sets no value of its own."""

KEYS = frozenset(DEFAULTS) | {
    "EMAIL_SETTINGS_DATABASE_URI",
    "SETTINGS_ENCRYPTION_KEY",
    "SMTP_CA_FILE",
    "SMTP_EHLO_NAME",
    "SMTP_PASSWORD_FILE",
    "ADMIN_USERNAME",
    "ADMIN_PASSWORD_HASH",
    "TRUSTED_HOSTS",
}
"""Every configuration key settings-ui reads."""

_KEY = re.compile(r"\b(" + "|".join(sorted(KEYS, key=len, reverse=True)) + r")\b")


def apply_defaults(config: MutableMapping[str, Any], instance_path: Path) -> None:
    """Give each of settings-ui's keys its default where ``config`` sets none (the database:
    ``settings_ui.db`` in the instance folder)."""
    for key, value in DEFAULTS.items():
        config.setdefault(key, value)
    config.setdefault("EMAIL_SETTINGS_DATABASE_URI", f"sqlite:///{instance_path / 'settings_ui.db'}")


def as_set_here(text: str) -> str:
    """``text`` with each configuration key named as it is set in this app: the environment
    variable when the app reads one (``SETTINGS_UI_SMTP_CA_FILE``), else the key itself."""
    return named_with(runtime.current().environment_prefix, text)


def named_with(prefix: str, text: str) -> str:
    """``text`` with each configuration key named as the variable ``prefix`` makes of it."""
    return _KEY.sub(lambda key: prefix + key.group(0), text) if prefix else text


def set_with(key: str) -> str:
    """How an administrator sets ``key`` in this app, in a few words."""
    prefix = runtime.current().environment_prefix
    if prefix:
        return f"set with {prefix}{key} in the environment, or {key} in instance/config.py"
    return f"set with {key} in the application's configuration"
