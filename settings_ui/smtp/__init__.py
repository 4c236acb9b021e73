"""Talking to the SMTP server: one message, step by step, within a hard deadline, each failure explained."""

from .conversation import Report, SmtpTarget, send
from .diagnosis import host_port

__all__ = ["Report", "SmtpTarget", "host_port", "send"]
