"""The database schema, brought up to date at start-up with Flask-Migrate's ``upgrade``.

Several processes may start together (gunicorn's workers, app servers on one PostgreSQL):
a file lock, and on PostgreSQL an advisory lock, let one of them migrate while the others
wait, then find nothing left to do.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from flask import Flask
from flask_migrate import stamp, upgrade
from sqlalchemy import inspect, text

from .extensions import db, migrate
from .instance_files import make_private_folder, open_private

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
FIRST_REVISION = "0001"
"""The schema that databases made before migrations existed already have."""

_ADVISORY_LOCK_ID = 7_420_311  # any constant shared by every process of this app


def init_app(app: Flask) -> None:
    # render_as_batch: SQLite can only alter a table by copying it.
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True, compare_type=True)


def upgrade_database(app: Flask) -> None:
    """Apply every pending migration, once, even with several processes starting together."""
    with _process_lock(Path(app.instance_path) / "migrate.lock"), _database_lock():
        tables = set(inspect(db.engine).get_table_names())
        if "email_settings" in tables and "alembic_version" not in tables:
            stamp(revision=FIRST_REVISION)  # made by create_all before migrations existed
        upgrade()


@contextlib.contextmanager
def _process_lock(path: Path) -> Iterator[None]:
    make_private_folder(path.parent)
    with open_private(path) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _database_lock() -> Iterator[None]:
    """App servers on other hosts: PostgreSQL itself serialises the upgrade."""
    if db.engine.dialect.name != "postgresql":
        yield
        return
    with db.engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _ADVISORY_LOCK_ID})
