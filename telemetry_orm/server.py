"""OTLP/HTTP intake as a plain WSGI application: :func:`make_app`.

``POST /v1/logs`` and ``POST /v1/traces`` record Claude Code's events and
GenAI model-call spans as executions (the mapping:
:mod:`telemetry_orm.intake`); ``POST /v1/metrics`` is decoded and
acknowledged, and stores nothing (Claude Code's metrics repeat its
events); ``GET /healthz`` answers 200 while the database answers.

Each request's executions are written with one ``record_many`` call, each
under its key, so the answer 200 comes only after they are committed and an
exporter that sends the same batch again (after a crash, a timeout or a
503) adds nothing. Refused records are counted in the response's
``partial_success``; the rest of the request is stored.

Any WSGI server runs it (``telemetry-orm serve`` uses waitress); an
application can mount it beside its own routes::

    from telemetry_orm import create_telemetry_store
    from telemetry_orm.server import make_app

    app = make_app(create_telemetry_store("data/telemetry.db"), token="s3cret")
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from . import intake
from .errors import StoreClosedError, TelemetryValidationError
from .intake import body as _body
from .intake.counting import TooManyRecordsError
from .outlets import PATHS as OUTLET_PATHS
from .outlets import OutletsApp, metrics_app, usage_app  # noqa: F401  (public here too)
from .sql import quote
from .store import PeeweeTelemetryStore

#: The default bound of a request body, decompressed: 16 MiB.
MAX_BODY = 16 * 1024 * 1024
#: The default bound of the records (log records, spans, metrics) of one
#: request: the SDK's batches hold 512, Claude Code's fewer.
MAX_RECORDS = 10_000
#: Requests that may be read, decoded and written at once by default; more
#: wait up to :data:`BUSY_WAIT` seconds, then get 503.
MAX_INFLIGHT = 4
BUSY_WAIT = 0.5
#: Seconds an exporter is told to wait (``Retry-After``) after a 503.
RETRY_AFTER = 1

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_log = logging.getLogger("telemetry_orm.server")

Environ = Dict[str, Any]
StartResponse = Callable[..., Any]
Headers = List[Tuple[str, str]]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
            415: "Unsupported Media Type", 503: "Service Unavailable"}
# google.rpc.Code of each refusal, for the Status body.
_CODES = {400: 3, 401: 16, 404: 5, 405: 12, 411: 3, 413: 8, 415: 3, 503: 14}
_PATHS = {"/v1/logs": "logs", "/v1/traces": "traces", "/v1/metrics": "metrics"}


class _Refused(Exception):
    """A request answered with an error status and a message."""

    def __init__(self, status: int, message: str, headers: Sequence[Tuple[str, str]] = ()
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


class OtlpApp:
    """The WSGI application :func:`make_app` returns (see the module's
    docstring); ``counts`` holds what it recorded and refused, for logs
    and tests."""

    def __init__(self, store: PeeweeTelemetryStore, token: Optional[str] = None, *,
                 max_body: int = MAX_BODY, label_attributes: Iterable[str] = (),
                 max_inflight: int = MAX_INFLIGHT, busy_wait: float = BUSY_WAIT,
                 max_records: int = MAX_RECORDS) -> None:
        intake.require("the OTLP server")
        if token is not None:
            token = check_token(token)
        if not isinstance(max_body, int) or max_body < 1:
            raise TelemetryValidationError("max_body", f"must be an integer >= 1, "
                                                       f"got {max_body!r}")
        for name, value in (("max_inflight", max_inflight), ("max_records", max_records)):
            if not isinstance(value, int) or value < 1:
                raise TelemetryValidationError(name, f"must be an integer >= 1, got {value!r}")
        self.store = store
        self.max_body = max_body
        self.max_records = max_records
        self.label_keys = intake.label_attributes(label_attributes)
        self.busy_wait = busy_wait
        self._token = None if token is None else hashlib.sha256(token.encode("ascii")).digest()
        self._writers = threading.BoundedSemaphore(max_inflight)
        # As many may wait busy_wait for a slot; any more gets 503 at once.
        self._waiting = threading.BoundedSemaphore(max_inflight)
        #: The worker threads a WSGI server should run for this application:
        #: one per slot, one per waiter, and one that answers 503 (and
        #: /healthz) at once. With fewer, excess requests queue in the server.
        self.threads = 2 * max_inflight + 1
        self._lock = threading.Lock()
        self._unpriced: set[str] = set()
        self._table = quote(store.database, store.model._meta.table_name)
        self.counts = {"recorded": 0, "rejected": 0, "requests": 0}
        self.outlets = OutletsApp(store, token)  # GET /metrics, /usage, /api/report

    def __call__(self, environ: Environ, start_response: StartResponse) -> List[bytes]:
        if environ.get("PATH_INFO") in OUTLET_PATHS:
            return self.outlets(environ, start_response)
        as_json = _body.media_type(environ.get("CONTENT_TYPE")) == JSON
        try:
            status, headers, payload = self._handle(environ, as_json)
        except _Refused as refused:
            status, headers = refused.status, refused.headers
            payload = intake.status(refused.message, _CODES[status], as_json=as_json)
            headers.append(("Content-Type", JSON if as_json else PROTOBUF))
        headers.append(("Content-Length", str(len(payload))))
        start_response(f"{status} {_REASONS[status]}", headers)
        return [payload]

    def _handle(self, environ: Environ, as_json: bool) -> Tuple[int, Headers, bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                raise _Refused(405, "use GET", [("Allow", "GET, HEAD")])
            return self._health()
        signal = _PATHS.get(path)
        if signal is None:
            raise _Refused(404, f"no such path: {path[:100]!r} (OTLP/HTTP takes POST "
                                "/v1/logs, /v1/traces and /v1/metrics)")
        if method != "POST":
            raise _Refused(405, "use POST", [("Allow", "POST")])
        self._check_token(environ)
        media = _body.media_type(environ.get("CONTENT_TYPE"))
        if media not in (PROTOBUF, JSON):
            raise _Refused(415, f"Content-Type must be {PROTOBUF} or {JSON}, "
                                f"got {media[:100]!r}")
        encoding = environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        if encoding not in _body.ENCODINGS and encoding not in _body.IDENTITY:
            raise _Refused(415, f"Content-Encoding must be gzip, deflate or identity, "
                                f"got {encoding[:100]!r}")
        # Inflating and decoding take memory and time as writing does: all
        # three count against max_inflight.
        with self._slot():
            data = self._read(environ, encoding)
            undecoded: List[Tuple[int, str]] = []
            try:
                request = intake.decode(signal, data, as_json=as_json,
                                        max_records=self.max_records,
                                        refuse=lambda *refused: undecoded.append(refused))
            except TooManyRecordsError as exc:
                raise _Refused(413, str(exc)) from None
            except TelemetryValidationError as exc:
                raise _Refused(400, str(exc)) from None
            if signal == "metrics":
                return self._reply(signal, as_json, 0, "")
            taken = (intake.map_logs if signal == "logs" else intake.map_spans)(
                request, self.label_keys)
            if undecoded:
                # Decoded as empty records: rejected, in their place.
                for index, reason in undecoded:
                    taken.reject(index, reason)
                taken.rejected.sort(key=lambda rejection: rejection.index)
            self._write(taken)
        return self._reply(signal, as_json, len(taken.rejected), taken.message())

    def _check_token(self, environ: Environ) -> None:
        if self._token is None:
            return
        scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
        # Digests of equal length compared in constant time: neither the
        # token's characters nor its length show in the time taken.
        matches = hmac.compare_digest(
            hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest(),
            self._token)
        if scheme.lower() != "bearer" or not matches:
            raise _Refused(401, "a valid 'Authorization: Bearer <token>' header is required",
                           [("WWW-Authenticate", 'Bearer realm="telemetry-orm"')])

    def _read(self, environ: Environ, encoding: str) -> bytes:
        text = environ.get("CONTENT_LENGTH") or ""
        if not text.strip().isdigit():
            raise _Refused(411, "a Content-Length is required")
        try:
            return _body.read(environ["wsgi.input"], int(text), self.max_body, encoding)
        except _body.BodyTooLargeError as exc:
            raise _Refused(413, str(exc)) from None
        except TelemetryValidationError as exc:
            raise _Refused(400, str(exc)) from None

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._writers.acquire(blocking=False):
            waits = self._waiting.acquire(blocking=False)
            try:
                got = waits and self._writers.acquire(timeout=self.busy_wait)
            finally:
                if waits:
                    self._waiting.release()
            if not got:
                raise _Refused(503, "busy: too many requests in flight; retry later",
                               [("Retry-After", str(RETRY_AFTER))])
        try:
            yield
        finally:
            self._writers.release()

    def _write(self, taken: intake.Intake) -> None:
        if not taken.records:
            self._note(taken)
            return
        try:
            while taken.records:
                try:
                    self.store.record_many(taken.records, keys=taken.keys, at=taken.at)
                    break
                except TelemetryValidationError as exc:
                    if exc.index is None:
                        raise
                    # What this store's engine refuses (a key it forgot,
                    # text its column cannot hold): that record alone, or
                    # after a purge every record whose key may be forgotten.
                    where = f"{exc.field}: " if exc.field else ""
                    refused = {exc.index: where + exc.reason}
                    if exc.field == "at":
                        refused.update((index, "at: " + reason) for index, reason in
                                       self.store.forgotten_keys(taken.keys, taken.at))
                    taken.withdraw(refused)
        except TelemetryValidationError:
            raise
        except Exception as exc:
            _log.warning("could not store %d %ss: %s", len(taken.records), taken.kind, exc)
            raise _Refused(503, f"the store cannot write now ({type(exc).__name__}); "
                                "retry later", [("Retry-After", str(RETRY_AFTER))]) from None
        self._note(taken)

    def _note(self, taken: intake.Intake) -> None:
        with self._lock:
            self.counts["requests"] += 1
            self.counts["recorded"] += len(taken.records)
            self.counts["rejected"] += len(taken.rejected)
            new = sorted(set(taken.unpriced) - self._unpriced)
            self._unpriced.update(new)
        for model in new:
            _log.warning("model %r has no price: its executions are recorded at a cost of 0 "
                         "(unpriced; give prices with $TELEMETRY_PRICES)", model)
        if taken.rejected:
            _log.info("%s", taken.message())

    def _health(self) -> Tuple[int, Headers, bytes]:
        files = self.store.backend.files()
        if files and not os.path.exists(files[0]):
            # An open connection still reads a file deleted under it; writes fail.
            raise _Refused(503, f"the database file is gone: {files[0]}",
                           [("Retry-After", str(RETRY_AFTER))])
        try:
            with self.store.reading() as database:
                database.execute_sql(f"SELECT 1 FROM {self._table} LIMIT 1").fetchall()
        except StoreClosedError:
            raise _Refused(503, "the store is closed") from None
        except Exception as exc:
            raise _Refused(503, f"the database does not answer: {type(exc).__name__}",
                           [("Retry-After", str(RETRY_AFTER))]) from None
        return 200, [("Content-Type", "text/plain; charset=utf-8")], b"ok\n"

    @staticmethod
    def _reply(signal: str, as_json: bool, rejected: int, message: str
               ) -> Tuple[int, Headers, bytes]:
        payload = intake.response(signal, rejected, message, as_json=as_json)
        return 200, [("Content-Type", JSON if as_json else PROTOBUF)], payload


def check_token(token: Any, field: str = "token", where: str = "") -> str:
    """``token`` without its surrounding blanks, or
    :class:`~telemetry_orm.TelemetryValidationError` (``field``, the message
    starting with ``where``) when it is empty or could never match: HTTP
    headers carry latin-1, so only printable ASCII arrives as it was written."""
    if not isinstance(token, str) or not token.strip():
        raise TelemetryValidationError(field, f"{where}must be a non-empty string or None")
    stripped: str = token.strip()
    odd = next((c for c in stripped if not (c.isascii() and c.isprintable())), None)
    if odd is not None:
        raise TelemetryValidationError(field, (
            f"{where}holds {odd!r}: a token must be printable ASCII (HTTP headers carry "
            "latin-1, so any other character never matches); make one with "
            "'head -c 32 /dev/urandom | base64'"))
    return stripped


def make_app(store: PeeweeTelemetryStore, token: Optional[str] = None, *,
             max_body: int = MAX_BODY, label_attributes: Iterable[str] = (),
             max_inflight: int = MAX_INFLIGHT, busy_wait: float = BUSY_WAIT,
             max_records: int = MAX_RECORDS) -> OtlpApp:
    """A WSGI application receiving OTLP/HTTP into ``store``.

    ``token``: the bearer token every export must send (``Authorization:
    Bearer <token>``, compared in constant time before the body is decompressed or decoded;
    printable ASCII, see :func:`check_token`); ``None`` takes every request.
    ``max_body``: the most bytes of a body, after decompression (413 past
    it). ``max_records``: the most log records, spans or metrics of one
    request, counted before they are decoded (413 past it).
    ``label_attributes``: resource attributes kept as labels
    (``OTEL_RESOURCE_ATTRIBUTES=team=platform`` with ``("team",)``).
    ``max_inflight``: requests read, inflated, decoded and written at once;
    as many more wait ``busy_wait`` seconds for a slot, then get 503 with
    ``Retry-After``; beyond them 503 comes at once. Serve it with
    :attr:`OtlpApp.threads` worker threads, so that those requests are
    answered rather than queued by the server.
    Needs the ``serve`` extra (``pip install 'telemetry_orm[serve]'``).
    """
    return OtlpApp(store, token, max_body=max_body, label_attributes=label_attributes,
                   max_inflight=max_inflight, busy_wait=busy_wait, max_records=max_records)
