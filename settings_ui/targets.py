"""Where and how settings-ui talks to an SMTP server, for a test, a detect or the product's mail:
the target (the stored settings, or a draft over them, with the secrets that may go there), the
options (from the configuration), and the few places for talking at once.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from . import crypto, operations, password_file, rules, runtime, smtp
from .errors import SettingsError
from .operations import KEEP
from .params import parse_params


class TooManyTestsError(SettingsError):
    """As many test emails and detections as allowed are running in this process: this one was not started."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(
            message=(
                "Other test emails or detections are running right now, so this one was not started (each may "
                f"take up to {retry_after} seconds). Try again in {retry_after} seconds."
            )
        )


def places(config: Mapping[str, Any]) -> threading.BoundedSemaphore:
    """The MAX_CONCURRENT_TESTS places of a process (checking the SMTP options too: a wrong setting
    stops the start, not the first test)."""
    smtp_options(config)
    return threading.BoundedSemaphore(int(config["MAX_CONCURRENT_TESTS"]))


def smtp_options(config: Mapping[str, Any] | None = None) -> smtp.Options:
    """How to talk to SMTP servers, from the configuration (the current app's by default)."""
    config = runtime.current().config if config is None else config
    try:
        tls_minimum = smtp.tls_version(str(config.get("SMTP_TLS_MINIMUM") or "TLSv1.2"))
    except ValueError as problem:
        raise ValueError(f"SMTP_TLS_MINIMUM {problem}") from None
    graph_url = str(config.get("MICROSOFT_GRAPH_URL") or "https://graph.microsoft.com")
    try:
        rules.normalize_token_url(graph_url)
    except ValueError as problem:
        raise ValueError(f"MICROSOFT_GRAPH_URL {problem}") from None
    return smtp.Options(
        timeout=float(config["SMTP_TIMEOUT"]),
        ca_file=config.get("SMTP_CA_FILE") or None,
        ehlo_name=config.get("SMTP_EHLO_NAME") or None,
        tls_minimum=tls_minimum,
        graph_url=graph_url,
    )


@contextlib.contextmanager
def smtp_slot() -> Iterator[None]:
    """Hold one of the MAX_CONCURRENT_TESTS places for talking to SMTP servers (a test or a
    detect), or raise :class:`TooManyTestsError` at once when none is free."""
    state = runtime.current()
    running = state.running_tests
    # Each may wait SMTP_TIMEOUT on a silent server: past a few at once, the rest would hold
    # every worker thread, and the page and API would stop answering.
    if not running.acquire(blocking=False):
        raise TooManyTestsError(retry_after=math.ceil(float(state.config["SMTP_TIMEOUT"])))
    try:
        yield
    finally:
        running.release()


def resolve_target(draft: Mapping[str, Any]) -> smtp.SmtpTarget:
    """The complete settings a test uses: ``draft`` merged over the stored ones, password included.

    The stored password, or SMTP_PASSWORD_FILE's, goes only to the stored server (see
    :func:`~settings_ui.operations.merge`).
    """
    row = operations.load_row()
    values = operations.merge(row, parse_params(draft))
    password = values.pop("password")
    secrets = {
        name: _stored_or_given(values.pop(name), row, name)
        for name in ("oauth2_client_secret", "google_service_account_key")
    }
    if password is not KEEP or not values["username"]:
        return smtp.SmtpTarget.from_settings(values, password if password is not KEEP else "", **secrets)
    outside = password_file.configured()
    if outside is not None:
        try:
            return smtp.SmtpTarget.from_settings(values, password_file.read(outside), **secrets)
        except password_file.PasswordFileError as problem:
            # Reported at the auth step, where the password is needed: the steps before still run.
            return smtp.SmtpTarget.from_settings(values, "", password_problem=str(problem), **secrets)
    return smtp.SmtpTarget.from_settings(values, _stored_or_given(KEEP, row, "password"), **secrets)


def _stored_or_given(value: Any, row: operations.Row, name: str = "oauth2_client_secret") -> str:
    """``value``, or for :data:`KEEP` the stored secret ``name`` in clear ("" when none is stored)."""
    if value is not KEEP:
        return str(value)
    try:
        return operations.secret_in(row, name) or ""
    except crypto.UndecryptablePasswordError as problem:
        raise SettingsError({name: str(problem)}) from None
