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


@dataclass(frozen=True)
class _Compiled:
    sql: str
    order: tuple[str, ...] | None  # parameter names in order for a positional driver style, else None
    compiled: Any
    binds: dict[str, Processor]
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
            binds = {name: _bind_processor(bind.type, dialect) for name, bind in compiled.binds.items()}
            selected = getattr(self.statement, "selected_columns", None)
            columns = tuple(
                (column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
                for column in (selected or ())
            )
            order = tuple(compiled.positiontup) if compiled.positional else None
            found = self._by_dialect[dialect.name] = _Compiled(str(compiled), order, compiled, binds, columns)
        return found

    def execute(self, connection: Any, dialect: Dialect, values: Mapping[str, Any] | None = None) -> Any:
        """Run on a driver connection; return the driver's cursor."""
        compiled = self._for(dialect)
        params = compiled.compiled.construct_params(values or {}) if compiled.binds else {}
        for name, processor in compiled.binds.items():
            if processor is not None:
                params[name] = processor(params[name])
        arguments = tuple(params[name] for name in compiled.order) if compiled.order is not None else params
        cursor = connection.cursor()
        try:
            cursor.execute(compiled.sql, arguments)
        except dialect.loaded_dbapi.Error as error:
            cursor.close()
            raise DBAPIError.instance(compiled.sql, arguments, error, dialect.loaded_dbapi.Error) from error
        return cursor

    def rows(self, connection: Any, dialect: Dialect, values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a SELECT; its rows as dictionaries keyed by column, values converted by column type."""
        cursor = self.execute(connection, dialect, values)
        try:
            fetched = cursor.fetchall()
        finally:
            cursor.close()
        columns = self._for(dialect).columns
        return [
            {
                key: value if processor is None else processor(value)
                for (key, processor), value in zip(columns, row, strict=True)
            }
            for row in fetched
        ]


def _bind_processor(type_: Any, dialect: Dialect) -> Processor:
    return type_.dialect_impl(dialect).bind_processor(dialect)


@contextlib.contextmanager
def driver_connection(engine: Engine) -> Iterator[Any]:
    """A pooled driver connection for reads; whatever it began is rolled back on return."""
    connection = engine.raw_connection()
    try:
        yield connection
    finally:
        connection.close()  # back to the pool, which resets (rolls back) it


@contextlib.contextmanager
def driver_transaction(engine: Engine, begin: str | None = None) -> Iterator[Any]:
    """A pooled driver connection in one transaction: committed on success, rolled back on error.

    ``begin`` is the statement that opens it where the driver's implicit one will not do
    (SQLite's ``BEGIN IMMEDIATE``, to take the write lock before reading).
    """
    dialect = engine.dialect
    with driver_connection(engine) as connection:
        try:
            if begin:
                cursor = connection.cursor()
                try:
                    cursor.execute(begin)
                except dialect.loaded_dbapi.Error as error:
                    raise DBAPIError.instance(begin, (), error, dialect.loaded_dbapi.Error) from error
                finally:
                    cursor.close()
            yield connection
        except BaseException:
            connection.rollback()
            raise
        try:
            connection.commit()
        except dialect.loaded_dbapi.Error as error:
            connection.rollback()
            raise DBAPIError.instance("COMMIT", (), error, dialect.loaded_dbapi.Error) from error
