"""An example product that mounts settings-ui: its own users in its own database (Flask-SQLAlchemy),
its own sign-in (Flask-Login), its own CSRF protection and Flask-Mail's messages. Its administrators
find the email settings at /admin/mail/; everyone else is refused, and strangers are sent to sign in.

    flask --app examples.product.app add-user admin@example.com --admin
    flask --app examples.product.app run
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import click
from flask import Flask, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_mail import Mail, Message
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import EmailField, PasswordField
from wtforms.validators import Email, InputRequired

import settings_ui


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
csrf = CSRFProtect()
login_manager = LoginManager()
mail = Mail()
email_settings = settings_ui.EmailSettings(url_prefix="/admin/mail")


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(unique=True)
    password_hash: Mapped[str]
    is_admin: Mapped[bool] = mapped_column(default=False)


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


def is_admin() -> ResponseReturnValue:
    """settings-ui's ``authorize``: administrators only; anyone not signed in is sent to sign in."""
    if not current_user.is_authenticated:
        return redirect(url_for("sign_in", next=request.full_path.rstrip("?")))
    return bool(current_user.is_admin)


class SignInForm(FlaskForm):
    email = EmailField("Email", validators=[InputRequired()])
    password = PasswordField("Password", validators=[InputRequired()])


class InviteForm(FlaskForm):
    email = EmailField("Email", validators=[InputRequired(), Email()])


def create_app(test_config: dict[str, Any] | None = None, *, instance_path: str | None = None) -> Flask:
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.from_mapping(SQLALCHEMY_DATABASE_URI=f"sqlite:///{Path(app.instance_path) / 'product.db'}")
    app.config.from_prefixed_env("PRODUCT")
    if test_config:
        app.config.from_mapping(test_config)
    if not app.config.get("SECRET_KEY"):
        key_file = Path(app.instance_path) / "secret_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(48))
            key_file.chmod(0o600)
        app.config["SECRET_KEY"] = key_file.read_text()

    db.init_app(app)
    csrf.init_app(app)  # before settings-ui, which exempts its JSON API from it
    login_manager.init_app(app)
    login_manager.login_view = "sign_in"
    mail.init_app(app)
    email_settings.init_app(app, authorize=is_admin)
    with app.app_context():
        db.create_all()

    @app.get("/")
    @login_required
    def home() -> str:
        return render_template("home.html", form=InviteForm())

    @app.route("/sign-in", methods=["GET", "POST"])
    def sign_in() -> ResponseReturnValue:
        form = SignInForm()
        if form.validate_on_submit():
            user = db.session.scalar(db.select(User).filter_by(email=form.email.data))
            if user is not None and check_password_hash(user.password_hash, form.password.data or ""):
                login_user(user)
                target = request.args.get("next", "")
                return redirect(target if target.startswith("/") and not target.startswith("//") else "/")
            flash("The email or password is wrong.")
        return render_template("sign_in.html", form=form)

    @app.post("/sign-out")
    def sign_out() -> ResponseReturnValue:
        logout_user()
        return redirect(url_for("sign_in"))

    @app.post("/invite")
    @login_required
    def invite() -> ResponseReturnValue:
        """The product's own mail, written with Flask-Mail and sent through settings-ui."""
        form = InviteForm()
        if not form.validate():
            return render_template("home.html", form=form), 400
        message = Message("You are invited", recipients=[form.email.data or ""], body="Welcome aboard.")
        delivery = settings_ui.send_message(message)
        flash("Invitation sent." if delivery.sent else f"The invitation was not sent: {delivery.message}")
        return redirect(url_for("home"))

    @app.cli.command("add-user")
    @click.argument("email")
    @click.option("--admin", is_flag=True, help="May change the email settings.")
    @click.password_option()
    def add_user(email: str, admin: bool, password: str) -> None:
        """Add a user who signs in with EMAIL and a password."""
        db.session.add(User(email=email, password_hash=generate_password_hash(password), is_admin=admin))
        db.session.commit()

    return app
