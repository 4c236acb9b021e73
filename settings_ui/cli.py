"""The command-line entry point of ``python app.py``."""

from __future__ import annotations

import argparse

from flask import Flask


def main(app: Flask, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the settings-ui email settings page and API.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    args = parser.parse_args(argv)
    app.run(host=args.host, port=args.port, threaded=True)
