"""The database schema, brought up to date at start-up with Alembic.

The migrations' history is kept in a version table of settings-ui's own, so a product that
mounts settings-ui on its database keeps its own ``alembic_version`` untouched.

Several processes may start together (gunicorn's workers, app servers on one PostgreSQL):
a file lock, and on PostgreSQL an advisory lock, let one of them migrate while the others
wait, then find nothing left to do.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from .instance_files import make_private_folder, open_private

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "settings_ui_alembic_version"
HEAD_REVISION = "0010"
"""The newest migration's revision: a database at it needs no migration tool (a test keeps it the head)."""
FIRST_REVISION = "0001"
"""The schema that databases made before migrations existed already have."""
_OLD_VERSION_TABLE = "alembic_version"
"""Where the standalone app recorded its revision before it had a version table of its own."""

_ADVISORY_LOCK_ID = 7_420_311  # any constant shared by every process of this app


def is_current(engine: Engine) -> bool:
    """Whether the database is at ``HEAD_REVISION``, by one read of the version table."""
    try:
        with engine.connect() as connection:
            found = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    except SQLAlchemyError:  # no version table yet
        return False
    return found == HEAD_REVISION


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration for settings-ui's migrations, run on ``connection``."""
    from alembic.config import Config  # loaded only to migrate

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def upgrade_database(engine: Engine, instance_path: Path) -> None:
    """Apply every pending migration, once, even with several processes starting together."""
    from alembic import command  # loaded only to migrate

    with _process_lock(instance_path / "migrate.lock"), engine.connect() as connection, _database_lock(connection):
        config = alembic_config(connection)
        tables = set(inspect(connection).get_table_names())
        if "email_settings" in tables and VERSION_TABLE not in tables:
            command.stamp(config, _revision_reached(connection, config, tables))
        command.upgrade(config, "head")
        connection.commit()


def _revision_reached(connection: Connection, config: Config, tables: set[str]) -> str:
    """The revision of a database made before settings-ui had its own version table."""
    if _OLD_VERSION_TABLE in tables:
        from alembic.script import ScriptDirectory

        found = connection.execute(text(f"SELECT version_num FROM {_OLD_VERSION_TABLE}")).scalar()
        known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
        if found in known:
            return str(found)
    return FIRST_REVISION  # made by create_all before migrations existed


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
def _database_lock(connection: Connection) -> Iterator[None]:
    """App servers on other hosts: PostgreSQL itself serialises the upgrade."""
    if connection.dialect.name != "postgresql":
        yield
        return
    connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
    connection.commit()
    try:
        yield
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _ADVISORY_LOCK_ID})
        connection.commit()
