"""settings-ui: the global email settings page and JSON API.

A product mounts it with :class:`EmailSettings` and sends its mail with :func:`send_message`;
:func:`create_app` builds the standalone app (``python app.py``, ``gunicorn app:app``), which is
one user of the same extension.

Each is imported when first asked for (PEP 562): sendmail, a process per message, imports the
package without Flask, the page or the API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .extension import EmailSettings
    from .sending import Delivery, send_message
    from .standalone import create_app

__all__ = ["Delivery", "EmailSettings", "create_app", "send_message"]

_HOMES = {"Delivery": "sending", "EmailSettings": "extension", "create_app": "standalone", "send_message": "sending"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
