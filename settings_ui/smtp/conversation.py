"""Sending one real test email, step by step, within a hard deadline.

Every step (resolve, connect, tls or starttls, ehlo, auth, mail_from, rcpt_to, data)
is timed and recorded. A failure names its step, says what went wrong in plain
words and what to change. The SMTP client is aiosmtplib; each step runs under
``asyncio.timeout_at`` with the one deadline of the whole test, so a server that
is silent, or drips one byte at a time, cannot hold the test past it.

With implicit TLS the server greets us inside the same aiosmtplib call that makes the
TLS handshake: the tls step's time includes the wait for the greeting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hashlib
import socket
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiosmtplib

from ..rules import printable
from . import diagnosis, graph, oauth2
from .model import Mail, Options, Report, SmtpTarget, Step, tls_version

# SASL mechanisms by preference. Over an unencrypted connection CRAM-MD5 first: it never
# sends the password itself.
_AUTH_PREFERENCE = {False: ("PLAIN", "LOGIN", "CRAM-MD5"), True: ("CRAM-MD5", "PLAIN", "LOGIN")}

# The resolver runs in its own pool: a hanging DNS look-up is abandoned at the deadline, and
# the event loop's shutdown does not wait for it.
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="smtp-resolve")
# Token fetches have threads of their own: an endpoint that drips its answer never holds up a DNS lookup.
_TOKEN_FETCHES = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="oauth2-token")
_TOKEN_MARGIN = 0.25

# How long a polite QUIT may take after the test, within the deadline.
_QUIT_WITHIN = 1.0

# A server that has not greeted within this long may be waiting for a TLS handshake (port 465
# asked for StartTLS or Plain): a second connection tries one, so the answer comes in seconds,
# not at the deadline.
_GREETING_PATIENCE = 1.0

# How OpenSSL says that the server and this machine have no TLS version in common.
_OLD_TLS_REASONS = {"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"}

# A certificate that expires sooner than this gets a warning on success.
_EXPIRY_WARNING_DAYS = 21


class _StepFailed(Exception):
    def __init__(self, cause: str, fix: str = "", certificate: list[str] | None = None, *, temporary: bool = False):
        # A cause quotes what the server sent: shown escaped, so it cannot drive a terminal.
        cause = printable(cause)
        super().__init__(cause)
        self.cause = cause
        self.temporary = temporary
        self.fix = printable(fix)
        self.certificate = [printable(line) for line in certificate or []]

    @property
    def detail(self) -> str:
        """The cause, with the refused certificate's details when there are some."""
        if not self.certificate:
            return self.cause
        return f"{self.cause} Certificate: {'; '.join(self.certificate)}."


def deliver(target: SmtpTarget, mail: Mail, options: Options, *, dry_run: bool = False) -> Report:
    """Send ``mail`` through ``target`` step by step; never raises for an SMTP problem. Every
    recipient must be accepted, or nothing is sent. A ``dry_run`` stops after RCPT TO (then RSET and
    QUIT): the server, the sign-in, the sender and the recipients are checked, nothing is delivered.
    With ``transport`` microsoft_graph, Graph's sendMail takes the place of the SMTP server."""
    if target.transport == "microsoft_graph":
        return graph.deliver(target, mail, options, dry_run=dry_run)
    return run_in_own_loop(converse(target, mail, options, until="rcpt_to" if dry_run else "data"))


_T = TypeVar("_T")


def run_in_own_loop(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` to its end on an event loop in a thread of its own.

    So that a caller that already runs a loop in this thread (an async host, Playwright's
    sync API) can call us as well.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="smtp") as runner:
        return runner.submit(asyncio.run, coroutine).result()


async def converse(
    target: SmtpTarget, mail: Mail, options: Options, *, until: str = "data", deadline: float | None = None
) -> Report:
    """Talk to ``target`` step by step (see :func:`deliver`), stopping after the step named ``until``:
    ``data`` sends, ``rcpt_to`` is a dry run, ``auth`` checks the sign-in, ``ehlo`` or ``starttls``
    only look at what the server offers. ``deadline`` (``time.monotonic``) ends it sooner than
    ``options.timeout``, the limit its messages name, when it is one of several within that limit."""
    return await _Conversation(target, mail, options, until, deadline).run()


class _Conversation:
    def __init__(self, target: SmtpTarget, mail: Mail, options: Options, until: str, deadline: float | None = None):
        self.target = target
        self.mail = mail
        self.until = until
        self.capabilities: dict[str, list[str]] = {}
        self.peer_certificate: bytes | None = None
        self.certificate_verified = False
        self.access_token = ""
        self.options = options
        self.timeout = timeout = options.timeout
        self.where = diagnosis.host_port(target.smtp_host, target.smtp_port)
        self.started = time.monotonic()
        # The event loop's clock is time.monotonic.
        self.deadline = self.started + timeout if deadline is None else min(deadline, self.started + timeout)
        self.steps: list[Step] = []
        self.warnings: list[str] = []
        self.addresses: list[tuple[Any, ...]] = []
        self.peer: tuple[Any, ...] | None = None  # the getaddrinfo entry we connected to
        self.sock: socket.socket | None = None  # until aiosmtplib takes it over
        self.greeting: aiosmtplib.SMTPResponse | None = None
        # With implicit TLS, a greeting that failed after a good handshake: the ehlo step reports it.
        self.greeting_failure: aiosmtplib.SMTPConnectError | None = None
        self.smtp = aiosmtplib.SMTP(
            hostname=target.smtp_host, local_hostname=options.ehlo_name, timeout=None, start_tls=False
        )

    # --- the run ------------------------------------------------------------------------

    async def run(self) -> Report:
        try:
            for name, action in self._plan():
                await self._step(name, action)
                if name == self.until:
                    break
        except _StepFailed as failure:
            step = self.steps[-1].name
            message = f"{self.mail.what} was not sent: the {step} step failed. {failure.detail}"
            if failure.fix:
                message += f" {failure.fix}"
            return self._report(
                False,
                message,
                cause=f"The {step} step failed. {failure.cause}",
                certificate=failure.certificate,
                fix=failure.fix,
                temporary=failure.temporary,
            )
        finally:
            await self._close()
        recipients = ", ".join(self.mail.recipients)
        if self.until == "data":
            message = f"{self.mail.what} to {recipients} was accepted by {self.where}."
        elif self.until == "rcpt_to":
            message = (
                f"{self.where} accepted the sender {self.mail.sender} and the recipient {recipients}; "
                "nothing was sent (a check only)."
            )
        else:
            message = f"{self.where} passed every step up to {self.until}."
        return self._report(True, message, warnings=self.warnings)

    def _plan(self) -> list[tuple[str, Callable[[], Awaitable[str]]]]:
        """The steps of this conversation, in order."""
        encryption = self.target.encryption
        plan: list[tuple[str, Callable[[], Awaitable[str]]]] = [("resolve", self._resolve), ("connect", self._connect)]
        if encryption == "TLS":
            plan += [("tls", self._implicit_tls), ("ehlo", self._ehlo)]
        else:
            plan.append(("ehlo", self._plain_greeting_and_ehlo))
        if encryption == "StartTLS":
            plan.append(("starttls", self._starttls))
        if self.target.username and self.target.auth_method in ("oauth2", "google_service_account"):
            plan += [("token", self._token), ("auth", self._auth_xoauth2)]
        elif self.target.username:
            plan.append(("auth", self._auth))
        plan += [("mail_from", self._mail_from), ("rcpt_to", self._rcpt_to), ("data", self._data)]
        return plan

    def _report(self, passed: bool, message: str, **outcome: Any) -> Report:
        return Report(
            sent=passed and self.until == "data",
            steps=self.steps,
            elapsed_ms=self._elapsed_ms(),
            message=message,
            checked=passed,
            capabilities=self.capabilities,
            peer_certificate=self.peer_certificate,
            certificate_verified=self.certificate_verified,
            **outcome,
        )

    def _elapsed_ms(self) -> int:
        return round((time.monotonic() - self.started) * 1000)

    async def _step(self, name: str, action: Callable[[], Awaitable[str]]) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout_at(self.deadline):
                detail = await action()
        except _StepFailed as failure:
            self._record(name, started, False, failure.detail)
            raise
        except TimeoutError:
            timed_out = _StepFailed(
                *diagnosis.timeout(name, self.where, self.target.smtp_port, self.target.encryption, self.timeout),
                temporary=True,
            )
            self._record(name, started, False, timed_out.cause)
            raise timed_out from None
        except Exception as error:
            failed = _StepFailed(*diagnosis.error(name, error, self.where), temporary=isinstance(error, OSError))
            self._record(name, started, False, failed.cause)
            raise failed from None
        self._record(name, started, True, detail)

    def _record(self, name: str, started: float, ok: bool, detail: str) -> None:
        self.steps.append(Step(name, ok, round((time.monotonic() - started) * 1000), printable(detail)))

    # --- the steps ----------------------------------------------------------------------

    async def _resolve(self) -> str:
        host, port = self.target.smtp_host, self.target.smtp_port
        lookup = asyncio.get_running_loop().run_in_executor(
            _RESOLVER, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        )
        try:
            self.addresses = await lookup
        except TimeoutError:
            raise _StepFailed(
                f"Looking up {host} did not finish within {self.timeout:g} s.",
                "The DNS server of this machine is not answering: check its resolver settings.",
                temporary=True,
            ) from None
        except socket.gaierror as error:
            if error.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                raise _StepFailed(
                    f"The host name {host} does not exist (DNS has no address for it).",
                    "Check smtp_host for typos.",
                ) from None
            raise _StepFailed(
                f"Looking up {host} failed: {error.strerror}.",
                "Check smtp_host and this machine's DNS.",
                temporary=error.errno == socket.EAI_AGAIN,
            ) from None
        unique = list(dict.fromkeys(str(info[4][0]) for info in self.addresses))
        return f"{host} → {', '.join(unique)}"

    async def _connect(self) -> str:
        loop = asyncio.get_running_loop()
        last_error: OSError | None = None
        for index, (family, kind, proto, name, address) in enumerate(self.addresses):
            # Share the time left fairly among the addresses still to try.
            budget = (self.deadline - time.monotonic()) / (len(self.addresses) - index)
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(budget):
                    await loop.sock_connect(sock, address)
            except OSError as error:  # TimeoutError included
                sock.close()
                last_error = error
                continue
            self.sock = sock
            self.peer = (family, kind, proto, name, address)
            if self.smtp.local_hostname is None:
                self.smtp.local_hostname = _default_ehlo_name(sock)
            return f"connected to {diagnosis.host_port(address[0], address[1])}"
        port = self.target.smtp_port
        if isinstance(last_error, ConnectionRefusedError):
            raise _StepFailed(
                f"{self.where} refused the connection: nothing accepts connections on port {port}.",
                "Check smtp_port (usually 587 for StartTLS, 465 for TLS, 25 for Plain) and that the server runs.",
                temporary=True,
            )
        if isinstance(last_error, TimeoutError):
            raise _StepFailed(
                f"{self.where} did not accept the connection within {self.timeout:g} s.",
                "A firewall may be dropping the traffic, or the host or port is wrong.",
                temporary=True,
            )
        if last_error is not None and last_error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            raise _StepFailed(
                f"{self.where} cannot be reached from this machine (no route to it).",
                "Check smtp_host.",
                temporary=True,
            )
        raise _StepFailed(
            f"Connecting to {self.where} failed: {getattr(last_error, 'strerror', None) or last_error}.", temporary=True
        )

    def _tls_context(self) -> ssl.SSLContext:
        ca_file = self.options.ca_file
        context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        if ca_file:
            context.load_default_certs()  # the extra CA adds to the system's, it does not replace them
        if self.options.tls_minimum < ssl.TLSVersion.TLSv1_2:
            # The administrator lowered SMTP_TLS_MINIMUM on purpose: Python's warning says nothing new.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = self.options.tls_minimum
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL accepts TLS 1.0 and 1.1 only at level 0
        else:
            context.minimum_version = self.options.tls_minimum
        if self.target.allow_selfsigned_certs or self.target.pinned:
            # With a pin, the one certificate is checked by its fingerprint after the handshake.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _implicit_tls(self) -> str:
        try:
            self.greeting = await self._open(use_tls=True, tls_context=self._tls_context())
        except aiosmtplib.SMTPConnectError as error:
            handshake_error = error.__cause__
            if isinstance(handshake_error, ssl.SSLCertVerificationError):
                raise await self._certificate_failure(handshake_error) from None
            if _may_be_old_tls(handshake_error):
                old_tls = await self._old_tls_failure()
                if old_tls is not None:
                    raise old_tls from None
            if isinstance(handshake_error, ssl.SSLError):
                reason = handshake_error.reason
                answer = "answered in plain text" if reason == "WRONG_VERSION_NUMBER" else reason or handshake_error
                raise _StepFailed(
                    f"{self.where} did not speak TLS ({answer}).",
                    f"Port {self.target.smtp_port} seems to expect plain SMTP: choose StartTLS (usually port 587), "
                    "or keep TLS and use the server's TLS port (usually 465).",
                ) from None
            if isinstance(handshake_error, OSError):
                raise _StepFailed(*diagnosis.error("tls", handshake_error, self.where)) from None
            self.greeting_failure = error
            return f"TLS established; {self._certificate_state()}"
        return self._tls_detail()

    async def _plain_greeting_and_ehlo(self) -> str:
        greeting = asyncio.ensure_future(self._open(use_tls=False))
        probe: asyncio.Future[bool] | None = None
        try:
            done, _ = await asyncio.wait({greeting}, timeout=_GREETING_PATIENCE)
            if not done:
                probe = asyncio.ensure_future(self._speaks_tls())
                await asyncio.wait({greeting, probe}, return_when=asyncio.FIRST_COMPLETED)
                if not greeting.done() and probe.result():
                    raise _StepFailed(*diagnosis.expects_tls(self.where, self.target.smtp_port))
            self.greeting = await greeting
        except aiosmtplib.SMTPConnectError as error:
            self._explain_greeting_failure(error)
        finally:
            # Whichever is still running is stopped, and waited for, before the next step.
            started = [task for task in (greeting, probe) if task is not None]
            for task in started:
                task.cancel()
            await asyncio.gather(*started, return_exceptions=True)
        return await self._ehlo()

    async def _speaks_tls(self) -> bool:
        """Whether the server answers a TLS handshake on a second connection (certificate unchecked)."""
        try:
            with await self._connect_again() as sock:
                transport, _ = await asyncio.get_running_loop().create_connection(
                    asyncio.Protocol, sock=sock, ssl=_unchecked_context(), server_hostname=self.target.smtp_host
                )
                transport.abort()
                await asyncio.sleep(0)  # let the loop run the transport's own clean-up
        except OSError:
            return False
        return True

    async def _connect_again(self) -> socket.socket:
        """A second connection to the address the test reached, for a look at what the server speaks."""
        assert self.peer is not None
        family, kind, proto, _name, address = self.peer
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _open(self, **tls: Any) -> aiosmtplib.SMTPResponse:
        """Hand our connected socket to aiosmtplib and read the server's greeting."""
        sock, self.sock = self.sock, None
        return await self.smtp.connect(sock=sock, **tls)

    def _explain_greeting_failure(self, error: aiosmtplib.SMTPConnectError) -> None:
        if isinstance(error, aiosmtplib.SMTPConnectResponseError):
            raise _StepFailed(
                f"The server refused the session: {diagnosis.reply(error.code, error.message)}.",
                "The server may not accept connections from this machine.",
                temporary=diagnosis.is_temporary(error.code),
            ) from None
        cause = error.__cause__ if isinstance(error.__cause__, Exception) else error
        raise _StepFailed(*diagnosis.error("ehlo", cause, self.where)) from None

    async def _ehlo(self) -> str:
        if self.greeting_failure is not None:
            self._explain_greeting_failure(self.greeting_failure)
        assert self.greeting is not None
        try:
            await self.smtp.ehlo()
        except aiosmtplib.SMTPHeloError:
            try:
                reply = await self.smtp.helo()
            except aiosmtplib.SMTPHeloError as error:
                raise _StepFailed(
                    f"The server rejected EHLO and HELO: {diagnosis.reply(error.code, error.message)}.",
                    diagnosis.EHLO_NAME_FIX,
                ) from None
            return f"HELO accepted (server does not support EHLO): {diagnosis.one_line(reply.message)}"
        self.capabilities["ehlo"] = capabilities(self.smtp)
        return (
            f"greeting {diagnosis.reply(self.greeting.code, self.greeting.message)}; "
            f"capabilities: {', '.join(self.capabilities['ehlo']) or 'none'}"
        )

    async def _starttls(self) -> str:
        smtp = self.smtp
        if not smtp.supports_extension("starttls"):
            raise _StepFailed(
                f"{self.where} does not offer STARTTLS, "
                "so the test stopped instead of sending your credentials and mail unencrypted.",
                "Use TLS (usually port 465) if the server has it, or the server's submission port (usually 587).",
            )
        try:
            await smtp.starttls(tls_context=self._tls_context(), server_hostname=self.target.smtp_host)
        except ssl.SSLCertVerificationError as error:
            raise await self._certificate_failure(error) from None
        except (ssl.SSLError, ConnectionResetError, aiosmtplib.SMTPServerDisconnected) as error:
            old_tls = await self._old_tls_failure() if _may_be_old_tls(error) else None
            if old_tls is not None:
                raise old_tls from None
            raise
        except aiosmtplib.SMTPResponseException as error:
            raise _StepFailed(f"The server refused STARTTLS: {diagnosis.reply(error.code, error.message)}.") from None
        try:
            await smtp.ehlo()  # what the server said before encryption no longer counts
        except aiosmtplib.SMTPHeloError as error:
            raise _StepFailed(
                f"The server rejected EHLO after STARTTLS: {diagnosis.reply(error.code, error.message)}."
            ) from None
        self.capabilities["starttls"] = capabilities(smtp)
        return (
            f"{self._tls_detail()}; capabilities after STARTTLS: {', '.join(self.capabilities['starttls']) or 'none'}"
        )

    async def _auth(self) -> str:
        smtp = self.smtp
        if self.target.password_problem:
            raise _StepFailed(
                f"No password to sign in with: {self.target.password_problem}",
                "Fix the file (its content is never shown); the next test reads it again, no restart needed.",
            )
        if not smtp.supports_extension("auth"):
            raise _StepFailed(
                "The server does not offer AUTH (signing in) on this connection.",
                "Many servers offer it only over an encrypted connection: choose StartTLS or TLS."
                if self.target.encryption == "Plain"
                else "If the server needs no sign-in, clear the username and the password.",
            )
        offered = [name.upper() for name in smtp.server_auth_methods]
        preferred = _AUTH_PREFERENCE[self.target.encryption == "Plain"]
        mechanism = next((name for name in preferred if name in offered), None)
        if mechanism is None:
            raise _StepFailed(
                f"The server offers no sign-in method this product supports (it offers: {' '.join(offered)}).",
                "Supported are PLAIN, LOGIN and CRAM-MD5.",
            )
        # One attempt only: a second try with the same wrong password counts as another
        # failed login on the server (and may lock the account).
        authenticate = {"PLAIN": smtp.auth_plain, "LOGIN": smtp.auth_login, "CRAM-MD5": smtp.auth_crammd5}[mechanism]
        try:
            reply = await authenticate(self.target.username, self.target.password)
        except aiosmtplib.SMTPAuthenticationError as error:
            answer = diagnosis.reply(error.code, error.message)
            if diagnosis.is_temporary(error.code):
                raise _StepFailed(
                    f"The server could not check the sign-in just now (a temporary failure): {answer}.",
                    "Try again in a few minutes: this does not mean the password is wrong. If it persists, "
                    "the server's sign-in service is down: tell its administrator.",
                    temporary=True,
                ) from None
            raise _StepFailed(
                f"The server rejected the username or password ({mechanism}): {answer}.",
                diagnosis.password_refusal_fix(error.code, error.message),
            ) from None
        if self.target.encryption == "Plain":
            starttls = " (the server offers StartTLS)" if smtp.supports_extension("starttls") else ""
            self.warnings.append(
                f"The password crossed the network unencrypted{starttls}: set encryption to StartTLS or TLS."
            )
        if diagnosis.is_microsoft_365(self.target.smtp_host):
            self.warnings.append(diagnosis.BASIC_AUTH_ENDING)
        return f"signed in as {self.target.username}: {diagnosis.reply(reply.code, reply.message)}"

    async def _token(self) -> str:
        client = self.target.token_client
        token = oauth2.cached(client)
        if token is not None:
            self.access_token = token
            return "access token kept from an earlier sign-in (not expired)"
        loop = asyncio.get_running_loop()
        # A little before the step's own deadline, so that a slow endpoint is named as such.
        remaining = max(self.deadline - time.monotonic() - _TOKEN_MARGIN, 0.1)
        try:
            self.access_token = await loop.run_in_executor(
                _TOKEN_FETCHES, lambda: oauth2.fetch(client, timeout=remaining, ca_file=self.options.ca_file)
            )
        except oauth2.TokenError as error:
            raise _StepFailed(error.cause, error.fix, temporary=error.temporary) from None
        grant = "a service account's JWT" if isinstance(client, oauth2.ServiceAccount) else "client credentials"
        return f"access token received from {diagnosis.host_port_of(client.token_url)} ({grant})"

    async def _auth_xoauth2(self) -> str:
        smtp, target = self.smtp, self.target
        if "xoauth2" not in smtp.server_auth_methods:
            offered = " ".join(name.upper() for name in smtp.server_auth_methods) or "none"
            raise _StepFailed(
                f"The server does not offer XOAUTH2 (OAuth 2.0 sign-in) on this connection (it offers: {offered}).",
                "Check smtp_host, or set auth_method to password if this server takes passwords.",
            )
        try:
            reply = await smtp.auth_xoauth2(target.username, self.access_token)
        except aiosmtplib.SMTPAuthenticationError as error:
            oauth2.forget(target.token_client)  # never offer a refused token again
            answer = diagnosis.reply(error.code, error.message)
            raise _StepFailed(
                f"The server refused the OAuth 2.0 sign-in as {target.username}: {answer}.",
                diagnosis.xoauth2_fix(error.code, error.message, google=target.auth_method == "google_service_account"),
                temporary=diagnosis.is_temporary(error.code),
            ) from None
        return f"signed in as {target.username} with an OAuth 2.0 token: {diagnosis.reply(reply.code, reply.message)}"

    @property
    def _sender_source(self) -> str:
        """Where the envelope sender came from, as a fix should name it."""
        if self.mail.sender == self.target.from_email:
            return "from_email"
        return f"the envelope sender {self.mail.sender or '<>'} that the sending program gave (sendmail -f)"

    async def _mail_from(self) -> str:
        mail, sender = self.mail, self.mail.sender
        options: list[str] = []
        limit = self.smtp.esmtp_extensions.get("size", "")
        if limit.isdigit() and int(limit) and len(mail.content) > int(limit):
            raise _StepFailed(
                f"The message is {len(mail.content)} bytes, more than the {int(limit)} bytes the server accepts "
                "(its SIZE), so it was not sent.",
                "Send a smaller message: attachments are the usual cause.",
            )
        if limit:
            options.append(f"SIZE={len(mail.content)}")
        if mail.international:
            if not self.smtp.supports_extension("smtputf8"):
                raise _StepFailed(
                    "An address contains non-ASCII characters, but the server does not support "
                    "international addresses (SMTPUTF8).",
                    "Use ASCII addresses with this server.",
                )
            options += ["SMTPUTF8", "BODY=8BITMIME"]
        try:
            reply = await self.smtp.mail(sender, options=options, encoding="utf-8")
        except aiosmtplib.SMTPSenderRefused as error:
            raise _StepFailed(
                f"The server refused the sender {sender}: {diagnosis.reply(error.code, error.message)}.",
                diagnosis.refusal_fix(error.code, error.message, self.target.username, self._sender_source)
                or f"Check {self._sender_source}: many servers accept only addresses of the signed-in account "
                "or its domain.",
                temporary=diagnosis.is_temporary(error.code),
            ) from None
        return f"sender {sender} accepted: {diagnosis.reply(reply.code, reply.message)}"

    async def _rcpt_to(self) -> str:
        replies = []
        for recipient in self.mail.recipients:
            try:
                reply = await self.smtp.rcpt(recipient, encoding="utf-8")
            except aiosmtplib.SMTPRecipientRefused as error:
                # Servers check the sender, the client's name and its sign-in at RCPT too: the reply
                # says which setting it is about.
                hint = (
                    " Without signing in, many servers deliver only to their own domains: set a username and password."
                    if not self.target.username
                    else ""
                )
                raise _StepFailed(
                    f"The server refused the recipient {recipient}: {diagnosis.reply(error.code, error.message)}.",
                    diagnosis.refusal_fix(error.code, error.message, self.target.username, self._sender_source)
                    or f"Check the recipient address.{hint}",
                    temporary=diagnosis.is_temporary(error.code),
                ) from None
            replies.append(f"recipient {recipient} accepted: {diagnosis.reply(reply.code, reply.message)}")
        return "; ".join(replies)

    async def _data(self) -> str:
        try:
            reply = await self.smtp.data(self.mail.content)
        except aiosmtplib.SMTPDataError as error:
            refusal = diagnosis.reply(error.code, error.message)
            raise _StepFailed(
                f"The server refused the message: {refusal}.",
                diagnosis.refusal_fix(error.code, error.message, self.target.username, self._sender_source),
                temporary=diagnosis.is_temporary(error.code),
            ) from None
        named = f"message {self.mail.message_id}" if self.mail.message_id else "message"
        return f"{named} accepted: {diagnosis.reply(reply.code, reply.message)}"

    # --- helpers ------------------------------------------------------------------------

    async def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        transport = self.smtp.transport
        if self.smtp.is_connected:
            try:
                async with asyncio.timeout_at(min(self.deadline, time.monotonic() + _QUIT_WITHIN)):
                    if self.until == "rcpt_to":
                        await self.smtp.rset()  # the server forgets the sender and recipient we gave
                    await self.smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                pass  # TimeoutError included: the message, if any, was already accepted
        await _hang_up(self.smtp, transport)

    def _certificate_state(self) -> str:
        if self.target.pinned:
            return f"certificate pinned (sha256 {self.target.pinned_cert_sha256})"
        if self.target.allow_selfsigned_certs:
            return "certificate not checked (allow_selfsigned_certs is on)"
        return f"certificate valid for {self.target.smtp_host}"

    def _tls_detail(self) -> str:
        """Check a pin, note what deserves a warning; say what was established."""
        tls = self.smtp.get_transport_info("ssl_object")
        der = tls.getpeercert(binary_form=True)
        self.peer_certificate = der
        target = self.target
        if target.pinned:
            presented = hashlib.sha256(der).hexdigest()
            if presented != target.pinned_cert_sha256:
                raise _StepFailed(
                    *diagnosis.pin_mismatch(presented, target.pinned_cert_sha256), diagnosis.certificate_details(der)
                )
        self.certificate_verified = not target.allow_selfsigned_certs or target.pinned
        days = diagnosis.days_until_expiry(der)
        state = self._certificate_state()
        if target.pinned:
            if days < _EXPIRY_WARNING_DAYS:
                self.warnings.append(
                    f"The pinned certificate expires in {max(days, 0)} days: the server will then present another "
                    "one, and the pin will stop matching. Pin the new one (Trust this certificate) once it is there."
                )
        elif target.allow_selfsigned_certs:
            self.warnings.append(
                "The server's certificate was not checked (allow_selfsigned_certs is on): anyone between this "
                "machine and the server could read the mail and the password. Pinning this certificate "
                "(pinned_cert_sha256) trusts it alone instead."
            )
            seen = [line for line in diagnosis.certificate_details(der) if not line.startswith(("names", "valid"))]
            state += f": it presented {'; '.join(seen)}"
        elif days < _EXPIRY_WARNING_DAYS:
            self.warnings.append(
                f"The server's certificate expires in {max(days, 0)} days: it must be renewed before then."
            )
        return f"{tls.version() or 'TLS'}; {state}"

    async def _certificate_failure(self, error: ssl.SSLCertVerificationError) -> _StepFailed:
        der = self.peer_certificate = await self._fetch_certificate()
        cause, fix = diagnosis.certificate(error.verify_code, str(error.verify_message), self.target.smtp_host, der)
        return _StepFailed(cause, fix, diagnosis.certificate_details(der) if der else [])

    async def _fetch_certificate(self) -> bytes | None:
        """Connect once more without checking, only to show the person what the server presents."""
        seen = await self._look_unchecked(_unchecked_context())
        return seen[0] if seen else None

    async def _old_tls_failure(self) -> _StepFailed | None:
        """The explanation when the server speaks only a TLS version older than SMTP_TLS_MINIMUM,
        learnt on a second connection that accepts any; None when that is not the reason."""
        minimum = self.options.tls_minimum
        permissive = _unchecked_context()
        permissive.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        permissive.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL accepts TLS 1.0 and 1.1 only at level 0
        seen = await self._look_unchecked(permissive)
        offered = seen[1] if seen else None
        if offered is None or tls_version(offered) >= minimum:
            return None
        return _StepFailed(
            f"{self.where} offers only {offered}, older than SMTP_TLS_MINIMUM ({minimum.name.replace('_', '.')}).",
            "Have the server's TLS settings allow TLS 1.2 or newer. Only if that cannot be done, lower "
            f"SMTP_TLS_MINIMUM to {offered}: old TLS versions have known weaknesses.",
        )

    async def _look_unchecked(self, context: ssl.SSLContext) -> tuple[bytes | None, str | None] | None:
        """Make the TLS handshake again on a second connection with ``context``, only to see what
        the server presents: its certificate and TLS version; None when that fails too."""
        probe = aiosmtplib.SMTP(
            hostname=self.target.smtp_host, local_hostname=self.smtp.local_hostname, timeout=None, start_tls=False
        )
        try:
            with await self._connect_again() as sock:
                try:
                    if self.target.encryption == "StartTLS":
                        await probe.connect(sock=sock)
                        await probe.starttls(tls_context=context)
                    else:
                        await probe.connect(sock=sock, use_tls=True, tls_context=context)
                    tls = probe.get_transport_info("ssl_object")
                    return tls.getpeercert(binary_form=True), tls.version()
                finally:
                    await _hang_up(probe, probe.transport)
        except (OSError, aiosmtplib.SMTPException):
            return None


async def _hang_up(client: aiosmtplib.SMTP, transport: asyncio.BaseTransport | None) -> None:
    """Drop the connection now, without TLS's closing handshake: the event loop ends with the
    test, and a close that waits for the server would be left half done."""
    client.close()
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    await asyncio.sleep(0)  # let the loop run the transport's own clean-up


def capabilities(client: aiosmtplib.SMTP) -> list[str]:
    """The server's EHLO keywords with their parameters, as it sent them (``SIZE 10240000``)."""
    return sorted(f"{name.upper()} {value}".strip() for name, value in client.esmtp_extensions.items())


def _may_be_old_tls(error: BaseException | None) -> bool:
    """Whether a failed handshake may mean no TLS version in common: OpenSSL says so, or the
    server just hung up on our hello."""
    if isinstance(error, ssl.SSLError):
        return error.reason in _OLD_TLS_REASONS
    return isinstance(error, ConnectionResetError | aiosmtplib.SMTPServerDisconnected)


def _unchecked_context() -> ssl.SSLContext:
    """A TLS client context that accepts any certificate: only to look at what a server presents."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _default_ehlo_name(sock: socket.socket) -> str:
    """This machine's fully qualified domain name, or the address literal of our end of ``sock``.

    A bare host name (``vm``) is refused by servers that check EHLO names (Postfix's
    ``reject_non_fqdn_helo_hostname``); an address literal is always acceptable (RFC 5321 4.1.4).
    """
    name = socket.getfqdn()
    if "." in name and not name.startswith("localhost"):
        return name
    address = sock.getsockname()[0]
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"
