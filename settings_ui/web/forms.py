"""The settings form. Its choices and checks come from :mod:`settings_ui.rules`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectChoice,
    SelectField,
    StringField,
    SubmitField,
)
from wtforms.validators import AnyOf, InputRequired, ValidationError

from .. import fields, rules

ENCRYPTION_LABELS = {
    "Plain": "Plain (no encryption)",
    "StartTLS": "StartTLS (upgrade a plain connection)",
    "TLS": "TLS (encrypted from the start, SMTPS)",
}


def follows(rule: Callable[[Any], Any]) -> Callable[[Any, Any], None]:
    """A WTForms validator that applies one of the shared rules to a non-empty value."""

    def validate(form: Any, field: Any) -> None:
        if field.data in (None, ""):
            return
        try:
            rule(field.data)
        except ValueError as problem:
            raise ValidationError(str(problem)) from None

    return validate


class PortField(IntegerField):
    """An integer field whose parse error reads like the API's, and that is blank when empty."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        text = str(valuelist[0]).strip() if valuelist else ""
        if not text:
            self.data = None
            return
        try:
            self.data = int(text)
        except ValueError:
            self.data = None
            raise ValueError(f"must be a whole number from {rules.PORT_MIN} to {rules.PORT_MAX}") from None


_REQUIRED = InputRequired(message="is required")


class SettingsForm(FlaskForm):
    smtp_host = StringField(
        "SMTP server",
        validators=[_REQUIRED, follows(rules.normalize_host)],
        description="Host name or IP address, for example smtp.example.com.",
    )
    smtp_port = PortField(
        "Port",
        validators=[_REQUIRED, follows(rules.check_port)],
        description="Usually 587 for StartTLS, 465 for TLS, 25 for Plain.",
    )
    encryption = SelectField(
        "Encryption",
        choices=[SelectChoice(name, ENCRYPTION_LABELS[name]) for name in rules.ENCRYPTIONS],
        validate_choice=False,
        validators=[AnyOf(rules.ENCRYPTIONS, message=f"must be one of {', '.join(rules.ENCRYPTIONS)}")],
        description="StartTLS or TLS keep your credentials and mail private on the way to the server.",
    )
    allow_selfsigned_certs = BooleanField(
        "Accept self-signed or otherwise invalid certificates",
        description="Only for a server you control whose certificate is not signed by a public "
        "authority. It turns off the check that you are talking to the right server.",
    )
    pinned_cert_sha256 = StringField(
        "Pinned certificate (SHA-256 fingerprint)",
        validators=[follows(rules.normalize_fingerprint)],
        description="Trust exactly this one certificate, whoever issued it: for a server with a self-signed "
        "certificate, safer than accepting any. Leave empty to check certificates as usual.",
        render_kw={"autocomplete": "off", "spellcheck": "false"},
    )
    from_email = EmailField(
        "From address",
        validators=[_REQUIRED, follows(rules.normalize_email)],
        description="The sender of every email the product sends, for example noreply@example.com.",
    )
    username = StringField(
        "Username",
        description="Leave empty if the server accepts mail without signing in.",
        render_kw={"autocomplete": "username"},
    )
    password = PasswordField(
        "Password",
        render_kw={"autocomplete": "new-password"},
    )
    remove_password = BooleanField("Remove the stored password")
    version = HiddenField()
    # Not a setting: where the test email goes. Checked by the service, like the API's "to".
    to = EmailField(
        "Recipient",
        description="Tests the settings in this form, saved or not. Nothing is saved by testing.",
        render_kw={"autocomplete": "email"},
    )
    check_only = SubmitField("Check only (don't send)")

    def to_params(self) -> dict[str, Any]:
        """The edit parameters this submission asks for (a blank password keeps the stored one)."""
        params = {name: getattr(self, name).data for name in fields.PUBLIC}
        params["username"] = params["username"] or ""
        if self.remove_password.data:
            params["password"] = ""
        elif self.password.data:
            params["password"] = self.password.data
        return params

    def validate_remove_password(self, field: Any) -> None:
        if field.data and self.password.data:
            raise ValidationError("cannot be ticked while you type a new password: do one or the other")


class ConfirmForm(FlaskForm):
    """A form with nothing but its CSRF token and the version it confirms."""

    version = HiddenField()
