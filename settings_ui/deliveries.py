"""The record of deliveries: what happened to each message sent, for the page's panel and for monitoring.

Each send (a test email, sendmail, the Python API) is one row: when, from which surface, how
many recipients, the outcome, the failed step and its diagnosis, the server and the time taken.
Never the message, its subject, its recipients' addresses or a credential. Rows older than 30
days, or past the newest 10,000, are pruned on write; running totals for /metrics are kept apart,
so that pruning never makes a counter go down.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import database
from .audit import as_utc
from .models import delivery_table, delivery_total_table
from .shapes import Schema
from .smtp import Report, host_port

SURFACES = ("test", "sendmail", "python")
KEEP_DAYS = 30
KEEP_ROWS = 10_000
BUCKETS_MS = (100, 250, 500, 1000, 2500, 5000, 10_000, 30_000)
"""The delivery-time histogram's upper bounds, in milliseconds (then +Inf)."""
_INFINITY = -1
_COUNT_ROW = 0


@dataclass(frozen=True)
class Outcome:
    """One delivery as the panel shows it."""

    at: datetime
    surface: Annotated[str, Schema(enum=list(SURFACES))]
    _sent: bool
    failed_step: str | None
    cause: Annotated[str, Schema("the diagnosis (recipients' addresses left out)")]
    fix: str
    server: str


@dataclass(frozen=True)
class Status:
    """The panel's figures: the last success and failure, the last 24 hours, and whether mail is failing."""

    last_success: Outcome | None
    last_failure: Outcome | None
    sent_24h: Annotated[int, Schema("the product's mail sent in the last 24 hours (test emails apart)", minimum=0)]
    failed_24h: Annotated[int, Schema("the product's mail that failed in the last 24 hours", minimum=0)]
    tests_24h: Annotated[int, Schema("test emails in the last 24 hours, sent or not", minimum=0)]
    failing_since: Annotated[
        datetime | None,
        Schema(
            "set while the last real delivery (not a test) failed after the last success: when that run of "
            "failures began"
        ),
    ]


def record(surface: str, report: Report, recipients: Iterable[str], smtp_host: str, smtp_port: int) -> None:
    """Record what became of one message, with every recipient's address taken out of the diagnosis."""
    addresses = list(recipients)
    now = datetime.now(UTC)
    outcome = "sent" if report.sent else "failed"
    failed_step = "" if report.sent else report.failed_step or ""
    with database.engine().begin() as connection:
        connection.execute(
            insert(delivery_table).values(
                at=now,
                surface=surface,
                recipients=len(addresses),
                sent=report.sent,
                temporary=report.temporary,
                failed_step=failed_step,
                cause="" if report.sent else without(addresses, report.cause),
                fix="" if report.sent else without(addresses, report.fix),
                server=host_port(smtp_host, smtp_port),
                elapsed_ms=report.elapsed_ms,
            )
        )
        key = {"surface": surface, "outcome": outcome, "failed_step": failed_step}
        _add(connection, key | {"le_ms": _COUNT_ROW}, report.elapsed_ms)
        for bound in (*(b for b in BUCKETS_MS if report.elapsed_ms <= b), _INFINITY):
            _add(connection, key | {"le_ms": bound}, report.elapsed_ms)
        _prune(connection, now)


_ADDRESS = re.compile(r"<?[^\s<>@\"',;:()]+@[^\s<>@\"',;:()]+[^\s<>@\"',;:().]>?")


def without_any_address(addresses: list[str], text: str) -> str:
    """``text`` with the recipients' ``addresses`` as "(a recipient)" and any other address (the
    sender's) as "(an address)": for what leaves the page and the API (the outbox, alerts)."""
    return _ADDRESS.sub("(an address)", without(addresses, text))


def without(addresses: list[str], text: str) -> str:
    """``text`` with each of ``addresses`` replaced by "(a recipient)"."""
    for address in addresses:
        text = re.sub(re.escape(address), "(a recipient)", text, flags=re.IGNORECASE)
    return text


def _add(connection: Connection, key: dict[str, Any], elapsed_ms: int) -> None:
    """Add one delivery to a running total, creating it the first time (another process may race us)."""
    where = [delivery_total_table.c[name] == value for name, value in key.items()]
    increment = (
        update(delivery_total_table)
        .where(*where)
        .values(count=delivery_total_table.c.count + 1, sum_ms=delivery_total_table.c.sum_ms + elapsed_ms)
    )
    if connection.execute(increment).rowcount:
        return
    try:
        with connection.begin_nested():
            connection.execute(insert(delivery_total_table).values(**key, count=1, sum_ms=elapsed_ms))
    except IntegrityError:  # created meanwhile by another writer: add to theirs
        connection.execute(increment)


def _prune(connection: Connection, now: datetime) -> None:
    connection.execute(delete(delivery_table).where(delivery_table.c.at < now - timedelta(days=KEEP_DAYS)))
    cutoff = connection.execute(
        select(delivery_table.c.id).order_by(delivery_table.c.id.desc()).offset(KEEP_ROWS).limit(1)
    ).scalar()
    if cutoff is not None:
        connection.execute(delete(delivery_table).where(delivery_table.c.id <= cutoff))


def _newest(condition: Any) -> Any:
    return (
        select(delivery_table)
        .where(condition)
        .order_by(delivery_table.c.at.desc(), delivery_table.c.id.desc())
        .limit(1)
    )


# Built once: a statement built per call costs more than the query it runs.
_REAL = delivery_table.c.surface != "test"
_RECENT = delivery_table.c.at >= bindparam("since")
_LAST_SENT = _newest(delivery_table.c.sent.is_(True))
_LAST_FAILED = _newest(delivery_table.c.sent.is_(False))
_LAST_REAL = _newest(_REAL)
_COUNTS = select(delivery_table.c.sent, func.count()).where(_RECENT, _REAL).group_by(delivery_table.c.sent)
_TESTS = select(func.count()).where(_RECENT, delivery_table.c.surface == "test")
_FIRST_FAILURE = select(func.min(delivery_table.c.at)).where(
    _REAL, delivery_table.c.sent.is_(False), delivery_table.c.at > bindparam("after")
)
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def status(connection: Connection) -> Status:
    """The figures of the "Mail delivery" panel."""
    since = {"since": datetime.now(UTC) - timedelta(hours=24)}
    last_success = _last(connection, _LAST_SENT)
    last_failure = _last(connection, _LAST_FAILED)
    counts: dict[bool, int] = dict(connection.execute(_COUNTS, since).all())
    tests = connection.execute(_TESTS, since).scalar_one()
    last_real = _last(connection, _LAST_REAL)
    failing_since = None
    if last_real is not None and not last_real._sent:
        after = last_success.at if last_success else _NEVER
        first = connection.execute(_FIRST_FAILURE, {"after": after}).scalar()
        failing_since = as_utc(first) if first else None
    return Status(last_success, last_failure, counts.get(True, 0), counts.get(False, 0), int(tests), failing_since)


def _last(connection: Connection, newest: Any) -> Outcome | None:
    row = connection.execute(newest).mappings().first()
    if row is None:
        return None
    return Outcome(
        as_utc(row["at"]),
        row["surface"],
        row["sent"],
        row["failed_step"] or None,
        row["cause"],
        row["fix"],
        row["server"],
    )


def totals() -> list[dict[str, Any]]:
    """Every running total, for /metrics."""
    with database.engine().connect() as connection:
        return [dict(row) for row in connection.execute(select(delivery_total_table)).mappings()]
