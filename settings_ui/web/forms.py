"""The settings form. Its choices and checks come from :mod:`settings_ui.rules`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (  # type: ignore[attr-defined]  # SelectChoice (WTForms 3.2) is not in its stubs yet
    BooleanField,
    EmailField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectChoice,
    SelectField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.validators import AnyOf, InputRequired, StopValidation, ValidationError

from .. import fields, rules

TRANSPORT_LABELS = {"smtp": "SMTP server", "microsoft_graph": "Microsoft Graph (Microsoft 365)"}

AUTH_METHOD_LABELS = {
    "password": "Password",
    "oauth2": "OAuth 2.0 (XOAUTH2)",
    "google_service_account": "Google service account (Workspace)",
}

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


class RequiredForSmtp(InputRequired):
    """Required unless the mail goes through Microsoft Graph, which needs no SMTP server."""

    def __call__(self, form: Any, field: Any) -> None:
        if form.transport.data == "microsoft_graph":
            raise StopValidation()  # nothing to check: the field is not used
        super().__call__(form, field)


_REQUIRED_FOR_SMTP = RequiredForSmtp(message="is required")


class SettingsForm(FlaskForm):
    transport = SelectField(
        "Send through",
        choices=[SelectChoice(name, TRANSPORT_LABELS[name]) for name in rules.TRANSPORTS],
        validate_choice=False,
        validators=[AnyOf(rules.TRANSPORTS, message=f"must be one of {', '.join(rules.TRANSPORTS)}")],
        description="Microsoft Graph is for Microsoft 365 tenants that keep SMTP AUTH switched off: it sends "
        "as the mailbox in Username, signed in with OAuth 2.0, and needs no SMTP server, port or encryption.",
    )
    smtp_host = StringField(
        "SMTP server",
        validators=[_REQUIRED_FOR_SMTP, follows(rules.normalize_host)],
        description="Host name or IP address, for example smtp.example.com.",
    )
    smtp_port = PortField(
        "Port",
        validators=[_REQUIRED_FOR_SMTP, follows(rules.check_port)],
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
    auth_method = SelectField(
        "Sign in with",
        choices=[SelectChoice(name, AUTH_METHOD_LABELS[name]) for name in rules.AUTH_METHODS],
        validate_choice=False,
        validators=[AnyOf(rules.AUTH_METHODS, message=f"must be one of {', '.join(rules.AUTH_METHODS)}")],
        description="OAuth 2.0 for Microsoft 365 and other providers that no longer take passwords for SMTP.",
    )
    oauth2_token_url = StringField(
        "Token URL",
        validators=[follows(rules.normalize_token_url)],
        description="The OAuth 2.0 token endpoint, for example "
        "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token.",
        render_kw={"autocomplete": "off", "spellcheck": "false"},
    )
    oauth2_client_id = StringField(
        "Client ID",
        description="Microsoft: the Application (client) ID of the app registration.",
        render_kw={"autocomplete": "off", "spellcheck": "false"},
    )
    oauth2_client_secret = PasswordField("Client secret", render_kw={"autocomplete": "new-password"})
    remove_oauth2_client_secret = BooleanField("Remove the stored client secret")
    oauth2_scope = StringField(
        "Scope",
        description="Microsoft 365: https://outlook.office365.com/.default.",
        render_kw={"autocomplete": "off", "spellcheck": "false"},
    )
    google_service_account_key = TextAreaField(
        "Service account key (JSON)",
        description="Paste the whole JSON key file of the Google Cloud service account that has domain-wide "
        "delegation for https://mail.google.com/. It is never shown again.",
        render_kw={"autocomplete": "off", "spellcheck": "false", "rows": 4},
    )
    remove_google_service_account_key = BooleanField("Remove the stored key")
    version = HiddenField()
    # The settings this form was filled with (JSON): after someone else saves, it tells the
    # fields this administrator changed from those they left alone.
    base = HiddenField()
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
        for name in ("smtp_host", "smtp_port"):
            if params[name] in (None, ""):  # left empty, as Graph allows: the stored one stays
                del params[name]
        for name in ("username", "oauth2_token_url", "oauth2_client_id", "oauth2_scope"):
            params[name] = params[name] or ""
        params["auth_method"] = params["auth_method"] or "password"
        for secret in fields.SECRETS:  # blank keeps the stored one; the box removes it
            if getattr(self, f"remove_{secret}").data:
                params[secret] = ""
            elif getattr(self, secret).data:
                params[secret] = getattr(self, secret).data
        return params

    def validate_remove_password(self, field: Any) -> None:
        if field.data and self.password.data:
            raise ValidationError("cannot be ticked while you type a new password: do one or the other")

    def validate_remove_google_service_account_key(self, field: Any) -> None:
        if field.data and self.google_service_account_key.data:
            raise ValidationError("cannot be ticked while you paste a new key: do one or the other")

    def validate_remove_oauth2_client_secret(self, field: Any) -> None:
        if field.data and self.oauth2_client_secret.data:
            raise ValidationError("cannot be ticked while you type a new client secret: do one or the other")


class ConfirmForm(FlaskForm):
    """A form with nothing but its CSRF token and the version it confirms."""

    version = HiddenField()
