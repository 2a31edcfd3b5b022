"""The OTLP/HTTP WSGI application (telemetry_orm.server): called with built
environs, and served on 127.0.0.1 to the real OTLP exporters of the
OpenTelemetry SDK (protobuf, gzip on and off). Rows are read back through
a plain sqlite3 connection."""

from __future__ import annotations

import gzip
import io
import json
import os
import sqlite3
import threading
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple
from wsgiref.util import setup_testing_defaults

import pytest
from otlp_support import (
    api_request,
    chat,
    finished_spans,
    log_records,
    logs_json,
    logs_request,
    span_key,
    spans_request,
)
from support import Witness

from telemetry_orm import (
    PeeweeTelemetryStore,
    StoreBusyError,
    TelemetryValidationError,
    create_telemetry_store,
)
from telemetry_orm.intake import signals
from telemetry_orm.server import MAX_BODY, make_app
from telemetry_orm.serving import Serving

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Input(io.BytesIO):
    """A ``wsgi.input`` that counts the bytes read from it."""

    taken = 0

    def read(self, size: Optional[int] = -1) -> bytes:
        data = super().read(size)
        self.taken += len(data)
        return data


def call(app: Any, body: bytes = b"", path: str = "/v1/logs", *, method: str = "POST",
         content_type: str = PROTOBUF, headers: Optional[Dict[str, str]] = None,
         length: Optional[int] = None, stream: Optional[Input] = None
         ) -> Tuple[int, Dict[str, str], bytes]:
    """The status, headers and body ``app`` answers."""
    environ: Dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update({"REQUEST_METHOD": method, "PATH_INFO": path, "CONTENT_TYPE": content_type,
                    "CONTENT_LENGTH": str(len(body) if length is None else length),
                    "wsgi.input": stream if stream is not None else Input(body)})
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    answered: Dict[str, Any] = {}

    def start_response(status: str, response_headers: List[Tuple[str, str]],
                       exc_info: Any = None) -> None:
        answered["status"] = int(status.split()[0])
        answered["headers"] = dict(response_headers)

    payload = b"".join(app(environ, start_response))
    assert answered["headers"]["Content-Length"] == str(len(payload))
    return answered["status"], answered["headers"], payload


def gzip_posted(app: Any, body: bytes) -> Tuple[int, bytes, float, int]:
    """``body`` posted gzip-encoded to ``app``: the status, the answer, the
    seconds it took and the most memory Python held meanwhile (traced)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        status, _, payload = call(app, body, headers={"Content-Encoding": "gzip"})
        return status, payload, time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def logs_body(count: int = 3, **overrides: Any) -> bytes:
    events = [api_request(request_id=f"req-{i}", **overrides) for i in range(count)]
    return bytes(logs_request(events).SerializeToString())


def stored(witness: sqlite3.Connection) -> List[Tuple[Any, ...]]:
    return [tuple(row) for row in witness.execute(
        "SELECT k.key, e.event_type, e.input_tokens, e.created_at FROM executions e "
        "JOIN telemetry_orm_keys k ON k.execution_id = e.id ORDER BY k.key")]


def count_rows(witness: sqlite3.Connection) -> int:
    return int(witness.execute("SELECT count(*) FROM executions").fetchone()[0])


def logs_response(payload: bytes) -> Any:
    return signals()["logs"].response.FromString(payload)


@pytest.fixture
def app(store: PeeweeTelemetryStore) -> Any:
    return make_app(store, TOKEN, label_attributes=("team",))


# --- Through the WSGI callable ---------------------------------------------------------


def test_a_logs_request_is_stored_then_answered_and_the_same_bytes_again_add_nothing(
        app: Any, witness: sqlite3.Connection) -> None:
    body = logs_body(3)

    first = call(app, body, headers=AUTH)
    again = call(app, body, headers=AUTH)

    for status, headers, payload in (first, again):
        assert (status, headers["Content-Type"]) == (200, PROTOBUF)
        assert not logs_response(payload).HasField("partial_success")
    assert stored(witness) == [(f"otlp.log.request:req-{i}", "claude_code.api_request", 120,
                                "2026-05-04 09:30:00") for i in range(3)]
    assert app.counts == {"recorded": 6, "rejected": 0, "requests": 2}


def test_refused_records_are_counted_in_partial_success_and_the_rest_stored(
        app: Any, witness: sqlite3.Connection) -> None:
    events = [api_request(request_id="good-1"), api_request(request_id="bad", cost_usd="NaN"),
              api_request(request_id="good-2"), {"event.name": "user_prompt"}]

    status, _, payload = call(app, logs_request(events).SerializeToString(), headers=AUTH)

    partial = logs_response(payload).partial_success
    assert status == 200
    assert partial.rejected_log_records == 1
    assert partial.error_message == ("1 of 4 log records rejected: log record 1: cost_usd: "
                                     "must be a finite number of USD >= 0, got 'NaN'")
    assert [row[0] for row in stored(witness)] == ["otlp.log.request:good-1",
                                                   "otlp.log.request:good-2"]


def test_json_in_json_out(app: Any, witness: sqlite3.Connection) -> None:
    body = logs_json([api_request(request_id="j1"), api_request(input_tokens="-2")])

    status, headers, payload = call(app, body, content_type=JSON + "; charset=utf-8",
                                    headers=AUTH)

    assert (status, headers["Content-Type"]) == (200, JSON)
    answer = json.loads(payload)
    assert answer["partialSuccess"]["rejectedLogRecords"] == "1"
    assert [row[0] for row in stored(witness)] == ["otlp.log.request:j1"]


def test_spans_are_stored_under_their_trace_and_span_ids(
        app: Any, witness: sqlite3.Connection) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    made = finished_spans([chat(), chat(**{"gen_ai.operation.name": "invoke_agent"})])

    status, _, payload = call(app, encode_spans(made).SerializeToString(), "/v1/traces",
                              headers=AUTH)

    assert status == 200
    assert not signals()["traces"].response.FromString(payload).HasField("partial_success")
    assert stored(witness) == [(span_key(made[0]), "gen_ai.chat", 300, "2026-05-04 09:30:00")]


def test_metrics_are_decoded_and_acknowledged_and_nothing_is_stored(
        app: Any, witness: sqlite3.Connection) -> None:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("com.anthropic.claude_code")
    meter.create_counter("claude_code.cost.usage", unit="USD").add(0.0123, {"model": "m"})
    body = encode_metrics(reader.get_metrics_data()).SerializeToString()

    status, _, payload = call(app, body, "/v1/metrics", headers=AUTH)
    bad = call(app, b"\xff\xff\xff", "/v1/metrics", headers=AUTH)

    assert status == 200
    assert not signals()["metrics"].response.FromString(payload).HasField("partial_success")
    assert bad[0] == 400
    assert count_rows(witness) == 0


def raw_deflate(data: bytes) -> bytes:
    """A deflate stream without the zlib header, as some senders write it."""
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize("encoding, compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", raw_deflate),
])
def test_compressed_bodies_are_read(app: Any, witness: sqlite3.Connection, encoding: str,
                                    compress: Any) -> None:
    status, _, _ = call(app, compress(logs_body(2)),
                        headers={**AUTH, "Content-Encoding": encoding})

    assert status == 200
    assert count_rows(witness) == 2


def test_two_gzip_members_are_one_body(app: Any, witness: sqlite3.Connection) -> None:
    body = logs_body(2)

    status, _, _ = call(app, gzip.compress(body[:10]) + gzip.compress(body[10:]),
                        headers={**AUTH, "Content-Encoding": "gzip"})

    assert status == 200 and count_rows(witness) == 2


# --- Refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}",
                                           f"Bearer {TOKEN}x", "Bearer"])
def test_without_the_token_401_and_nothing_is_read(
        app: Any, witness: sqlite3.Connection, authorization: Optional[str]) -> None:
    stream = Input(logs_body(1))
    headers = {} if authorization is None else {"Authorization": authorization}

    status, answered, payload = call(app, headers=headers, stream=stream, length=100)

    assert status == 401
    assert answered["WWW-Authenticate"] == 'Bearer realm="telemetry-orm"'
    from google.rpc import status_pb2
    assert status_pb2.Status.FromString(payload).code == 16  # UNAUTHENTICATED
    assert stream.taken == 0
    assert count_rows(witness) == 0


def test_the_scheme_is_read_in_any_case_and_no_token_takes_every_request(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    assert call(make_app(store, TOKEN), logs_body(1),
                headers={"Authorization": f"bearer {TOKEN}"})[0] == 200
    assert call(make_app(store), logs_body(2))[0] == 200
    assert count_rows(witness) == 2


@pytest.mark.parametrize("content_type, encoding, status", [
    ("text/plain", "", 415),
    ("", "", 415),
    ("application/grpc", "", 415),
    (PROTOBUF, "br", 415),
    (PROTOBUF, "identity", 200),
])
def test_content_types_and_encodings(app: Any, content_type: str, encoding: str,
                                     status: int) -> None:
    headers = {**AUTH, "Content-Encoding": encoding} if encoding else AUTH

    assert call(app, logs_body(1), content_type=content_type, headers=headers)[0] == status


def test_a_content_length_past_the_bound_is_refused_without_reading(
        store: PeeweeTelemetryStore) -> None:
    app = make_app(store, max_body=1000)
    stream = Input(b"x" * 2000)

    status, _, payload = call(app, stream=stream, length=2000)
    gzipped = call(app, stream=Input(b"x" * 2000), length=2000,
                   headers={"Content-Encoding": "gzip"})

    assert (status, gzipped[0]) == (413, 413)
    assert stream.taken == 0
    from google.rpc import status_pb2
    assert "larger than 1,000 bytes" in status_pb2.Status.FromString(payload).message


def test_a_gzip_bomb_is_refused_in_bounded_memory(store: PeeweeTelemetryStore) -> None:
    # 1 GiB of zeros in about 1 MiB: the default bound is 16 MiB.
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(1024)) + packer.flush()
    status, payload, seconds, peak = gzip_posted(make_app(store), bomb)

    assert status == 413
    assert b"the decompressed body is larger than 16,777,216 bytes" in payload
    # The bound, the compressed body and one chunk's worth: never the gigabyte.
    assert peak < MAX_BODY + 2 * len(bomb) + (2 << 20), peak
    print(f"gzip bomb: {len(bomb):,} bytes inflating to 1 GiB: 413 in {seconds * 1000:.0f} ms,"
          f" peak traced memory {peak / 2**20:.1f} MiB")


@pytest.mark.parametrize("body, encoding, content_type, reason", [
    (b"\x0a\xff\xff", "", PROTOBUF, "body: is not a protobuf ExportLogsServiceRequest"),
    (b"{oops", "", JSON, "body: is not JSON"),
    (gzip.compress(b"x")[:10] + b"\xff" * 20, "gzip", PROTOBUF, "body: does not decompress"),
    (gzip.compress(b"\x0a\x00")[:-9], "gzip", PROTOBUF,
     "body: ends inside its compressed stream"),
])
def test_an_undecodable_body_gets_400_with_a_status_in_its_encoding(
        app: Any, body: bytes, encoding: str, content_type: str, reason: str) -> None:
    headers = {**AUTH, "Content-Encoding": encoding} if encoding else AUTH

    status, answered, payload = call(app, body, content_type=content_type, headers=headers)

    assert status == 400
    if content_type == JSON:
        assert answered["Content-Type"] == JSON
        assert json.loads(payload)["message"].startswith(reason)
    else:
        from google.rpc import status_pb2
        message = status_pb2.Status.FromString(payload)
        assert message.code == 3 and message.message.startswith(reason)


def test_a_body_shorter_than_its_length_is_refused(app: Any) -> None:
    assert call(app, b"\x0a\x00", length=10, headers=AUTH)[0] == 400
    assert call(app, b"", length=None, headers=AUTH)[0] == 200  # an empty request
    environ_without_length = call(app, b"", headers=AUTH, length=-1)
    assert environ_without_length[0] == 411


def test_paths_and_methods(app: Any, store: PeeweeTelemetryStore) -> None:
    assert call(app, path="/v1/other", headers=AUTH)[0] == 404
    status, headers, _ = call(app, path="/v1/logs", method="GET", headers=AUTH)
    assert (status, headers["Allow"]) == (405, "POST")
    assert call(app, path="/healthz", method="GET")[:3:2] == (200, b"ok\n")
    store.close()
    assert call(app, path="/healthz", method="GET")[0] == 503


def test_health_is_503_once_the_database_file_is_gone(app: Any,
                                                       store: PeeweeTelemetryStore) -> None:
    assert call(app, path="/healthz", method="GET")[0] == 200
    for name in store.backend.files():
        if os.path.exists(name):
            os.remove(name)  # the open connection still reads the deleted file
    status, headers, body = call(app, path="/healthz", method="GET")
    assert (status, headers["Retry-After"]) == (503, "1")


# --- The store busy or failing ---------------------------------------------------------


class SlowStore:
    """A store whose writes wait for ``go`` (and signal ``inside``), or fail
    ``failures`` times first; everything else goes to the real one."""

    def __init__(self, store: PeeweeTelemetryStore, failures: int = 0) -> None:
        self.store = store
        self.inside = threading.Event()
        self.go = threading.Event()
        self.go.set()
        self.failures = failures
        self.calls = 0

    def record_many(self, *args: Any, **kwargs: Any) -> List[int]:
        self.calls += 1
        self.inside.set()
        assert self.go.wait(30)
        if self.failures:
            self.failures -= 1
            raise StoreBusyError("database is locked")
        return self.store.record_many(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_beyond_the_writers_allowed_503_with_retry_after(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    slow = SlowStore(store)
    slow.go.clear()
    app = make_app(slow, max_inflight=1, busy_wait=0.05)  # type: ignore[arg-type]
    first: List[Any] = []
    writer = threading.Thread(target=lambda: first.append(call(app, logs_body(2))))
    writer.start()
    try:
        assert slow.inside.wait(30)
        status, headers, _ = call(app, logs_body(3))
    finally:
        slow.go.set()
        writer.join(30)

    assert (status, headers["Retry-After"]) == (503, "1")
    assert first[0][0] == 200
    assert count_rows(witness) == 2
    assert call(app, logs_body(3))[0] == 200  # room again
    assert count_rows(witness) == 3


def test_a_store_error_is_503_with_retry_after_and_nothing_half_written(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    app = make_app(SlowStore(store, failures=1))  # type: ignore[arg-type]

    failed = call(app, logs_body(3))
    retried = call(app, logs_body(3))

    assert (failed[0], failed[1]["Retry-After"]) == (503, "1")
    assert retried[0] == 200
    assert count_rows(witness) == 3


def test_a_record_the_store_refuses_is_rejected_and_the_rest_written(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    class Refusing(SlowStore):
        def record_many(self, records: Sequence[Any], **kwargs: Any) -> List[int]:
            for index, key in enumerate(kwargs["keys"]):
                if key.endswith("req-1"):
                    raise TelemetryValidationError("at", "key forgotten", index=index)
            return self.store.record_many(records, **kwargs)

    status, _, payload = call(make_app(Refusing(store)), logs_body(3))  # type: ignore[arg-type]

    assert status == 200
    partial = logs_response(payload).partial_success
    assert (partial.rejected_log_records, partial.error_message) == (
        1, "1 of 3 log records rejected: log record 1: at: key forgotten")
    assert [row[0] for row in stored(witness)] == ["otlp.log.request:req-0",
                                                   "otlp.log.request:req-2"]


# --- Values no sender sends: refused, record by record --------------------------------

HUGE = "x" * 1_000_000


def rejected(payload: bytes, signal: str = "logs") -> Tuple[int, str]:
    partial = signals()[signal].response.FromString(payload).partial_success
    field = "rejected_log_records" if signal == "logs" else "rejected_spans"
    return getattr(partial, field), partial.error_message


@pytest.mark.parametrize("attribute, field", [
    ("model", "model"), ("vcs.repository.name", "repo"), ("session.id", "session_id"),
    ("user.email", "labels.user")])
@pytest.mark.parametrize("value, reason", [
    ("claude\x00sonnet", "must not contain NUL characters"),
    (HUGE, "must be at most")], ids=["nul", "huge"])
def test_a_nul_or_a_huge_text_rejects_its_record(
        app: Any, witness: sqlite3.Connection, attribute: str, field: str, value: str,
        reason: str) -> None:
    events = [api_request(request_id="good"),
              api_request(request_id="bad", **{attribute: value})]

    status, _, payload = call(app, logs_request(events).SerializeToString(), headers=AUTH)

    assert status == 200
    count, message = rejected(payload)
    assert count == 1
    assert message.startswith(f"1 of 2 log records rejected: log record 1: {field}: {reason}")
    assert len(message) < 300
    assert [row[0] for row in stored(witness)] == ["otlp.log.request:good"]


@pytest.mark.parametrize("value, reason", [
    ("end\x00turn", "stop_reason: must not contain NUL characters"),
    ("x" * 65, "stop_reason: must be at most 64 characters")], ids=["nul", "long"])
def test_a_span_with_a_nul_or_a_long_finish_reason_is_rejected(
        app: Any, witness: sqlite3.Connection, value: str, reason: str) -> None:
    made = finished_spans([chat(), chat(**{"gen_ai.response.finish_reasons": (value,)})])
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    status, _, payload = call(app, encode_spans(made).SerializeToString(), "/v1/traces",
                              headers=AUTH)

    assert status == 200
    count, message = rejected(payload, "traces")
    assert (count, message.startswith(f"1 of 2 spans rejected: span 1: {reason}")) == (1, True)
    assert [row[0] for row in stored(witness)] == [span_key(made[0])]


@pytest.mark.parametrize("attribute", ["input_tokens", "duration_ms", "cost_usd"])
def test_a_number_written_with_underscores_is_refused(
        app: Any, witness: sqlite3.Connection, attribute: str) -> None:
    events = [api_request(request_id="good"),
              api_request(request_id="bad", **{attribute: "1_000"})]

    status, _, payload = call(app, logs_request(events).SerializeToString(), headers=AUTH)

    assert status == 200
    assert rejected(payload) == (1, f"1 of 2 log records rejected: log record 1: "
                                    f"{attribute}: must be a number, got '1_000'")
    assert [row[0] for row in stored(witness)] == ["otlp.log.request:good"]


@pytest.mark.parametrize("field, value, reason", [
    ("span_id", b"\x01" * 4, "span_id: must be 8 bytes, got 4"),
    ("trace_id", b"\x01" * 8, "trace_id: must be 16 bytes, got 8"),
    ("span_id", b"\x01" * 9, "span_id: must be 8 bytes, got 9")],
    ids=["short-span-id", "short-trace-id", "long-span-id"])
def test_a_span_whose_ids_are_not_of_their_size_is_rejected(
        app: Any, witness: sqlite3.Connection, field: str, value: bytes, reason: str) -> None:
    request = spans_request([chat(), chat()])
    kept = request.resource_spans[0].scope_spans[0].spans[0]
    setattr(request.resource_spans[0].scope_spans[0].spans[1], field, value)

    status, _, payload = call(app, request.SerializeToString(), "/v1/traces", headers=AUTH)

    assert status == 200
    assert rejected(payload, "traces") == (1, f"1 of 2 spans rejected: span 1: {reason}")
    assert [row[0] for row in stored(witness)] == [
        f"otlp.span:{kept.trace_id.hex()}:{kept.span_id.hex()}"]


def test_make_app_checks_its_arguments(store: PeeweeTelemetryStore) -> None:
    for kwargs, field in (({"token": " "}, "token"), ({"token": "pässwörd"}, "token"),
                          ({"token": "tab\tinside"}, "token"), ({"max_body": 0}, "max_body"),
                          ({"max_inflight": 0}, "max_inflight"),
                          ({"label_attributes": ["Team"]}, "label attribute")):
        with pytest.raises(TelemetryValidationError) as raised:
            make_app(store, **kwargs)
        assert raised.value.field == field


# --- Served on 127.0.0.1, to the SDK's exporters ---------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Tuple[str, Path]]:
    """The app on a store of its own, served by waitress on a free port of
    127.0.0.1: the base URL and the database file."""
    path = tmp_path / "served.db"
    with create_telemetry_store(path) as store:
        serving = Serving(make_app(store, TOKEN, label_attributes=("team",)), "127.0.0.1", 0)
        runner = threading.Thread(target=serving.run)
        runner.start()
        try:
            yield f"http://127.0.0.1:{serving.port}", path
        finally:
            serving.stop()
            runner.join(60)
            assert not runner.is_alive()


def read_rows(path: Path) -> List[Tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        rows = [tuple(r) for r in conn.execute(
            "SELECT k.key, e.event_type, e.input_tokens, e.cost_usd FROM executions e "
            "JOIN telemetry_orm_keys k ON k.execution_id = e.id ORDER BY k.key")]
    conn.close()
    return rows


def exporters() -> Any:
    return pytest.importorskip("opentelemetry.exporter.otlp.proto.http",
                               reason="needs opentelemetry-exporter-otlp-proto-http")


@pytest.mark.parametrize("compressed", [False, True])
def test_the_sdk_log_exporter_through_a_batch_processor(
        served: Tuple[str, Path], compressed: bool) -> None:
    http = exporters()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    url, path = served
    exporter = OTLPLogExporter(endpoint=url + "/v1/logs", headers=AUTH, timeout=30,
                               compression=http.Compression.Gzip if compressed
                               else http.Compression.NoCompression)
    provider = LoggerProvider(resource=Resource({"service.name": "claude-code",
                                                 "team": "platform"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter,
                                                              max_export_batch_size=64))
    logger = provider.get_logger("com.anthropic.claude_code.events")
    for i in range(200):
        logger.emit(timestamp=1_777_887_000_000_000_000 + i, observed_timestamp=1,
                    body="claude_code.api_request",
                    attributes=api_request(request_id=f"r{i:03}"))
    provider.shutdown()

    rows = read_rows(path)
    assert len(rows) == 200
    assert rows[0] == ("otlp.log.request:r000", "claude_code.api_request", 120, 0.0123)
    with sqlite3.connect(path) as conn:
        teams = conn.execute("SELECT count(*) FROM telemetry_orm_labels "
                             "WHERE name = 'team' AND value = 'platform'").fetchone()[0]
    conn.close()
    assert teams == 200


@pytest.mark.parametrize("compressed", [False, True])
def test_the_sdk_span_exporter_and_a_batch_sent_twice(
        served: Tuple[str, Path], compressed: bool) -> None:
    http = exporters()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult
    url, path = served
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", headers=AUTH, timeout=30,
                                compression=http.Compression.Gzip if compressed
                                else http.Compression.NoCompression)
    spans = finished_spans([chat(**{"gen_ai.conversation.id": f"c{i}"}) for i in range(50)])

    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert exporter.export(spans) == SpanExportResult.SUCCESS  # a retry: same bytes
    exporter.shutdown()

    rows = read_rows(path)
    assert sorted(row[0] for row in rows) == sorted(span_key(s) for s in spans)
    assert {row[1:3] for row in rows} == {("gen_ai.chat", 300)}


def test_the_sdk_exporter_with_a_wrong_token_fails_and_stores_nothing(
        served: Tuple[str, Path]) -> None:
    exporters()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs.export import LogRecordExportResult
    url, path = served
    exporter = OTLPLogExporter(endpoint=url + "/v1/logs", timeout=10,
                               headers={"Authorization": "Bearer nope"})

    assert exporter.export(log_records([api_request()])) == LogRecordExportResult.FAILURE
    exporter.shutdown()
    conn = sqlite3.connect(path)
    try:
        assert count_rows(conn) == 0
    finally:
        conn.close()


def test_the_sdk_exporter_retries_after_a_503_and_the_batch_lands_once(
        tmp_path: Path) -> None:
    exporters()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs.export import LogRecordExportResult
    path = tmp_path / "retry.db"
    with create_telemetry_store(path) as store:
        slow = SlowStore(store, failures=2)
        serving = Serving(make_app(slow), "127.0.0.1", 0)  # type: ignore[arg-type]
        runner = threading.Thread(target=serving.run)
        runner.start()
        try:
            exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{serving.port}/v1/logs",
                                       timeout=30)
            records = log_records([api_request(request_id=f"q{i}") for i in range(5)])
            # Retry-After: 1 twice, then 200.
            assert exporter.export(records) == LogRecordExportResult.SUCCESS
            exporter.shutdown()
        finally:
            serving.stop()
            runner.join(60)
        assert slow.calls == 3
    assert len(read_rows(path)) == 5


def test_on_every_engine_a_request_sent_twice_is_stored_once_with_its_labels(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    app = make_app(any_store, label_attributes=("team",))
    logs = logs_body(3)
    traces = spans_request([chat(), chat()]).SerializeToString()

    for _ in range(2):
        assert call(app, logs)[0] == 200
        assert call(app, traces, "/v1/traces")[0] == 200

    rows = any_witness.rows("SELECT event_type, input_tokens, cost_usd FROM executions "
                            "ORDER BY id")
    assert [tuple(r.values()) for r in rows] == (
        [("claude_code.api_request", 120, 0.0123)] * 3 + [("gen_ai.chat", 300, rows[3][
            "cost_usd"])] * 2)
    assert any_witness.scalar("SELECT count(*) FROM telemetry_orm_keys") == 5
    assert any_witness.scalar("SELECT count(*) FROM telemetry_orm_labels "
                              "WHERE name = 'team' AND value = 'platform'") == 3
    assert any_witness.scalar("SELECT count(*) FROM telemetry_orm_labels "
                              "WHERE name = 'team' AND value = 'ml'") == 2
