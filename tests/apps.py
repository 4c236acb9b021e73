"""The app as the tests make it: a fresh instance folder and database per test, closed when it ends."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import create_engine, select, text

from settings_ui import create_app, database, schema
from settings_ui.models import metadata, settings_table

from .helpers import skip_or_fail
from .openapi_check import ConformingClient

_MADE: list[Flask] = []


def tracked(app: Flask) -> Flask:
    """``app``, its database connections closed when the test ends (see ``_dispose_engines``)."""
    _MADE.append(app)
    return app


def dispose_made_apps() -> None:
    """Close the database connections of every app made since the last call (after each test)."""
    while _MADE:
        with _MADE.pop().app_context():
            database.engine().dispose()


def make_app(tmp_path: Path, **config: Any) -> Flask:
    settings = {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'settings.db'}",
        "WTF_CSRF_ENABLED": False,
    }
    settings.update(config)
    app = create_app(settings, instance_path=tmp_path / "instance")
    app.test_client_class = ConformingClient
    return tracked(app)


DATABASES = ["sqlite", "postgresql"]


def database_url(kind: str, tmp_path: Path) -> str:
    """A fresh, empty database of ``kind`` for one test."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'settings.db'}"
    url = os.environ.get("TEST_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        message = (
            "PostgreSQL tests need TEST_DATABASE_URL: run `bash .ci/postgres` as root and "
            "export TEST_DATABASE_URL=<the URL it prints> (CI does, and sets REQUIRE_POSTGRES_TESTS=1)"
        )
        skip_or_fail(message, "REQUIRE_POSTGRES_TESTS")
    engine = create_engine(url)
    with engine.begin() as connection:
        # Every table of the models (so a new one is never left behind), and the migrations' own.
        tables = ", ".join([*(table.name for table in metadata.sorted_tables), schema.VERSION_TABLE])
        connection.execute(text(f"DROP TABLE IF EXISTS {tables} CASCADE"))
    engine.dispose()
    return url


def stored_row(app: Flask) -> dict[str, Any]:
    """Every column of the stored settings row, straight from the database."""
    with app.app_context(), database.engine().connect() as connection:
        return dict(connection.execute(select(settings_table)).mappings().one())


class LiveServer:
    """The app served by a real threaded werkzeug server on a free loopback port."""

    def __init__(self, app: Flask):
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
