"""Detecting the settings of an SMTP host: which port and encryption work, and which to use.

Every port is probed with implicit TLS and with a plain connection that then tries STARTTLS
(which shows both the Plain and the StartTLS candidate), all at once, starts staggered a
little as Thunderbird's account set-up does, within one deadline. Each probe is the test's
own conversation, stopped once the server has shown what it offers, so every failure is
explained in the test's words. Once no probe still running could beat the best candidate
found, the rest are not waited for; once a verified candidate is in, one that might still beat
it gets a little longer only. A port a firewall drops costs the whole deadline only when
nothing verified answers.

Credentials are tried once, on the best candidate only, and only when its certificate was
verified: never over a plain connection, never towards a certificate nobody vouches for.
No mail is sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from .. import fields
from ..rules import ENCRYPTIONS
from ..shapes import Schema
from . import diagnosis, oauth2
from .conversation import converse, run_in_own_loop
from .model import NO_MAIL, Options, Report, SmtpTarget

DEFAULT_PORTS: tuple[int, ...] = (465, 587, 25, 2525)
MAX_PORTS = 6

# Starts are this far apart, best-ranked first, so a host that limits new connections per
# client sees the likeliest candidates first.
_STAGGER = 0.05
# With credentials to try, the probes leave this share of the time to the sign-in.
_SIGN_IN_SHARE = 0.25
# Once a candidate with a verified certificate has answered, how much longer a probe that
# might still beat it is waited for: real servers greet within milliseconds, and a port a
# firewall drops would otherwise hold every detect for the whole SMTP_TIMEOUT.
_PATIENCE = 2.0
# How long past the probes' deadline a probe may take to say what it waited for.
_GRACE = 0.25
# A probe conversation stops once the server has shown what it offers.
_PROBE_UNTIL = {"TLS": "ehlo", "StartTLS": "starttls"}

# Candidates by preference: encryption with a verified certificate, implicit TLS first.
_CLASSES = {("TLS", True): 0, ("StartTLS", True): 1, ("TLS", False): 2, ("StartTLS", False): 3, ("Plain", False): 4}


@dataclass(frozen=True)
class SeenCertificate:
    """The certificate a server presented, and whether it was verified."""

    verified: bool
    problem: Annotated[str, Schema("why it was not verified")]
    details: list[str]
    sha256: Annotated[str, Schema(pattern="^[0-9a-f]{64}$")]


@dataclass
class Candidate:
    """One port with one kind of encryption, as the server answered it."""

    smtp_port: int
    encryption: Annotated[str, Schema(enum=list(ENCRYPTIONS))]
    ok: Annotated[bool, Schema("the server answered this way up to EHLO (after TLS, if any)")] = False
    connected: bool = False
    greeted: bool = False
    tls: Annotated[bool, Schema("a TLS session was negotiated")] = False
    certificate: SeenCertificate | None = None
    capabilities: Annotated[
        list[str], Schema("EHLO keywords with their parameters (SIZE 10240000, AUTH PLAIN LOGIN, ...)")
    ] = field(default_factory=list)
    auth: Literal["ok", "failed", "not tried"] = "not tried"
    detail: str = ""
    waited: Annotated[
        bool, Schema("false when this probe was not waited for, because a better choice had already answered")
    ] = True

    @property
    def verified(self) -> bool:
        return self.certificate is not None and self.certificate.verified

    @property
    def offers_auth(self) -> bool:
        return any(capability.split()[0] == "AUTH" for capability in self.capabilities)


_RECOMMENDED = Schema(
    "edit parameters (never a password): verified TLS before verified StartTLS before "
    "unverified encryption, with the certificate it showed pinned; never Plain where the server "
    "offers encryption or with a username",
    required=["smtp_host", "smtp_port", "encryption", "allow_selfsigned_certs"],
    additionalProperties=False,
    properties={
        name: fields.BY_NAME[name].stored_schema()
        for name in ("smtp_host", "smtp_port", "encryption", "allow_selfsigned_certs", "pinned_cert_sha256", "username")
    },
)


@dataclass
class Detection:
    """What a detect found: the settings to use (edit parameters, or None), every candidate, why."""

    recommended: Annotated[dict[str, Any] | None, _RECOMMENDED]
    candidates: list[Candidate]
    elapsed_ms: Annotated[int, Schema(minimum=0)]
    message: Annotated[str, Schema("what to use, and why")]

    @property
    def recommended_candidate(self) -> Candidate | None:
        if self.recommended is None:
            return None
        chosen = (self.recommended["smtp_port"], self.recommended["encryption"])
        return next(c for c in self.candidates if (c.smtp_port, c.encryption) == chosen)


@dataclass(frozen=True)
class Credentials:
    """A username and password to try on the best candidate; ``only_for`` limits them to one
    (port, encryption): the stored password goes nowhere but where it was saved for."""

    username: str
    password: str = field(repr=False)
    only_for: tuple[int, str] | None = None
    oauth2_client: oauth2.TokenClient | None = None
    """Sign in with a token of this client (XOAUTH2) instead of the password."""


def detect(
    host: str,
    ports: Sequence[int],
    options: Options,
    *,
    username: str = "",
    credentials: Credentials | None = None,
) -> Detection:
    """Probe ``host`` on ``ports`` and recommend the settings to use, within ``options.timeout``.

    ``username`` is who will sign in (so Plain is never recommended); ``credentials``, when
    given, are tried once on the best candidate.
    """
    username = credentials.username if credentials else username
    return run_in_own_loop(_Detect(host, list(ports), options, username, credentials).run())


class _Detect:
    def __init__(
        self,
        host: str,
        ports: list[int],
        options: Options,
        username: str,
        credentials: Credentials | None,
    ):
        self.host = host
        self.ports = ports
        self.options = options
        self.username = username
        self.credentials = credentials
        self.timeout = timeout = options.timeout
        self.started = time.monotonic()
        self.unresolved: str | None = None
        """Why the host could not be found, once a probe has said so."""
        self.deadline = self.started + timeout
        # With credentials to try, the probes leave time for the sign-in.
        self.probe_deadline = self.deadline - (timeout * _SIGN_IN_SHARE if credentials else 0)
        self.candidates = {
            (port, encryption): Candidate(port, encryption)
            for port in ports
            for encryption in ("TLS", "StartTLS", "Plain")
        }

    async def run(self) -> Detection:
        probes = {
            asyncio.create_task(self._probe(port, encryption, delay=index * _STAGGER)): (port, encryption)
            for index, (port, encryption) in enumerate(
                sorted(
                    ((port, encryption) for port in self.ports for encryption in ("TLS", "StartTLS")),
                    key=lambda probe: (self.ports.index(probe[0]), probe[1] != "TLS"),
                )
            )
        }
        pending = set(probes)
        settled = False
        # A little past the probes' deadline, so that each says for itself what it waited for.
        limit = self.probe_deadline + _GRACE
        why = f"No answer within {self.probe_deadline - self.started:g} s: a firewall may drop the traffic, or the "
        why += "server is stuck."
        while pending:
            done, pending = await asyncio.wait(
                pending, timeout=max(limit - time.monotonic(), 0), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            if self._settled(probes[task] for task in pending):
                why, settled = "Not waited for: a better choice had already answered.", True
                break
            best = self._best()
            if best is not None and best.verified and limit > time.monotonic() + _PATIENCE:
                # A verified answer is in: a silent port that might rank above it gets a little longer only.
                limit = time.monotonic() + _PATIENCE
                why = (
                    f"No answer within {_PATIENCE:g} s after port {best.smtp_port} ({best.encryption}, verified) had "
                    "answered, so not waited for longer: a firewall may drop the traffic, or the server is stuck."
                )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in pending:
            self._not_waited_for(*probes[task], why, waited=not settled)
        if self.unresolved is not None and not any(candidate.ok for candidate in self.candidates.values()):
            # Every probe failed at the same first step: one line says it, not a row per port.
            return Detection(None, [], round((time.monotonic() - self.started) * 1000), self.unresolved)
        best = self._best()
        if best is not None and self.credentials is not None:
            await self._sign_in(best)
        return Detection(
            recommended=self._recommendation(best),
            candidates=list(self.candidates.values()),
            elapsed_ms=round((time.monotonic() - self.started) * 1000),
            message=self._explain(best),
        )

    # --- probing ------------------------------------------------------------------------

    async def _probe(self, port: int, encryption: str, *, delay: float) -> None:
        await asyncio.sleep(delay)
        report = await self._converse(port, encryption, allow_selfsigned=False)
        if report.peer_certificate is not None and not report.certificate_verified:
            # The certificate was refused: how far the server gets without the check, and why it failed.
            refused = report
            report = await self._converse(port, encryption, allow_selfsigned=True)
            self._record(port, encryption, report, refused)
        else:
            self._record(port, encryption, report, None)

    async def _converse(
        self, port: int, encryption: str, *, allow_selfsigned: bool, credentials: Credentials | None = None
    ) -> Report:
        if credentials is None:
            limit, deadline = self.probe_deadline - self.started, self.probe_deadline
        else:
            limit, deadline = self.timeout, self.deadline
        client = credentials.oauth2_client if credentials else None
        signs_in = {"auth_method": "password"}
        if isinstance(client, oauth2.ServiceAccount):
            signs_in = {"auth_method": "google_service_account", "google_service_account_key": client.key}
        elif client is not None:
            signs_in = {
                "auth_method": "oauth2",
                "oauth2_token_url": client.token_url,
                "oauth2_client_id": client.client_id,
                "oauth2_scope": client.scope,
                "oauth2_client_secret": client.secret,
            }
        target = SmtpTarget(
            smtp_host=self.host,
            smtp_port=port,
            encryption=encryption,
            from_email="",
            username=credentials.username if credentials else "",
            password=credentials.password if credentials else "",
            allow_selfsigned_certs=allow_selfsigned,
            **signs_in,
        )
        options = dataclasses.replace(self.options, timeout=limit)
        return await converse(
            target, NO_MAIL, options, until="auth" if credentials else _PROBE_UNTIL[encryption], deadline=deadline
        )

    def _record(self, port: int, encryption: str, report: Report, refused: Report | None) -> None:
        passed = {step.name for step in report.steps if step.ok}
        failure = next((step for step in report.steps if not step.ok), None)
        if failure is not None and failure.name == "resolve":
            self.unresolved = f"{self.host} cannot be found: {failure.detail}"
        connected, greeted = "connect" in passed, "ehlo" in passed
        certificate = None
        if report.peer_certificate is not None:
            certificate = _certificate(report.peer_certificate, refused)
        if encryption == "TLS":
            candidate = self.candidates[port, "TLS"]
            candidate.connected, candidate.greeted, candidate.tls = connected, greeted, "tls" in passed
            candidate.certificate = certificate
            candidate.capabilities = report.capabilities.get("ehlo", [])
            candidate.ok = report.checked
            candidate.detail = self._detail(candidate, failure.detail if failure else "")
            return
        plain, starttls = self.candidates[port, "Plain"], self.candidates[port, "StartTLS"]
        for candidate in (plain, starttls):
            candidate.connected, candidate.greeted = connected, greeted
        plain.capabilities = report.capabilities.get("ehlo", [])
        plain.ok = greeted
        offers_starttls = "STARTTLS" in plain.capabilities
        plain.detail = (
            "Works, but unencrypted: the server offers StartTLS on this port."
            if greeted and offers_starttls
            else "Works, but unencrypted: the server offers no encryption on this port."
            if greeted
            else (failure.detail if failure else "")
        )
        if greeted and not offers_starttls:
            starttls.detail = "The server does not offer STARTTLS on this port."
            return
        starttls.tls = "starttls" in passed
        starttls.certificate = certificate
        starttls.capabilities = report.capabilities.get("starttls", [])
        starttls.ok = report.checked
        starttls.detail = self._detail(starttls, failure.detail if failure else "")

    def _detail(self, candidate: Candidate, failure: str) -> str:
        if not candidate.ok:
            return failure or "No answer."
        name = "TLS" if candidate.encryption == "TLS" else "StartTLS"
        if candidate.verified:
            return f"{name} works, and the certificate is valid for {self.host}."
        problem = candidate.certificate.problem if candidate.certificate else ""
        return f"{name} works, but the certificate could not be verified. {problem}".strip()

    def _not_waited_for(self, port: int, encryption: str, why: str, *, waited: bool) -> None:
        names = ("TLS",) if encryption == "TLS" else ("StartTLS", "Plain")
        for name in names:
            candidate = self.candidates[port, name]
            if not candidate.detail:
                candidate.detail, candidate.waited = why, waited

    def _settled(self, running: Any) -> bool:
        """Whether no probe still ``running`` could give a better candidate than the best so far."""
        best = self._best()
        if best is None:
            return False
        best_rank = self._rank(best)
        return all(best_rank <= (_CLASSES[encryption, True], 0, self.ports.index(port)) for port, encryption in running)

    # --- choosing -----------------------------------------------------------------------

    def _rank(self, candidate: Candidate) -> tuple[int, int, int]:
        lacks_auth = bool(self.username) and not candidate.offers_auth
        return (
            _CLASSES[candidate.encryption, candidate.verified],
            int(lacks_auth),
            self.ports.index(candidate.smtp_port),
        )

    def _best(self) -> Candidate | None:
        """The candidate to recommend: never Plain where the server offers encryption, or with a username."""
        usable = [candidate for candidate in self.candidates.values() if candidate.ok]
        encrypted = [candidate for candidate in usable if candidate.encryption != "Plain"]
        if encrypted:
            return min(encrypted, key=self._rank)
        offered = any("STARTTLS" in candidate.capabilities for candidate in usable)
        if offered or self.username:
            return None
        return min(usable, key=self._rank, default=None)

    async def _sign_in(self, best: Candidate) -> None:
        credentials = self.credentials
        assert credentials is not None
        if not best.verified:
            best.detail += (
                " The sign-in was not tried: the password goes only to a server whose certificate is verified."
            )
            return
        if credentials.only_for not in (None, (best.smtp_port, best.encryption)):
            best.detail += (
                " The sign-in was not tried: the stored password goes only to the port and encryption it was "
                "saved for; type the password to check it here."
            )
            return
        report = await self._converse(best.smtp_port, best.encryption, allow_selfsigned=False, credentials=credentials)
        auth = next((step for step in report.steps if step.name == "auth"), None)
        if auth is None:  # the connection failed before the sign-in this time
            failure = next((step for step in report.steps if not step.ok), None)
            best.detail += f" The sign-in could not be tried: {failure.detail if failure else 'no answer'}"
            return
        best.auth = "ok" if auth.ok else "failed"
        best.detail += f" Sign-in: {auth.detail}" + (f" {report.fix}" if not auth.ok and report.fix else "")

    def _recommendation(self, best: Candidate | None) -> dict[str, Any] | None:
        if best is None:
            return None
        recommended: dict[str, Any] = {
            "smtp_host": self.host,
            "smtp_port": best.smtp_port,
            "encryption": best.encryption,
            "allow_selfsigned_certs": False,
        }
        if best.certificate is not None and not best.certificate.verified:
            # This one certificate pinned: safer than accepting any (allow_selfsigned_certs).
            recommended["pinned_cert_sha256"] = best.certificate.sha256
        if self.username:
            recommended["username"] = self.username
        return recommended

    def _explain(self, best: Candidate | None) -> str:
        where = diagnosis.host_port
        if best is None:
            usable = [candidate for candidate in self.candidates.values() if candidate.ok]
            if not usable:
                return f"Nothing worked on {self.host} (ports {', '.join(map(str, self.ports))}): see each candidate."
            if any("STARTTLS" in candidate.capabilities for candidate in usable):
                return (
                    f"Only unencrypted connections work on {self.host}, though the server offers StartTLS: "
                    "see why it failed in each candidate."
                )
            return (
                f"Only unencrypted connections work on {self.host}, and a password must never cross the network "
                "unencrypted: ask the server's administrator for its TLS or StartTLS port."
            )
        text = f"Use {where(self.host, best.smtp_port)} with {best.encryption}"
        if best.encryption == "Plain":
            text += ": the server offers no encryption on any port tried, so mail would cross the network readable."
        elif best.verified:
            text += f": the certificate is valid for {self.host}."
        elif best.certificate:
            text += (
                f", with pinned_cert_sha256 set to the certificate it showed (sha256 {best.certificate.sha256}): "
                f"no port offers a certificate this machine can verify ({best.certificate.problem}). Pinned, "
                "only that certificate is trusted, so an impostor's is refused; check the fingerprint with the "
                "server's administrator. When the server gets a new certificate, pin the new one."
            )

        if best.auth == "ok":
            text += f" The sign-in as {self.username} works."
        elif best.auth == "failed":
            text += " The sign-in failed: see the candidate's detail."
        if diagnosis.is_microsoft_365(self.host):
            text += (
                " Microsoft 365 takes passwords for SMTP only until the end of December 2026: sign in with OAuth "
                "2.0 (auth_method oauth2, the Microsoft 365 preset), or, where the tenant keeps SMTP AUTH off, "
                "send through Microsoft Graph (transport microsoft_graph, the Microsoft 365 through Graph preset)."
            )
        return text


def _certificate(der: bytes, refused: Report | None) -> SeenCertificate:
    return SeenCertificate(
        verified=refused is None,
        problem=refused.cause.removeprefix(f"The {refused.failed_step} step failed. ") if refused else "",
        details=diagnosis.certificate_details(der),
        sha256=hashlib.sha256(der).hexdigest(),
    )
