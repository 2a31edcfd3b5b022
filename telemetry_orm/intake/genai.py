"""Spans of model calls (the OpenTelemetry GenAI conventions) as executions.

A span is one when its ``gen_ai.operation.name`` is ``chat``,
``text_completion``, ``generate_content`` or ``embeddings`` and it carries
``gen_ai.usage.*`` attributes. Agent and tool spans (``invoke_agent``,
``execute_tool`` …) are not: their model calls are spans of their own, and
recording both would count those calls twice.

=====================  ======================================================
execution              span
=====================  ======================================================
``model``              ``gen_ai.response.model``, else ``gen_ai.request.model``
``provider``           ``gen_ai.provider.name``, else ``gen_ai.system``, else
                       ``unknown``
``input_tokens``       ``gen_ai.usage.input_tokens`` less the two cache counts
                       (see below)
``output_tokens``      ``gen_ai.usage.output_tokens``
``cache_read_tokens``  ``gen_ai.usage.cache_read.input_tokens``
``cache_creation_…``   ``gen_ai.usage.cache_creation.input_tokens``
``cost_usd``           the list price of the tokens (0 for a model without a
                       price: unpriced)
``duration_ms``        end less start
``event_type``         ``gen_ai.`` and the operation (``gen_ai.chat``)
``conclusion``         ``error`` when the span's status is ERROR, else
                       ``success``
``stop_reason``        the first of ``gen_ai.response.finish_reasons``
``session_id``         ``gen_ai.conversation.id``
created at             the span's start
key                    ``otlp.span:``, the trace id and the span id (hex)
=====================  ======================================================

The input-token rule: the conventions count cache reads and writes inside
``gen_ai.usage.input_tokens``; the ``executions`` columns do not overlap.
So input is the reported input less both cache counts, except when the
reported input is smaller than the two together: only an instrumentation
that reports input without the cache (as Anthropic's API does) can send
that, and its input is taken as it is. Older instrumentations' names
``gen_ai.usage.prompt_tokens`` and ``completion_tokens`` are read when the
current ones are absent.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

from ..errors import TelemetryValidationError
from . import values
from .batch import Intake
from .placing import Placing

#: The operations whose spans are executions.
OPERATIONS = ("chat", "text_completion", "generate_content", "embeddings")
USAGE = "gen_ai.usage."

# Span.StatusCode.STATUS_CODE_ERROR in the OTLP trace protocol.
_STATUS_ERROR = 2
_NANOS_PER_MILLI = 1_000_000
# The sizes of a trace id and a span id (OTLP, as W3C trace context).
_TRACE_ID_BYTES, _SPAN_ID_BYTES = 16, 8


def map_spans(request: Any, label_keys: Sequence[str] = ()) -> Intake:
    """The executions of an ``ExportTraceServiceRequest`` (see the module's
    table); ``label_keys`` are resource attributes kept as labels."""
    intake = Intake("span")
    index = 0
    for resource_spans in request.resource_spans:
        placing = Placing(values.attributes(resource_spans.resource.attributes), label_keys)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                _map_one(intake, index, span, placing)
                index += 1
    intake.read = index
    return intake


def is_model_call(own: Mapping[str, Any]) -> bool:
    """Whether a span's attributes make it an execution."""
    return own.get("gen_ai.operation.name") in OPERATIONS and any(
        name.startswith(USAGE) for name in own)


def _map_one(intake: Intake, index: int, span: Any, placing: Placing) -> None:
    own = values.attributes(span.attributes)
    if not is_model_call(own):
        return
    try:
        fields = _fields(span, own)
        key = _key(span)
    except TelemetryValidationError as exc:
        intake.reject(index, str(exc))
        return
    fields.update(placing.of(own))
    intake.add(index, fields, key, values.from_nanos(span.start_time_unix_nano))


def _fields(span: Any, own: Mapping[str, Any]) -> Dict[str, Any]:
    model = values.text(own.get("gen_ai.response.model")) or values.text(
        own.get("gen_ai.request.model"))
    if model is None:
        raise TelemetryValidationError(
            "gen_ai.request.model", "the span names no model (nor gen_ai.response.model)")
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if not start:
        raise TelemetryValidationError("start_time_unix_nano", "the span has no start time")
    if end < start:
        raise TelemetryValidationError(
            "end_time_unix_nano", f"the span ends ({end}) before it starts ({start})")
    reasons = own.get("gen_ai.response.finish_reasons")
    if isinstance(reasons, list):
        reasons = reasons[0] if reasons else None
    operation = own["gen_ai.operation.name"]
    return {
        "model": model,
        "provider": values.text(own.get("gen_ai.provider.name"))
        or values.text(own.get("gen_ai.system")) or "unknown",
        **tokens(own),
        "duration_ms": round((end - start) / _NANOS_PER_MILLI),
        "event_type": f"gen_ai.{operation}",
        "conclusion": "error" if span.status.code == _STATUS_ERROR else "success",
        "stop_reason": values.text(reasons),
        "session_id": values.text(own.get("gen_ai.conversation.id")),
    }


def tokens(own: Mapping[str, Any]) -> Dict[str, int]:
    """The four token counts of a span's ``gen_ai.usage.*`` attributes,
    without overlap (the module's input-token rule)."""
    def read(name: str, older: str = "") -> int:
        value = own.get(USAGE + name)
        if value is None and older:
            name, value = older, own.get(USAGE + older)
        return values.count(USAGE + name, value)

    reported = read("input_tokens", "prompt_tokens")
    cache_read = read("cache_read.input_tokens")
    cache_creation = read("cache_creation.input_tokens")
    cached = cache_read + cache_creation
    return {
        "input_tokens": reported - cached if reported >= cached else reported,
        "output_tokens": read("output_tokens", "completion_tokens"),
        "cache_read_tokens": cache_read,
        "cache_creation_tokens": cache_creation,
    }


def _key(span: Any) -> str:
    trace, span_id = span.trace_id, span.span_id
    if not trace.strip(b"\0") or not span_id.strip(b"\0"):
        raise TelemetryValidationError(
            "span_id", "the span has no trace id or span id (they make its key)")
    # Ids of other sizes are no W3C trace context: two senders could not
    # tell their spans apart, so the key would not name one span.
    for name, value, size in (("trace_id", trace, _TRACE_ID_BYTES),
                              ("span_id", span_id, _SPAN_ID_BYTES)):
        if len(value) != size:
            raise TelemetryValidationError(name, f"must be {size} bytes, got {len(value)}")
    return f"otlp.span:{trace.hex()}:{span_id.hex()}"
