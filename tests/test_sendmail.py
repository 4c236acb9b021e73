"""The sendmail command as another program runs it: a subprocess, a message on standard input,
an exit status. Against aiosmtpd servers that record what arrived."""

from __future__ import annotations

import os
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine

from settings_ui import database, runtime, schema

from .apps import make_app
from .helpers import EXAMPLE_PASSWORD, SENDER, call, configure
from .helpers import SENDMAIL_MESSAGE as MESSAGE
from .processes import sendmail
from .smtp_servers import Authenticator, Certificates, RecordingHandler, free_port, smtp_server


@pytest.fixture
def app(tmp_path: Path, certificates: Certificates) -> Flask:
    return make_app(tmp_path, SMTP_TIMEOUT=3, SMTP_CA_FILE=str(certificates.ca_file))


def test_t_takes_to_cc_and_bcc_and_strips_bcc_and_fills_from_date_and_message_id(app: Flask) -> None:
    with smtp_server() as (port, handler):
        configure(app, port)
        result = sendmail(app, "-t", "-i")
    assert result.returncode == 0, result.stderr
    [received] = handler.received
    assert sorted(received.rcpt_tos) == ["alice@example.net", "bob@example.net", "carol@example.net"]
    assert received.mail_from == SENDER
    delivered = received.message
    assert delivered["Bcc"] is None and b"carol" not in received.message.as_bytes()
    assert delivered["From"] == SENDER and delivered["Date"] and delivered["Message-ID"]
    assert delivered["Subject"] == "Quarterly report" and "Hello." in delivered.get_content()


def test_recipients_on_the_command_line_and_an_envelope_sender(app: Flask) -> None:
    with smtp_server() as (port, handler):
        configure(app, port)
        result = sendmail(app, "-f", "bounces@example.com", "dave@example.net")
    assert result.returncode == 0, result.stderr
    [received] = handler.received
    assert received.rcpt_tos == ["dave@example.net"] and received.mail_from == "bounces@example.com"
    assert received.message["From"] == SENDER  # filled in: the message had none


def test_the_console_script_is_the_same_sendmail(app: Flask) -> None:
    script = Path(sys.executable).parent / "settings-ui-sendmail"
    with smtp_server() as (port, handler):
        configure(app, port)
        result = sendmail(app, "erin@example.net", command=[str(script)])
    assert result.returncode == 0, result.stderr
    assert handler.received[0].rcpt_tos == ["erin@example.net"]


@pytest.mark.parametrize(
    ("reply", "status"),
    [("451 4.3.0 Try again later", 75), ("550 5.1.1 User unknown", 69)],
    ids=["temporary-451", "permanent-550"],
)
def test_with_odi_a_refusal_exits_75_when_temporary_and_69_when_permanent(app: Flask, reply: str, status: int) -> None:
    with smtp_server(RecordingHandler(recipient_reply=reply)) as (port, handler):
        configure(app, port)
        result = sendmail(app, "-odi", "frank@example.net")  # deliver now: nothing is queued
    assert result.returncode == status
    stderr = result.stderr.decode()
    assert "the rcpt_to step failed" in stderr and reply.split()[0] in stderr
    assert handler.received == []


def test_a_server_that_is_not_there_is_temporary(app: Flask) -> None:
    configure(app, free_port())
    result = sendmail(app, "-odi", "grace@example.net")
    assert result.returncode == 75 and b"refused the connection" in result.stderr


@pytest.mark.parametrize(
    ("message", "args"),
    [
        (b"", ()),
        (b"no header here, just words\n", ("heidi@example.net",)),
        (MESSAGE, ()),
        (MESSAGE, ("not-an-address",)),
    ],
    ids=["empty", "not-a-message", "no-recipient", "bad-recipient"],
)
def test_a_message_that_cannot_be_sent_as_given_exits_65(app: Flask, message: bytes, args: tuple[str, ...]) -> None:
    with smtp_server() as (port, handler):
        configure(app, port)
        result = sendmail(app, *args, message=message)
    assert result.returncode == 65, result.stderr
    assert b"not sent" in result.stderr or b"cannot be parsed" in result.stderr
    assert handler.connections == 0


def test_bcc_and_resent_bcc_are_never_sent_along_however_the_recipients_are_given(app: Flask) -> None:
    message = MESSAGE.replace(b"Bcc: carol@example.net\n", b"Bcc: carol@example.net\nResent-Bcc: judy@example.net\n")
    with smtp_server() as (port, handler):
        configure(app, port)
        given = sendmail(app, "dave@example.net", message=message)
        from_headers = sendmail(app, "-t", message=message)
    assert given.returncode == 0 and from_headers.returncode == 0, (given.stderr, from_headers.stderr)
    for received in handler.received:
        assert b"carol" not in received.message.as_bytes() and b"judy" not in received.message.as_bytes()
    assert handler.received[0].rcpt_tos == ["dave@example.net"]


def test_an_empty_group_is_a_valid_to_header(app: Flask) -> None:
    message = b"To: undisclosed-recipients:;\nSubject: news\n\nHello.\n"
    with smtp_server() as (port, handler):
        configure(app, port)
        result = sendmail(app, "dave@example.net", message=message)
    assert result.returncode == 0, result.stderr
    assert handler.received[0].rcpt_tos == ["dave@example.net"]


@pytest.mark.parametrize(
    "to",
    [b"=?utf-8?b?ZXZlQGV2aWwudGVzdA==?=", b"alice@example.net)<bob@evil.test>"],
    ids=["encoded-word", "unbalanced-parenthesis"],
)
def test_recipients_come_from_the_strict_parse_of_the_headers_never_from_decoded_words(app: Flask, to: bytes) -> None:
    with smtp_server() as (port, handler):
        configure(app, port)
        result = sendmail(app, "-t", message=b"To: " + to + b"\nSubject: s\n\nHello.\n")
    assert result.returncode == 65 and b"To header is not a valid list of addresses" in result.stderr
    assert handler.connections == 0


def test_the_null_sender_is_a_valid_envelope_sender(app: Flask) -> None:
    with smtp_server() as (port, handler):
        configure(app, port)
        result = sendmail(app, "-f", "<>", "dave@example.net")
    assert result.returncode == 0, result.stderr
    assert handler.received[0].mail_from == "<>"


def test_an_unknown_option_is_a_usage_error_64(app: Flask) -> None:
    result = sendmail(app, "-q", "dave@example.net")
    assert result.returncode == 64, result.stderr


def test_standard_input_past_the_limit_is_refused_unread(app: Flask) -> None:
    with smtp_server() as (port, handler):
        configure(app, port)
        result = sendmail(app, "dave@example.net", message=MESSAGE + b"x" * 5000, SENDMAIL_MAX_MESSAGE_BYTES="1000")
    assert result.returncode == 65
    assert b"larger than SETTINGS_UI_SENDMAIL_MAX_MESSAGE_BYTES (1000 bytes)" in result.stderr
    assert handler.connections == 0


def test_a_refused_envelope_sender_given_with_f_is_named_not_from_email(app: Flask) -> None:
    with smtp_server(RecordingHandler(refuse_sender=True)) as (port, _handler):
        configure(app, port)
        result = sendmail(app, "-f", "bounces@example.com", "dave@example.net")
    assert result.returncode == 69
    stderr = result.stderr.decode()
    assert "Check the envelope sender bounces@example.com that the sending program gave" in stderr
    assert "Check from_email" not in stderr
    failure = call(app.test_client(), "status").get_json()["result"]["last_failure"]
    assert "bounces@example.com" in failure["fix"] and "from_email" not in failure["fix"]  # the page's banner too


def test_incomplete_settings_exit_78(app: Flask) -> None:
    result = sendmail(app, "ivan@example.net")
    assert result.returncode == 78
    assert b"smtp_host is required" in result.stderr


def test_a_message_over_the_server_size_is_refused_before_data(app: Flask) -> None:
    with smtp_server() as (port, handler):  # aiosmtpd announces SIZE 33554432
        configure(app, port)
        big = MESSAGE + b"x" * 33_554_432
        result = sendmail(app, "judy@example.net", message=big, SENDMAIL_MAX_MESSAGE_BYTES=str(64 * 1024 * 1024))
    assert result.returncode == 69
    assert b"more than the 33554432 bytes the server accepts" in result.stderr
    assert handler.received == [] and handler.accepted_recipients == []  # refused before MAIL FROM


def test_sendmail_signs_in_with_the_stored_password_over_starttls(app: Flask, certificates: Certificates) -> None:
    auth = Authenticator("mailer", EXAMPLE_PASSWORD)
    with smtp_server(starttls=certificates.server, authenticator=auth, auth_require_tls=True) as (port, handler):
        configure(app, port, encryption="StartTLS", username="mailer", password=EXAMPLE_PASSWORD)
        result = sendmail(app, "kim@example.net")
    assert result.returncode == 0, result.stderr
    assert handler.received[0].tls and handler.received[0].authenticated_as == "mailer"
    assert EXAMPLE_PASSWORD.encode() not in result.stdout + result.stderr


def test_the_database_keeps_no_recipient_subject_or_password_after_sends(app: Flask, tmp_path: Path) -> None:
    with smtp_server(RecordingHandler(recipient_reply="550 5.1.1 <liam@example.net>: unknown")) as (port, _):
        configure(app, port, username="", password="")
        sendmail(app, "liam@example.net")
    with smtp_server(authenticator=Authenticator("mailer", EXAMPLE_PASSWORD)) as (port, _):
        configure(app, port, username="mailer", password=EXAMPLE_PASSWORD)
        assert sendmail(app, "-t").returncode == 0
    with app.app_context():
        database.engine().dispose()  # everything on disk, WAL included
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("settings.db*"))
    assert stored  # the database is there to be searched
    sent = [b"liam@example.net", b"alice@example.net", b"carol@example.net", b"Quarterly report"]
    for secret in [*sent, EXAMPLE_PASSWORD.encode()]:
        assert secret not in stored, secret
    assert b"(a recipient)" in stored  # the refusal is kept, without the address


def test_each_send_is_recorded_and_the_status_call_shows_it(app: Flask) -> None:
    with smtp_server() as (port, _):
        configure(app, port)
        assert sendmail(app, "mia@example.net").returncode == 0
    configure(app, free_port())
    assert sendmail(app, "-odi", "mia@example.net").returncode == 75
    status = call(app.test_client(), "status").get_json()["result"]
    assert status["sent_24h"] == 1 and status["failed_24h"] == 1
    assert status["last_failure"]["failed_step"] == "connect" and status["last_failure"]["surface"] == "sendmail"
    assert status["failing_since"] is not None
    assert "mia@example.net" not in str(status)
    parsed = message_from_bytes(MESSAGE, policy=policy.default)
    assert parsed["Subject"] not in str(status)
    # Another process's sends are in this app's metrics: they are counted in the database.
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'settings_ui_deliveries_total{failed_step="",outcome="sent",surface="sendmail"} 1.0' in metrics


WEB_STACK = ("flask", "werkzeug", "jinja2", "wtforms", "flask_wtf", "alembic", "prometheus_client", "sqlalchemy.orm")
"""What a message sent through sendmail does not pay to import: a process per message would."""


def test_the_console_script_sends_without_loading_flask_the_web_parts_or_the_migration_tool(app: Flask) -> None:
    script = Path(sys.executable).parent / "settings-ui-sendmail"
    with smtp_server() as (port, handler):
        configure(app, port)
        result = sendmail(app, "erin@example.net", command=[sys.executable, "-X", "importtime", str(script)])
    assert result.returncode == 0, result.stderr
    assert handler.received[0].rcpt_tos == ["erin@example.net"]
    imported = {line.rpartition("|")[2].strip() for line in result.stderr.decode().splitlines() if "|" in line}
    assert "settings_ui.sending" in imported and "sqlalchemy" in imported  # the list is the real one
    loaded = sorted(name for name in imported if name.startswith(WEB_STACK) or name.startswith("settings_ui.web"))
    assert loaded == []


def test_sendmail_on_a_new_instance_makes_its_database_and_says_the_settings_are_incomplete(tmp_path: Path) -> None:
    instance = tmp_path / "new-instance"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SETTINGS_UI_")}
    script = Path(sys.executable).parent / "settings-ui-sendmail"
    result = subprocess.run(
        [str(script), "-t"],
        input=MESSAGE,
        capture_output=True,
        env=environment | {"SETTINGS_UI_INSTANCE_PATH": str(instance)},
        timeout=60,
    )
    assert result.returncode == 78 and b"cannot send mail yet" in result.stderr
    engine = create_engine(f"sqlite:///{instance / 'settings.db'}")
    try:
        assert schema.is_current(engine)
    finally:
        engine.dispose()


def test_without_an_instance_path_sendmail_and_the_app_use_the_same_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SETTINGS_UI_INSTANCE_PATH", raising=False)
    assert runtime.instance_folder() == Path(Flask("settings_ui").instance_path)


def _standalone_sendmail(instance: Path, **config: str) -> subprocess.CompletedProcess[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SETTINGS_UI_")}
    environment |= {"SETTINGS_UI_INSTANCE_PATH": str(instance)} | {f"SETTINGS_UI_{k}": v for k, v in config.items()}
    script = Path(sys.executable).parent / "settings-ui-sendmail"
    return subprocess.run([str(script), "-t"], input=MESSAGE, capture_output=True, env=environment, timeout=60)


def test_sendmail_says_try_later_when_the_database_cannot_be_reached_and_never_shows_its_password(
    tmp_path: Path,
) -> None:
    unreachable = f"postgresql+psycopg://mailer:db-secret-1@127.0.0.1:{free_port()}/settings"
    result = _standalone_sendmail(tmp_path / "instance", EMAIL_SETTINGS_DATABASE_URI=unreachable)
    stderr = result.stderr.decode()
    assert result.returncode == 75, stderr
    assert stderr.startswith("The settings database cannot be reached (OperationalError): nothing was sent.")
    assert "db-secret-1" not in stderr and "Traceback" not in stderr


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"SMTP_TLS_MINIMUM": "TLSv9"}, "SETTINGS_UI_SMTP_TLS_MINIMUM must be one of"),
        ({"SETTINGS_ENCRYPTION_KEY": "not-a-key"}, "SETTINGS_UI_SETTINGS_ENCRYPTION_KEY: key 1 is not a Fernet key"),
        ({"EMAIL_SETTINGS_DATABASE_URI": "nonsense://user:db-secret-2@"}, "SETTINGS_UI_EMAIL_SETTINGS_DATABASE_URI"),
    ],
    ids=["tls-minimum", "encryption-key", "database-uri"],
)
def test_sendmail_names_a_configuration_it_cannot_use_and_exits_78(
    tmp_path: Path, config: dict[str, str], said: str
) -> None:
    result = _standalone_sendmail(tmp_path / "instance", **config)
    stderr = result.stderr.decode()
    assert result.returncode == 78, stderr
    assert said in stderr and stderr.rstrip().endswith("nothing was sent.")
    assert "db-secret-2" not in stderr and "Traceback" not in stderr
