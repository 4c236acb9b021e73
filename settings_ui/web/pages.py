"""The settings page: a server-rendered form that saves through the operations, as the API does."""

from __future__ import annotations

import contextlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from jinja2 import pass_context
from jinja2.runtime import Context
from werkzeug.wrappers import Response

from .. import (
    alerts,
    database,
    deliveries,
    detection,
    fields,
    operations,
    outbox,
    password_file,
    rules,
    targets,
    testmail,
)
from ..configuration import as_set_here, set_with
from ..errors import SettingsError
from ..operations import Settings, StaleSettingsError
from ..smtp.detect import DEFAULT_PORTS
from ..targets import TooManyTestsError
from .auth import actor
from .forms import ConfirmForm, SettingsForm

bp = Blueprint("pages", __name__)

_ONE_WORD = [name for name in fields.PARAMETERS if "_" not in name]
# A parameter's name in a message: one with an underscore anywhere ("smtp_host"). A one-word one
# ("username") is an ordinary word too, so only where it names the setting: after "set" or
# "check" ("set username and password") and as the name of a change ("username: 'a' → 'b'").
_PARAMETER_NAME = re.compile(r"\b(" + "|".join(name for name in fields.PARAMETERS if "_" in name) + r")\b")
_ONE_WORD_NAME = re.compile(
    r"(?:(?<=\b[Ss]et )|(?<=\b[Ss]et a )|(?<=\b[Cc]heck ))(?P<first>WORDS)(?: and (?P<second>WORDS))?\b"
    r"|\b(?P<changed>WORDS)(?=: )".replace("WORDS", "|".join(_ONE_WORD))
)


@bp.app_template_filter("in_page_words")
@pass_context
def in_page_words(context: Context, text: str) -> str:
    """``text`` (a diagnosis, an error, a change) as the page speaks: its labels for the API's
    parameter names, and each configuration key as it is set in this app."""
    form = context.get("form")

    def label(name: str) -> str:
        return f"“{form[name].label.text}”" if form is not None and name in form else name

    def labels(found: re.Match[str]) -> str:
        first, second = found.group("first") or found.group("changed"), found.group("second")
        return label(first) + (f" and {label(second)}" if second else "")

    text = _PARAMETER_NAME.sub(lambda found: label(found.group(0)), text)
    return as_set_here(_ONE_WORD_NAME.sub(labels, text))


@bp.app_template_filter("ago")
def ago(moment: datetime) -> str:
    """How long ago ``moment`` was, in words ("5 minutes ago")."""
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


FIRST_CHOICE = (
    "Port 587 with StartTLS is filled in because that is how most providers and mail servers take mail "
    "from applications; press Detect if yours differs."
)


def _form_data(settings: Settings) -> dict[str, Any]:
    data = settings.public()
    if not settings.configured:  # a first-time form starts from what most servers take, not Plain
        data |= {"smtp_port": rules.CONVENTIONAL_PORTS["StartTLS"], "encryption": "StartTLS"}
    data["smtp_port"] = data["smtp_port"] or None  # an empty field, not 0
    data["version"] = settings.version
    data["base"] = json.dumps(settings.public())
    data["to"] = session.get("last_test_to", "")
    return data


def _base(form: SettingsForm) -> dict[str, Any]:
    """The settings ``form`` was first filled with ({} when that is not known)."""
    with contextlib.suppress(TypeError, ValueError):
        base = json.loads(form.base.data or "")
        if isinstance(base, dict):
            return base
    return {}


def _merged_with_theirs(form: SettingsForm, current: Settings) -> tuple[SettingsForm, dict[str, str]]:
    """After someone else saved: the form with what this administrator changed kept, and what
    they left alone refreshed to what is stored now; and, by field, the other's value where
    both changed it."""
    base, theirs = _base(form), current.public()
    typed = {name: form[name].data for name in fields.PUBLIC}
    if base:
        changed = {name for name in fields.PUBLIC if typed[name] != base.get(name)}
        both = {name for name in changed if theirs[name] != base.get(name)}
    else:  # no record of what the form started from: everything typed is kept
        changed = both = set(fields.PUBLIC)
    data = {name: typed[name] if name in changed else theirs[name] for name in fields.PUBLIC}
    data |= {"version": current.version, "base": json.dumps(theirs), "to": form.to.data}
    conflicts = {name: _shown(theirs[name]) for name in both if theirs[name] != typed[name]}
    return SettingsForm(formdata=None, data=data), conflicts


def _certificate_checks(form: SettingsForm) -> dict[str, Any]:
    """How the form checks the server's certificate, in a few words, and whether to show those fields."""
    pin, any_certificate = form.pinned_cert_sha256.data, form.allow_selfsigned_certs.data
    if form.encryption.data == "Plain":
        state = "none (no encryption)"
    elif pin:
        state = f"this one certificate only (sha256 {pin[:16]}…)"
    elif any_certificate:
        state = "off: any certificate is accepted"
    else:
        state = "on, as usual"
    failing = form.pinned_cert_sha256.errors or form.allow_selfsigned_certs.errors
    return {"certificate_state": state, "certificate_open": bool(pin or any_certificate or failing)}


def _machine_settings() -> list[dict[str, str]]:
    """The settings of this process that shape every conversation, as in effect now."""
    options = targets.smtp_options()
    path = password_file.configured()
    shown = [
        ("SMTP_CA_FILE", "Trusted authorities", options.ca_file or "the system's only"),
        ("SMTP_EHLO_NAME", "EHLO name", options.ehlo_name or "this machine's fully qualified name"),
        ("SMTP_TLS_MINIMUM", "Oldest TLS version accepted", options.tls_minimum.name.replace("_", ".")),
        ("SMTP_PASSWORD_FILE", "Password file", str(path) if path else "none: the password is stored here"),
        ("SMTP_TIMEOUT", "Longest a test may take", f"{options.timeout:g} seconds"),
    ]
    return [{"key": key, "title": title, "value": value, "how": set_with(key)} for key, title, value in shown]


def _differs_from_stored(form: SettingsForm) -> bool:
    """Whether saving ``form`` would change anything: a test of what is saved already is not a draft."""
    params = form.to_params()
    stored = operations.show().public()
    return any(name in params for name in fields.SECRETS) or any(
        params.get(name, stored[name]) != stored[name] for name in stored
    )


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value) if value not in ("", 0, None) else "(empty)"


def _submitted_version(form: Any) -> set[int]:
    version = operations.parse_version(form.version.data)
    return set() if version is None else {version}  # a tampered version matches nothing


def _render(
    form: SettingsForm | None = None,
    status: int = 200,
    problem: str | None = None,
    report: Any = None,
    detected: Any = None,
    trusted: str | None = None,
    preset_applied: str = "",
    theirs: dict[str, str] | None = None,
    unsaved: bool = True,
) -> tuple[str, int]:
    """The settings page: ``form`` as submitted, or (None) a form filled with what is stored."""
    with database.engine().connect() as connection:  # what the page shows, read on one connection
        state = operations.page_state(connection, events=10)
        delivery = deliveries.status(connection)
        queued = outbox.messages(connection)
        last_alert = alerts.last_alert(connection)
    form_shown = form or SettingsForm(formdata=None, data=_form_data(state.settings))
    return render_template(
        "settings_ui/settings.html",
        form=form_shown,
        settings=state.settings,
        problem=problem,
        password_problem=state.password_problem,
        password_file=password_file.configured(),
        delivery=delivery,
        queued=queued,
        last_alert=last_alert,
        password_file_problem=password_file.problem(),
        events=state.changes,
        sign_ins=state.sign_ins,
        report=report,
        detected=detected,
        trusted=trusted,
        preset_applied=preset_applied,
        theirs=theirs or {},
        first_choice=None if state.settings.configured else FIRST_CHOICE,
        machine_settings=_machine_settings(),
        **_certificate_checks(form_shown),
        unsaved=unsaved,
        last_test=session.get("last_test"),
        conventional_ports=rules.CONVENTIONAL_PORTS,
    ), status


NOT_SAVED = "The settings were not saved: correct the fields marked below."
STALE = (
    "Nothing was saved: someone else saved these settings since you opened the page. Your changes are kept "
    "below and the rest now shows what they saved; where you both changed a field, theirs is shown beside "
    "yours. Press Save settings to store what you see (a password typed must be typed again)."
)
NOT_TESTED = "No test email was sent: correct the fields marked below."
NOT_DETECTED = "Nothing was detected: correct the fields marked below."


# A secret refused only because it was not given again: how to give it on the page.
_REMEDIES = {
    "password": "type it again, or tick “Remove the stored password”",
    "oauth2_client_secret": "type it again, or tick “Remove the stored client secret”",
    "google_service_account_key": "paste it again, or tick “Remove the stored key”",
}


def _show_field_errors(form: SettingsForm, error: SettingsError, problem: str) -> str:
    """Put each of the error's messages at its field; return the problem to show at the top."""
    error = error.with_remedies(_REMEDIES)
    if not error.fields:  # nothing to mark at a field (the database was busy, say): its own words
        return error.message
    unplaced = []
    for name, message in error.fields.items():
        field = form._fields.get(name)
        if field is None:
            unplaced.append(f"{name} {message}")
        else:
            field.errors = [*field.errors, message]  # a tuple until the form has been validated
    return " ".join([problem, *unplaced]) if unplaced else problem


@bp.get("/")
def settings_page() -> tuple[str, int]:
    return _render()


@bp.post("/")
def save_settings() -> Response | tuple[str, int]:
    form = SettingsForm()
    if not form.validate():
        return _render(form, 400, NOT_SAVED)
    try:
        operations.edit(form.to_params(), expected_versions=_submitted_version(form), actor=actor())
    except StaleSettingsError as stale:
        merged, theirs = _merged_with_theirs(form, stale.current)
        return _render(merged, 409, STALE, theirs=theirs)
    except SettingsError as error:
        return _render(form, 400, _show_field_errors(form, error, NOT_SAVED))
    flash("Settings saved.")
    return redirect(url_for(".settings_page"), 303)


@bp.post("/test")
def test_settings() -> tuple[str, int]:
    """Test what is in the form now (a draft); re-show the form as typed, with the outcome."""
    form = SettingsForm()
    if not form.validate():
        return _render(form, 400, NOT_TESTED)
    to = (form.to.data or "").strip()
    try:
        report = testmail.run_test(
            {"to": to, "settings": form.to_params(), "dry_run": bool(form.check_only.data)}, actor=actor()
        )
    except SettingsError as error:
        status = 429 if isinstance(error, TooManyTestsError) else 400
        return _render(form, status, _show_field_errors(form, error, NOT_TESTED))
    session["last_test_to"] = to
    session["last_test"] = {
        "sent": report.sent,
        "checked": report.checked,
        "to": to,
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "message": report.message,
    }
    return _render(form, 200, report=report, unsaved=_differs_from_stored(form))


@bp.post("/detect")
def detect_settings() -> tuple[str, int]:
    """Probe the host typed in the form; fill in the recommended port and encryption, unsaved."""
    form = SettingsForm()
    params: dict[str, Any] = {"smtp_host": form.smtp_host.data or ""}
    typed_port = form.smtp_port.data
    with contextlib.suppress(TypeError, ValueError):  # no port typed, or not a valid one: the usual ones
        # The port typed is tried first, before the usual ones: the administrator may know better.
        first = rules.check_port(typed_port)  # type: ignore[arg-type]
        params["ports"] = [first, *(port for port in DEFAULT_PORTS if port != first)]
    if form.username.data:
        params["username"] = form.username.data
    if form.password.data:
        params["password"] = form.password.data
    elif form.remove_password.data:
        params["password"] = ""  # not the stored one, which is about to go
    try:
        found = detection.detect(params, actor=actor())
    except SettingsError as error:
        status = 429 if isinstance(error, TooManyTestsError) else 400
        return _render(form, status, _show_field_errors(form, error, NOT_DETECTED))
    if found.recommended is None:
        return _render(form, 200, detected=found)
    return _render(_form_with(form, found.recommended), 200, detected=found)


@bp.post("/trust")
def trust_certificate() -> tuple[str, int]:
    """Put the certificate a test or detect was shown into the form as the pin, unsaved."""
    form = SettingsForm()
    try:
        pin = rules.normalize_fingerprint(request.form.get("trust_certificate", ""))
    except ValueError as problem:
        return _render(form, 400, f"The certificate to trust {problem}.")
    # The pin replaces switching the checks off: it trusts this one certificate, not any.
    pinned = _form_with(form, {"pinned_cert_sha256": pin, "allow_selfsigned_certs": False})
    return _render(pinned, 200, trusted=pin)


PRESETS = {
    "microsoft365": rules.MICROSOFT_365,
    "microsoft365_graph": rules.MICROSOFT_365_GRAPH,
    "google_workspace": rules.GOOGLE_WORKSPACE,
}


@bp.post("/preset")
def apply_preset() -> tuple[str, int]:
    """Fill the form with a provider's settings, unsaved (the admin adds the tenant and the client)."""
    form = SettingsForm()
    preset = PRESETS.get(request.form.get("preset", ""))
    if preset is None:
        return _render(form, 400, "There is no such preset.")
    return _render(_form_with(form, dict(preset)), 200, preset_applied=request.form["preset"])


def _form_with(form: SettingsForm, values: dict[str, Any]) -> SettingsForm:
    """The form as submitted, with ``values`` in place of those fields (the password is never refilled)."""
    data = {name: form[name].data for name in fields.PUBLIC} | values
    data |= {"version": form.version.data, "base": form.base.data, "to": form.to.data}
    return SettingsForm(formdata=None, data=data)


def _render_confirm_clear(status: int = 200, problem: str | None = None) -> tuple[str, int]:
    settings = operations.show()
    form = ConfirmForm(formdata=None, data={"version": settings.version})
    return render_template("settings_ui/confirm_clear.html", form=form, settings=settings, problem=problem), status


@bp.get("/clear")
def confirm_clear() -> tuple[str, int]:
    return _render_confirm_clear()


@bp.post("/clear")
def clear_settings() -> Response | tuple[str, int]:
    form = ConfirmForm()
    form.validate()
    try:
        operations.clear(expected_versions=_submitted_version(form), actor=actor())
    except StaleSettingsError as stale:
        return _render_confirm_clear(409, stale.message)
    flash("All email settings were cleared, the password included.")
    return redirect(url_for(".settings_page"), 303)


@bp.post("/outbox/retry")
def retry_queued() -> Response:
    """Try queued mail now: the message of the form's ``message_id``, or all of it (CSRF is checked
    for every form of the page, before any view)."""
    chosen = request.form.get("message_id", "")
    attempts = outbox.retry(int(chosen) if chosen.isdigit() else None).attempts
    for attempt in attempts:
        flash(f"Message {attempt.id}: {_OUTCOMES[attempt.outcome]} {attempt.message}")
    return redirect(url_for(".settings_page", _anchor="outbox"), 303)


_OUTCOMES = {
    "sent": "sent.",
    "queued": "not sent, still queued.",
    "bounced": "bounced.",
    "busy": "not tried:",
    "gone": "not tried:",
}


@bp.get("/outbox/drop/<int:message_id>")
def confirm_drop(message_id: int) -> Response | tuple[str, int]:
    with database.engine().connect() as connection:
        queued = next((message for message in outbox.messages(connection) if message.id == message_id), None)
    if queued is None:
        flash(f"There is no message {message_id} in the outbox any more (sent, bounced or dropped).")
        return redirect(url_for(".settings_page", _anchor="outbox"), 303)
    form = ConfirmForm(formdata=None)
    return render_template("settings_ui/confirm_drop.html", form=form, message=queued), 200


@bp.post("/outbox/drop/<int:message_id>")
def drop_queued(message_id: int) -> Response:
    try:
        outbox.drop(message_id, actor())
    except SettingsError as problem:
        flash(problem.message)
    else:
        flash(f"Message {message_id} was dropped unsent.")
    return redirect(url_for(".settings_page", _anchor="outbox"), 303)
