"""Shared fixtures: a fresh app and SQLite database file per test."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import select

from settings_ui import create_app, database, schema
from settings_ui.models import Base, SettingsRow

from .helpers import CONFIGURED, skip_or_fail
from .openapi_check import ConformingClient
from .smtp_servers import Certificates, make_certificates


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per reason for skipping (pyproject's -r leaves skips out): which tools are missing."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.section("skipped tests")
        for reason, count in reasons.most_common():
            terminalreporter.line(f"{count} skipped: {reason}")


@pytest.fixture(autouse=True)
def _no_ambient_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own SETTINGS_UI_* variables must not change what the tests see."""
    for name in list(os.environ):
        if name.startswith("SETTINGS_UI_"):
            monkeypatch.delenv(name)


_MADE: list[Flask] = []


def tracked(app: Flask) -> Flask:
    """``app``, its database connections closed when the test ends (see ``_dispose_engines``)."""
    _MADE.append(app)
    return app


@pytest.fixture(autouse=True)
def _dispose_engines() -> Iterator[None]:
    """The one place where the apps a test made give back their database connections."""
    yield
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


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    app = make_app(tmp_path)
    return app


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
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:
        # Every table of the models (so a new one is never left behind), and the migrations' own.
        tables = ", ".join([*(table.name for table in Base.metadata.sorted_tables), schema.VERSION_TABLE])
        connection.execute(text(f"DROP TABLE IF EXISTS {tables} CASCADE"))
    engine.dispose()
    return url


@pytest.fixture(params=DATABASES)
def any_database_app(request: pytest.FixtureRequest, tmp_path: Path) -> Flask:
    """The app on a fresh SQLite file, then on a fresh PostgreSQL database."""
    app = make_app(tmp_path, SQLALCHEMY_DATABASE_URI=database_url(request.param, tmp_path))
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def csrf_app(tmp_path: Path) -> Flask:
    """An app with CSRF protection switched on, as in production."""
    app = make_app(tmp_path, WTF_CSRF_ENABLED=True)
    return app


def stored_row(app: Flask) -> dict[str, Any]:
    """Every column of the stored settings row, straight from the database."""
    with app.app_context(), database.engine().connect() as connection:
        return dict(connection.execute(select(SettingsRow.__table__)).mappings().one())


@pytest.fixture
def configured(client: FlaskClient) -> dict[str, Any]:
    """Store a complete configuration with a password; return the parameters sent."""
    response = client.post("/email-settings/edit", json={"params": CONFIGURED})
    assert response.status_code == 200, response.json
    return dict(CONFIGURED)


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


@pytest.fixture
def live_server(app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("ca"))
