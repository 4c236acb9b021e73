"""Flask's signed-cookie sessions, with the signing serializer built once per set of keys,
and a new session for a request without cookies made without parsing its headers.

Flask builds a new serializer twice per request (to open and to save the session), and
building one encodes a sample payload to check the serializer's type: measurable on
every call of the API (bench/RESULTS.md). The keys are part of the cache key, so a
changed ``SECRET_KEY`` or ``SECRET_KEY_FALLBACKS`` takes effect at once.
"""

from __future__ import annotations

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer


class SigningSessionInterface(SecureCookieSessionInterface):
    def __init__(self) -> None:
        self._serializers: dict[tuple[object, ...], URLSafeTimedSerializer | None] = {}

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, *(app.config["SECRET_KEY_FALLBACKS"] or ()))
        serializer = self._serializers.get(keys)
        if serializer is None:
            serializer = super().get_signing_serializer(app)
            self._serializers = {keys: serializer}  # only the keys in use are kept
        return serializer

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if "HTTP_COOKIE" not in request.environ and app.secret_key:
            return self.session_class()  # no cookie, no session to read: skip parsing the headers
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    app.session_interface = SigningSessionInterface()
