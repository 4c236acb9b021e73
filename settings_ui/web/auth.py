"""Who may use the page and the API.

With an admin configured (``ADMIN_USERNAME`` and ``ADMIN_PASSWORD_HASH``) the page needs a
login and the API HTTP Basic credentials or the logged-in session. Without one, only
clients on this machine (loopback) are served: the local, single-user default.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import click
from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import Forbidden, TooManyRequests, Unauthorized
from werkzeug.security import check_password_hash
from werkzeug.wrappers import Response
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import InputRequired

from .. import audit, database
from ..audit import Actor
from ..models import AdminSession, LoginFailure
from ..rules import is_loopback
from .envelope import is_api_path

bp = Blueprint("auth", __name__)
_FAILURES = LoginFailure.__table__
_SESSIONS = AdminSession.__table__
_SESSION_KEY = "admin_session"
login_manager = LoginManager()

# Endpoints anyone allowed to reach the server may use without signing in.
PUBLIC_ENDPOINTS = {"auth.login", "static", "openapi.openapi_json"}
# Endpoints every client may use, even in loopback-only mode: load balancers probe from afar.
OPEN_ENDPOINTS = {"health.healthz"}
# Endpoints outside the API that, like it, take HTTP Basic credentials: a scraper has no session.
BASIC_ENDPOINTS = {"metrics.metrics"}


@dataclass
class Admin(UserMixin):
    username: str

    def get_id(self) -> str:
        return self.username


def admin_configured(app: Flask | None = None) -> bool:
    config = (app or current_app).config
    return bool(config.get("ADMIN_USERNAME") and config.get("ADMIN_PASSWORD_HASH"))


@functools.lru_cache(maxsize=4096)
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
    ):
        self.free_failures = free_failures
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self.max_addresses = max_addresses
        self.forget_after = forget_after
        self.lease_seconds = lease_seconds  # a check that died with its process frees the address after this
        self.patience_seconds = patience_seconds  # how long an attempt waits for another one's check

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
                row = connection.execute(select(_FAILURES).where(_FAILURES.c.address == address)).first()
            if row is not None and (wait := self._wait(row.failures, row.last_at, now)):
                raise _too_many(wait)
            if row is None or row.checking_until <= now:
                if self._take_lease(address, row, now):
                    return True
                continue  # another attempt took it first: look again
            if settled():
                return False
            if time.monotonic() > give_up:
                raise _too_many(self.base_seconds)
            time.sleep(0.05)

    def end_check(self, address: str, accepted: bool) -> None:
        """Release the lease: a right attempt clears the address, a wrong one is counted."""
        if accepted:
            self.reset(address)
            return
        with database.engine().begin() as connection:
            connection.execute(
                update(_FAILURES)
                .where(_FAILURES.c.address == address)
                .values(failures=_FAILURES.c.failures + 1, last_at=time.time(), checking_until=0.0)
            )

    def reset(self, address: str) -> None:
        with database.engine().begin() as connection:
            connection.execute(delete(_FAILURES).where(_FAILURES.c.address == address))

    def _wait(self, failures: int, last_at: float, now: float) -> float:
        if failures < self.free_failures:
            return 0.0
        delay = min(self.base_seconds * 2 ** (failures - self.free_failures), self.max_seconds)
        return max(0.0, last_at + delay - now)

    def _take_lease(self, address: str, row: Any, now: float) -> bool:
        until = now + self.lease_seconds
        try:
            with database.engine().begin() as connection:
                if row is None:
                    values = {"address": address, "failures": 0, "last_at": now, "checking_until": until}
                    connection.execute(insert(_FAILURES).values(**values))
                    self._forget_old(connection, now)
                    return True
                taken = connection.execute(
                    update(_FAILURES)
                    .where(_FAILURES.c.address == address, _FAILURES.c.checking_until == row.checking_until)
                    .values(checking_until=until)
                )
                return taken.rowcount == 1
        except IntegrityError:  # another attempt from this address inserted first
            return False

    def _forget_old(self, connection: Connection, now: float) -> None:
        # Bounded under a spray of addresses: the oldest go first, not everyone's count at once.
        connection.execute(delete(_FAILURES).where(_FAILURES.c.last_at < now - self.forget_after))
        newest = select(_FAILURES.c.address).order_by(_FAILURES.c.last_at.desc()).offset(self.max_addresses)
        connection.execute(delete(_FAILURES).where(_FAILURES.c.address.in_(newest.scalar_subquery())))


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
        """Held around a password check (by the caller, with what the check depends on)."""

    def _digest(self, username: str, password: str) -> bytes:
        password_hash = str(current_app.config.get("ADMIN_PASSWORD_HASH") or "")
        return hmac.new(
            (current_app.secret_key or "").encode() + password_hash.encode(),
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
        password_ok = _check_hash(password_hash, password)
        if user_ok and password_ok:
            with self._lock:
                if len(self._verified) > 64:
                    self._verified.clear()
                self._verified.add(self._digest(username, password))
            return True
        return False


def _check_hash(password_hash: str, password: str) -> bool:
    try:
        return check_password_hash(password_hash, password)
    except ValueError:  # a malformed hash in the configuration
        current_app.logger.error("ADMIN_PASSWORD_HASH is not a valid password hash")
        return False


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[InputRequired(message="is required")])
    password = PasswordField("Password", validators=[InputRequired(message="is required")])
    next = HiddenField()


def _state(app: Flask | None = None) -> dict[str, Any]:
    return (app or current_app).extensions["settings_ui.auth"]


def actor() -> Actor:
    """Who is making the current request, as the audit trail names them."""
    return g.get("actor") or Actor("local", request.remote_addr or "")


def _safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else the settings page.

    An absolute or scheme-relative URL would make the login an open redirect, and
    browsers read a backslash as a slash, so "/\\host" would leave the site too.
    """
    on_site = target and target.startswith("/") and not target.startswith("//") and "\\" not in target
    if on_site and not urlsplit(target).netloc:
        return target
    return url_for("pages.settings_page")


def _guard() -> Response | None:
    """Runs before every request: loopback-only without an admin, login or Basic with one."""
    address = request.remote_addr or ""
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if not admin_configured():
        if not is_loopback(address):
            raise Forbidden(
                "This server has no admin account, so it only serves this machine (loopback). "
                "Set ADMIN_USERNAME and ADMIN_PASSWORD_HASH to allow access from the network."
            )
        g.actor = Actor("local", address)
        return None
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if current_user.is_authenticated:
        g.actor = Actor(current_user.username, address)
        return None
    if is_api_path(request.path) or request.endpoint in BASIC_ENDPOINTS:
        auth = request.authorization
        if auth is None or auth.type != "basic":
            raise Unauthorized("Credentials are missing: send HTTP Basic credentials of the admin account.")
        if not _sign_in_accepted(auth.username or "", auth.password or "", address, "API sign-in failed"):
            raise Unauthorized("The credentials are wrong.")
        g.actor = Actor(auth.username or "", address)
        return None
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _sign_in_accepted(username: str, password: str, address: str, failure: str) -> bool:
    """Check one sign-in attempt from ``address``; record a failure as ``failure``.

    Raises 429 while ``address`` must wait after failed sign-ins: then nothing is checked.
    """
    throttle: LoginThrottle = _state()["throttle"]
    credentials: Credentials = _state()["credentials"]
    # A pair verified before has no password left to guess: nothing to check, nothing to count.
    if credentials.remembered(username, password):
        return True
    if not throttle.begin_check(address, lambda: credentials.remembered(username, password)):
        return True  # verified by another attempt while this one waited
    try:
        with credentials.checking:  # at most a few password hashes at once in this process
            accepted = credentials.check(username, password)
    except BaseException:
        throttle.end_check(address, accepted=False)
        raise
    throttle.end_check(address, accepted)
    if accepted:
        return True
    audit.record(failure, Actor(_named_user(username), address))
    return False


def _named_user(attempted: str) -> str:
    # An attempted user name may be a password typed in the wrong box: record it only if it is the admin's.
    admin = str(current_app.config["ADMIN_USERNAME"])
    return attempted if hmac.compare_digest(attempted.encode(), admin.encode()) else "(unknown user)"


def _too_many(wait: float) -> TooManyRequests:
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


def _start_admin_session() -> None:
    token = secrets.token_urlsafe(32)
    now = time.time()
    with database.engine().begin() as connection:
        ended = now - float(current_app.config["SESSION_ABSOLUTE_LIFETIME"])
        connection.execute(delete(_SESSIONS).where(_SESSIONS.c.created_at < ended))
        connection.execute(
            insert(_SESSIONS).values(
                id=_session_id(token),
                username=str(current_app.config["ADMIN_USERNAME"]),
                password_fingerprint=_password_fingerprint(),
                created_at=now,
            )
        )
    session[_SESSION_KEY] = token


def _end_admin_session() -> None:
    token = session.pop(_SESSION_KEY, None)
    if isinstance(token, str):
        with database.engine().begin() as connection:
            connection.execute(delete(_SESSIONS).where(_SESSIONS.c.id == _session_id(token)))


@login_manager.user_loader
def _load_user(user_id: str) -> Admin | None:
    """The admin, while this session is live: logged in, not logged out, not older than
    ``SESSION_ABSOLUTE_LIFETIME``, and under the admin password it was opened with."""
    expected = str(current_app.config.get("ADMIN_USERNAME") or "")
    token = session.get(_SESSION_KEY)
    if not admin_configured() or not isinstance(token, str):
        return None
    if not hmac.compare_digest(user_id.encode(), expected.encode()):
        return None
    with database.engine().connect() as connection:
        row = connection.execute(select(_SESSIONS).where(_SESSIONS.c.id == _session_id(token))).first()
    live = (
        row is not None
        and row.username == expected
        and hmac.compare_digest(row.password_fingerprint, _password_fingerprint())
        and row.created_at > time.time() - float(current_app.config["SESSION_ABSOLUTE_LIFETIME"])
    )
    return Admin(expected) if live else None


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    if not admin_configured() or current_user.is_authenticated:
        return redirect(_safe_next(request.values.get("next")))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
        return render_template("settings_ui/login.html", form=form)
    address = request.remote_addr or ""
    if not form.validate():
        return render_template("settings_ui/login.html", form=form), 400
    try:
        accepted = _sign_in_accepted(form.username.data, form.password.data, address, "sign-in failed")
    except TooManyRequests as throttled:
        return render_template("settings_ui/login.html", form=form, problem=throttled.description), 429
    if not accepted:
        return render_template("settings_ui/login.html", form=form, problem="The username or password is wrong."), 401
    target = _safe_next(form.next.data)
    session.clear()  # a fresh session (and CSRF token) for the signed-in admin
    _start_admin_session()
    login_user(Admin(str(current_app.config["ADMIN_USERNAME"])))
    session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME without a request
    audit.record("signed in", Actor(current_user.username, address))
    return redirect(target, 303)


@bp.post("/logout")
def logout() -> Response:
    if current_user.is_authenticated:
        audit.record("signed out", actor())
    _end_admin_session()
    logout_user()
    session.clear()
    return redirect(url_for("auth.login") if admin_configured() else url_for("pages.settings_page"), 303)


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    app.extensions["settings_ui.auth"] = {
        "throttle": LoginThrottle(base_seconds=float(app.config["LOGIN_THROTTLE_SECONDS"])),
        "credentials": Credentials(),
    }
    app.before_request(_guard)
    app.register_blueprint(bp)
    if not admin_configured(app) and _may_serve():
        # Whatever serves the app (python app.py, flask run, gunicorn) and wherever it listens.
        app.logger.warning(
            "No admin account is configured: only clients on this machine (loopback) are served, "
            "under the names localhost, 127.0.0.1 and [::1]; any other client gets 403, whatever address "
            "the server listens on. Set ADMIN_USERNAME and ADMIN_PASSWORD_HASH (see `flask --app app "
            "hash-password`) to serve the network."
        )


def _may_serve() -> bool:
    """False while a `flask` command other than `run` builds the app: it serves no client, so
    the loopback-only warning would only be noise in its output."""
    context = click.get_current_context(silent=True)
    return context is None or context.command.name == "run"
