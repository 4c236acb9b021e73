"""The database tables: one row of email settings (versioned for ETags), the audit trail,
failed sign-ins and admin sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SETTINGS_ROW_ID = 1


class Base(DeclarativeBase):
    pass


def table(model: type[Base]) -> Table:
    """``model``'s table, for Core statements (``__table__`` is only a FromClause to a type checker)."""
    return Base.metadata.tables[model.__tablename__]


class SettingsRow(Base):
    """The global email settings. There is exactly one row, id 1, created with the table.

    ``version`` grows by one on every write; it is the ETag of the API and the
    stale-form check of the page. The service reads and writes it with Core statements.
    """

    __tablename__ = "email_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    smtp_host: Mapped[str] = mapped_column(String(253), default="")
    smtp_port: Mapped[int] = mapped_column(Integer, default=0)
    encryption: Mapped[str] = mapped_column(String(16), default="Plain")
    from_email: Mapped[str] = mapped_column(String(1024), default="")
    username: Mapped[str] = mapped_column(String(1024), default="")
    password_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    allow_selfsigned_certs: Mapped[bool] = mapped_column(Boolean, default=False)
    pinned_cert_sha256: Mapped[str] = mapped_column(String(64), default="", server_default="")
    auth_method: Mapped[str] = mapped_column(String(16), default="password", server_default="password")
    oauth2_token_url: Mapped[str] = mapped_column(String(2048), default="", server_default="")
    oauth2_client_id: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    oauth2_scope: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    oauth2_client_secret_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    transport: Mapped[str] = mapped_column(String(32), default="smtp", server_default="smtp")
    google_service_account_key_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    password_file_server: Mapped[str | None] = mapped_column(Text, default=None)
    """The server SMTP_PASSWORD_FILE's password is bound to (JSON): set by the first save while the
    file is configured, kept through clear, changed only by the command line's --move-password-file."""
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    updated_by: Mapped[str | None] = mapped_column(String(255), default=None)


class AuditEvent(Base):
    """One entry of the audit trail: who did what, when, from where. Never a secret value."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(255))
    address: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")


class LoginFailure(Base):
    """Failed sign-ins from one client address, shared by every process of the app.

    ``checking_until`` is the lease of the one attempt being checked: parallel attempts
    wait for it, so they cannot all slip past the limit.
    """

    __tablename__ = "login_failure"

    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[float] = mapped_column(Float, index=True)
    """Seconds since the epoch: comparable across processes, unlike a monotonic clock."""
    checking_until: Mapped[float] = mapped_column(Float)


class AdminSession(Base):
    """A signed-in admin session: the cookie proves it only while this row exists.

    Logging out deletes the row, so a copy of the cookie taken before stops working;
    ``password_fingerprint`` ends every session when the admin's password changes.
    """

    __tablename__ = "admin_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 of the token in the cookie (a copy of the table signs nobody in)."""
    username: Mapped[str] = mapped_column(String(255))
    password_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, index=True)
    """Seconds since the epoch, like ``LoginFailure.last_at``."""


class Delivery(Base):
    """One message handed to the SMTP server (a test, sendmail, the Python API) and what became of it.

    Never the message, its subject, its recipients' addresses or a credential: how many recipients,
    the outcome, and on failure the step and the diagnosis (with recipients' addresses taken out).
    """

    __tablename__ = "delivery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    surface: Mapped[str] = mapped_column(String(16))
    recipients: Mapped[int] = mapped_column(Integer)
    sent: Mapped[bool] = mapped_column(Boolean)
    temporary: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_step: Mapped[str] = mapped_column(String(16), default="")
    cause: Mapped[str] = mapped_column(Text, default="")
    fix: Mapped[str] = mapped_column(Text, default="")
    server: Mapped[str] = mapped_column(String(300))
    elapsed_ms: Mapped[int] = mapped_column(Integer)


class DeliveryTotal(Base):
    """Running totals of deliveries for monitoring, kept when old deliveries are pruned.

    Per surface, outcome and failed step, the row with ``le_ms`` 0 counts them and sums their time;
    the rows with ``le_ms`` above 0 (or -1 for +Inf) count those that took at most that long.
    """

    __tablename__ = "delivery_total"

    surface: Mapped[str] = mapped_column(String(16), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    failed_step: Mapped[str] = mapped_column(String(16), primary_key=True)
    le_ms: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    sum_ms: Mapped[int] = mapped_column(Integer, default=0)


class OutboxMessage(Base):
    """A message of the product's that met a temporary failure, waiting for its next attempt.

    Its envelope (sender, recipients) and content are one Fernet token, under the key that encrypts
    the password: the database shows how many recipients and how big, never who or what.
    """

    __tablename__ = "outbox_message"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    surface: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    """While a runner (or a retry) is delivering it; past this time, another may take it over."""
    failed_step: Mapped[str] = mapped_column(String(16))
    last_error: Mapped[str] = mapped_column(Text)
    """The last attempt's diagnosis, recipients' addresses taken out."""
    recipients: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    envelope_encrypted: Mapped[str] = mapped_column(Text)


class Alert(Base):
    """One alert about the product's mail (failing, recovered, bounced) for ALERT_WEBHOOK_URL: its JSON
    payload, which never holds a credential, an address or a subject, and how sending it went."""

    __tablename__ = "alert"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    """For failing and recovered: when the run of failures began."""
    payload: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    """When to try sending it (again); None once delivered or given up."""
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_result: Mapped[str] = mapped_column(Text, default="")
    """What the webhook answered last (its HTTP status), or why it could not be reached."""
