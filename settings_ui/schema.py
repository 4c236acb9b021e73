"""Bringing the database schema up to date at start-up, through the Alembic migrations.

Alembic (with Mako and every dialect's DDL) takes longer to import than the rest of the
app takes to start, so it is imported only when a migration is due: a database already
at ``HEAD_REVISION`` is recognised with one query.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from .extensions import db
from .instance_files import make_private_folder, open_private

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
FIRST_REVISION = "0001"
"""The schema that databases made before migrations existed already have."""
HEAD_REVISION = "0002"
"""The newest migration in ``migrations/versions`` (a test checks that it is)."""

_ADVISORY_LOCK_ID = 7_420_311  # any constant shared by every process of this app


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade_database(app: Flask) -> None:
    """Apply every pending migration, once, even with several processes starting together."""
    if current_revision() == HEAD_REVISION:
        return
    from alembic import command

    config = alembic_config()
    with _process_lock(Path(app.instance_path) / "migrate.lock"), db.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # App servers on other hosts: PostgreSQL itself serialises the upgrade.
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
        tables = set(inspect(connection).get_table_names())
        config.attributes["connection"] = connection
        if "email_settings" in tables and "alembic_version" not in tables:
            command.stamp(config, FIRST_REVISION)  # made by create_all before migrations existed
        command.upgrade(config, "head")


def current_revision() -> str | None:
    """The database's revision, read without Alembic; None when it has none (or no table yet)."""
    try:
        with db.engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:  # no alembic_version table: a new database, or one from before migrations
        return None


@contextlib.contextmanager
def _process_lock(path: Path) -> Iterator[None]:
    make_private_folder(path.parent)
    with open_private(path) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
