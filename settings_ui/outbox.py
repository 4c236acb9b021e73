"""The outbox: the product's mail that met a temporary failure, delivered later.

A message sendmail or ``send_message`` could not deliver for a temporary reason (a 4xx reply, a
time-out, the network, Graph busy) is kept here, its envelope and content one Fernet token under
the password's key. It is tried again at growing intervals, Postfix's: 5 minutes after the first
failure, then twice as long each time, at most 4000 seconds (about an hour) apart, until the server
accepts it or ``OUTBOX_MAX_AGE`` (5 days) has passed; then it bounces: recorded as failed, alerted,
and deleted. No bounce email is sent. A permanent failure is never queued.

To deliver, a runner (or a retry from the page or the API) claims the message: it sets
``claimed_until`` past the longest a delivery can take, in a short transaction that picks the row
with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several runners never take the same message and
never wait for each other. The claim is released when the attempt is recorded. A process that dies
while it delivers leaves the claim to expire; the message is then tried again. If it died after the
server had accepted the message but before that was recorded, the message goes out twice: the one
case where it can.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from . import alerts, audit, crypto, database, deliveries, runtime, smtp, targets
from .audit import SYSTEM, as_utc
from .errors import SettingsError
from .models import outbox_message_table
from .params import json_type_name, reject_unknown
from .shapes import Schema

MINIMAL_BACKOFF = 300
MAXIMAL_BACKOFF = 4000
"""Seconds between attempts: Postfix's minimal_backoff_time and maximal_backoff_time."""
_CLAIM_MARGIN = 30.0
"""Seconds a claim outlasts the longest delivery (SMTP_TIMEOUT)."""


def backoff(attempts: int) -> timedelta:
    """How long to wait after the ``attempts``-th failed attempt: 5, 10, 20, 40 minutes, then 4000 s."""
    return timedelta(seconds=min(MINIMAL_BACKOFF * 2 ** (attempts - 1), MAXIMAL_BACKOFF))


@dataclass(frozen=True)
class Queued:
    """A message in the outbox, as the API lists it: never its addresses or subject."""

    id: int
    queued_at: datetime
    attempts: Annotated[int, Schema("attempts so far, the first included", minimum=1)]
    next_attempt_at: datetime
    last_error: Annotated[str, Schema("the last attempt's diagnosis (recipients' addresses left out)")]
    recipients: Annotated[int, Schema("how many recipients", minimum=1)]
    size: Annotated[int, Schema("the message's size in bytes", minimum=0)]


@dataclass(frozen=True)
class Listing:
    """The outbox's messages, the oldest first."""

    messages: list[Queued]


@dataclass(frozen=True)
class Attempt:
    """What one attempt on a queued message came to."""

    id: int
    outcome: Annotated[str, Schema(enum=["sent", "queued", "bounced", "busy", "gone"])]
    """sent; queued again (a temporary failure); bounced (a permanent failure, or too old); busy (another
    runner has it in hand); gone (no such message)."""
    message: str
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class Attempts:
    """What each attempt of a retry came to."""

    attempts: list[Attempt]


@dataclass(frozen=True)
class Dropped:
    dropped: bool


def queue(mail: smtp.Mail, report: smtp.Report, surface: str) -> int:
    """Keep ``mail``, which met the temporary failure ``report``, for later; return its id."""
    now = datetime.now(UTC)
    envelope = {
        "sender": mail.sender,
        "recipients": list(mail.recipients),
        "content": base64.b64encode(mail.content).decode(),
        "message_id": mail.message_id,
    }
    with database.engine().begin() as connection:
        return int(
            connection.execute(
                insert(outbox_message_table)
                .values(
                    queued_at=now,
                    surface=surface,
                    attempts=1,
                    next_attempt_at=now + backoff(1),
                    failed_step=report.failed_step or "",
                    last_error=deliveries.without_any_address(list(mail.recipients), report.cause or report.message),
                    recipients=len(mail.recipients),
                    size=len(mail.content),
                    envelope_encrypted=crypto.encrypt(json.dumps(envelope)),
                )
                .returning(outbox_message_table.c.id)
            ).scalar_one()
        )


def listing() -> Listing:
    with database.engine().connect() as connection:
        return Listing(messages(connection))


_IN_ORDER = select(outbox_message_table).order_by(outbox_message_table.c.queued_at, outbox_message_table.c.id)


def messages(connection: Connection) -> list[Queued]:
    """Every queued message, the oldest first."""
    rows = connection.execute(_IN_ORDER).mappings()
    return [
        Queued(
            row["id"],
            as_utc(row["queued_at"]),
            row["attempts"],
            as_utc(row["next_attempt_at"]),
            row["last_error"],
            row["recipients"],
            row["size"],
        )
        for row in rows
    ]


def deliver_due(stop: threading.Event | None = None) -> list[Attempt]:
    """Attempt every message that is due, one after another, until none is left (or ``stop`` is set)."""
    done = []
    while not (stop is not None and stop.is_set()):
        row = _claim(due_only=True)
        if row is None:
            break
        done.append(_attempt(row))
    return done


def retry(message_id: int | None = None) -> Attempts:
    """Attempt now the message ``message_id``, or every queued one, due or not."""
    if message_id is None:
        with database.engine().connect() as connection:
            queued = messages(connection)
        return Attempts([attempt for message in queued for attempt in retry(message.id).attempts])
    row = _claim(due_only=False, message_id=message_id)
    if row is not None:
        return Attempts([_attempt(row)])
    exists = _exists(message_id)
    return Attempts(
        [Attempt(message_id, "busy" if exists else "gone", _BUSY if exists else f"No message {message_id}.")]
    )


def parse_id(params: dict[str, Any]) -> int | None:
    """The ``id`` parameter of a retry or a drop, if given: a message's id (a positive integer)."""
    reject_unknown(params, ("id",))
    value = params.get("id")
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise SettingsError({"id": f"must be a message's id (a positive integer), not {json_type_name(value)}"})
    return value


class OutboxError(SettingsError):
    """No such message in the outbox, or it is being delivered right now."""

    def __init__(self, message_id: int, busy: bool):
        self.busy = busy
        said = _BUSY if busy else f"There is no message {message_id} in the outbox (sent, bounced or dropped)."
        super().__init__({"id": said.removeprefix("There is ")}, message=said)


def drop(message_id: int | None, actor: audit.Actor = SYSTEM) -> Dropped:
    """Remove the message ``message_id`` unsent; raise :class:`OutboxError` if there is none, or while it
    is being delivered."""
    if message_id is None:
        raise SettingsError({"id": "is required: the id of the message to drop"})
    now = datetime.now(UTC)
    with database.engine().begin() as connection:
        dropped = connection.execute(
            delete(outbox_message_table)
            .where(outbox_message_table.c.id == message_id, _unclaimed(now))
            .returning(outbox_message_table.c.id)
        ).first()
        if dropped is not None:
            audit.add(connection, "outbox message dropped", actor, f"message {message_id}, unsent")
    if dropped is None:
        raise OutboxError(message_id, busy=_exists(message_id))
    return Dropped(True)


@dataclass(frozen=True)
class Summary:
    """The outbox at a glance, for the page and /metrics."""

    count: int
    oldest_queued_at: datetime | None
    next_attempt_at: datetime | None
    last_error: str


def summary() -> Summary:
    with database.engine().connect() as connection:
        count, oldest, next_at = connection.execute(
            select(
                func.count(),
                func.min(outbox_message_table.c.queued_at),
                func.min(outbox_message_table.c.next_attempt_at),
            )
        ).one()
        last_error = connection.execute(
            select(outbox_message_table.c.last_error).order_by(outbox_message_table.c.next_attempt_at.desc()).limit(1)
        ).scalar()
    return Summary(
        int(count), as_utc(oldest) if oldest else None, as_utc(next_at) if next_at else None, last_error or ""
    )


def next_due() -> datetime | None:
    """When the next message falls due, if any is queued."""
    return summary().next_attempt_at


_BUSY = "Another runner is delivering this message right now."


def _unclaimed(now: datetime) -> Any:
    return or_(outbox_message_table.c.claimed_until.is_(None), outbox_message_table.c.claimed_until < now)


def _exists(message_id: int) -> bool:
    with database.engine().connect() as connection:
        return (
            connection.execute(select(outbox_message_table.c.id).where(outbox_message_table.c.id == message_id)).first()
            is not None
        )


def _claim(*, due_only: bool, message_id: int | None = None) -> dict[str, Any] | None:
    """Take one message to deliver, or None: the next due one (``due_only``), or the one ``message_id``.
    Nobody else takes it until the claim is released or expires."""
    now = datetime.now(UTC)
    claim_until = now + timedelta(seconds=float(runtime.current().config["SMTP_TIMEOUT"]) + _CLAIM_MARGIN)
    query = select(outbox_message_table).where(_unclaimed(now))
    if due_only:
        query = query.where(outbox_message_table.c.next_attempt_at <= now)
    if message_id is not None:
        query = query.where(outbox_message_table.c.id == message_id)
    # PostgreSQL: a row another runner is claiming is skipped, not waited for (SQLite has no row locks:
    # its one writer at a time, and the claim's condition below, keep two runners apart).
    query = (
        query.order_by(outbox_message_table.c.next_attempt_at, outbox_message_table.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    with database.engine().begin() as connection:
        row = connection.execute(query).mappings().first()
        if row is None:
            return None
        claimed = connection.execute(
            update(outbox_message_table)
            .where(outbox_message_table.c.id == row["id"], _unclaimed(now))
            .values(claimed_until=claim_until)
        ).rowcount
    return dict(row) if claimed == 1 else None


def _attempt(row: dict[str, Any]) -> Attempt:
    """Deliver one claimed message and record what became of it (the claim ends with it)."""
    envelope = json.loads(crypto.decrypt(row["envelope_encrypted"]))
    recipients = tuple(envelope["recipients"])
    mail = smtp.Mail(envelope["sender"], recipients, base64.b64decode(envelope["content"]), envelope["message_id"])
    now = datetime.now(UTC)
    try:
        target = targets.resolve_target({})
    except SettingsError as problem:  # the settings were cleared or broken meanwhile: wait for them
        return _again(row, now, f"The email settings cannot send mail yet: {problem.message}", "", list(recipients))
    options = targets.smtp_options()
    report = smtp.deliver(target, mail, options)
    deliveries.record(row["surface"], report, recipients, *smtp.server_of(target, options))
    alerts.after_delivery(report, list(recipients))
    if report.sent:
        with database.engine().begin() as connection:
            connection.execute(delete(outbox_message_table).where(outbox_message_table.c.id == row["id"]))
        return Attempt(row["id"], "sent", report.message)
    too_old = now - as_utc(row["queued_at"]) >= timedelta(seconds=float(runtime.current().config["OUTBOX_MAX_AGE"]))
    if report.temporary and not too_old:
        return _again(row, now, report.cause or report.message, report.failed_step or "", list(recipients))
    return _bounce(row, report, too_old, list(recipients))


def _again(row: dict[str, Any], now: datetime, error: str, failed_step: str, recipients: list[str]) -> Attempt:
    attempts = row["attempts"] + 1
    next_at = now + backoff(attempts)
    with database.engine().begin() as connection:
        connection.execute(
            update(outbox_message_table)
            .where(outbox_message_table.c.id == row["id"])
            .values(
                attempts=attempts,
                next_attempt_at=next_at,
                claimed_until=None,
                last_error=deliveries.without_any_address(recipients, error),
                failed_step=failed_step,
            )
        )
    return Attempt(row["id"], "queued", deliveries.without_any_address(recipients, error), next_at)


def _bounce(row: dict[str, Any], report: smtp.Report, too_old: bool, recipients: list[str]) -> Attempt:
    why = deliveries.without_any_address(recipients, report.cause or report.message)
    reason = (
        f"still failing after {row['attempts'] + 1} attempts over OUTBOX_MAX_AGE: {why}"
        if too_old
        else f"a permanent failure: {why}"
    )
    with database.engine().begin() as connection:
        connection.execute(delete(outbox_message_table).where(outbox_message_table.c.id == row["id"]))
        audit.add(connection, "outbox message bounced", SYSTEM, f"message {row['id']}: {reason}")
    alerts.bounced(report, recipients, reason)
    return Attempt(row["id"], "bounced", f"The message bounced, {reason}")
