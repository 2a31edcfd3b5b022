"""OTLP/HTTP bodies: requests decoded and responses encoded with the
generated classes of ``opentelemetry-proto``, in protobuf or in the OTLP
JSON encoding.

OTLP JSON is protobuf's JSON mapping with three differences that
``google.protobuf.json_format`` alone would get wrong or refuse: trace and
span ids are hex, not base64; field names are lowerCamelCase (the mapping
reads them, and snake_case too); 64-bit integers may be strings or numbers
(the mapping reads both). Unknown fields are ignored, as the
specification asks of a receiver. The classes are imported at the first
use, so the package imports without them; they come with the ``serve``
extra.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import TelemetryValidationError
from . import counting

#: The extra that brings the generated classes and the server.
EXTRA = "serve"

#: JSON keys whose values are ids in hex (OTLP) rather than base64 (protobuf JSON).
HEX_IDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id",
                     "parent_span_id"})

#: google.rpc.Code INVALID_ARGUMENT, the code of an undecodable body.
INVALID_ARGUMENT = 3

# The JSON names of the three levels down to a request's records (both
# spellings json_format reads).
_JSON_LEVELS = {
    "logs": (("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"),
             ("logRecords", "log_records")),
    "traces": (("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"),
               ("spans",)),
    "metrics": (("resourceMetrics", "resource_metrics"), ("scopeMetrics", "scope_metrics"),
                ("metrics",)),
}

# Why a JSON string is no text (protobuf's strings are UTF-8).
_LONE = "holds a lone surrogate (\\ud800 to \\udfff), which is not text"

# How deep a JSON body may nest: protobuf's own limit for its binary
# decoding and json_format's default.
_MAX_DEPTH = 100


@dataclasses.dataclass(frozen=True)
class Signal:
    """One OTLP signal: its path, its request and response classes, and the
    field of ``partial_success`` that counts what was refused."""

    name: str
    path: str
    request: Any
    response: Any
    rejected_field: str


def require(what: str = "the OTLP intake") -> None:
    """Raise ``ImportError`` naming the ``serve`` extra when its packages
    are missing."""
    _classes(what)


@functools.cache
def _classes(what: str = "the OTLP intake") -> Tuple[Dict[str, Signal], Any, Any]:
    try:
        from google.protobuf import json_format
        from google.rpc import status_pb2
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    except ImportError as exc:
        raise ImportError(
            f"{what} needs the {EXTRA!r} extra: pip install 'telemetry_orm[{EXTRA}]' "
            f"(missing: {exc.name or exc})") from exc
    signals = {
        "logs": Signal("logs", "/v1/logs", logs_service_pb2.ExportLogsServiceRequest,
                       logs_service_pb2.ExportLogsServiceResponse, "rejected_log_records"),
        "traces": Signal("traces", "/v1/traces", trace_service_pb2.ExportTraceServiceRequest,
                         trace_service_pb2.ExportTraceServiceResponse, "rejected_spans"),
        "metrics": Signal("metrics", "/v1/metrics",
                          metrics_service_pb2.ExportMetricsServiceRequest,
                          metrics_service_pb2.ExportMetricsServiceResponse,
                          "rejected_data_points"),
    }
    return signals, json_format, status_pb2


def signals() -> Dict[str, Signal]:
    """The signals by name: ``logs``, ``traces`` and ``metrics``."""
    return _classes()[0]


def decode(signal: str, body: bytes, *, as_json: bool = False,
           max_records: Optional[int] = None,
           refuse: Optional[Callable[[int, str], None]] = None) -> Any:
    """The ``Export…ServiceRequest`` of ``signal`` in ``body`` (protobuf, or
    OTLP JSON when ``as_json``). An undecodable body raises
    :class:`~telemetry_orm.TelemetryValidationError` (field ``body``) saying why.

    ``max_records``: a body holding more records (log records, spans or
    metrics) raises :class:`~.counting.TooManyRecordsError`, counted before
    they are built. ``refuse``: called with the position and the reason of
    each record of a JSON body holding a string that is no text (a lone
    surrogate, ``"\\ud800"``: protobuf cannot hold it), which is then
    decoded as an empty record; without it, such a body is undecodable."""
    found, json_format, _ = _classes()
    message_class = found[signal].request
    if not as_json:
        if max_records is not None:
            counting.check_protobuf(signal, body, max_records)
        try:
            return message_class.FromString(body)
        except Exception as exc:  # google.protobuf.message.DecodeError, and upb's
            raise TelemetryValidationError(
                "body", f"is not a protobuf {message_class.__name__}: {exc}") from None
    hook = None if max_records is None else counting.JsonObjects(signal, max_records)
    try:
        data = json.loads(body, object_hook=hook)
    except counting.TooManyRecordsError:
        raise
    except (ValueError, RecursionError) as exc:
        raise TelemetryValidationError("body", f"is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TelemetryValidationError(
            "body", f"must be a JSON object ({message_class.__name__}), "
                    f"got {type(data).__name__}")
    records = _json_records(signal, data)
    if max_records is not None and len(records) > max_records:
        raise counting.TooManyRecordsError(max_records, counting.RECORDS[signal] + "s")
    if not _hex_ids_to_base64(data):
        _refuse_untextual(signal, data, records, refuse)
    message = message_class()
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True,
                              max_recursion_depth=_MAX_DEPTH)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise TelemetryValidationError(
            "body", f"is not an OTLP JSON {message_class.__name__}: {exc}") from None
    return message


def _json_records(signal: str, data: Dict[str, Any]) -> List[Tuple[List[Any], int]]:
    """Where each record of a JSON request is: its list and its position
    there, in the request's order."""
    outer, middle, inner = _JSON_LEVELS[signal]
    return [(records, position)
            for resource in _member(data, outer)
            for scope in _member(resource, middle)
            for records in (_member(scope, inner),)
            for position in range(len(records))]


def _member(node: Any, names: Tuple[str, ...]) -> List[Any]:
    # The last of the field's two names wins, as in json_format.
    found: List[Any] = []
    if isinstance(node, dict):
        for name, value in node.items():
            if name in names and isinstance(value, list):
                found = value
    return found


def _hex_ids_to_base64(data: Dict[str, Any]) -> bool:
    """Turn the hex ids into base64; whether every string (keys too) is text."""
    # Iterative: a body nested deeper than Python's stack must not crash
    # here (json_format refuses it after this, at its depth limit).
    text = True
    stack: List[Any] = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in HEX_IDS and isinstance(value, str):
                    node[key] = _base64_of_hex(key, value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
                elif text and isinstance(value, str):
                    text = _is_text(value)
                text = text and _is_text(key)
        elif isinstance(node, list):
            for item in node:
                if isinstance(item, (dict, list)):
                    stack.append(item)
                elif text and isinstance(item, str):
                    text = _is_text(item)
    return text


def _is_text(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refuse_untextual(signal: str, data: Dict[str, Any], records: List[Tuple[List[Any], int]],
                      refuse: Optional[Callable[[int, str], None]]) -> None:
    """Each record holding a string that is no text refused and emptied
    (through ``refuse``); such a string outside the records refuses the body."""
    for index, (listing, position) in enumerate(records):
        where = _untextual(listing[position])
        if where is None:
            continue
        reason = f"{where}: {_LONE}"
        if refuse is None:
            raise TelemetryValidationError("body", f"{counting.RECORDS[signal]} {index}: "
                                                   f"{reason}")
        listing[position] = {}
        refuse(index, reason)
    where = _untextual(data)
    if where is not None:
        raise TelemetryValidationError("body", f"{where}, outside the records: {_LONE}")


def _untextual(node: Any) -> Optional[str]:
    """The path of the first string (a key or a value) under ``node`` that
    is no text; an attribute named by its key (``attributes['model']``)."""
    stack: List[Tuple[Any, str]] = [(node, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if not _is_text(node):
                return path or "the body"
        elif isinstance(node, dict):
            for key, value in node.items():
                if not _is_text(key):
                    return f"{path}.{ascii(key)}".lstrip(".")
                stack.append((value, f"{path}.{key}".lstrip(".")))
        elif isinstance(node, list):
            for position, item in enumerate(node):
                name = item.get("key") if isinstance(item, dict) else None
                label = repr(name) if isinstance(name, str) and _is_text(name) else position
                stack.append((item, f"{path}[{label}]"))
    return None


def _base64_of_hex(key: str, value: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise TelemetryValidationError(
            "body", f"{key} must be hexadecimal (OTLP JSON), got {value[:40]!r}") from None
    return base64.b64encode(raw).decode("ascii")


def response(signal: str, rejected: int = 0, message: str = "", *,
             as_json: bool = False) -> bytes:
    """The ``Export…ServiceResponse`` of ``signal``, with ``partial_success``
    when ``rejected`` or ``message`` say something, encoded as the request was."""
    found, json_format, _ = _classes()
    chosen = found[signal]
    reply = chosen.response()
    if rejected or message:
        setattr(reply.partial_success, chosen.rejected_field, rejected)
        reply.partial_success.error_message = message
    return _encode(reply, as_json, json_format.MessageToJson)


def status(message: str, code: int = INVALID_ARGUMENT, *, as_json: bool = False) -> bytes:
    """A ``google.rpc.Status`` body (the error body of OTLP/HTTP)."""
    _, json_format, status_pb2 = _classes()
    return _encode(status_pb2.Status(code=code, message=message), as_json,
                   json_format.MessageToJson)


def _encode(message: Any, as_json: bool, to_json: Callable[..., str]) -> bytes:
    if as_json:
        return to_json(message, indent=None).encode("utf-8")
    data: bytes = message.SerializeToString()
    return data
