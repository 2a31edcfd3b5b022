"""A bounded -wal file while writes keep coming: once a reader that held an
old snapshot lets go, the file is back within ``journal_size_limit`` after a
bounded number of rows, for every way of writing, and no write copies the
long log into the database file inside the caller's call.

A plain ``sqlite3`` reader holds a snapshot while 6,000 rows grow the log
past 120 MB. It lets go, then the writes go on back to back. For every call,
the bytes its thread wrote are read from Linux's per-thread I/O counters
(unlike a clock, they do not depend on the machine's load), and the -wal
file's size right after it.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import pytest
import workers

from telemetry_orm import create_telemetry_store
from telemetry_orm.backends.sqlite import JOURNAL_SIZE_LIMIT

SPAWN = multiprocessing.get_context("spawn")

#: Rows recorded while the reader holds its snapshot (one new database page
#: each, see :func:`workers.page_entry`): a log of about 150 MB.
HOLD = 6000
#: Rows recorded after it let go, one per call (ordinary rows), and how many
#: of them at most until the file is back within the limit (here 2,900-3,400:
#: about the time the helper takes to copy the log, and a few short passes).
AFTER = 16_000
BOUND = 8000
#: The same with ``record_many()`` of 100 rows, which writes rows about seven
#: times as fast (back within the limit after 10,000-27,000 here).
AFTER_MANY = 120_000
BOUND_MANY = 50_000
#: Most bytes a call may write before the file is back within the limit. A
#: row writes about 17 KB to the log, a batch of 100 about 50 KB, and the call
#: that restarts the log copies its last pages (at most a few hundred KB
#: here). Copying the whole log inside a commit writes the 6,000 pages its
#: rows changed, 24 MB.
CALL_WRITES = 8 * 1024 * 1024

Timed = List[Tuple[float, int, int]]

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/thread-self/io"),
                                reason="needs Linux's per-thread I/O counters")


@pytest.fixture
def reader(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection holding a snapshot of the (new, empty) file."""
    create_telemetry_store(db_path).close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("SELECT * FROM executions LIMIT 1").fetchall()
    yield conn
    conn.close()


def let_go(reader: sqlite3.Connection, db_path: Path) -> None:
    assert Path(f"{db_path}-wal").stat().st_size > 120 * 1024 * 1024
    reader.execute("COMMIT")
    reader.close()


def check_catch_up(timed: Timed, rows_per_call: int, db_path: Path, rows: int,
                   bound: int) -> None:
    """From the calls after the reader let go, in the order they returned:
    the file is back within the limit after at most ``bound`` rows, and if it
    passes the limit again later (several processes writing back to back
    can keep a commit's own checkpoint from restarting the log), it is back
    within as many; no call while it is over the limit writes more than
    :data:`CALL_WRITES`. The witness sees every row, in a sound file."""
    timed = sorted(timed)
    over: List[List[int]] = []  # runs of calls that leave the file over the limit
    for n, (_, _, size) in enumerate(timed):
        if size > JOURNAL_SIZE_LIMIT:
            if not over or over[-1][-1] != n - 1:
                over.append([])
            over[-1].append(n)
    assert over and over[0][0] == 0
    longest = max(len(run) for run in over) * rows_per_call
    assert over[-1][-1] < len(timed) - 1, f"still over the limit: {timed[-1][2]:,} bytes"
    assert longest <= bound, f"over the limit for {longest} rows in a row"
    heavy = [(n * rows_per_call, timed[n][1] // 2**20)
             for run in over for n in run if timed[n][1] > CALL_WRITES]
    assert heavy == [], "calls that copied the log themselves (row, MiB written)"
    witness = sqlite3.connect(db_path)
    try:
        assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == rows
        assert witness.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        witness.close()


def test_one_thread_recording(db_path: Path, reader: sqlite3.Connection) -> None:
    store = create_telemetry_store(db_path)
    for n in range(HOLD):
        store.record(workers.page_entry("held/back", n))
    let_go(reader, db_path)
    timed = workers.timed_calls(store, f"{db_path}-wal", AFTER, 1)
    store.close()
    check_catch_up(timed, 1, db_path, HOLD + AFTER, BOUND)


def test_four_threads_recording_on_one_store(db_path: Path, reader: sqlite3.Connection) -> None:
    store = create_telemetry_store(db_path)
    timed: Timed = []

    def hold(rows: int) -> None:
        for n in range(rows):
            store.record(workers.page_entry("held/back", n))

    def write(rows: int) -> None:
        timed.extend(workers.timed_calls(store, f"{db_path}-wal", rows, 1))

    def in_four_threads(target: Callable[[int], None], rows: int) -> None:
        threads = [threading.Thread(target=target, args=(rows // 4,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    in_four_threads(hold, HOLD)
    let_go(reader, db_path)
    in_four_threads(write, AFTER)
    store.close()
    assert len(timed) == AFTER
    check_catch_up(timed, 1, db_path, HOLD + AFTER, BOUND)


def test_four_processes_each_with_a_store(db_path: Path, reader: sqlite3.Connection) -> None:
    held, go = SPAWN.Barrier(5), SPAWN.Barrier(5)
    results = SPAWN.Queue()
    children = [SPAWN.Process(target=workers.record_through_a_reader,
                              args=(str(db_path), HOLD // 4, AFTER // 4, held, go, results))
                for _ in range(4)]
    for child in children:
        child.start()
    try:
        held.wait(timeout=120)
        let_go(reader, db_path)
        go.wait(timeout=10)
        reports = [results.get(timeout=120) for _ in children]
    finally:
        for child in children:
            child.join(timeout=60)
    assert [error for _, error in reports] == [None] * 4
    timed = [call for calls, _ in reports for call in calls]
    check_catch_up(timed, 1, db_path, HOLD + AFTER, BOUND)


def test_record_many_batches_of_100(db_path: Path, reader: sqlite3.Connection) -> None:
    store = create_telemetry_store(db_path)
    for n in range(HOLD):
        store.record(workers.page_entry("held/back", n))
    let_go(reader, db_path)
    timed = workers.timed_calls(store, f"{db_path}-wal", AFTER_MANY // 100, 100)
    store.close()
    check_catch_up(timed, 100, db_path, HOLD + AFTER_MANY, BOUND_MANY)
