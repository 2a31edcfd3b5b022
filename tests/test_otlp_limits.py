"""The OTLP/HTTP intake's bounds (telemetry_orm.server, telemetry_orm.intake):
records per request, requests in flight, and what a hostile body costs.
Rows are read back through a plain sqlite3 connection."""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import json
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any, List, Optional, Tuple

from otlp_support import api_request, chat, logs_json, logs_request, spans_request
from test_otlp_server import (
    AUTH,
    JSON,
    PROTOBUF,
    TOKEN,
    Input,
    SlowStore,
    call,
    count_rows,
    gzip_posted,
    logs_body,
    logs_response,
    stored,
)

from telemetry_orm import PeeweeTelemetryStore, create_telemetry_store
from telemetry_orm.server import MAX_BODY, make_app
from telemetry_orm.serving import Serving


def status_message(payload: bytes) -> str:
    from google.rpc import status_pb2
    return str(status_pb2.Status.FromString(payload).message)


def delimited(tag: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: its tag byte, its length, ``payload``."""
    size, length = len(payload), b""
    while size >= 0x80:
        length += bytes([size & 0x7F | 0x80])
        size >>= 7
    return bytes([tag]) + length + bytes([size]) + payload


# --- Records per request --------------------------------------------------------------


def test_more_records_than_the_bound_get_413_and_nothing_is_stored(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    app = make_app(store, TOKEN, max_records=4)

    refused = call(app, logs_body(5), headers=AUTH)
    refused_json = call(app, logs_json([api_request(request_id=f"j{i}") for i in range(5)]),
                        content_type=JSON, headers=AUTH)
    spans = call(app, spans_request([chat(**{"gen_ai.conversation.id": f"c{i}"})
                                     for i in range(5)]).SerializeToString(), "/v1/traces",
                 headers=AUTH)
    taken = call(app, logs_body(4), headers=AUTH)

    assert (refused[0], refused_json[0], spans[0], taken[0]) == (413, 413, 413, 200)
    assert status_message(refused[2]) == (
        "body: holds more than 4 log records (the most this server takes in one request)")
    assert json.loads(refused_json[2])["message"].startswith("body: holds more than 4 log "
                                                             "records")
    assert status_message(spans[2]).startswith("body: holds more than 4 spans")
    assert count_rows(witness) == 4


def test_a_gzip_body_of_millions_of_empty_records_is_refused_before_they_are_built(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    # 16 KiB that inflate to 16 MiB: 8 million empty log records of two bytes.
    records = b"\x12\x00" * ((MAX_BODY - 20) // 2)
    bomb = gzip.compress(delimited(0x0A, delimited(0x12, records)), 9)
    status, payload, seconds, peak = gzip_posted(make_app(store), bomb)

    assert status == 413
    assert status_message(payload).startswith("body: holds more than 10,000 log records")
    assert peak < 2 * MAX_BODY + (1 << 20), peak  # the inflated body, joined: no record
    assert count_rows(witness) == 0
    print(f"{len(bomb):,} bytes of gzip, 8 million empty log records: 413 in "
          f"{seconds * 1000:.0f} ms, peak traced memory {peak / 2**20:.1f} MiB")


def test_millions_of_unknown_fields_around_the_records_are_refused_too(
        store: PeeweeTelemetryStore) -> None:
    # Field 99, a varint: unknown, kept by the decoder, three bytes each.
    unknown = b"\xf8\x06\x00" * 100_000
    app = make_app(store, max_records=100)

    status, _, payload = call(app, unknown + logs_body(1))

    assert status == 413
    assert status_message(payload) == ("body: holds more than 200 fields beside its records "
                                       "(the most this server takes in one request)")
    # A group (wire type 3) is skipped only by reading every field inside.
    group = call(app, b"\xfb\x06\xfc\x06" + logs_body(1))
    assert (group[0], status_message(group[2])) == (400, (
        "body: holds a group (protobuf's deprecated wire type 3) as field 111: no OTLP "
        "message has one"))


def test_a_json_body_of_too_many_objects_is_refused_while_it_is_parsed(
        store: PeeweeTelemetryStore) -> None:
    # One record with 70 attributes: 141 objects beside the request's own,
    # more than 64 per record for a bound of 2 records.
    attributes = [{"key": f"k{i}", "value": {"stringValue": "v"}} for i in range(70)]
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"attributes": attributes}]}]}]}).encode()

    status, _, payload = call(make_app(store, max_records=2), body, content_type=JSON)

    assert status == 413
    assert json.loads(payload)["message"].startswith(
        "body: holds more than 128 JSON objects (64 per log record of the 2 allowed)")
    assert call(make_app(store, max_records=3), body, content_type=JSON)[0] == 200


def test_inflating_and_decoding_wait_for_a_slot_like_writing(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    slow = SlowStore(store)
    slow.go.clear()
    app = make_app(slow, max_inflight=1, busy_wait=0.05)  # type: ignore[arg-type]
    first: List[Any] = []
    writer = threading.Thread(target=lambda: first.append(call(app, logs_body(2))))
    writer.start()
    body = gzip.compress(logs_body(3))
    stream = Input(body)
    try:
        assert slow.inside.wait(30)
        status, headers, _ = call(app, body, stream=stream,
                                  headers={"Content-Encoding": "gzip"})
    finally:
        slow.go.set()
        writer.join(30)

    assert (status, headers["Retry-After"]) == (503, "1")
    assert stream.taken == 0  # neither read, nor inflated, nor decoded
    assert first[0][0] == 200
    assert count_rows(witness) == 2



# --- Requests in flight, served by waitress -------------------------------------------


def post(port: int, body: bytes) -> Tuple[int, Optional[str]]:
    """``body`` posted to ``/v1/logs`` over HTTP: the status and ``Retry-After``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/v1/logs", body, {"Content-Type": PROTOBUF})
        answer = connection.getresponse()
        answer.read()
        return answer.status, answer.getheader("Retry-After")
    finally:
        connection.close()


def test_served_with_its_threads_requests_beyond_the_waiters_get_503_at_once(
        tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    with create_telemetry_store(path) as store:
        slow = SlowStore(store)
        slow.go.clear()
        # One slot, one waiter (for as long as the writer is held), and
        # five more requests: each must be answered while the writer is
        # held, not queued behind it.
        app = make_app(slow, max_inflight=1, busy_wait=600)  # type: ignore[arg-type]
        serving = Serving(app, "127.0.0.1", 0, threads=app.threads)
        runner = threading.Thread(target=serving.run)
        runner.start()
        answers: queue.Queue[Tuple[int, Optional[str]]] = queue.Queue()

        def send(name: str, count: int) -> threading.Thread:
            events = [api_request(request_id=f"{name}-{i}") for i in range(count)]
            body = logs_request(events).SerializeToString()
            sender = threading.Thread(target=lambda: answers.put(post(serving.port, body)))
            sender.start()
            return sender

        senders = [send("held", 2)]
        try:
            assert slow.inside.wait(30)
            senders += [send(f"more{n}", 3) for n in range(6)]
            early = [answers.get(timeout=30) for _ in range(5)]
        finally:
            slow.go.set()
            for sender in senders:
                sender.join(60)
            serving.stop()
            runner.join(60)
        late = [answers.get(timeout=1) for _ in range(2)]

    assert early == [(503, "1")] * 5
    assert late == [(200, None)] * 2  # the held request and the one that waited
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM executions").fetchone()[0] == 2 + 3


# --- Records the store refuses --------------------------------------------------------


def test_after_a_purge_every_record_whose_key_may_be_forgotten_is_refused_in_one_pass(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    store.record({"event_type": "x", "model": "m", "conclusion": "success", "repo": "r"},
                 key="gone", at=dt.datetime(2020, 1, 1))
    assert store.purge_older_than(1) == 1
    witness.execute("UPDATE telemetry_orm_purged_keys SET purged_at = '2000-01-02 03:04:05'")
    witness.commit()
    store.purge(1, key_days=400)  # keys purged before 400 days ago are forgotten
    old = [api_request(request_id=f"old-{i:03d}", **{"event.timestamp": "2001-02-03T04:05:06Z"})
           for i in range(300)]
    new = [api_request(request_id=f"new-{i}") for i in range(2)]
    counted = SlowStore(store)
    app = make_app(counted)  # type: ignore[arg-type]

    status, _, payload = call(app, logs_request(old[:150] + new + old[150:])
                              .SerializeToString())

    assert status == 200
    partial = logs_response(payload).partial_success
    assert partial.rejected_log_records == 300
    assert partial.error_message.startswith(
        "300 of 302 log records rejected: log record 0: at: key 'otlp.log.request:old-000': "
        "created_at 2001-02-03 04:05:06 is before ")
    assert "; and 297 more" in partial.error_message
    assert counted.calls == 2  # refused all at once, then the rest written
    assert [row[0] for row in stored(witness)] == ["otlp.log.request:new-0",
                                                   "otlp.log.request:new-1"]


def test_a_lone_surrogate_in_json_rejects_its_record_and_the_rest_is_stored(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    request = json.loads(logs_json([api_request(request_id=f"s{i}") for i in range(4)]))
    records = request["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    model = next(a for a in records[1]["attributes"] if a["key"] == "model")
    model["value"]["stringValue"] = "claude-LONE"
    records[3]["futureFieldLONE"] = 1  # an object's name, in a field no one reads
    # json.dumps would write the escapes doubled: put them in by hand.
    body = json.dumps(request).replace("LONE", "\\ud800").encode()

    status, _, payload = call(make_app(store), body, content_type=JSON)

    assert status == 200
    partial = json.loads(payload)["partialSuccess"]
    assert partial == {"rejectedLogRecords": "2", "errorMessage": (
        "2 of 4 log records rejected: log record 1: attributes['model'].value.stringValue: "
        "holds a lone surrogate (\\ud800 to \\udfff), which is not text; log record 3: "
        "'futureField\\ud800': holds a lone surrogate (\\ud800 to \\udfff), which is not "
        "text")}
    assert [row[0] for row in stored(witness)] == ["otlp.log.request:s0",
                                                   "otlp.log.request:s2"]


def test_a_lone_surrogate_outside_the_records_refuses_the_body_saying_where(
        store: PeeweeTelemetryStore) -> None:
    request = json.loads(logs_json([api_request()]))
    request["resourceLogs"][0]["resource"]["attributes"][0]["value"]["stringValue"] = "LONE"
    body = json.dumps(request).replace("LONE", "\\udfff").encode()

    status, _, payload = call(make_app(store), body, content_type=JSON)

    assert status == 400
    assert json.loads(payload)["message"] == (
        "body: resourceLogs[0].resource.attributes['service.name'].value.stringValue, "
        "outside the records: holds a lone surrogate (\\ud800 to \\udfff), which is not text")
