"""Talking to the SMTP server: one message, step by step, within a hard deadline, each failure explained."""

from .conversation import Options, Report, SmtpTarget, send, tls_version
from .diagnosis import host_port

__all__ = ["Options", "Report", "SmtpTarget", "host_port", "send", "tls_version"]
