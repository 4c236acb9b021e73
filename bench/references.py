"""The references settings-ui is measured against, served by the same gunicorn settings.

- ``POST /email-settings/show``: a bare Flask route answering the same envelope with jsonify.
- ``POST /email-settings/edit``: the durable-write limit, the same one-row UPDATE of a SQLite
  file in WAL mode with the driver's default durability, and nothing else (no validation, no
  audit trail).
- ``GET /``: the textbook Flask-WTF page: the row loaded with the Flask-SQLAlchemy ORM and a
  form with the same seven fields rendered by WTForms' own widgets, CSRF on.

The database file is ``BENCH_DATABASE`` (made here when missing).
"""

from __future__ import annotations

import os
import sqlite3
import threading

from flask import Flask, jsonify, render_template
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import FlaskForm
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from wtforms import BooleanField, EmailField, IntegerField, PasswordField, SelectField, StringField
from wtforms.validators import Email, InputRequired, NumberRange

DATABASE = os.environ.get("BENCH_DATABASE", "/tmp/settings-ui-bench-references.db")
SETTINGS = {
    "allow_selfsigned_certs": False,
    "encryption": "StartTLS",
    "from_email": "noreply@example.com",
    "smtp_host": "smtp.example.com",
    "smtp_port": 587,
    "username": "mailer",
}


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class EmailSettings(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    smtp_host: Mapped[str]
    smtp_port: Mapped[int]
    encryption: Mapped[str]
    from_email: Mapped[str]
    username: Mapped[str]
    allow_selfsigned_certs: Mapped[bool]


class SettingsForm(FlaskForm):
    smtp_host = StringField("SMTP server", validators=[InputRequired()])
    smtp_port = IntegerField("Port", validators=[InputRequired(), NumberRange(1, 65535)])
    encryption = SelectField("Encryption", choices=["Plain", "StartTLS", "TLS"])
    allow_selfsigned_certs = BooleanField("Accept self-signed certificates")
    from_email = EmailField("From address", validators=[InputRequired(), Email(check_deliverability=False)])
    username = StringField("Username")
    password = PasswordField("Password")


app = Flask(__name__)
app.config.update(SECRET_KEY="bench-only", SQLALCHEMY_DATABASE_URI=f"sqlite:///{DATABASE}")
db.init_app(app)
with app.app_context():
    db.create_all()
    if db.session.get(EmailSettings, 1) is None:
        db.session.add(EmailSettings(id=1, **SETTINGS))
        db.session.commit()
_connections = threading.local()


def _connection() -> sqlite3.Connection:
    if not hasattr(_connections, "value"):
        _connections.value = sqlite3.connect(DATABASE, timeout=15, isolation_level=None)
        _connections.value.execute("PRAGMA journal_mode=WAL")
    return _connections.value


@app.post("/email-settings/show")
def show():  # type: ignore[no-untyped-def]
    return jsonify({"result": SETTINGS, "successful": True})


@app.post("/email-settings/edit")
def edit():  # type: ignore[no-untyped-def]
    connection = _connection()
    # The write lock from the start: a deferred transaction that must upgrade can fail at once.
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("UPDATE email_settings SET smtp_port = ? WHERE id = 1", (587,))
    connection.execute("COMMIT")
    return jsonify({"result": SETTINGS, "successful": True})


@app.get("/")
def page() -> str:
    settings = db.session.get(EmailSettings, 1)
    return render_template("peer.html", form=SettingsForm(obj=settings))


@app.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    return jsonify({"status": "ok"})
