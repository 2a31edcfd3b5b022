"""The OTLP intake (``telemetry_orm.server``): what a request of 1,000
Claude Code events costs, and what four concurrent clients sustain.

- ``OTLP logs request of 1,000 records``: a protobuf
  ``ExportLogsServiceRequest`` posted to ``make_app``'s WSGI callable (an
  SQLite file; every request new, so every record is stored) against
  decoding the same bytes with the generated classes plus one raw
  ``sqlite3`` ``executemany`` of the same rows in one transaction; target
  <= 2x.
- ``records/s, 4 concurrent clients``: four threads posting requests of
  250 events over HTTP to the app served by waitress, as ``telemetry-orm
  serve`` serves it (a reference line).
- ``records/s, 4 SDK log exporters``: four processes, each exporting
  batches of 512 log records (the SDK's batch) through the OpenTelemetry
  SDK's own ``OTLPLogExporter`` (protobuf over HTTP, its retries on 503
  included) to the app served by waitress (a reference line).

Skipped, with the reason, without the ``serve`` extra; the last line
without ``opentelemetry-sdk`` and ``opentelemetry-exporter-otlp-proto-http``.
"""

from __future__ import annotations

import datetime as dt
import http.client
import io
import multiprocessing
import queue
import sqlite3
import threading
import time
from typing import Any, Dict, List, Sequence, Tuple

from bench.timing import Result, Settings, paired
from telemetry_orm import create_telemetry_store
from telemetry_orm.record import FIELD_NAMES

CASE = "OTLP logs request of 1,000 records"
TARGET = 2.0
THROUGHPUT = "  records/s, 4 concurrent clients"
EXPORTERS = "  records/s, 4 SDK log exporters"

#: When the events happened (one a second from here).
START = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone.utc)


def _request(classes: Tuple[Any, Any, Any, Any], tag: str, n: int) -> bytes:
    """A logs request of ``n`` events shaped as Claude Code sends them
    (numbers as strings, the body the event's name), each with its own
    request id (``tag`` makes them new)."""
    request_cls, any_value, key_value, _ = classes

    def attribute(key: str, text: str) -> Any:
        return key_value(key=key, value=any_value(string_value=text))

    request = request_cls()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend([
        attribute("service.name", "claude-code"), attribute("service.version", "2.0.14"),
        attribute("team", "platform")])
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "com.anthropic.claude_code.events"
    for i in range(n):
        when = START + dt.timedelta(seconds=i)
        record = scope_logs.log_records.add()
        record.time_unix_nano = int(when.timestamp()) * 1_000_000_000
        record.body.string_value = "claude_code.api_request"
        record.attributes.extend([
            attribute("event.name", "api_request"),
            attribute("event.timestamp", when.strftime("%Y-%m-%dT%H:%M:%S.000Z")),
            attribute("event.sequence", str(i)),
            attribute("session.id", f"session-{tag}-{i // 50}"),
            attribute("prompt.id", f"prompt-{tag}-{i // 5}"),
            attribute("model", "claude-sonnet-4-5"),
            attribute("input_tokens", str(100 + i % 900)),
            attribute("output_tokens", str(20 + i % 400)),
            attribute("cache_read_tokens", str(1000 * (i % 7))),
            attribute("cache_creation_tokens", str(100 * (i % 3))),
            attribute("cost_usd", f"{0.001 + (i % 97) / 1000:.4f}"),
            attribute("duration_ms", str(800 + i % 5000)),
            attribute("request_id", f"req_{tag}_{i:06d}"),
            attribute("query_source", "main"),
            attribute("user.email", f"user{i % 12}@example.com"),
            attribute("organization.id", "org-1"),
        ])
    return bytes(request.SerializeToString())


def _post(app: Any, body: bytes) -> int:
    """``body`` posted to the WSGI ``app`` at ``/v1/logs``; the status."""
    seen: List[str] = []
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/logs",
               "CONTENT_TYPE": "application/x-protobuf", "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}
    b"".join(app(environ, lambda status, headers, *rest: seen.append(status)))
    return int(seen[0].split()[0])


def intake(settings: Settings) -> List[Result]:
    """Both lines."""
    try:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
        )
        from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

        from telemetry_orm import intake as _intake
        from telemetry_orm.server import make_app
        from telemetry_orm.serving import Serving
        _intake.require()
    except ImportError as exc:
        return [Result(CASE, None, "", target=f"<= {TARGET}x",
                       note=f"skipped: the serve extra is not installed ({exc})")]
    classes = (ExportLogsServiceRequest, AnyValue, KeyValue, None)
    n, rounds = 1000, settings.rounds
    # Every round posts requests never seen (their keys are new).
    bodies = [_request(classes, f"r{i}", n) for i in range(2 * (rounds + 1))]
    path = settings.workdir / "intake.db"
    raw_path = settings.workdir / "intake_raw.db"
    create_telemetry_store(raw_path).close()
    with create_telemetry_store(path) as store:
        app = make_app(store)
        # The baseline's rows: what the intake makes of the first request.
        decoded = _intake.decode("logs", bodies[0], as_json=False)
        taken = _intake.map_logs(decoded, ())
        rows = [(when.strftime("%Y-%m-%d %H:%M:%S"), *record.as_row())
                for record, when in zip(taken.records, taken.at, strict=True)]
        sql = (f"INSERT INTO executions (created_at, {', '.join(FIELD_NAMES)}) "
               f"VALUES ({', '.join('?' for _ in range(len(FIELD_NAMES) + 1))})")
        raw = sqlite3.connect(raw_path, isolation_level=None)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=NORMAL")
        posted = iter(bodies)

        def ours() -> float:
            body = next(posted)
            started = time.perf_counter()
            status = _post(app, body)
            took = time.perf_counter() - started
            if status != 200:
                raise RuntimeError(f"the intake answered {status}")
            return took

        def baseline() -> float:
            started = time.perf_counter()
            ExportLogsServiceRequest.FromString(bodies[0])
            raw.execute("BEGIN")
            raw.executemany(sql, rows)
            raw.execute("COMMIT")
            return time.perf_counter() - started

        mine, theirs, ratio = paired(ours, baseline, rounds)
        raw.close()
        stored = store.model.select().count()
        if stored != n * (rounds + 1):
            raise RuntimeError(f"stored {stored} executions, sent {n * (rounds + 1)}")
        results = [Result(CASE, mine * 1000, "ms", theirs * 1000, ratio, TARGET,
                          f"<= {TARGET}x decode + raw executemany",
                          "protobuf, SQLite file, every record new", rounds)]
        results.append(_floor(settings, bodies[0], rows, taken, ours, rounds))
        results.append(_throughput(store, make_app, Serving, classes, settings))
        results.append(_exporters(store, make_app, Serving, settings))
    return results


def _floor(settings: Settings, body: bytes, rows: List[Tuple[Any, ...]], taken: Any,
           ours: Any, rounds: int) -> Result:
    """Ours against the least any intake keeping the issue's promises does:
    decode, read each record's attributes through the generated classes
    once, and send from raw ``sqlite3``, in one transaction, what a keyed,
    labelled write must (the keys looked up 500 at a time, then the rows,
    their keys and their labels, one ``executemany`` each)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )
    path = settings.workdir / "intake_floor.db"
    with create_telemetry_store(path) as store:
        # Its keys and labels tables made as the store makes them.
        store.record_many([{**taken.records[0].as_dict(), "labels": {"user": "x"}}],
                          keys=["made"])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    insert = (f"INSERT INTO executions (created_at, {', '.join(FIELD_NAMES)}) "
              f"VALUES ({', '.join('?' for _ in range(len(FIELD_NAMES) + 1))})")
    labelsets = [sorted(record.labels.items()) for record in taken.records]
    made = [0]

    def floor() -> float:
        made[0] += 1
        keys = [f"otlp.log.request:floor{made[0]}-{i}" for i in range(len(rows))]
        started = time.perf_counter()
        request = ExportLogsServiceRequest.FromString(body)
        for resource in request.resource_logs:
            for scope in resource.scope_logs:
                for record in scope.log_records:
                    {kv.key: kv.value.string_value for kv in record.attributes}
        conn.execute("BEGIN IMMEDIATE")
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            marks = ", ".join("?" * len(part))
            conn.execute(f"SELECT key, execution_id FROM telemetry_orm_keys WHERE key IN "
                         f"({marks}) UNION ALL SELECT key, execution_id FROM "
                         f"telemetry_orm_purged_keys WHERE key IN ({marks})",
                         part + part).fetchall()
        conn.executemany(insert, rows)
        last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        ids = range(last - len(rows) + 1, last + 1)
        conn.executemany("INSERT INTO telemetry_orm_keys (key, execution_id) VALUES (?, ?)",
                         list(zip(keys, ids, strict=True)))
        conn.executemany("INSERT INTO telemetry_orm_labels (execution_id, name, value) "
                         "VALUES (?, ?, ?)", [(i, name, value) for i, labels in
                                              zip(ids, labelsets, strict=True)
                                              for name, value in labels])
        conn.execute("COMMIT")
        return time.perf_counter() - started

    try:
        mine, theirs, ratio = paired(ours, floor, rounds)
    finally:
        conn.close()
    return Result("  against the floor: decode, attributes read, the same SQL", mine * 1000,
                  "ms", theirs * 1000, ratio, None, "reference",
                  "the keys looked up, rows, keys and labels from raw sqlite3", rounds)


def _throughput(store: Any, make_app: Any, serving_cls: Any,
                classes: Tuple[Any, Any, Any, Any], settings: Settings) -> Result:
    """Records a second that four threads posting over HTTP get stored."""
    clients, batch = 4, 250
    requests = 6 if settings.quick else 20
    bodies = {c: [_request(classes, f"c{c}q{q}", batch) for q in range(requests)]
              for c in range(clients)}
    app = make_app(store)
    serving = serving_cls(app, port=0, threads=app.threads)
    server = threading.Thread(target=serving.run, daemon=True)
    server.start()
    statuses: Dict[int, List[int]] = {c: [] for c in range(clients)}

    def client(c: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", serving.port, timeout=120)
        for body in bodies[c]:
            for _ in range(20):  # as an exporter does: 503 means later
                connection.request("POST", "/v1/logs", body,
                                   {"Content-Type": "application/x-protobuf"})
                answer = connection.getresponse()
                answer.read()
                statuses[c].append(answer.status)
                if answer.status != 503:
                    break
                time.sleep(float(answer.getheader("Retry-After") or 1))
        connection.close()

    before = store.model.select().count()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - started
    serving.stop()
    serving.wait(30)
    stored = store.model.select().count() - before
    answered = sorted({s for per in statuses.values() for s in per})
    if stored != clients * requests * batch:
        raise RuntimeError(f"stored {stored} of {clients * requests * batch} (answers "
                           f"{answered})")
    return Result(THROUGHPUT, stored / took, "rec/s", note=(
        f"{clients} x {requests} requests of {batch} events over HTTP, waitress, SQLite file"
        + ("" if answered == [200] else
           f"; {sum(s == 503 for per in statuses.values() for s in per)} answers 503, "
           "sent again")))


def _exporters(store: Any, make_app: Any, serving_cls: Any, settings: Settings) -> Result:
    """Records a second that four processes exporting through the SDK's
    ``OTLPLogExporter`` get stored."""
    try:
        import opentelemetry.exporter.otlp.proto.http._log_exporter  # noqa: F401
        import opentelemetry.sdk._logs  # noqa: F401
    except ImportError as exc:
        return Result(EXPORTERS, None, "", note=(
            "skipped: needs opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http "
            f"({exc})"))
    processes, batch = 4, 512
    batches = 4 if settings.quick else 12
    app = make_app(store)
    serving = serving_cls(app, port=0, threads=app.threads)
    server = threading.Thread(target=serving.run, daemon=True)
    server.start()
    # Spawned, not forked: this process runs the server's threads.
    context = multiprocessing.get_context("spawn")
    ready, done = context.Queue(), context.Queue()
    go = context.Event()
    workers = [context.Process(target=_export, args=(
        serving.port, f"p{p}", batches, batch, ready, go, done)) for p in range(processes)]
    before = store.model.select().count()
    try:
        for worker in workers:
            worker.start()
        for _ in workers:  # each has built its batches: only the export is timed
            ready.get(timeout=300)
        started = time.perf_counter()
        go.set()
        failed = sum(done.get(timeout=600) for _ in workers)
        took = time.perf_counter() - started
    except queue.Empty:
        raise RuntimeError("an exporter process did not answer") from None
    finally:
        for worker in workers:
            worker.join(60)
        serving.stop()
        serving.wait(30)
    stored = store.model.select().count() - before
    if failed or stored != processes * batches * batch:
        raise RuntimeError(f"stored {stored} of {processes * batches * batch}, "
                           f"{failed} exports failed")
    return Result(EXPORTERS, stored / took, "rec/s", note=(
        f"{processes} processes x {batches} batches of {batch} through OTLPLogExporter, "
        "waitress, SQLite file"))


def _export(port: int, tag: str, batches: int, batch: int, ready: Any, go: Any,
            done: Any) -> None:
    """One exporter process: build the batches, say so, wait for ``go``,
    export them, and put the number of failed exports in ``done``."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    prepared = _sdk_batches(tag, batches, batch)
    exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs", timeout=120)
    ready.put(tag)
    go.wait(300)
    failed = sum(exporter.export(records).name != "SUCCESS" for records in prepared)
    exporter.shutdown()
    done.put(failed)


def _sdk_batches(tag: str, batches: int, batch: int) -> List[Sequence[Any]]:
    """``batches`` batches of ``batch`` SDK log records shaped as Claude
    Code's events (``tag`` makes them new)."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import (
        InMemoryLogRecordExporter,
        SimpleLogRecordProcessor,
    )
    from opentelemetry.sdk.resources import Resource

    kept = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource({
        "service.name": "claude-code", "service.version": "2.0.14", "team": "platform"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(kept))
    logger = provider.get_logger("com.anthropic.claude_code.events", "2.0.14")
    for i in range(batches * batch):
        when = START + dt.timedelta(seconds=i)
        nanos = int(when.timestamp()) * 1_000_000_000
        logger.emit(timestamp=nanos, observed_timestamp=nanos, body="claude_code.api_request",
                    attributes={
                        "event.name": "api_request",
                        "event.timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                        "session.id": f"session-{tag}-{i // 50}", "model": "claude-sonnet-4-5",
                        "input_tokens": str(100 + i % 900), "output_tokens": str(20 + i % 400),
                        "cache_read_tokens": str(1000 * (i % 7)), "cost_usd": "0.0123",
                        "duration_ms": str(800 + i % 5000), "request_id": f"req_{tag}_{i:06d}",
                        "user.email": f"user{i % 12}@example.com"})
    provider.shutdown()
    records = list(kept.get_finished_logs())
    return [records[k:k + batch] for k in range(0, len(records), batch)]
