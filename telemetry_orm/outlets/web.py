"""What the reading endpoints share: the token check (a bearer token, or
HTTP Basic with the token as password so that a browser can log in) and
plain WSGI answers."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import TelemetryValidationError

Environ = Dict[str, Any]
StartResponse = Callable[..., Any]
Headers = List[Tuple[str, str]]

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 500: "Internal Server Error", 503: "Service Unavailable"}

#: A browser asks for a password on this challenge; Prometheus and scripts
#: send ``Authorization: Bearer <token>``.
CHALLENGES: Headers = [("WWW-Authenticate", 'Basic realm="telemetry-orm", charset="UTF-8"'),
                       ("WWW-Authenticate", 'Bearer realm="telemetry-orm"')]

#: Sent with every answer: nothing is cached, sniffed or framed.
COMMON: Headers = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                   ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY")]


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class Guard:
    """Whether a request carries ``token``: ``Authorization: Bearer
    <token>``, or ``Authorization: Basic`` with the token as password (any
    user name). ``None`` lets every request in."""

    def __init__(self, token: Optional[str]) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise TelemetryValidationError("token", "must be a non-empty string or None")
        self._token = None if token is None else _digest(token.strip())

    @property
    def open(self) -> bool:
        """No token is needed."""
        return self._token is None

    def allows(self, environ: Environ) -> bool:
        if self._token is None:
            return True
        scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
        scheme, given = scheme.lower(), given.strip()
        if scheme == "basic":
            try:
                pair = base64.b64decode(given, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            given = pair.partition(":")[2]
        elif scheme != "bearer":
            given = ""
        # Digests of equal length compared in constant time: neither the
        # token's characters nor its length show in the time taken.
        return hmac.compare_digest(_digest(given), self._token) and bool(given)


def answer(environ: Environ, start_response: StartResponse, status: int, body: bytes,
           content_type: str, headers: Sequence[Tuple[str, str]] = ()) -> List[bytes]:
    """Send ``body`` (nothing for HEAD, with the length GET would have)."""
    sent = [("Content-Type", content_type), ("Content-Length", str(len(body))), *COMMON,
            *headers]
    start_response(f"{status} {REASONS[status]}", sent)
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def text(environ: Environ, start_response: StartResponse, status: int, message: str,
         headers: Sequence[Tuple[str, str]] = ()) -> List[bytes]:
    """A plain-text answer of one line."""
    return answer(environ, start_response, status, (message + "\n").encode("utf-8"),
                  "text/plain; charset=utf-8", headers)
