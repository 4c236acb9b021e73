"""Talking to the SMTP server: one message, step by step, within a hard deadline, each failure explained."""

from .conversation import Mail, Options, Report, SmtpTarget, deliver, send, tls_version
from .diagnosis import host_port

__all__ = ["Mail", "Options", "Report", "SmtpTarget", "deliver", "host_port", "send", "tls_version"]
