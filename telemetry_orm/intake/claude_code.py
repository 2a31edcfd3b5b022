"""Claude Code's OpenTelemetry events (OTLP log records) as executions.

A log record is a Claude Code event when its name is ``api_request`` or
``api_error``, with or without the ``claude_code.`` prefix; its name is the
record's ``event_name`` field, else its body when that is a string, else
its ``event.name`` attribute. Other records are read and left alone.

==========================  =================================================
execution                   ``api_request`` (``api_error``)
==========================  =================================================
``model``                   ``model`` (``api_error``: ``unknown`` without it)
``input_tokens`` …          ``input_tokens``, ``output_tokens``,
                            ``cache_read_tokens``, ``cache_creation_tokens``
                            (they do not overlap); ``api_error``: none
``cost_usd``                ``cost_usd``, else the list price of the tokens
                            (0 for a model without a price: unpriced)
``duration_ms``             ``duration_ms``
``provider``                ``anthropic``
``event_type``              ``claude_code.api_request`` (``…api_error``)
``conclusion``              ``success`` (``error``)
``session_id``              ``session.id``
created at                  ``event.timestamp``, else the record's time,
                            else its observed time
key                         ``otlp.log.request:`` and ``request_id``, else
                            ``otlp.log.digest:`` and a SHA-256 of the
                            event's name, ``session.id``, ``prompt.id``,
                            ``event.sequence`` and its instant (parsed)
==========================  =================================================

Numbers may be strings, ints or doubles (Claude Code sends strings). A
record with an impossible value (a negative count, a NaN cost, a time that
is not one) is rejected; the others are recorded.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from typing import Any, Dict, Mapping, Optional, Sequence

from ..errors import TelemetryValidationError
from . import values
from .batch import Intake
from .placing import Placing

#: The events that are executions, by name without the prefix.
EVENTS = ("api_request", "api_error")
PREFIX = "claude_code."

_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


def event_name(record: Any, own: Mapping[str, Any]) -> Optional[str]:
    """The name of a log record's event without the ``claude_code.``
    prefix, or ``None`` when it names none."""
    name: Any = record.event_name
    if not name:
        body = record.body
        name = body.string_value if body.WhichOneof("value") == "string_value" else None
    if not name:
        name = own.get("event.name")
    if not isinstance(name, str) or not name:
        return None
    return name.removeprefix(PREFIX)


def map_logs(request: Any, label_keys: Sequence[str] = ()) -> Intake:
    """The executions of an ``ExportLogsServiceRequest`` (see the module's
    table); ``label_keys`` are resource attributes kept as labels."""
    intake = Intake("log record")
    index = 0
    for resource_logs in request.resource_logs:
        placing = Placing(values.attributes(resource_logs.resource.attributes), label_keys)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                _map_one(intake, index, record, placing)
                index += 1
    intake.read = index
    return intake


def _map_one(intake: Intake, index: int, record: Any, placing: Placing) -> None:
    own = values.attributes(record.attributes)
    name = event_name(record, own)
    if name not in EVENTS:
        return
    try:
        when = _instant(record, own)
        fields = _fields(name, own)
    except TelemetryValidationError as exc:
        intake.reject(index, str(exc))
        return
    fields.update(placing.of(own))
    intake.add(index, fields, key_of(record, own, name, when), when)


def _fields(name: str, own: Mapping[str, Any]) -> Dict[str, Any]:
    fields: Dict[str, Any] = {
        "event_type": PREFIX + name,
        "provider": "anthropic",
        "session_id": values.text(own.get("session.id")),
        "duration_ms": values.millis("duration_ms", own.get("duration_ms")),
    }
    if name == "api_error":
        fields.update(model=values.text(own.get("model")) or "unknown", conclusion="error",
                      cost_usd=0.0)
        return fields
    model = values.text(own.get("model"))
    if model is None:
        raise TelemetryValidationError("model", "an api_request names no model")
    fields.update(model=model, conclusion="success",
                  cost_usd=values.usd("cost_usd", own.get("cost_usd")))
    for token in _TOKENS:
        fields[token] = values.count(token, own.get(token))
    return fields


def _instant(record: Any, own: Mapping[str, Any]) -> _dt.datetime:
    stamp = own.get("event.timestamp")
    if stamp is not None:
        return values.iso_instant("event.timestamp", stamp)
    nanos = record.time_unix_nano or record.observed_time_unix_nano
    if not nanos:
        raise TelemetryValidationError(
            "time", "the record has no event.timestamp, time or observed time")
    return values.from_nanos(nanos)


def key_of(record: Any, own: Mapping[str, Any], name: str = "api_request",
           when: Optional[_dt.datetime] = None) -> str:
    """The key of a Claude Code event: its request id, else a digest of
    what tells it apart from every other event: its name, session, prompt,
    sequence and instant (``when``, as parsed: one instant written two ways
    is one event). Each part is length-prefixed, so no value can pass for
    two."""
    request_id = values.text(own.get("request_id"))
    if request_id is not None:
        return f"otlp.log.request:{request_id}"
    instant = (when.isoformat() if when is not None
               else str(record.time_unix_nano or record.observed_time_unix_nano))
    parts = [name, *(values.text(own.get(part)) or "" for part in
                     ("session.id", "prompt.id", "event.sequence")), instant]
    text = "".join(f"{len(part)}:{part}" for part in parts)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"otlp.log.digest:{digest}"
