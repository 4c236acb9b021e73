"""Rendered HTML of page parts, kept under the values they are rendered from.

The settings form's fields and the audit table are most of the page's rendering time
(a macro call per field, a row per event), yet on a plain GET they depend only on
stored values. The view builds each part's key from exactly the values the part shows;
any change to them (from this process or another one) is a new key, so nothing is ever
invalidated and nothing stale is shown. A key of None renders without keeping anything:
a submitted form with its errors is never cached. The same kind of cache keeps whole
pages, per session (pages.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from flask import Flask, request
from jinja2 import Environment
from markupsafe import Markup


class FragmentCache:
    """Rendered HTML by key: ``{% call cached(key) %}...{% endcall %}`` in a template, or
    ``cache(key, render)`` in Python."""

    def __init__(self, environment: Environment, size: int = 64):
        self._environment = environment
        self._kept: dict[Hashable, Markup] = {}
        self._size = size
        self._lock = threading.Lock()

    def __call__(self, key: Hashable | None, caller: Callable[[], str]) -> Markup:
        # With templates reloading (debug), an edited template must show at once.
        if key is None or self._environment.auto_reload:
            return Markup(caller())
        found = self._kept.get(key)
        if found is None:
            found = Markup(caller())
            with self._lock:
                if len(self._kept) >= self._size:
                    del self._kept[next(iter(self._kept))]  # the oldest: settings rarely go back
                self._kept[key] = found
        return found


def remembering_url_for(app: Flask) -> Callable[..., str]:
    """``url_for`` for templates that builds each relative URL once per script root.

    The page's links and its static files never change while the app runs, yet building
    them was a tenth of the page's time. External URLs and anything else with options
    (``_external``, ``_anchor``...) are built every time.
    """
    built: dict[tuple[Any, ...], str] = {}

    def url_for(endpoint: str, **values: Any) -> str:
        if any(name.startswith("_") for name in values):
            return app.url_for(endpoint, **values)
        key = (request.script_root, endpoint, *sorted(values.items()))
        url = built.get(key)
        if url is None:
            url = built[key] = app.url_for(endpoint, **values)
        return url

    return url_for


def init_app(app: Flask) -> None:
    app.jinja_env.globals["cached"] = FragmentCache(app.jinja_env)
    app.extensions["settings_ui.pages"] = FragmentCache(app.jinja_env)  # whole pages: see pages.py
    app.jinja_env.globals["url_for"] = remembering_url_for(app)
