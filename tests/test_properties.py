"""Properties of the operations, for any JSON value in any parameter (Hypothesis)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settings_ui import crypto, fields, operations, rules
from settings_ui.errors import SettingsError

from .apps import make_app, stored_row

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)

# Values that are often valid, so that accepted edits are explored as much as rejected ones.
plausible = {
    "smtp_host": st.sampled_from(["smtp.example.com", "MAIL.Example.ORG", "192.0.2.1", "[2001:db8::1]", "", "a b"]),
    "smtp_port": st.integers(min_value=-2, max_value=70000),
    "encryption": st.sampled_from([*rules.ENCRYPTIONS, "SSL", "tls"]),
    "from_email": st.sampled_from(["a@example.com", "B@Example.COM", "", "nope", "a@b.c, d@e.f"]),
    "username": st.sampled_from(["", "mailer", "user\n"]),
    "password": st.text(max_size=20),
    "allow_selfsigned_certs": st.booleans(),
}
parameter_names = st.sampled_from([*fields.PARAMETERS, "unknown", "smtp_password"])
any_params = st.dictionaries(parameter_names, json_values, max_size=4) | st.fixed_dictionaries(
    {}, optional={name: strategy | json_values for name, strategy in plausible.items()}
)

SETTINGS = settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def service_app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    with app.app_context():
        yield app


def _valid(settings_: operations.Settings) -> None:
    assert rules.normalize_host(settings_.smtp_host) == settings_.smtp_host
    rules.check_port(settings_.smtp_port)
    assert settings_.encryption in rules.ENCRYPTIONS
    assert rules.normalize_email(settings_.from_email) == settings_.from_email
    assert bool(settings_.username) == settings_.has_password
    for text in (settings_.smtp_host, settings_.from_email, settings_.username):
        rules.check_no_control_characters(text)


@SETTINGS
@given(params=any_params)
def test_edit_stores_a_valid_configuration_or_nothing(service_app: Flask, params: dict[str, Any]) -> None:
    before = stored_row(service_app)
    try:
        stored = operations.edit(params)
    except SettingsError as error:
        assert error.message
        assert stored_row(service_app) == before
        return
    _valid(stored)
    assert operations.show() == stored
    for name, value in params.items():
        if name in ("smtp_port", "encryption", "username", "allow_selfsigned_certs"):
            assert getattr(stored, name) == value
    if "password" in params:
        token = stored_row(service_app)["password_encrypted"]
        assert (crypto.decrypt(token) if token else "") == params["password"]


@SETTINGS
@given(password=st.text())
def test_any_password_survives_the_encryption_round_trip(service_app: Flask, password: str) -> None:
    assert crypto.decrypt(crypto.encrypt(password)) == password


@SETTINGS
@given(password=st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=200))
def test_any_accepted_password_is_stored_and_read_back(service_app: Flask, password: str) -> None:
    complete = {"smtp_host": "smtp.example.com", "smtp_port": 587, "from_email": "a@example.com", "username": "u"}
    operations.edit(complete | {"password": password})
    token = stored_row(service_app)["password_encrypted"]
    assert crypto.decrypt(token) == password
