"""Generated requests from /openapi.json (Schemathesis), bounded for CI.

Every generated call must answer without a 5xx, conform to the document, and, when
rejected, leave the stored settings exactly as they were. /email-settings/test and
/email-settings/detect are left out: their generated requests would reach arbitrary
hosts; they are covered against real local SMTP servers in test_test_email.py and
test_detect.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from .apps import make_app, stored_row

OPERATIONS = ["/email-settings/show", "/email-settings/edit", "/email-settings/clear"]


@pytest.fixture
def app_under_test(tmp_path: Path) -> Flask:
    app = make_app(tmp_path)
    # Start configured, so that generated partial edits can succeed as well as fail.
    complete = {"smtp_host": "smtp.example.com", "smtp_port": 587, "from_email": "noreply@example.com"}
    assert app.test_client().post("/email-settings/edit", json={"params": complete}).status_code == 200
    return app


def _loaded(app: Flask) -> Any:
    def from_this_machine(environ: dict[str, Any], start_response: Any) -> Any:
        # Schemathesis's WSGI calls carry no client address; they stand for a local client.
        environ["REMOTE_ADDR"] = environ.get("REMOTE_ADDR") or "127.0.0.1"
        return app(environ, start_response)

    return schemathesis.openapi.from_wsgi("/openapi.json", from_this_machine)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
@pytest.mark.parametrize("path", OPERATIONS)
@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_requests(app_under_test: Flask, path: str, mode: GenerationMode, data: st.DataObject) -> None:
    operation = _loaded(app_under_test)[path]["POST"]
    case = data.draw(operation.as_strategy(generation_mode=mode))
    before = stored_row(app_under_test)
    # Acceptance of schema-valid data is not checked: whether an edit is accepted depends on
    # what is stored (the merged result must be complete), and a stale If-Match is a 412.
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    assert response.status_code < 500
    if response.status_code != 200:
        assert stored_row(app_under_test) == before
