"""The database of settings-ui: an engine of its own, its own tables and its own migration history.

settings-ui may live inside a product that has its own Flask-SQLAlchemy (only one can be
registered on an app) and its own Alembic history, so it keeps a plain SQLAlchemy engine on the
app's runtime (``app.extensions``) and records its migrations in a version table of its own.
Every query is a Core statement on a connection from :func:`engine`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.exc import SQLAlchemyError

from . import runtime, schema
from .instance_files import create_private_file
from .models import SETTINGS_ROW_ID, settings_table

_ROW_EXISTS = select(settings_table.c.id).where(settings_table.c.id == SETTINGS_ROW_ID)


def connect(config: Mapping[str, Any], instance_path: Path) -> Engine:
    """An engine on ``EMAIL_SETTINGS_DATABASE_URI``, its tables up to date and the settings row there.

    A database already at the newest revision costs one read of its version table: no migration
    tool is loaded (sendmail connects once per message).
    """
    uri = str(config["EMAIL_SETTINGS_DATABASE_URI"])
    engine = create_engine(uri, **_engine_options(uri, config))
    if engine.dialect.name == "sqlite":
        if engine.url.database and engine.url.database != ":memory:":
            create_private_file(Path(engine.url.database))
        # WAL lets the page and the API read while a request writes. It is a property of
        # the database file, so once is enough (not on every new connection).
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    if not schema.is_current(engine):
        schema.upgrade_database(engine, instance_path)
    from .operations import ensure_row  # operations reads through this module

    ensure_row(engine)
    return engine


def engine() -> Engine:
    """The current app's settings-ui engine."""
    return runtime.current().engine


def state() -> str:
    """The database as a health check sees it: "ok", "unreachable", or "settings table is empty"."""
    try:
        with engine().connect() as connection:
            found = connection.execute(_ROW_EXISTS).first()
    except SQLAlchemyError as error:
        runtime.current().logger.error("Health check: the database is unavailable: %s", type(error).__name__)
        return "unreachable"
    return "ok" if found is not None else "settings table is empty"


def _engine_options(uri: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Connection pool and driver options for the configured database."""
    # A statement's values can hold the encrypted password: never in an error or a log line.
    options: dict[str, Any] = {"hide_parameters": True}
    if ":memory:" in uri or uri in ("sqlite://", "sqlite:///"):
        return options
    # More pooled connections than a worker has threads: a connection opened and closed
    # per request (the pool's overflow) costs more than the query it serves.
    options.update(pool_size=16, max_overflow=16, pool_pre_ping=not uri.startswith("sqlite"))
    if uri.startswith("sqlite"):
        # The driver's busy timeout: a writer of another program waits for the lock, not fails.
        options["connect_args"] = {"timeout": config["SQLITE_BUSY_TIMEOUT_MS"] / 1000}
    return options
