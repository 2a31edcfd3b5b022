"""The reading endpoints as one WSGI application: ``GET /metrics``,
``GET /usage`` and ``GET /api/report`` (``HEAD`` too), behind the token
when one is given."""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable, List, Optional

from ..errors import StoreClosedError, TelemetryError
from . import metrics, usage, web
from .web import Environ, StartResponse

__all__ = ["PATHS", "OutletsApp", "metrics_app", "usage_app"]

#: Every path served here.
PATHS = ("/metrics", "/usage", "/api/report")

_log = logging.getLogger("telemetry_orm.server")


class OutletsApp:
    """A WSGI application serving ``paths`` (some of :data:`PATHS`) of
    ``store``; with a ``token``, only to requests that carry it (see
    :class:`~telemetry_orm.outlets.web.Guard`)."""

    def __init__(self, store: Any, token: Optional[str] = None,
                 paths: Iterable[str] = PATHS) -> None:
        self.store = store
        self.paths = tuple(paths)
        unknown = set(self.paths) - set(PATHS)
        if unknown:
            raise ValueError(f"unknown paths {sorted(unknown)}; expected some of {PATHS}")
        self.guard = web.Guard(token)
        #: The highest value each counter series has served (see metrics.Counters).
        self.counters = metrics.Counters()

    def __call__(self, environ: Environ, start_response: StartResponse) -> List[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("", "/") and len(self.paths) == 1:
            # Mounted at its path by a router that strips it (SCRIPT_NAME).
            path = self.paths[0]
        if path not in self.paths:
            return web.text(environ, start_response, 404,
                            f"no such path: {path[:100]!r} (here: {', '.join(self.paths)})")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return web.text(environ, start_response, 405, "use GET",
                            [("Allow", "GET, HEAD")])
        if not self.guard.allows(environ):
            return web.text(environ, start_response, 401,
                            "a valid 'Authorization: Bearer <token>' header (or HTTP Basic "
                            "with the token as password) is required", web.CHALLENGES)
        query = environ.get("QUERY_STRING", "")
        try:
            if path == "/metrics":
                body = metrics.metrics_text(self.store, self.counters)
                return web.answer(environ, start_response, 200, body.encode("utf-8"),
                                  metrics.CONTENT_TYPE)
            if path == "/api/report":
                body = usage.api_report(self.store, query)
                return web.answer(environ, start_response, 200, body.encode("utf-8"),
                                  "application/json")
            page = usage.usage_page(self.store, query)
            return web.answer(environ, start_response, 200, page.encode("utf-8"),
                              "text/html; charset=utf-8",
                              [("Content-Security-Policy", usage.content_policy(page))])
        except usage.BadQuery as exc:
            if path == "/api/report":
                return web.answer(environ, start_response, 400, json.dumps(
                    {"error": str(exc)}).encode("utf-8") + b"\n", "application/json")
            return web.text(environ, start_response, 400, str(exc))
        except StoreClosedError:
            return web.text(environ, start_response, 503, "the store is closed")
        except TelemetryError as exc:  # the database is busy, down or refuses
            _log.warning("%s failed: %s: %s", path, type(exc).__name__, exc)
            return web.text(environ, start_response, 503,
                            f"the database does not answer ({type(exc).__name__})",
                            [("Retry-After", "1")])
        except Exception:
            # A fault of this package, not of the database: no retry helps.
            _log.exception("%s failed", path)
            return web.text(environ, start_response, 500, "internal error (see the server's log)")


def metrics_app(store: Any, token: Optional[str] = None) -> OutletsApp:
    """A WSGI application serving ``GET /metrics`` of ``store``, for an
    application that serves its own routes::

        from telemetry_orm.server import metrics_app
        app = metrics_app(store, token="s3cret")   # mount it at /metrics
    """
    return OutletsApp(store, token, ("/metrics",))


def usage_app(store: Any, token: Optional[str] = None) -> OutletsApp:
    """A WSGI application serving ``GET /usage`` and ``GET /api/report`` of ``store``."""
    return OutletsApp(store, token, ("/usage", "/api/report"))
