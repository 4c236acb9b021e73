"""/openapi.json describes the API, and it stays true."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator

from settings_ui import rules
from settings_ui.shapes import Schema, components, schema, to_json
from settings_ui.web.envelope import api_calls
from settings_ui.web.openapi import document

from .helpers import UNCONFIGURED
from .openapi_check import check_response
from .processes import PROJECT


def test_the_document_is_served_without_login(tmp_path: Any) -> None:
    from .apps import make_app
    from .helpers import ADMIN, ADMIN_HASH

    app = make_app(tmp_path, ADMIN_USERNAME=ADMIN, ADMIN_PASSWORD_HASH=ADMIN_HASH)
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.get_json()["openapi"].startswith("3.1")


def test_every_api_route_is_described(app: Flask) -> None:
    with app.app_context():
        routes = set(api_calls())
    assert "/email-settings/edit" in routes
    assert routes == set(document()["paths"])
    for path, item in document()["paths"].items():
        assert set(item) == {"post"}, path
        responses = item["post"]["responses"]
        assert {"200", "400", "401", "403", "405", "413", "500"} <= set(responses)


def test_the_document_takes_its_limits_from_the_rules() -> None:
    params = document()["components"]["schemas"]["EditParams"]["properties"]
    assert params["encryption"]["enum"] == list(rules.ENCRYPTIONS)
    assert (params["smtp_port"]["minimum"], params["smtp_port"]["maximum"]) == (rules.PORT_MIN, rules.PORT_MAX)
    assert "password" not in document()["components"]["schemas"]["EmailSettings"]["properties"]
    assert document()["components"]["securitySchemes"]["basicAuth"] == {"type": "http", "scheme": "basic"}


def test_every_schema_in_the_document_is_a_valid_json_schema() -> None:
    for declared in document()["components"]["schemas"].values():
        Draft202012Validator.check_schema(declared)


def _fake(status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (200, {"result": {"smtp_host": "x"}, "successful": True}, {"ETag": '"1"'}),  # keys missing
        (200, {"result": {}, "successful": True, "extra": 1}, {"ETag": '"1"'}),
        (400, {"error": {}, "successful": False}, None),  # no message
        (400, {"error": {"message": "x"}, "successful": True}, None),
        (418, {"error": {"message": "x"}, "successful": False}, None),  # undocumented status
        (200, {"result": UNCONFIGURED | {"password": "leaked"}, "successful": True}, {"ETag": '"1"'}),
    ],
)
def test_the_conformance_check_catches_what_breaks_the_contract(
    status: int, body: Any, headers: dict[str, str] | None
) -> None:
    with pytest.raises(AssertionError):
        check_response("POST", "/email-settings/show", _fake(status, body, headers))


def test_a_missing_etag_breaks_the_contract() -> None:
    body = {"result": UNCONFIGURED, "successful": True}
    check_response("POST", "/email-settings/show", _fake(200, body, {"ETag": '"0"'}))
    with pytest.raises(AssertionError):
        check_response("POST", "/email-settings/show", _fake(200, body))


def test_the_test_clients_check_every_api_answer(client: FlaskClient) -> None:
    # The fixtures' client runs check_response on every /email-settings call.
    assert type(client).__name__ == "ConformingClient"


def test_the_committed_reference_is_the_served_document() -> None:
    """docs/openapi.json, the API reference in the repository, is what /openapi.json serves.

    After a change to the API: UPDATE_OPENAPI=1 make test PYTEST_ARGS="-k committed_reference".
    """
    committed = PROJECT / "docs" / "openapi.json"
    current = json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_OPENAPI") == "1":
        committed.write_text(current)
    assert committed.read_text() == current, "docs/openapi.json is stale: see this test's docstring"


@dataclass(frozen=True)
class _Inner:
    sha256: Annotated[str, Schema(pattern="^[0-9a-f]{64}$")]


@dataclass(frozen=True)
class _Result:
    done: Annotated[bool, Schema("whether it is done")]
    when: datetime | None
    inner: _Inner | None
    names: list[str]
    _kept_back: int = 0


def test_a_result_declared_once_gives_its_json_and_its_schema() -> None:
    result = _Result(True, datetime(2026, 11, 27, 6, 0, tzinfo=UTC), _Inner("0" * 64), ["a"], _kept_back=7)
    assert to_json(result) == {
        "done": True,
        "when": "2026-11-27T06:00:00+00:00",
        "inner": {"sha256": "0" * 64},
        "names": ["a"],
    }
    described = schema(_Result)
    assert described["required"] == ["done", "when", "inner", "names"]
    assert described["properties"]["done"] == {"type": "boolean", "description": "whether it is done"}
    assert described["properties"]["when"] == {"type": ["string", "null"], "format": "date-time"}
    assert described["properties"]["inner"] == {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/_Inner"}]}
    assert set(components(_Result)) == {"_Result", "_Inner"}
