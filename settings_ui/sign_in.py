"""Sign-in state of settings-ui's own admin account, kept in the database so that every process
of the app shares it: the throttle on failed sign-ins, the checked credentials, and the admin
sessions a signed cookie refers to. Used by the web layer's sign-in; it knows no request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import current_app
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import TooManyRequests
from werkzeug.security import check_password_hash

from . import database
from .models import admin_session_table, login_failure_table

CHECK_PATIENCE = 2.0
"""Seconds a sign-in waits for a free password check before it is answered 503: a crowd of wrong
sign-ins never holds every worker thread."""


def admin_configured(config: Any = None) -> bool:
    """Whether settings-ui's own admin account is set up (``ADMIN_USERNAME`` and ``ADMIN_PASSWORD_HASH``)."""
    config = current_app.config if config is None else config
    return bool(config.get("ADMIN_USERNAME") and config.get("ADMIN_PASSWORD_HASH"))


class LoginThrottle:
    """Slows down repeated failed sign-ins from one address, for every process of the app
    (the state is in the database): past the first few failures, each one doubles the wait
    before the next attempt is even checked.

    One attempt per address is checked at a time, under a lease taken by compare-and-set;
    parallel attempts wait for it (a right one is then remembered, a wrong one counted), so
    a burst of guesses gets no more checks than sequential ones would.
    """

    def __init__(
        self,
        free_failures: int = 3,
        base_seconds: float = 1.0,
        max_seconds: float = 300.0,
        max_addresses: int = 10_000,
        forget_after: float = 24 * 3600,
        lease_seconds: float = 30.0,
        patience_seconds: float = 5.0,
        failing_addresses_per_minute: int = 50,
    ):
        self.free_failures = free_failures
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self.max_addresses = max_addresses
        self.forget_after = forget_after
        self.lease_seconds = lease_seconds  # a check that died with its process frees the address after this
        self.patience_seconds = patience_seconds  # how long an attempt waits for another one's check
        # Beside each address's own count, a budget for all of them: a spray of guesses from many
        # addresses (each with its free failures) makes every new sign-in wait a minute.
        self.failing_addresses_per_minute = failing_addresses_per_minute

    def begin_check(self, address: str, settled: Callable[[], bool]) -> bool:
        """Take the lease to check one attempt from ``address``: True, then call :meth:`end_check`.

        Waits while another attempt from it is being checked, returning False as soon as
        ``settled()`` says this attempt needs no check any more (its pair was verified
        meanwhile). Raises 429 while the address must wait after failures.
        """
        give_up = time.monotonic() + self.patience_seconds
        while True:
            now = time.time()
            with database.engine().connect() as connection:
                row = connection.execute(
                    select(login_failure_table).where(login_failure_table.c.address == address)
                ).first()
            if row is not None and (wait := self._wait(row.failures, row.last_at, now)):
                raise too_many(wait)
            if self._over_budget(now):
                raise too_many(60.0)
            if row is None or row.checking_until <= now:
                if self._take_lease(address, row, now):
                    return True
                continue  # another attempt took it first: look again
            if settled():
                return False
            if time.monotonic() > give_up:
                raise too_many(self.base_seconds)
            time.sleep(0.05)

    def _over_budget(self, now: float) -> bool:
        failing = select(func.count()).where(
            login_failure_table.c.failures > 0, login_failure_table.c.last_at > now - 60
        )
        with database.engine().connect() as connection:
            return int(connection.execute(failing).scalar_one()) >= self.failing_addresses_per_minute

    def abandon_check(self, address: str) -> None:
        """Release the lease without a verdict (the attempt could not be checked): nothing is counted."""
        with database.engine().begin() as connection:
            connection.execute(
                update(login_failure_table).where(login_failure_table.c.address == address).values(checking_until=0.0)
            )

    def end_check(self, address: str, accepted: bool) -> None:
        """Release the lease: a right attempt clears the address, a wrong one is counted."""
        if accepted:
            self.reset(address)
            return
        with database.engine().begin() as connection:
            connection.execute(
                update(login_failure_table)
                .where(login_failure_table.c.address == address)
                .values(failures=login_failure_table.c.failures + 1, last_at=time.time(), checking_until=0.0)
            )

    def reset(self, address: str) -> None:
        with database.engine().begin() as connection:
            connection.execute(delete(login_failure_table).where(login_failure_table.c.address == address))

    def _wait(self, failures: int, last_at: float, now: float) -> float:
        if failures < self.free_failures:
            return 0.0
        delay = min(self.base_seconds * 2.0 ** (failures - self.free_failures), self.max_seconds)
        return max(0.0, last_at + delay - now)

    def _take_lease(self, address: str, row: Any, now: float) -> bool:
        until = now + self.lease_seconds
        try:
            with database.engine().begin() as connection:
                if row is None:
                    values = {"address": address, "failures": 0, "last_at": now, "checking_until": until}
                    connection.execute(insert(login_failure_table).values(**values))
                    self._forget_old(connection, now)
                    return True
                taken = connection.execute(
                    update(login_failure_table)
                    .where(
                        login_failure_table.c.address == address,
                        login_failure_table.c.checking_until == row.checking_until,
                    )
                    .values(checking_until=until)
                )
                return taken.rowcount == 1
        except IntegrityError:  # another attempt from this address inserted first
            return False

    def _forget_old(self, connection: Connection, now: float) -> None:
        # Bounded under a spray of addresses: the oldest go first, not everyone's count at once.
        connection.execute(delete(login_failure_table).where(login_failure_table.c.last_at < now - self.forget_after))
        newest = (
            select(login_failure_table.c.address)
            .order_by(login_failure_table.c.last_at.desc())
            .offset(self.max_addresses)
        )
        connection.execute(
            delete(login_failure_table).where(login_failure_table.c.address.in_(newest.scalar_subquery()))
        )


class Credentials:
    """Checks the admin's user name and password, in constant time.

    A password hash is slow and memory-hungry on purpose (scrypt: 32 MiB each), so at
    most ``parallel_checks`` run at once per process (``checking``), and a verified pair is remembered
    as a keyed digest (never the password itself): API clients sending Basic credentials
    with every call pay for the hash once.
    """

    def __init__(self, parallel_checks: int = 2) -> None:
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()
        self.checking = threading.BoundedSemaphore(parallel_checks)
        """Held around a password check (by the caller, with what the check depends on), waited for
        :data:`CHECK_PATIENCE` seconds at most."""

    def _digest(self, username: str, password: str) -> bytes:
        password_hash = str(current_app.config.get("ADMIN_PASSWORD_HASH") or "")
        return hmac.new(
            str(current_app.secret_key or "").encode() + password_hash.encode(),
            f"{username}\0{password}".encode(),
            hashlib.sha256,
        ).digest()

    def remembered(self, username: str, password: str) -> bool:
        """Whether this pair was verified before (under the current hash): no hash to compute."""
        digest = self._digest(username, password)
        with self._lock:
            return digest in self._verified

    def check(self, username: str, password: str) -> bool:
        config = current_app.config
        expected_user = str(config.get("ADMIN_USERNAME") or "")
        password_hash = str(config.get("ADMIN_PASSWORD_HASH") or "")
        if not expected_user or not password_hash:
            return False
        # Both checks always run, so a wrong user name takes as long as a wrong password.
        user_ok = hmac.compare_digest(username.encode(), expected_user.encode())
        password_ok = check_hash(password_hash, password)
        if user_ok and password_ok:
            with self._lock:
                if len(self._verified) > 64:
                    self._verified.clear()
                self._verified.add(self._digest(username, password))
            return True
        return False


def check_hash(password_hash: str, password: str) -> bool:
    try:
        return check_password_hash(password_hash, password)
    except ValueError:  # a malformed hash in the configuration
        current_app.logger.error("ADMIN_PASSWORD_HASH is not a valid password hash")
        return False


def too_many(wait: float) -> TooManyRequests:
    seconds = int(wait) + 1
    return TooManyRequests(
        f"Too many failed sign-ins from your address. Wait {seconds} seconds before trying again.",
        retry_after=seconds,
    )


# --- Admin sessions, on the server ------------------------------------------------------------
# The signed cookie alone would outlive a logout (a copied cookie stays valid) and a new
# admin password; so it carries a token, and only a token with its row here signs anyone in.


def _session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _password_fingerprint() -> str:
    return hashlib.sha256(str(current_app.config["ADMIN_PASSWORD_HASH"]).encode()).hexdigest()


def _absolute_lifetime() -> float:
    return float(current_app.config["SESSION_ABSOLUTE_LIFETIME"])


def open_admin_session() -> str:
    """Record a new session of the admin (ending those past their absolute lifetime); return its token."""
    token = secrets.token_urlsafe(32)
    now = time.time()
    with database.engine().begin() as connection:
        connection.execute(
            delete(admin_session_table).where(admin_session_table.c.created_at < now - _absolute_lifetime())
        )
        connection.execute(
            insert(admin_session_table).values(
                id=_session_id(token),
                username=str(current_app.config["ADMIN_USERNAME"]),
                password_fingerprint=_password_fingerprint(),
                created_at=now,
            )
        )
    return token


def close_admin_session(token: str) -> None:
    with database.engine().begin() as connection:
        connection.execute(delete(admin_session_table).where(admin_session_table.c.id == _session_id(token)))


def admin_session_is_live(token: str) -> bool:
    """Whether ``token`` is a session of the configured admin: not closed, not older than
    ``SESSION_ABSOLUTE_LIFETIME``, and opened under the admin password configured now."""
    expected = str(current_app.config.get("ADMIN_USERNAME") or "")
    with database.engine().connect() as connection:
        row = connection.execute(
            select(admin_session_table).where(admin_session_table.c.id == _session_id(token))
        ).first()
    return (
        row is not None
        and row.username == expected
        and hmac.compare_digest(row.password_fingerprint, _password_fingerprint())
        and row.created_at > time.time() - _absolute_lifetime()
    )
