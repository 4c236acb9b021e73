"""Shared fixtures: a fresh app and SQLite database file per test."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from .apps import DATABASES, LiveServer, database_url, dispose_made_apps, make_app
from .helpers import CONFIGURED
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


@pytest.fixture(autouse=True)
def _dispose_engines() -> Iterator[None]:
    """The one place where the apps a test made give back their database connections."""
    yield
    dispose_made_apps()


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    app = make_app(tmp_path)
    return app


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


@pytest.fixture
def configured(client: FlaskClient) -> dict[str, Any]:
    """Store a complete configuration with a password; return the parameters sent."""
    response = client.post("/email-settings/edit", json={"params": CONFIGURED})
    assert response.status_code == 200, response.json
    return dict(CONFIGURED)


@pytest.fixture
def live_server(app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("ca"))
