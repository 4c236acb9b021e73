"""settings-ui inside a product: the example product in examples/product, with its own users
(Flask-SQLAlchemy), sign-in (Flask-Login), CSRFProtect, SECRET_KEY and Flask-Mail, mounts it under
/admin/mail and guards it with its own sign-in."""

from __future__ import annotations

import re
import sqlite3
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient
from flask_mail import Message
from flask_wtf.csrf import CSRFProtect
from werkzeug.security import generate_password_hash

import settings_ui
from examples.product.app import User, create_app, db
from settings_ui import schema

from .helpers import CONFIGURED, EXAMPLE_PASSWORD, assert_error, form_values, shown
from .smtp_servers import smtp_server

PREFIX = "/admin/mail"
ADMIN_EMAIL, MEMBER_EMAIL, PASSWORD = "admin@example.com", "member@example.com", "product password"


def _product(tmp_path: Path, **config: Any) -> Flask:
    config = {"TESTING": True, "SECRET_KEY": "the product's own key", **config}
    app = create_app(config, instance_path=str(tmp_path / "instance"))
    with app.app_context():
        for email, admin in ((ADMIN_EMAIL, True), (MEMBER_EMAIL, False)):
            db.session.add(User(email=email, password_hash=generate_password_hash(PASSWORD), is_admin=admin))
        db.session.commit()
    return app


@pytest.fixture
def product(tmp_path: Path) -> Flask:
    """The product with its CSRF protection on, as in production; its instance folder in tmp_path."""
    return _product(
        tmp_path,
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'product.db'}",
        EMAIL_SETTINGS_DATABASE_URI=f"sqlite:///{tmp_path / 'mail.db'}",
    )


def _csrf_token(client: FlaskClient, path: str) -> str:
    html = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def _signed_in(product: Flask, email: str) -> FlaskClient:
    client = product.test_client()
    token = _csrf_token(client, "/sign-in")
    answer = client.post("/sign-in", data={"email": email, "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client


def _api(client: FlaskClient, call: str, params: dict[str, Any] | None = None) -> Any:
    return client.post(f"{PREFIX}/email-settings/{call}", json={"params": params or {}})


def test_a_stranger_is_sent_to_the_products_sign_in_and_nothing_is_stored(product: Flask) -> None:
    client = product.test_client()
    answer = client.get(f"{PREFIX}/")
    assert answer.status_code == 302
    assert answer.headers["Location"] == f"/sign-in?next={PREFIX}/"
    assert _api(client, "edit", CONFIGURED).status_code == 302
    admin = _signed_in(product, ADMIN_EMAIL)
    assert _api(admin, "show").get_json()["result"] == shown({})


def test_a_signed_in_user_who_is_not_an_admin_is_refused_on_the_page_and_the_api(product: Flask) -> None:
    member = _signed_in(product, MEMBER_EMAIL)
    page = member.get(f"{PREFIX}/")
    assert page.status_code == 403
    assert "not allowed" in page.get_data(as_text=True)
    assert_error(_api(member, "edit", CONFIGURED), 403, "not allowed")
    assert member.get(f"{PREFIX}/metrics").status_code == 403
    admin = _signed_in(product, ADMIN_EMAIL)
    assert _api(admin, "show").get_json()["result"] == shown({})


def test_an_admin_saves_through_the_page_under_the_prefix_with_the_products_csrf_protection(product: Flask) -> None:
    admin = _signed_in(product, ADMIN_EMAIL)
    soup = BeautifulSoup(admin.get(f"{PREFIX}/").get_data(as_text=True), "html.parser")
    # Every link, form action and asset of the page stays under the prefix.
    targets = [
        tag.get("href") or tag.get("action") or tag.get("src") or tag.get("formaction") for tag in soup.find_all()
    ]
    local = [target for target in targets if target and target.startswith("/")]
    assert local and all(target.startswith(PREFIX + "/") for target in local), local
    assert admin.get(f"{PREFIX}/static/style.css").status_code == 200

    values = form_values(soup) | {
        name: str(value) for name, value in CONFIGURED.items() if name != "allow_selfsigned_certs"
    }
    without_token = admin.post(f"{PREFIX}/", data={k: v for k, v in values.items() if k != "csrf_token"})
    assert without_token.status_code == 400
    assert _api(admin, "show").get_json()["result"] == shown({})

    saved = admin.post(f"{PREFIX}/", data=values)
    assert saved.status_code == 303
    assert saved.headers["Location"] == f"{PREFIX}/"
    assert _api(admin, "show").get_json()["result"] == shown(CONFIGURED)
    assert EXAMPLE_PASSWORD not in admin.get(f"{PREFIX}/").get_data(as_text=True)


def test_an_admin_uses_the_api_with_the_products_session_and_the_products_own_forms_keep_csrf(
    product: Flask,
) -> None:
    admin = _signed_in(product, ADMIN_EMAIL)
    answer = _api(admin, "edit", CONFIGURED)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["result"] == shown(CONFIGURED)
    assert_error(_api(admin, "nonsense"), 404, f"{PREFIX}/email-settings/edit")
    # The product's own form is still protected by its CSRFProtect.
    assert admin.post("/invite", data={"email": "friend@example.com"}).status_code == 400


def test_the_api_takes_no_csrf_token_whether_the_product_sets_up_csrfprotect_before_or_after(tmp_path: Path) -> None:
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY="a product's key", EMAIL_SETTINGS_DATABASE_URI=f"sqlite:///{tmp_path / 'mail.db'}")
    settings_ui.EmailSettings(app, url_prefix="/mail", authorize=lambda: True)
    CSRFProtect(app)  # after settings-ui

    @app.post("/product-form")
    def product_form() -> str:
        return "stored"

    client = app.test_client()
    assert client.post("/mail/email-settings/edit", json={"params": CONFIGURED}).status_code == 200
    assert client.post("/product-form").status_code == 400  # the product's own form is still protected
    assert client.post("/mail/", data={"smtp_host": "elsewhere.example.com"}).status_code == 400  # and the page
    assert client.post("/mail/email-settings/show", json={"params": {}}).get_json()["result"] == shown(CONFIGURED)


def test_the_product_keeps_its_tables_and_its_migration_history_in_a_shared_database(tmp_path: Path) -> None:
    shared = tmp_path / "shared.db"
    with sqlite3.connect(shared) as connection:  # the product's own Alembic history
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES ('product-7')")
    url = f"sqlite:///{shared}"
    product = _product(tmp_path, SQLALCHEMY_DATABASE_URI=url, EMAIL_SETTINGS_DATABASE_URI=url)
    admin = _signed_in(product, ADMIN_EMAIL)
    assert _api(admin, "edit", CONFIGURED).status_code == 200
    with sqlite3.connect(shared) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("product-7",)]
        assert connection.execute("SELECT email FROM user ORDER BY id").fetchall() == [(ADMIN_EMAIL,), (MEMBER_EMAIL,)]
        assert connection.execute(f"SELECT count(*) FROM {schema.VERSION_TABLE}").fetchone() == (1,)


def test_the_product_sends_an_email_message_and_a_flask_mail_message_through_the_settings(product: Flask) -> None:
    admin = _signed_in(product, ADMIN_EMAIL)
    with smtp_server() as (port, handler):
        params = {"smtp_host": "127.0.0.1", "smtp_port": port, "encryption": "Plain", "from_email": "app@example.com"}
        assert _api(admin, "edit", params).status_code == 200
        with product.app_context():
            plain = EmailMessage()
            plain["To"] = "first@example.com"
            plain["Subject"] = "standard library"
            plain.set_content("one")
            assert settings_ui.send_message(plain).sent
            flask_mail = Message(
                "Flask-Mail", recipients=["second@example.com"], bcc=["hidden@example.com"], body="two"
            )
            assert settings_ui.send_message(flask_mail).sent
        token = _csrf_token(admin, "/")
        invited = admin.post("/invite", data={"email": "friend@example.com", "csrf_token": token})
        assert invited.status_code == 302
    received = [(mail.rcpt_tos, mail.message["Subject"], mail.message["From"]) for mail in handler.received]
    assert received == [
        (["first@example.com"], "standard library", "app@example.com"),
        (["second@example.com", "hidden@example.com"], "Flask-Mail", "app@example.com"),
        (["friend@example.com"], "You are invited", "app@example.com"),
    ]
    assert all(mail.message["Bcc"] is None for mail in handler.received)
