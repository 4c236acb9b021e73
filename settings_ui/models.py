"""The database tables: one row of email settings (versioned for ETags), the audit trail, failed
sign-ins, admin sessions, deliveries, the outbox and alerts.

Every query is a SQLAlchemy Core statement, so the tables are Core ``Table`` objects: the ORM is
never used, and sendmail, a process per message, does not pay for importing it.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Float, Integer, MetaData, String, Table, Text

SETTINGS_ROW_ID = 1

metadata = MetaData()


# The global email settings. There is exactly one row, id 1, created with the table. ``version``
# grows by one on every write; it is the ETag of the API and the stale-form check of the page. The
# service reads and writes it with Core statements.
settings_table = Table(
    "email_settings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("smtp_host", String(253), default="", nullable=False),
    Column("smtp_port", Integer, default=0, nullable=False),
    Column("encryption", String(16), default="Plain", nullable=False),
    Column("from_email", String(1024), default="", nullable=False),
    Column("username", String(1024), default="", nullable=False),
    Column("password_encrypted", Text, nullable=True),
    Column("allow_selfsigned_certs", Boolean, default=False, nullable=False),
    Column("pinned_cert_sha256", String(64), default="", server_default="", nullable=False),
    Column("auth_method", String(16), default="password", server_default="password", nullable=False),
    Column("oauth2_token_url", String(2048), default="", server_default="", nullable=False),
    Column("oauth2_client_id", String(1024), default="", server_default="", nullable=False),
    Column("oauth2_scope", String(1024), default="", server_default="", nullable=False),
    Column("oauth2_client_secret_encrypted", Text, nullable=True),
    Column("transport", String(32), default="smtp", server_default="smtp", nullable=False),
    Column("google_service_account_key_encrypted", Text, nullable=True),
    # The server SMTP_PASSWORD_FILE's password is bound to (JSON): set by the first save while the
    # file is configured, kept through clear, changed only by the command line's
    # --move-password-file.
    Column("password_file_server", Text, nullable=True),
    Column("version", Integer, default=0, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=True),
    Column("updated_by", String(255), nullable=True),
)


# One entry of the audit trail: who did what, when, from where. Never a secret value.
audit_event_table = Table(
    "audit_event",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("address", String(64), default="", nullable=False),
    Column("action", String(64), nullable=False),
    Column("detail", Text, default="", nullable=False),
)


# Failed sign-ins from one client address, shared by every process of the app. ``checking_until`` is
# the lease of the one attempt being checked: parallel attempts wait for it, so they cannot all slip
# past the limit.
login_failure_table = Table(
    "login_failure",
    metadata,
    Column("address", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    # Seconds since the epoch: comparable across processes, unlike a monotonic clock.
    Column("last_at", Float, index=True, nullable=False),
    Column("checking_until", Float, nullable=False),
)


# A signed-in admin session: the cookie proves it only while this row exists. Logging out deletes the
# row, so a copy of the cookie taken before stops working; ``password_fingerprint`` ends every session
# when the admin's password changes.
admin_session_table = Table(
    "admin_session",
    metadata,
    # SHA-256 of the token in the cookie (a copy of the table signs nobody in).
    Column("id", String(64), primary_key=True),
    Column("username", String(255), nullable=False),
    Column("password_fingerprint", String(64), nullable=False),
    # Seconds since the epoch, like login_failure's ``last_at``.
    Column("created_at", Float, index=True, nullable=False),
)


# One message handed to the SMTP server (a test, sendmail, the Python API) and what became of it.
# Never the message, its subject, its recipients' addresses or a credential: how many recipients, the
# outcome, and on failure the step and the diagnosis (with recipients' addresses taken out).
delivery_table = Table(
    "delivery",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), index=True, nullable=False),
    Column("surface", String(16), nullable=False),
    Column("recipients", Integer, nullable=False),
    Column("sent", Boolean, nullable=False),
    Column("temporary", Boolean, default=False, nullable=False),
    Column("failed_step", String(16), default="", nullable=False),
    Column("cause", Text, default="", nullable=False),
    Column("fix", Text, default="", nullable=False),
    Column("server", String(300), nullable=False),
    Column("elapsed_ms", Integer, nullable=False),
)


# Running totals of deliveries for monitoring, kept when old deliveries are pruned. Per surface,
# outcome and failed step, the row with ``le_ms`` 0 counts them and sums their time; the rows with
# ``le_ms`` above 0 (or -1 for +Inf) count those that took at most that long.
delivery_total_table = Table(
    "delivery_total",
    metadata,
    Column("surface", String(16), primary_key=True),
    Column("outcome", String(16), primary_key=True),
    Column("failed_step", String(16), primary_key=True),
    Column("le_ms", Integer, primary_key=True),
    Column("count", Integer, default=0, nullable=False),
    Column("sum_ms", Integer, default=0, nullable=False),
)


# A message of the product's that met a temporary failure, waiting for its next attempt. Its envelope
# (sender, recipients) and content are one Fernet token, under the key that encrypts the password: the
# database shows how many recipients and how big, never who or what.
outbox_message_table = Table(
    "outbox_message",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("queued_at", DateTime(timezone=True), nullable=False),
    Column("surface", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), index=True, nullable=False),
    # While a runner (or a retry) is delivering it; past this time, another may take it over.
    Column("claimed_until", DateTime(timezone=True), nullable=True),
    Column("failed_step", String(16), nullable=False),
    # The last attempt's diagnosis, recipients' addresses taken out.
    Column("last_error", Text, nullable=False),
    Column("recipients", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("envelope_encrypted", Text, nullable=False),
)


# One alert about the product's mail (failing, recovered, bounced) for ALERT_WEBHOOK_URL: its JSON
# payload, which never holds a credential, an address or a subject, and how sending it went.
alert_table = Table(
    "alert",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # For failing and recovered: when the run of failures began.
    Column("since", DateTime(timezone=True), nullable=True),
    Column("payload", Text, nullable=False),
    Column("attempts", Integer, default=0, nullable=False),
    # When to try sending it (again); None once delivered or given up.
    Column("next_try_at", DateTime(timezone=True), nullable=True),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    # What the webhook answered last (its HTTP status), or why it could not be reached.
    Column("last_result", Text, default="", nullable=False),
)
