"""The settings page: a server-rendered form that saves through the service layer."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, flash, redirect, render_template, session, url_for
from flask_wtf.csrf import CSRFError
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup
from werkzeug.wrappers import Response

from . import rules, service
from .auth import actor
from .forms import ConfirmForm, SettingsForm
from .service import Settings, SettingsError, StaleSettingsError, TestEmailFailed

bp = Blueprint("pages", __name__)
_CONVENTIONAL_PORTS_JSON = Markup(htmlsafe_json_dumps(rules.CONVENTIONAL_PORTS))  # for the page's script


def _form_data(settings: Settings) -> dict[str, Any]:
    data = settings.public()
    data["smtp_port"] = settings.smtp_port or None  # unconfigured shows an empty field, not 0
    data["version"] = settings.version
    data["to"] = session.get("last_test_to", "")
    return data


def _submitted_version(form: Any) -> set[int]:
    version = service.parse_version(form.version.data)
    return set() if version is None else {version}  # a tampered version matches nothing


def _render(
    form: SettingsForm | None = None,
    status: int = 200,
    problem: str | None = None,
    report: Any = None,
) -> tuple[str, int]:
    """The settings page: ``form`` as submitted, or (None) filled with what is stored.

    The stored values' fields come from the fragment cache (fragments.py) under a key of
    exactly what they show; only on a miss is a form built to render them. A submitted
    form is shown as typed, with its errors, and never cached.
    """
    settings, password_problem, events = service.page_state(events=10)
    fields_key = recipient_key = None
    stored_form = None
    if form is None:
        data = _form_data(settings)
        stored_form = functools.cache(lambda: SettingsForm(formdata=None, data=data))
        fields_key = ("fields", tuple(data.items()), settings.has_password, password_problem)
        recipient_key = ("recipient", data["to"])
    return render_template(
        "settings.html",
        form=form,
        stored_form=stored_form,
        fields_key=fields_key,
        recipient_key=recipient_key,
        version=settings.version if form is None else form.version.data,
        settings=settings,
        problem=problem,
        password_problem=password_problem,
        events=events,
        events_key=("events", tuple(events)),
        report=report,
        last_test=session.get("last_test"),
        conventional_ports=_CONVENTIONAL_PORTS_JSON,
    ), status


NOT_SAVED = "The settings were not saved: correct the fields marked below."
NOT_TESTED = "No test email was sent: correct the fields marked below."


def _show_field_errors(form: SettingsForm, error: SettingsError, problem: str) -> str:
    """Put each of the error's messages at its field; return the problem to show at the top."""
    if not error.fields:  # nothing to mark at a field (the database was busy, say): its own words
        return error.message
    unplaced = []
    for name, message in error.fields.items():
        field = form._fields.get(name)
        if field is None:
            unplaced.append(f"{name} {message}")
        else:
            field.errors.append(message)
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
        service.edit(form.to_params(), expected_versions=_submitted_version(form), actor=actor())
    except StaleSettingsError as stale:
        return _render(None, 409, stale.message)  # the form refilled with what is stored now
    except SettingsError as error:
        return _render(form, 400, _show_field_errors(form, error, NOT_SAVED))
    flash("Settings saved.")
    return redirect(url_for(".settings_page"), 303)


@bp.post("/test")
def send_test_email() -> tuple[str, int]:
    """Test what is in the form now (a draft); re-show the form as typed, with the outcome."""
    form = SettingsForm()
    if not form.validate():
        return _render(form, 400, NOT_TESTED)
    to = (form.to.data or "").strip()
    try:
        report = service.send_test_email({"to": to, "settings": form.to_params()}, actor=actor())
    except TestEmailFailed as failure:
        report = failure.report
    except SettingsError as error:
        return _render(form, 400, _show_field_errors(form, error, NOT_TESTED))
    session["last_test_to"] = to
    session["last_test"] = {
        "sent": report.sent,
        "to": to,
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "message": report.message,
    }
    return _render(form, 200, report=report)


def _render_confirm_clear(status: int = 200, problem: str | None = None) -> tuple[str, int]:
    settings = service.show()
    form = ConfirmForm(formdata=None, data={"version": settings.version})
    return render_template("confirm_clear.html", form=form, settings=settings, problem=problem), status


@bp.get("/clear")
def confirm_clear() -> tuple[str, int]:
    return _render_confirm_clear()


@bp.post("/clear")
def clear_settings() -> Response | tuple[str, int]:
    form = ConfirmForm()
    form.validate()
    try:
        service.clear(expected_versions=_submitted_version(form), actor=actor())
    except StaleSettingsError as stale:
        return _render_confirm_clear(409, stale.message)
    flash("All email settings were cleared, the password included.")
    return redirect(url_for(".settings_page"), 303)


@bp.app_errorhandler(CSRFError)
def _csrf_error(error: CSRFError) -> tuple[str, int]:
    # Only the page's forms carry CSRF tokens: the API is exempt (JSON only, with credentials).
    message = (
        "The page was open too long or was sent from elsewhere, so it was not accepted "
        "and nothing was changed. Go back to the settings, reload them, and try again."
    )
    return render_template("problem.html", title="This form has expired", message=message), 400
