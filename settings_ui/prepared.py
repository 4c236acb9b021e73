"""Core statements compiled once per database and run on the pool's own driver connections.

For this app's one-row reads and writes, SQLAlchemy's per-execution machinery (execution
context, result proxy, connection wrapper) costs several times the query itself: a read of
the settings row took ~190 µs through a Core connection and ~30 µs this way (bench/RESULTS.md).
SQLAlchemy still does everything that depends on the database: it writes the SQL for the
dialect, orders the parameters for the driver's style and converts values with each
column type's own processors (SQLite's dates and booleans, say). Driver errors are
re-raised as SQLAlchemy's exceptions, so callers handle one family of errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

Processor = Callable[[Any], Any] | None
_REQUIRED = object()


@dataclass(frozen=True)
class DriverConnection:
    """A pooled driver (DBAPI) connection and the dialect that compiles statements for it."""

    raw: Any
    dialect: Dialect

    def run(self, sql: str, arguments: Any = ()) -> Any:
        """Execute ``sql``; return the driver's cursor. Driver errors become SQLAlchemy's."""
        cursor = self.raw.cursor()
        try:
            cursor.execute(sql, arguments)
        except self.dialect.loaded_dbapi.Error as error:
            cursor.close()
            raise _error(sql, error, self.dialect) from error
        return cursor


@dataclass(frozen=True)
class _Compiled:
    sql: str
    order: tuple[str, ...] | None  # parameter names in order for a positional driver style, else None
    binds: tuple[tuple[str, Any, Processor], ...]  # name, value when not given (or _REQUIRED), processor
    columns: tuple[tuple[str, Processor], ...]


class Prepared:
    """One statement, compiled on first use for each dialect.

    ``column_keys`` names the columns an INSERT or UPDATE sets, each from the parameter
    of the same name.
    """

    def __init__(self, statement: ClauseElement, column_keys: tuple[str, ...] | None = None):
        self.statement = statement
        self.column_keys = list(column_keys) if column_keys else None
        self._by_dialect: dict[str, _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=self.column_keys)
            binds = tuple(
                (
                    name,
                    _REQUIRED if bind.required else bind.value,
                    bind.type.dialect_impl(dialect).bind_processor(dialect),
                )
                for name, bind in compiled.binds.items()
            )
            selected = getattr(self.statement, "selected_columns", None)
            columns = tuple(
                (column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
                for column in (selected or ())
            )
            order = tuple(compiled.positiontup) if compiled.positional else None
            found = self._by_dialect[dialect.name] = _Compiled(str(compiled), order, binds, columns)
        return found

    def execute(self, connection: DriverConnection, values: Mapping[str, Any] | None = None) -> Any:
        """Run on a driver connection; return the driver's cursor."""
        compiled = self._for(connection.dialect)
        values = values or {}
        params = {}
        for name, default, processor in compiled.binds:
            value = values.get(name, default)
            if value is _REQUIRED:
                raise KeyError(f"no value for the parameter {name!r} of {compiled.sql!r}")
            params[name] = value if processor is None else processor(value)
        arguments = tuple(params[name] for name in compiled.order) if compiled.order is not None else params
        return connection.run(compiled.sql, arguments)

    def rows(self, connection: DriverConnection, values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a SELECT; its rows as dictionaries keyed by column, values converted by column type."""
        cursor = self.execute(connection, values)
        try:
            fetched = cursor.fetchall()
        finally:
            cursor.close()
        columns = self._for(connection.dialect).columns
        return [
            {
                key: value if processor is None else processor(value)
                for (key, processor), value in zip(columns, row, strict=True)
            }
            for row in fetched
        ]


@contextlib.contextmanager
def driver_connection(engine: Engine) -> Iterator[DriverConnection]:
    """A pooled driver connection for reads; whatever it began is rolled back on return."""
    connection = engine.raw_connection()
    try:
        yield DriverConnection(connection, engine.dialect)
    finally:
        connection.close()  # back to the pool, which resets (rolls back) it


@contextlib.contextmanager
def driver_transaction(engine: Engine, begin: str | None = None) -> Iterator[DriverConnection]:
    """A pooled driver connection in one transaction: committed on success, rolled back on error.

    ``begin`` is the statement that opens it where the driver's implicit one will not do
    (SQLite's ``BEGIN IMMEDIATE``, to take the write lock before reading).
    """
    with driver_connection(engine) as connection:
        try:
            if begin:
                connection.run(begin).close()
            yield connection
        except BaseException:
            connection.raw.rollback()
            raise
        try:
            connection.raw.commit()
        except connection.dialect.loaded_dbapi.Error as error:
            connection.raw.rollback()
            raise _error("COMMIT", error, connection.dialect) from error


def _error(sql: str, error: Exception, dialect: Dialect) -> DBAPIError:
    # SQLAlchemy's exception for the driver's error. Its message never lists the values:
    # they can hold the encrypted password, and the message reaches the log.
    return DBAPIError.instance(sql, None, error, dialect.loaded_dbapi.Error, hide_parameters=True)
