"""GET /healthz: is this app server able to serve? Needs no login, shows no settings."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from .. import database
from ..models import SETTINGS_ROW_ID, SettingsRow

bp = Blueprint("health", __name__)
_ROW_EXISTS = select(SettingsRow.id).where(SettingsRow.id == SETTINGS_ROW_ID)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    try:
        with database.engine().connect() as connection:
            found = connection.execute(_ROW_EXISTS).first()
    except SQLAlchemyError as error:
        current_app.logger.error("Health check: the database is unavailable: %s", type(error).__name__)
        return jsonify(status="unavailable", database="unreachable"), 503
    if found is None:
        return jsonify(status="unavailable", database="settings table is empty"), 503
    return jsonify(status="ok", database="ok"), 200
