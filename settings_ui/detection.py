"""Detect: which port and encryption a host's SMTP server offers, checked without sending or storing.

The password rules of the test hold: a password typed for detect goes only to the best
candidate, after its certificate was verified; the stored password is used only for the
stored host and username, and only toward the stored port and encryption.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import audit, rules, targets
from .audit import SYSTEM, Actor
from .errors import SettingsError
from .params import check_type, json_type_name, parse_params, reject_unknown
from .smtp import detect as probing
from .smtp.detect import Detection
from .targets import smtp_options, smtp_slot

PARAMETERS = ("smtp_host", "username", "password", "ports")


def detect(params: Mapping[str, Any], *, actor: Actor = SYSTEM) -> Detection:
    """Probe ``params["smtp_host"]`` and recommend the settings to use; nothing is stored.

    ``username`` and ``password`` (optional) are tried once on the best candidate; ``ports``
    (optional) replaces :data:`~settings_ui.smtp.detect.DEFAULT_PORTS`. Raises
    :class:`SettingsError` for invalid input, and when too many tests and detections run.
    """
    reject_unknown(params, PARAMETERS)
    given = parse_params({name: params[name] for name in ("smtp_host", "username", "password") if name in params})
    host = given.get("smtp_host")
    if not host:
        raise SettingsError({"smtp_host": "is required: the host name or IP address of the server to look at"})
    ports = _ports(params.get("ports", list(probing.DEFAULT_PORTS)))
    username = given.get("username", "")
    credentials = _credentials(host, username, given.get("password"))
    with smtp_slot():
        detection = probing.detect(host, ports, smtp_options(), username=username, credentials=credentials)
    recommended = detection.recommended
    found = f"{recommended['smtp_port']} {recommended['encryption']}" if recommended else "nothing to recommend"
    signed_in = next((f"; sign-in {c.auth}" for c in detection.candidates if c.auth != "not tried"), "")
    audit.record("settings detected", actor, f"{host}: {found}{signed_in}")
    return detection


def _ports(value: Any) -> list[int]:
    if not isinstance(value, list) or not value:
        raise SettingsError({"ports": f"must be a non-empty list of port numbers, not {json_type_name(value)}"})
    if len(value) > probing.MAX_PORTS:
        raise SettingsError({"ports": f"may list at most {probing.MAX_PORTS} ports"})
    ports: list[int] = []
    for item in value:
        try:
            check_type(item, int)
            ports.append(rules.check_port(item))
        except ValueError as problem:
            raise SettingsError({"ports": f"item {item!r} {problem}"}) from None
    if len(set(ports)) != len(ports):
        raise SettingsError({"ports": "lists a port twice"})
    return ports


def _credentials(host: str, username: str, password: str | None) -> probing.Credentials | None:
    """What to sign in with, if anything: the password given, or the stored one (or SMTP_PASSWORD_FILE's)
    for the stored server."""
    if password and not username:
        raise SettingsError({"username": "is required when a password is given"})
    if not username:
        return None
    if password:
        return probing.Credentials(username, password)
    if password == "":  # given as empty: no password, not the stored one
        return None
    try:
        stored = targets.resolve_target({})  # the one place that knows where stored secrets come from
    except SettingsError:
        return None  # nothing usable is stored: no stored credentials either
    if (stored.smtp_host, stored.username) != (host, username) or stored.password_problem:
        return None  # another server, or no password to be had: the sign-in is not tried
    only_for = (stored.smtp_port, stored.encryption)
    if stored.auth_method != "password":
        return probing.Credentials(username, "", only_for=only_for, oauth2_client=stored.token_client)
    return probing.Credentials(username, stored.password, only_for=only_for) if stored.password else None
