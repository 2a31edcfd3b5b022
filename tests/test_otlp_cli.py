"""``telemetry-orm serve`` in a subprocess on a free port of 127.0.0.1: the
SDK's exporter sends to it, SIGTERM and SIGINT stop it after the request in
flight (exit 0), and without a token it listens on loopback only."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, List, Tuple

import pytest
from otlp_support import api_request, log_records, logs_request, start, stop

from telemetry_orm.cli_serve import is_loopback

TOKEN = "cli-token-1"


def rows(path: Path) -> List[Tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [tuple(r) for r in conn.execute(
            "SELECT k.key, e.repo, e.input_tokens FROM executions e "
            "JOIN telemetry_orm_keys k ON k.execution_id = e.id ORDER BY k.key")]
    finally:
        conn.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_the_sdk_exporter_then_a_signal_stops_it_with_exit_0(
        tmp_path: Path, sig: int) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs.export import LogRecordExportResult
    (tmp_path / "token").write_text(TOKEN + "\n")
    process, port = start(tmp_path, "--token-file", "token", "--label-attribute", "team")
    try:
        exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs", timeout=30,
                                   headers={"Authorization": f"Bearer {TOKEN}"})
        records = log_records([api_request(request_id=f"c{i}") for i in range(3)])
        assert exporter.export(records) == LogRecordExportResult.SUCCESS
        assert exporter.export(records) == LogRecordExportResult.SUCCESS
        exporter.shutdown()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as answer:
            assert (answer.status, answer.read()) == (200, b"ok\n")
    finally:
        status, out, err = stop(process, sig)

    assert status == 0, err
    assert out.splitlines()[-1] == ("stopped: 6 executions accepted (a resent one is stored "
                                    "once), 0 records refused, in 2 requests")
    assert rows(tmp_path / "otlp.db") == [(f"otlp.log.request:c{i}", "acme/api", 120)
                                          for i in range(3)]


def test_sigterm_stops_accepting_and_finishes_the_request_in_flight(tmp_path: Path) -> None:
    process, port = start(tmp_path)
    body = logs_request([api_request(request_id="in-flight")]).SerializeToString()
    head = (f"POST /v1/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            f"application/x-protobuf\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    signalled = False
    try:
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        client.sendall(head + body[:10])  # the request has begun, not ended
        # Waitress has read what was sent once a probe on a second
        # connection is answered.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30):
            pass
        process.send_signal(signal.SIGTERM)
        signalled = True
        deadline = time.monotonic() + 30
        while True:  # the listening socket closes: new connections are refused
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            except ConnectionRefusedError:
                break
            except ConnectionResetError:
                pass  # taken into the backlog as the socket closed: try again
            assert time.monotonic() < deadline, "still accepting 30 s after SIGTERM"
        assert process.poll() is None  # still finishing the request in flight
        client.sendall(body[10:])
        answer = client.recv(65536)
        client.close()
    finally:
        # One signal: a second, sent as the process ends, would end it by default.
        status, out, err = stop(process, None if signalled else signal.SIGTERM)

    assert answer.startswith(b"HTTP/1.1 200 OK"), answer
    assert status == 0, err
    assert rows(tmp_path / "otlp.db") == [("otlp.log.request:in-flight", "acme/api", 120)]
    assert out.splitlines()[-1].startswith("stopped: 1 executions accepted")


def test_a_signal_while_it_exits_is_no_failure(tmp_path: Path) -> None:
    process, _ = start(tmp_path)
    assert process.stdout is not None
    process.send_signal(signal.SIGTERM)
    # Stopped, the store closed: the process is on its way out.
    line = process.stdout.readline()
    assert line.startswith("stopped: 0 executions accepted"), line
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGTERM)
    status, _, err = stop(process, None)
    assert status == 0, err


def test_the_token_can_come_from_the_environment(tmp_path: Path) -> None:
    body = logs_request([api_request()]).SerializeToString()
    process, port = start(tmp_path, env={"TELEMETRY_SERVE_TOKEN": TOKEN})
    statuses = []
    try:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/logs", data=body, method="POST",
                headers={"Content-Type": "application/x-protobuf", **headers})
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    statuses.append(answer.status)
            except urllib.error.HTTPError as refused:
                statuses.append(refused.code)
                assert refused.headers["WWW-Authenticate"] == 'Bearer realm="telemetry-orm"'
    finally:
        status, _, err = stop(process)

    assert statuses == [401, 200]
    assert status == 0, err


def post(port: int, body: bytes) -> int:
    """``body`` posted to ``/v1/logs``; the status answered."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/logs", data=body,
                                     method="POST",
                                     headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def test_max_records_bounds_the_records_of_a_request(tmp_path: Path) -> None:
    events = [api_request(request_id=f"m{i}") for i in range(3)]
    process, port = start(tmp_path, "--max-records", "2")
    try:
        statuses = [post(port, logs_request(events).SerializeToString()),
                    post(port, logs_request(events[:2]).SerializeToString())]
    finally:
        status, _, err = stop(process)

    assert statuses == [413, 200]
    assert status == 0, err
    assert [row[0] for row in rows(tmp_path / "otlp.db")] == ["otlp.log.request:m0",
                                                              "otlp.log.request:m1"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_without_a_token_only_loopback_is_allowed(tmp_path: Path, host: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TELEMETRY_SERVE_TOKEN"}

    done = subprocess.run([sys.executable, "-m", "telemetry_orm", "serve", "--host", host,
                           "--port", "0", "--db", str(tmp_path / "otlp.db")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)

    assert done.returncode == 2
    assert f"refusing to listen on {host} without a token" in done.stderr
    assert not (tmp_path / "otlp.db").exists()


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "utf8").write_text("pässwörd\n", encoding="utf-8")
    for args, message in ((["--token-file", "empty"], "empty holds no token"),
                          (["--token-file", "utf8"], "--token-file: the token of utf8 holds "
                           "'ä': a token must be printable ASCII"),
                          (["--label-attribute", "Team"], "'Team' is not a label name"),
                          (["--port", "70000"], "must be a port from 0 to 65535"),
                          (["--max-body", "0"], "must be a whole number >= 1"),
                          (["--max-records", "x"], "must be a whole number >= 1")):
        done = subprocess.run([sys.executable, "-m", "telemetry_orm", "serve", "--port", "0",
                               "--db", str(tmp_path / "otlp.db"), *args],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)


def test_a_token_of_the_environment_that_is_not_ascii_exits_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "telemetry_orm", "serve", "--port", "0",
                           "--db", str(tmp_path / "otlp.db")], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path,
                          env={**os.environ, "TELEMETRY_SERVE_TOKEN": "s3crét"})

    assert done.returncode == 2
    assert "$TELEMETRY_SERVE_TOKEN: the token holds 'é': a token must be printable ASCII" \
        in done.stderr, done.stderr
    assert not (tmp_path / "otlp.db").exists()


def test_which_hosts_are_loopback() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "[::1]",
                                        "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "", "192.0.2.10", "10.1.2.3"))
