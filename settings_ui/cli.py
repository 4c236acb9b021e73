"""The command-line entry point of ``python app.py``."""

from __future__ import annotations

import argparse

from flask import Flask

from .rules import is_loopback
from .sign_in import admin_configured


def main(app: Flask, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the settings-ui email settings page and API.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    args = parser.parse_args(argv)
    if not admin_configured(app.config) and not is_loopback(args.host):
        parser.exit(
            2,
            f"Refusing to listen on {args.host}: no admin account is configured, so anyone on the network "
            "could change where this product sends its mail.\n"
            "Set one first: run `flask --app app hash-password`, then set SETTINGS_UI_ADMIN_USERNAME and "
            "SETTINGS_UI_ADMIN_PASSWORD_HASH (or ADMIN_USERNAME and ADMIN_PASSWORD_HASH in instance/config.py).\n",
        )
    app.run(host=args.host, port=args.port, threaded=True)
