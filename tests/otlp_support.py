"""OTLP requests made by the real OpenTelemetry Python SDK: log records
shaped as Claude Code sends them, and spans shaped as GenAI
instrumentations send them, encoded by the SDK's own OTLP encoders.

Every time is explicit (the SDK would stamp an observed time from the
clock otherwise)."""

from __future__ import annotations

import datetime as dt
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the OTLP tests need opentelemetry-sdk")
pytest.importorskip("opentelemetry.exporter.otlp.proto.common",
                    reason="the OTLP tests need opentelemetry-exporter-otlp-proto-http")

from opentelemetry.exporter.otlp.proto.common._log_encoder import (  # noqa: E402
    encode_logs,
)
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (  # noqa: E402
    encode_spans,
)
from opentelemetry.sdk._logs import LoggerProvider  # noqa: E402
from opentelemetry.sdk._logs.export import (  # noqa: E402
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import Status, StatusCode  # noqa: E402

#: The instant the events below happen at, and the same in nanoseconds.
T0 = dt.datetime(2026, 5, 4, 9, 30, 0, 125000, tzinfo=dt.timezone.utc)
T0_NANOS = 1_777_887_000_125_000_000
assert dt.datetime.fromtimestamp(T0_NANOS / 1e9, dt.timezone.utc) == T0

#: Claude Code's resource, with a team set through OTEL_RESOURCE_ATTRIBUTES.
CLAUDE_RESOURCE = {"service.name": "claude-code", "service.version": "2.1.3",
                   "os.type": "linux", "host.arch": "amd64", "team": "platform",
                   "vcs.repository.name": "acme/api"}
SCOPE = "com.anthropic.claude_code.events"


def api_request(**overrides: Any) -> Dict[str, Any]:
    """The attributes of an ``api_request`` event as Claude Code sends them
    (numbers as strings); ``None`` in ``overrides`` leaves one out."""
    attributes: Dict[str, Any] = {
        "event.name": "api_request",
        "event.timestamp": "2026-05-04T09:30:00.125Z",
        "event.sequence": "7",
        "session.id": "5f1c0e2a-sess",
        "prompt.id": "prompt-3",
        "model": "claude-sonnet-4-5-20250929",
        "input_tokens": "120",
        "output_tokens": "450",
        "cache_read_tokens": "3000",
        "cache_creation_tokens": "200",
        "cost_usd": "0.0123",
        "duration_ms": "2310",
        "request_id": "req_011CUabc",
        "query_source": "main",
        "user.email": "alice@example.com",
        "user.account_uuid": "acct-1",
        "organization.id": "org-9",
        "terminal.type": "vscode",
    }
    attributes.update(overrides)
    return {k: v for k, v in attributes.items() if v is not None}


def api_error(**overrides: Any) -> Dict[str, Any]:
    """An ``api_error`` event's attributes."""
    attributes: Dict[str, Any] = {
        "event.name": "api_error",
        "event.timestamp": "2026-05-04T09:31:00.000Z",
        "event.sequence": "8",
        "session.id": "5f1c0e2a-sess",
        "prompt.id": "prompt-3",
        "model": "claude-sonnet-4-5-20250929",
        "error": "Overloaded",
        "status_code": "529",
        "attempt": "1",
        "duration_ms": "800",
    }
    attributes.update(overrides)
    return {k: v for k, v in attributes.items() if v is not None}


class Event(dict):  # type: ignore[type-arg]
    """A log record to emit: its attributes, and how the record names it."""

    def __init__(self, attributes: Mapping[str, Any], *, body: Optional[str] = None,
                 event_name: Optional[str] = None, timestamp: Optional[int] = T0_NANOS,
                 observed: int = T0_NANOS + 5_000_000) -> None:
        super().__init__(attributes)
        self.body = body if body is not None else "claude_code." + str(
            attributes.get("event.name", "api_request"))
        self.event_name = event_name
        self.timestamp = timestamp
        self.observed = observed


def log_records(events: Iterable[Mapping[str, Any]],
                resource: Mapping[str, Any] = CLAUDE_RESOURCE) -> Sequence[Any]:
    """The SDK's readable log records of ``events`` (plain attribute
    mappings, or :class:`Event`), emitted by a Claude Code-like logger."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource(dict(resource)))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger(SCOPE, "2.1.3")
    for attributes in events:
        event = attributes if isinstance(attributes, Event) else Event(attributes)
        logger.emit(timestamp=event.timestamp, observed_timestamp=event.observed,
                    body=event.body, attributes=dict(event), event_name=event.event_name)
    provider.shutdown()
    return exporter.get_finished_logs()


def logs_request(events: Iterable[Mapping[str, Any]],
                 resource: Mapping[str, Any] = CLAUDE_RESOURCE) -> Any:
    """An ``ExportLogsServiceRequest`` as the SDK's OTLP exporters encode it."""
    return encode_logs(log_records(events, resource))


def logs_json(events: Iterable[Mapping[str, Any]],
              resource: Mapping[str, Any] = CLAUDE_RESOURCE) -> bytes:
    """The same request in OTLP JSON, by the SDK's JSON encoder."""
    json_common = pytest.importorskip(
        "opentelemetry.exporter.otlp.json.common._log_encoder",
        reason="the OTLP JSON tests need opentelemetry-exporter-otlp-json-common")
    return json_common.encode_logs(log_records(events, resource)).to_json().encode()


GENAI_RESOURCE = {"service.name": "review-bot", "team": "ml",
                  "vcs.repository.name": "acme/web"}


class Call(dict):  # type: ignore[type-arg]
    """A span to emit: its attributes, start, duration and status."""

    def __init__(self, attributes: Mapping[str, Any], *, start: int = T0_NANOS,
                 millis: int = 1500, error: bool = False, name: str = "chat") -> None:
        super().__init__(attributes)
        self.start, self.millis, self.error, self.name = start, millis, error, name


def chat(**overrides: Any) -> Call:
    """A chat span's attributes under the current GenAI conventions (input
    tokens include the cache)."""
    attributes: Dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 250,
        "gen_ai.usage.cache_read.input_tokens": 600,
        "gen_ai.usage.cache_creation.input_tokens": 100,
        "gen_ai.response.finish_reasons": ("end_turn", "tool_use"),
        "gen_ai.conversation.id": "conv-1",
    }
    attributes.update(overrides)
    return Call({k: v for k, v in attributes.items() if v is not None})


def finished_spans(calls: Iterable[Mapping[str, Any]],
                   resource: Mapping[str, Any] = GENAI_RESOURCE) -> List[ReadableSpan]:
    """The SDK's finished spans of ``calls`` (each a :class:`Call`, or
    plain attributes of a chat span)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource(dict(resource)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("genai-instrumentation", "0.1")
    for attributes in calls:
        call = attributes if isinstance(attributes, Call) else Call(attributes)
        span = tracer.start_span(call.name, start_time=call.start, attributes=dict(call))
        if call.error:
            span.set_status(Status(StatusCode.ERROR, "overloaded"))
        span.end(end_time=call.start + call.millis * 1_000_000)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def spans_request(calls: Iterable[Mapping[str, Any]],
                  resource: Mapping[str, Any] = GENAI_RESOURCE) -> Any:
    """An ``ExportTraceServiceRequest`` as the SDK's OTLP exporters encode it."""
    return encode_spans(finished_spans(calls, resource))


def span_key(span: ReadableSpan) -> str:
    """The key the store gives ``span``'s execution."""
    context = span.get_span_context()
    assert context is not None
    return f"otlp.span:{context.trace_id:032x}:{context.span_id:016x}"


# --- The command in a subprocess --------------------------------------------------


def start(tmp_path: Path, *args: str, env: Optional[Dict[str, str]] = None,
          port: int = 0) -> Tuple[subprocess.Popen[str], int]:
    """``telemetry-orm serve`` on ``tmp_path/otlp.db`` in a subprocess, on
    ``port`` (0: a free one), and the port it listens on (read from its
    first line)."""
    command = [sys.executable, "-m", "telemetry_orm", "serve", "--db",
               str(tmp_path / "otlp.db"), "--port", str(port), *args]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 60)
    if not ready:
        process.kill()
        pytest.fail("the server printed nothing in 60 s")
    line = process.stdout.readline()
    if not line.startswith("serving OTLP/HTTP on http://127.0.0.1:"):
        process.kill()
        pytest.fail(f"unexpected first line {line!r}; stderr: {process.communicate()[1]}")
    port = int(line.split("http://127.0.0.1:", 1)[1].split(" ", 1)[0])
    return process, port


def stop(process: subprocess.Popen[str], sig: Optional[int] = signal.SIGTERM
         ) -> Tuple[int, str, str]:
    """Send ``sig`` (``None``: none, it was sent already) and wait for the end."""
    if sig is not None:
        process.send_signal(sig)
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"still running 60 s after the signal; stderr: {err}")
    return process.returncode, out, err
