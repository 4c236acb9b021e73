"""Sending through Microsoft Graph's sendMail, for Microsoft 365 tenants that keep SMTP AUTH off.

Two steps, reported like the SMTP conversation's: ``token`` (the client-credentials grant, scope
``https://graph.microsoft.com/.default`` unless oauth2_scope says otherwise) and ``send`` (the MIME
message, base64-encoded, posted to ``{MICROSOFT_GRAPH_URL}/v1.0/users/{username}/sendMail``).
Everything ends within the test's time limit; each refusal says what to change.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import urllib.parse
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import getaddresses
from typing import Any

from . import bounded_http, oauth2
from .model import Mail, Options, Report, SmtpTarget, Step

DEFAULT_URL = "https://graph.microsoft.com"
SCOPE = "https://graph.microsoft.com/.default"
MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""Graph refuses a sendMail request larger than this: the message, base64-encoded, must fit."""
_PERMISSION = "Mail.Send"
# Keep this much of the time limit for the answer after waiting out a Retry-After.
_RETRY_MARGIN = 1.0

_ACCESS_DENIED_FIX = (
    "Give the app registration the Mail.Send application permission of Microsoft Graph with admin consent "
    "(Entra admin center: App registrations, the app, API permissions, Add a permission, Microsoft Graph, "
    "Application permissions, Mail.Send, then Grant admin consent). If it has it, an application access "
    "policy may keep the app from this mailbox: check with Exchange Online PowerShell, "
    "Test-ApplicationAccessPolicy -Identity <mailbox> -AppId <client id>, and add the mailbox to the policy's group."
)


class _Failed(Exception):
    def __init__(self, cause: str, fix: str = "", *, temporary: bool = False):
        super().__init__(cause)
        self.cause, self.fix, self.temporary = cause, fix, temporary


def client_of(target: SmtpTarget) -> oauth2.Client:
    """The OAuth 2.0 client that gets tokens for Graph."""
    return oauth2.Client(
        target.oauth2_token_url, target.oauth2_client_id, target.oauth2_client_secret, target.oauth2_scope or SCOPE
    )


def deliver(target: SmtpTarget, mail: Mail, options: Options, *, dry_run: bool = False) -> Report:
    """Send ``mail`` as ``target.username`` through Graph (``dry_run``: get a token and check it only)."""
    return _Delivery(target, mail, options, dry_run).run()


class _Delivery:
    def __init__(self, target: SmtpTarget, mail: Mail, options: Options, dry_run: bool):
        self.target, self.mail, self.options, self.dry_run = target, mail, options, dry_run
        self.started = time.monotonic()
        self.deadline = self.started + options.timeout
        self.graph = options.graph_url.rstrip("/")
        self.where = f"Microsoft Graph ({urllib.parse.urlsplit(self.graph).netloc})"
        self.steps: list[Step] = []
        self.warnings: list[str] = []
        self.token = ""

    def run(self) -> Report:
        try:
            self._step("token", self._token)
            if not self.dry_run:
                self._step("send", self._send)
        except _Failed as failure:
            step = self.steps[-1].name
            message = f"{self.mail.what} was not sent: the {step} step failed. {failure.cause}"
            return self._report(
                False,
                f"{message} {failure.fix}".strip(),
                cause=f"The {step} step failed. {failure.cause}",
                fix=failure.fix,
                temporary=failure.temporary,
            )
        if self.dry_run:
            message = (
                f"{self.where} granted a token to send as {self.target.username}; nothing was sent (a check only). "
                "Only a sent message proves the mailbox: Graph names a wrong one when it is asked to send, and "
                "looking it up beforehand would take more permissions than Mail.Send."
            )
        else:
            recipients = ", ".join(self.mail.recipients)
            message = f"{self.mail.what} to {recipients} was accepted by {self.where} for {self.target.username}."
        return self._report(True, message)

    def _report(self, passed: bool, message: str, **outcome: Any) -> Report:
        return Report(
            sent=passed and not self.dry_run,
            steps=self.steps,
            elapsed_ms=round((time.monotonic() - self.started) * 1000),
            message=message,
            warnings=self.warnings,
            checked=passed,
            **outcome,
        )

    def _step(self, name: str, action: Any) -> None:
        started = time.monotonic()
        try:
            detail = action()
        except _Failed as failure:
            self.steps.append(Step(name, False, round((time.monotonic() - started) * 1000), failure.cause))
            raise
        self.steps.append(Step(name, True, round((time.monotonic() - started) * 1000), detail))

    def _remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.1)

    # --- the steps ------------------------------------------------------------------------

    def _token(self) -> str:
        client = client_of(self.target)
        token = oauth2.cached(client)
        detail = "access token kept from an earlier send (not expired)"
        if token is None:
            try:
                token = oauth2.fetch(client, timeout=self._remaining(), ca_file=self.options.ca_file)
            except oauth2.TokenError as error:
                raise _Failed(error.cause, error.fix, temporary=error.temporary) from None
            detail = f"access token received from {urllib.parse.urlsplit(client.token_url).netloc} (client credentials)"
        roles = _roles(token)
        if roles is not None and _PERMISSION not in roles:
            oauth2.forget(client)
            granted = ", ".join(roles) or "none"
            raise _Failed(
                f"The token does not carry Graph's {_PERMISSION} application permission (it carries: {granted}).",
                _ACCESS_DENIED_FIX,
            )
        self.token = token
        return detail + (f"; it carries {_PERMISSION}" if roles is not None else "")

    def _send(self) -> str:
        content = _with_every_recipient(self.mail)
        body = base64.b64encode(content)
        if len(body) > MAX_REQUEST_BYTES:
            raise _Failed(
                f"The message is {len(self.mail.content)} bytes; Graph takes at most {MAX_REQUEST_BYTES} bytes per "
                "request once base64-encoded (about 3 MB of message), so it was not sent.",
                "Send a smaller message: attachments are the usual cause.",
            )
        if self.mail.sender and self.mail.sender != self.target.from_email:
            self.warnings.append(
                f"Graph sends as the mailbox {self.target.username}: the envelope sender {self.mail.sender} "
                "that the sending program gave (sendmail -f) was not used."
            )
        mailbox = urllib.parse.quote(self.target.username, safe="@")
        url = f"{self.graph}/v1.0/users/{mailbox}/sendMail"
        answer = self._post(url, body)
        if answer.status == 429 or answer.status >= 500:
            wait = _retry_after(answer)
            if wait is not None and wait + _RETRY_MARGIN < self.deadline - time.monotonic():
                time.sleep(wait)  # Graph said when: once, within the time limit
                answer = self._post(url, body)
        if answer.status == 202:
            return f"accepted for {self.target.username}: HTTP 202 Accepted"
        raise self._refusal(answer)

    def _post(self, url: str, body: bytes) -> bounded_http.Answer:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "text/plain"}
        try:
            return bounded_http.request(
                "POST", url, body, headers, timeout=self._remaining(), ca_file=self.options.ca_file
            )
        except bounded_http.TooSlow:
            raise _Failed(
                f"{self.where} did not answer within {self.options.timeout:g} s.",
                "Try again later; if it persists, check that this machine may reach it (a proxy or firewall).",
                temporary=True,
            ) from None
        except bounded_http.Unreachable as failure:
            reason = failure.reason
            text = getattr(reason, "verify_message", None) or getattr(reason, "strerror", None) or str(reason)
            raise _Failed(
                f"{self.where} cannot be reached: {text}.",
                "Check MICROSOFT_GRAPH_URL, and that this machine may reach it (a proxy or firewall).",
                temporary=not hasattr(reason, "verify_message"),
            ) from None

    def _refusal(self, answer: bounded_http.Answer) -> _Failed:
        code, said = _error_of(answer)
        reply = f"HTTP {answer.status} {code}: {said}" if said else f"HTTP {answer.status} {code}"
        user = self.target.username
        if answer.status == 401:
            oauth2.forget(client_of(self.target))
            return _Failed(
                f"{self.where} refused the token ({reply}).",
                f"The token must be for Graph: leave oauth2_scope empty or set it to {SCOPE}. " + _ACCESS_DENIED_FIX,
            )
        if code == "ErrorSendAsDenied":
            return _Failed(
                f"{self.where} refused to send as the From address ({reply}).",
                f"Set from_email to {user}, or give {user} the Send As permission for that address.",
            )
        if answer.status == 403:
            return _Failed(f"{self.where} denied access to the mailbox {user} ({reply}).", _ACCESS_DENIED_FIX)
        if answer.status == 404 or code in ("ErrorInvalidUser", "MailboxNotEnabledForRESTAPI"):
            return _Failed(
                f"{self.where} has no mailbox {user} that it can send from ({reply}).",
                "Check username: the address of an Exchange Online mailbox (a user or shared mailbox with a "
                "license), in this tenant.",
            )
        if answer.status == 413:
            return _Failed(f"{self.where} refused the message as too large ({reply}).", "Send a smaller message.")
        if answer.status == 429 or answer.status >= 500:
            wait = _retry_after(answer)
            when = f"in {wait:g} s, as Graph asks (Retry-After)" if wait is not None else "in a few minutes"
            return _Failed(
                f"{self.where} is busy or unavailable for now ({reply}).", f"Try again {when}.", temporary=True
            )
        return _Failed(f"{self.where} refused the message ({reply}).", "Check the message and username.")


def _error_of(answer: bounded_http.Answer) -> tuple[str, str]:
    """Graph's error code and message, as its JSON error body gives them."""
    try:
        error = json.loads(answer.body).get("error") or {}
        return str(error.get("code") or ""), " ".join(str(error.get("message") or "").split())[:300]
    except (ValueError, AttributeError):
        return "", ""


def _retry_after(answer: bounded_http.Answer) -> float | None:
    value = (answer.headers.get("Retry-After") or "").strip()
    return float(value) if value.isdigit() else None


def _roles(token: str) -> list[str] | None:
    """The application permissions a Graph access token carries (its ``roles`` claim), when it is a JWT
    that can be read; None otherwise. Read only to explain a refusal early: Graph checks the token itself."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    roles = claims.get("roles") if isinstance(claims, dict) else None
    return [str(role) for role in roles] if isinstance(roles, list) else []


def _with_every_recipient(mail: Mail) -> bytes:
    """The message as Graph must get it: Graph sends to the To, Cc and Bcc of the MIME headers, not to an
    envelope, so a recipient given apart from the headers (sendmail's arguments, a Bcc already removed)
    is added as Bcc, which Graph does not show to the others."""
    headers = BytesParser(policy=default_policy).parsebytes(mail.content, headersonly=True)
    listed = {address.lower() for _name, address in getaddresses(headers.get_all("To", []) + headers.get_all("Cc", []))}
    missing = [address for address in mail.recipients if address.lower() not in listed]
    if not missing:
        return mail.content
    return f"Bcc: {', '.join(missing)}\r\n".encode() + mail.content
