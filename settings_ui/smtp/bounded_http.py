"""One HTTP request that ends by a deadline, whatever the server does: for the token endpoints and Graph.

A time-out per read would let a server that answers one byte at a time hold the thread for ever,
so a timer shuts the socket at the deadline. TLS is always verified, with SMTP_CA_FILE's
authorities too; http:// is used only where a URL was accepted for a loopback host. Redirects are
never followed: the caller says what a redirect means.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from email.message import Message

MAX_ANSWER = 64 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Message
    body: bytes


class TooSlow(Exception):
    """No whole answer by the deadline."""


class Unreachable(Exception):
    """The connection or the exchange failed: ``reason`` is the error (an OSError, an SSLError, ...)."""

    def __init__(self, reason: BaseException):
        super().__init__(str(reason))
        self.reason = reason


def request(
    method: str, url: str, body: bytes, headers: dict[str, str], *, timeout: float, ca_file: str | None
) -> Answer:
    """Send one request to ``url`` and read its answer (at most MAX_ANSWER bytes), all within ``timeout``.

    Raises :class:`TooSlow`, :class:`Unreachable`, or ValueError for an address that is not valid.
    """
    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout
    try:
        connection = _connection(parts, timeout, ca_file)
        connection.connect()
    except TimeoutError:
        raise TooSlow from None
    except OSError as error:  # TLS failures included
        raise Unreachable(error) from None
    cut = threading.Event()
    cut_off = threading.Timer(max(deadline - time.monotonic(), 0.0), _cut, (connection.sock, cut))
    cut_off.start()
    try:
        connection.request(method, urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")), body, headers)
        response = connection.getresponse()
        answer = Answer(response.status, response.msg, response.read(MAX_ANSWER))
    except (OSError, http.client.HTTPException) as error:
        if cut.is_set() or isinstance(error, TimeoutError):
            raise TooSlow from None
        raise Unreachable(error) from None
    finally:
        cut_off.cancel()
        connection.close()
    if cut.is_set():  # what came before the deadline is only part of the answer
        raise TooSlow
    return answer


def _connection(url: urllib.parse.SplitResult, timeout: float, ca_file: str | None) -> http.client.HTTPConnection:
    if url.scheme == "http":  # accepted for a loopback host only
        return http.client.HTTPConnection(url.hostname or "", url.port, timeout=timeout)
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    if ca_file:
        context.load_default_certs()
    return http.client.HTTPSConnection(url.hostname or "", url.port, timeout=timeout, context=context)


def _cut(sock: socket.socket, cut: threading.Event) -> None:
    """End the exchange at its deadline: a read blocked on the socket returns at once."""
    cut.set()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
