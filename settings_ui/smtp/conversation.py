"""Sending one real test email, step by step, within a hard deadline.

Every step (resolve, connect, tls or starttls, ehlo, auth, mail_from, rcpt_to, data)
is timed and recorded. A failure names its step, says what went wrong in plain
words and what to change. The whole conversation ends by the deadline whatever
the server does: each blocking call gets the time that is left, and a watchdog
shuts the socket when the deadline passes, so a server that drips one byte at a
time cannot hold us either.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import errno
import hmac
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Any

from ..rules import printable
from . import diagnosis

if TYPE_CHECKING:
    pass

# SASL mechanisms by preference. Over an unencrypted connection CRAM-MD5 first: it never
# sends the password itself.
_AUTH_PREFERENCE = {False: ("PLAIN", "LOGIN", "CRAM-MD5"), True: ("CRAM-MD5", "PLAIN", "LOGIN")}

# The resolver runs in this pool so that a hanging DNS look-up cannot outlive the deadline.
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="smtp-resolve")


@dataclass(frozen=True)
class SmtpTarget:
    """Everything needed to reach the SMTP server (the password in clear: keep it in memory only)."""

    smtp_host: str
    smtp_port: int
    encryption: str
    from_email: str
    username: str
    password: str = field(repr=False)
    allow_selfsigned_certs: bool

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], password: str) -> SmtpTarget:
        """The target the settings ``values`` (with more keys, perhaps) and ``password`` describe."""
        return cls(password=password, **{name: values[name] for name in _TARGET_FIELDS})


_TARGET_FIELDS = tuple(name for name in SmtpTarget.__dataclass_fields__ if name != "password")


@dataclass
class Step:
    name: str
    ok: bool
    ms: int
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    """The outcome of one test: ``sent`` only when the server accepted the message data."""

    sent: bool
    steps: list[Step]
    elapsed_ms: int
    message: str

    def step_dicts(self) -> list[dict[str, Any]]:
        """The steps as the API lists them."""
        return [step.as_dict() for step in self.steps]

    @property
    def failed_step(self) -> str | None:
        return next((step.name for step in self.steps if not step.ok), None)


class _StepFailed(Exception):
    def __init__(self, cause: str, fix: str = ""):
        # A cause quotes what the server sent: shown escaped, so it cannot drive a terminal.
        cause = printable(cause)
        super().__init__(cause)
        self.cause = cause
        self.fix = printable(fix)


class _DeadlinePassed(Exception):
    pass


def send(
    target: SmtpTarget,
    to: str,
    *,
    timeout: float,
    ca_file: str | None = None,
    local_hostname: str | None = None,
) -> Report:
    """Send one test message to ``to`` through ``target``; never raises for an SMTP problem."""
    return _Conversation(target, to, timeout, ca_file, local_hostname or socket.gethostname()).run()


def build_message(target: SmtpTarget, to: str) -> EmailMessage:
    mode = {
        "Plain": "without encryption",
        "StartTLS": "with StartTLS",
        "TLS": "with TLS",
    }[target.encryption]
    checked = (
        "" if target.encryption == "Plain" else (" (certificate not checked)" if target.allow_selfsigned_certs else "")
    )
    international = not (target.from_email.isascii() and to.isascii())
    message = EmailMessage(policy=SMTPUTF8 if international else SMTP)
    message["From"] = target.from_email
    message["To"] = to
    message["Subject"] = "Test email from settings-ui"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=target.from_email.rpartition("@")[2] or None)
    message.set_content(
        "This is a test email from the email settings of your product.\n\n"
        f"It was sent through {target.smtp_host}:{target.smtp_port} {mode}{checked}"
        + (f", signed in as {target.username}" if target.username else ", without signing in")
        + ".\n\nIf you can read this, the product can send email with these settings.\n"
    )
    return message


class _Conversation:
    def __init__(self, target: SmtpTarget, to: str, timeout: float, ca_file: str | None, local_hostname: str):
        self.target = target
        self.to = to
        self.timeout = timeout
        self.ca_file = ca_file
        self.local_hostname = local_hostname
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.steps: list[Step] = []
        self.addresses: list[tuple[Any, ...]] = []
        self.peer: tuple[Any, ...] | None = None  # the getaddrinfo entry we connected to
        self.sock: socket.socket | None = None
        self.smtp: smtplib.SMTP | None = None
        self.watchdog: threading.Timer | None = None
        self.deadline_hit = threading.Event()

    # --- the run ------------------------------------------------------------------------

    def run(self) -> Report:
        target = self.target
        try:
            self._step("resolve", self._resolve)
            self._step("connect", self._connect)
            if target.encryption == "TLS":
                self._step("tls", self._implicit_tls)
            self._step("ehlo", self._greeting_and_ehlo)
            if target.encryption == "StartTLS":
                self._step("starttls", self._starttls)
            if target.username:
                self._step("auth", self._auth)
            self._step("mail_from", self._mail_from)
            self._step("rcpt_to", self._rcpt_to)
            self._step("data", self._data)
        except _StepFailed as failure:
            step = self.steps[-1].name
            message = f"The test email was not sent: the {step} step failed. {failure.cause}"
            if failure.fix:
                message += f" {failure.fix}"
            return Report(False, self.steps, self._elapsed_ms(), message)
        finally:
            self._close()
        return Report(
            True,
            self.steps,
            self._elapsed_ms(),
            f"The test email to {self.to} was accepted by {target.smtp_host}:{target.smtp_port}.",
        )

    def _elapsed_ms(self) -> int:
        return round((time.monotonic() - self.started) * 1000)

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _DeadlinePassed
        return left

    def _step(self, name: str, action: Callable[[], str]) -> None:
        started = time.monotonic()
        try:
            if self.sock is not None:
                self._current_socket().settimeout(self._remaining())
            detail = action()
        except _StepFailed as failure:
            self._record(name, started, False, failure.cause)
            raise
        except Exception as error:
            failure = self._explain(name, error)
            self._record(name, started, False, failure.cause)
            raise failure from None
        self._record(name, started, True, detail)

    def _record(self, name: str, started: float, ok: bool, detail: str) -> None:
        self.steps.append(Step(name, ok, round((time.monotonic() - started) * 1000), printable(detail)))

    def _explain(self, step: str, error: Exception) -> _StepFailed:
        """Turn a low-level exception into a cause and a fix a person can act on."""
        # smtplib reports a socket time-out as a disconnect, so the clock decides.
        timed_out = (
            isinstance(error, _DeadlinePassed | TimeoutError)
            or self.deadline_hit.is_set()
            or time.monotonic() >= self.deadline - 0.05
            or "timed out" in str(error)
        )
        target = self.target
        where = f"{target.smtp_host}:{target.smtp_port}"
        if timed_out:
            return _StepFailed(*diagnosis.timeout(step, where, target.smtp_port, target.encryption, self.timeout))
        return _StepFailed(*diagnosis.error(step, error, where))

    # --- the steps ----------------------------------------------------------------------

    def _resolve(self) -> str:
        host, port = self.target.smtp_host, self.target.smtp_port
        future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            self.addresses = future.result(timeout=self._remaining())
        except concurrent.futures.TimeoutError:
            raise _StepFailed(
                f"Looking up {host} did not finish within {self.timeout:g} s.",
                "The DNS server of this machine is not answering: check its resolver settings.",
            ) from None
        except socket.gaierror as error:
            if error.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                raise _StepFailed(
                    f"The host name {host} does not exist (DNS has no address for it).",
                    "Check smtp_host for typos.",
                ) from None
            raise _StepFailed(
                f"Looking up {host} failed: {error.strerror}.", "Check smtp_host and this machine's DNS."
            ) from None
        unique = list(dict.fromkeys(info[4][0] for info in self.addresses))
        return f"{host} → {', '.join(unique)}"

    def _connect(self) -> str:
        where = f"{self.target.smtp_host}:{self.target.smtp_port}"
        last_error: OSError | None = None
        for index, (family, kind, proto, _name, address) in enumerate(self.addresses):
            # Share the time left fairly among the addresses still to try.
            budget = self._remaining() / (len(self.addresses) - index)
            sock = socket.socket(family, kind, proto)
            sock.settimeout(budget)
            try:
                sock.connect(address)
            except OSError as error:
                sock.close()
                last_error = error
                continue
            self.sock = sock
            self.peer = (family, kind, proto, _name, address)
            self._start_watchdog()
            return f"connected to {address[0]} port {address[1]}"
        if isinstance(last_error, ConnectionRefusedError):
            raise _StepFailed(
                f"{where} refused the connection: nothing accepts connections on port {self.target.smtp_port}.",
                "Check smtp_port (usually 587 for StartTLS, 465 for TLS, 25 for Plain) and that the server runs.",
            )
        if isinstance(last_error, TimeoutError | socket.timeout):
            raise _StepFailed(
                f"{where} did not accept the connection within {self.timeout:g} s.",
                "A firewall may be dropping the traffic, or the host or port is wrong.",
            )
        if last_error is not None and last_error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            raise _StepFailed(f"{where} cannot be reached from this machine (no route to it).", "Check smtp_host.")
        raise _StepFailed(f"Connecting to {where} failed: {getattr(last_error, 'strerror', None) or last_error}.")

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl.create_default_context()
        if self.ca_file:
            context.load_default_certs()  # the extra CA adds to the system's, it does not replace them
        if self.target.allow_selfsigned_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _implicit_tls(self) -> str:
        assert self.sock is not None
        try:
            self.sock = self._tls_context().wrap_socket(self.sock, server_hostname=self.target.smtp_host)
        except ssl.SSLCertVerificationError as error:
            raise self._certificate_failure(error) from None
        except ssl.SSLError as error:
            answer = "answered in plain text" if error.reason == "WRONG_VERSION_NUMBER" else error.reason or error
            raise _StepFailed(
                f"{self.target.smtp_host}:{self.target.smtp_port} did not speak TLS ({answer}).",
                f"Port {self.target.smtp_port} seems to expect plain SMTP: choose StartTLS (usually port 587), "
                "or keep TLS and use the server's TLS port (usually 465).",
            ) from None
        return self._tls_detail(self.sock)

    def _greeting_and_ehlo(self) -> str:
        assert self.sock is not None
        sock = self.sock
        smtp = smtplib.SMTP(local_hostname=self.local_hostname, timeout=self._remaining())
        smtp._host = self.target.smtp_host  # type: ignore[attr-defined]  # for STARTTLS's host name check
        smtp.sock = sock
        self.smtp = smtp
        code, greeting = smtp.getreply()
        if code == -1:
            raise smtplib.SMTPServerDisconnected("no greeting")
        if code != 220:
            raise _StepFailed(
                f"The server refused the session: {diagnosis.reply(code, greeting)}.",
                "The server may not accept connections from this machine.",
            )
        code, reply = smtp.ehlo()
        if code != 250:
            code, reply = smtp.helo()
            if code != 250:
                raise _StepFailed(f"The server rejected EHLO and HELO: {diagnosis.reply(code, reply)}.")
            return f"HELO accepted (server does not support EHLO): {diagnosis.one_line(reply)}"
        extensions = ", ".join(sorted(name.upper() for name in smtp.esmtp_features)) or "none"
        return f"greeting {diagnosis.reply(220, greeting)}; extensions: {extensions}"

    def _starttls(self) -> str:
        smtp = self._smtp()
        if not smtp.has_extn("starttls"):
            raise _StepFailed(
                f"{self.target.smtp_host}:{self.target.smtp_port} does not offer STARTTLS, "
                "so the test stopped instead of sending your credentials and mail unencrypted.",
                "Use TLS (usually port 465) if the server has it, or the server's submission port (usually 587).",
            )
        code, reply = smtp.docmd("STARTTLS")
        if code != 220:
            raise _StepFailed(f"The server refused STARTTLS: {diagnosis.reply(code, reply)}.")
        try:
            smtp.sock = self._tls_context().wrap_socket(smtp.sock, server_hostname=self.target.smtp_host)
        except ssl.SSLCertVerificationError as error:
            raise self._certificate_failure(error) from None
        smtp.file = None
        # What the server said before encryption no longer counts.
        smtp.helo_resp = smtp.ehlo_resp = None
        smtp.esmtp_features = {}
        smtp.does_esmtp = False
        self.sock = smtp.sock
        code, reply = smtp.ehlo()
        if code != 250:
            raise _StepFailed(f"The server rejected EHLO after STARTTLS: {diagnosis.reply(code, reply)}.")
        return self._tls_detail(smtp.sock)

    def _auth(self) -> str:
        smtp = self._smtp()
        if not smtp.has_extn("auth"):
            unencrypted = self.target.encryption == "Plain"
            raise _StepFailed(
                "The server does not offer AUTH (signing in) on this connection.",
                "Many servers offer it only over an encrypted connection: choose StartTLS or TLS."
                if unencrypted
                else "If the server needs no sign-in, clear the username and the password.",
            )
        offered = smtp.esmtp_features.get("auth", "").upper().split()
        preferred = _AUTH_PREFERENCE[self.target.encryption == "Plain"]
        mechanism = next((name for name in preferred if name in offered), None)
        if mechanism is None:
            raise _StepFailed(
                f"The server offers no sign-in method this product supports (it offers: {' '.join(offered)}).",
                "Supported are PLAIN, LOGIN and CRAM-MD5.",
            )
        # One attempt only: a second try with the same wrong password counts as another
        # failed login on the server (and may lock the account).
        code, reply = self._authenticate(smtp, mechanism)
        if code != 235:
            raise _StepFailed(
                f"The server rejected the username or password ({mechanism}): {diagnosis.reply(code, reply)}.",
                "Check username and password (some providers need an app password for SMTP).",
            )
        warning = " (sent unencrypted: prefer StartTLS or TLS)" if self.target.encryption == "Plain" else ""
        return f"signed in as {self.target.username}: {diagnosis.reply(code, reply)}{warning}"

    def _authenticate(self, smtp: smtplib.SMTP, mechanism: str) -> tuple[int, bytes]:
        """One SASL exchange; user name and password in UTF-8, as RFC 4616 and RFC 6531 allow."""
        user, password = self.target.username.encode(), self.target.password.encode()
        if mechanism == "PLAIN":
            code, reply = smtp.docmd("AUTH", "PLAIN " + _b64(b"\0" + user + b"\0" + password))
            if code == 334:  # a server that wants the response on its own line
                code, reply = smtp.docmd(_b64(b"\0" + user + b"\0" + password))
            return code, reply
        if mechanism == "LOGIN":
            code, reply = smtp.docmd("AUTH", "LOGIN " + _b64(user))
            if code == 334:
                code, reply = smtp.docmd(_b64(password))
            return code, reply
        code, challenge = smtp.docmd("AUTH", "CRAM-MD5")
        if code != 334:
            return code, challenge
        digest = hmac.new(password, base64.b64decode(challenge), "md5").hexdigest()
        return smtp.docmd(_b64(user + b" " + digest.encode()))

    def _mail_from(self) -> str:
        smtp = self._smtp()
        options: list[str] = []
        if not (self.target.from_email.isascii() and self.to.isascii()):
            if not smtp.has_extn("smtputf8"):
                raise _StepFailed(
                    "An address contains non-ASCII characters, but the server does not support "
                    "international addresses (SMTPUTF8).",
                    "Use ASCII addresses with this server.",
                )
            options = ["SMTPUTF8", "BODY=8BITMIME"]
        code, reply = smtp.mail(self.target.from_email, options)
        if code != 250:
            raise _StepFailed(
                f"The server refused the sender {self.target.from_email}: {diagnosis.reply(code, reply)}.",
                "Check from_email: many servers accept only addresses of the signed-in account or its domain.",
            )
        return f"sender {self.target.from_email} accepted: {diagnosis.reply(code, reply)}"

    def _rcpt_to(self) -> str:
        code, reply = self._smtp().rcpt(self.to)
        if code not in (250, 251):
            hint = (
                " Without signing in, many servers deliver only to their own domains: set a username and password."
                if not self.target.username
                else ""
            )
            raise _StepFailed(
                f"The server refused the recipient {self.to}: {diagnosis.reply(code, reply)}.",
                f"Check the recipient address.{hint}",
            )
        return f"recipient {self.to} accepted: {diagnosis.reply(code, reply)}"

    def _data(self) -> str:
        message = build_message(self.target, self.to)
        smtp = self._smtp()
        try:
            code, reply = smtp.data(message.as_bytes())
        except smtplib.SMTPDataError as error:
            raise _StepFailed(
                f"The server refused the message: {diagnosis.reply(error.smtp_code, error.smtp_error)}."
            ) from None
        if code != 250:
            raise _StepFailed(f"The server did not accept the message: {diagnosis.reply(code, reply)}.")
        return f"message {message['Message-ID']} accepted: {diagnosis.reply(code, reply)}"

    # --- helpers ------------------------------------------------------------------------

    def _smtp(self) -> smtplib.SMTP:
        assert self.smtp is not None
        return self.smtp

    def _current_socket(self) -> socket.socket:
        current = self.smtp.sock if self.smtp is not None and self.smtp.sock is not None else self.sock
        assert current is not None
        return current

    def _start_watchdog(self) -> None:
        self.watchdog = threading.Timer(max(0.0, self.deadline - time.monotonic()), self._deadline_passed)
        self.watchdog.daemon = True
        self.watchdog.start()

    def _deadline_passed(self) -> None:
        self.deadline_hit.set()
        with contextlib.suppress(OSError, AssertionError):
            self._current_socket().shutdown(socket.SHUT_RDWR)

    def _close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.smtp is not None and self.smtp.sock is not None and not self.deadline_hit.is_set():
            try:
                self.smtp.sock.settimeout(min(1.0, max(0.1, self.deadline - time.monotonic())))
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
        for sock in (self.smtp.sock if self.smtp else None, self.sock):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    def _tls_detail(self, sock: Any) -> str:
        version = sock.version() or "TLS"
        if self.target.allow_selfsigned_certs:
            return f"{version}; certificate not checked (allow_selfsigned_certs is on)"
        return f"{version}; certificate valid for {self.target.smtp_host}"

    def _certificate_failure(self, error: ssl.SSLCertVerificationError) -> _StepFailed:
        cause, fix = diagnosis.certificate(error.verify_code, str(error.verify_message), self.target.smtp_host)
        details = self._fetch_certificate_details()
        return _StepFailed(cause + (f" Certificate: {details}." if details else ""), fix)

    def _fetch_certificate_details(self) -> str:
        """Connect once more without checking, only to show the person what the server presents."""
        if self.peer is None:
            return ""
        family, kind, proto, _name, address = self.peer
        try:
            remaining = self._remaining()
        except _DeadlinePassed:
            return ""
        unchecked = ssl.create_default_context()
        unchecked.check_hostname = False
        unchecked.verify_mode = ssl.CERT_NONE
        try:
            with socket.socket(family, kind, proto) as raw:
                raw.settimeout(remaining)
                raw.connect(address)
                if self.target.encryption == "StartTLS":
                    probe = smtplib.SMTP(local_hostname=self.local_hostname, timeout=remaining)
                    probe.sock = raw
                    probe.getreply()
                    probe.ehlo()
                    probe.docmd("STARTTLS")
                with unchecked.wrap_socket(raw, server_hostname=self.target.smtp_host) as tls:
                    der = tls.getpeercert(binary_form=True)
        except (OSError, smtplib.SMTPException, _DeadlinePassed):
            return ""
        return diagnosis.describe_certificate(der) if der else ""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
