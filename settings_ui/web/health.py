"""GET /healthz: is this app server able to serve? Needs no login, shows no settings."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .. import database

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    found = database.state()
    if found != "ok":
        return jsonify(status="unavailable", database=found), 503
    return jsonify(status="ok", database="ok"), 200
