"""Exactly once across a crash: several processes export through the SDK's
OTLP log exporter while ``telemetry-orm serve`` is killed with SIGKILL and
started again on the same port; the exporters' own retries leave every
record stored once."""

from __future__ import annotations

import select
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from otlp_support import start, stop

pytestmark = pytest.mark.slow

EXPORTERS = 4
BATCHES = 30
PER_BATCH = 25

# One exporter process: BATCHES batches of Claude Code events, each sent
# with the exporter's own retries (timeout 120 s), counting the retries it
# logs; exit 1 if a batch is given up.
EXPORTER = textwrap.dedent("""
    import logging, sys
    sys.path.insert(0, sys.argv[1])
    from otlp_support import api_request, log_records
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs.export import LogRecordExportResult

    class Retries(logging.Handler):
        count = 0
        def emit(self, record):
            if "retrying" in record.getMessage():
                Retries.count += 1

    logging.getLogger("opentelemetry").addHandler(Retries())
    name, port, batches, size = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs", timeout=120)
    for b in range(batches):
        records = log_records([api_request(request_id=f"{name}-{b}-{i}")
                               for i in range(size)])
        if exporter.export(records) != LogRecordExportResult.SUCCESS:
            print(f"batch {b} given up", flush=True)
            sys.exit(1)
        print(f"sent {b}", flush=True)
    exporter.shutdown()
    print(f"retries {Retries.count}", flush=True)
    """)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stored(path: Path) -> int:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM executions").fetchone()[0])
    except sqlite3.OperationalError:  # no table yet
        return 0
    finally:
        conn.close()


def test_a_server_killed_while_exporters_stream_stores_every_record_once(
        tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    port = free_port()
    server, _ = start(tmp_path, port=port)
    tests = str(Path(__file__).resolve().parent)
    exporters: List[subprocess.Popen[str]] = [
        subprocess.Popen([sys.executable, "-c", EXPORTER, tests, f"p{n}", str(port),
                          str(BATCHES), str(PER_BATCH)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(EXPORTERS)]
    total = EXPORTERS * BATCHES * PER_BATCH
    db = tmp_path / "otlp.db"
    early: Dict[Any, List[str]] = {e.stdout: [] for e in exporters}
    try:
        # Kill once a fifth of the batches were answered 200, the exporters
        # still sending: each prints a line per batch answered.
        deadline = time.monotonic() + 120
        while sum(len(lines) for lines in early.values()) < EXPORTERS * BATCHES // 5:
            ready, _, _ = select.select(list(early), [], [], deadline - time.monotonic())
            assert ready, "the exporters sent too little in 120 s"
            for pipe in ready:
                line = pipe.readline()
                assert line.startswith("sent "), line
                early[pipe].append(line)
        server.send_signal(signal.SIGKILL)
        server.communicate(timeout=60)
        at_kill = stored(db)
        assert at_kill < total
        server, _ = start(tmp_path, port=port)
        outputs = [e.communicate(timeout=600) for e in exporters]
    finally:
        for e in exporters:
            if e.poll() is None:
                e.kill()
                e.communicate()
        status, _, err = stop(server)

    assert status == 0, err
    assert [e.returncode for e in exporters] == [0] * EXPORTERS, [o[1][-2000:] for o in outputs]
    retries = sum(int(o[0].split("retries ")[1]) for o in outputs)
    answered = sum(len(lines) for lines in early.values()) + sum(
        o[0].count("sent ") for o in outputs)
    assert answered == EXPORTERS * BATCHES
    conn = sqlite3.connect(db)
    try:
        keys = [row[0] for row in conn.execute("SELECT key FROM telemetry_orm_keys")]
        rows = int(conn.execute("SELECT count(*) FROM executions").fetchone()[0])
    finally:
        conn.close()
    expected = {f"otlp.log.request:p{n}-{b}-{i}" for n in range(EXPORTERS)
                for b in range(BATCHES) for i in range(PER_BATCH)}
    assert rows == len(keys) == total
    assert set(keys) == expected
    assert retries > 0  # the kill was felt, and the exporters' retries carried on
    print(f"kill and retry: {total:,} records sent by {EXPORTERS} exporters, {at_kill:,} "
          f"stored when the server was killed, {rows:,} stored in the end, "
          f"{rows - len(set(keys)):,} duplicates, {retries} retries logged by the exporters")
