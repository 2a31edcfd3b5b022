"""Reliability: many processes on one file, crashes, busy locks, retention
that never stalls a writer, a bounded -wal file, fork and close races.

Every check reads the file through a plain ``sqlite3`` connection.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Set

import pytest
import workers
from support import FIXED_NOW, make_seed_database, minimal

import telemetry_orm
from telemetry_orm import (
    PeeweeTelemetryStore,
    StoreBusyError,
    StoreClosedError,
    create_telemetry_store,
)
from telemetry_orm.backends.base import PURGE_CHUNK
from telemetry_orm.backends.sqlite_purge import PURGE_CHUNK_MAX

SPAWN = multiprocessing.get_context("spawn")
MiB = 1024 * 1024


# Rows are backdated from a fixed instant that the stores take as "now".
pytestmark = pytest.mark.usefixtures("pinned_clock")

def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def ids_in(path: Path) -> Set[int]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM executions")}
    finally:
        conn.close()


def wal_size(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def insert_backdated(path: Path, count: int, days_ago: int, repo: str = "old/repo") -> None:
    """``count`` rows whose created_at is ``days_ago`` days before the
    pinned "now" (:data:`support.FIXED_NOW`), written raw."""
    now = FIXED_NOW.strftime("%Y-%m-%d %H:%M:%S")
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO executions (created_at, repo, event_type, model, conclusion,"
            " delivery_id) VALUES (datetime(?, ?), ?, 'push', 'm', 'success', ?)",
            ((now, f"-{days_ago} days", repo, f"{repo}#{i}") for i in range(count)),
        )
    conn.close()


def child_env() -> Dict[str, str]:
    """Environment for a ``sys.executable`` child that imports this package
    and the test helpers."""
    paths = [str(Path(telemetry_orm.__file__).resolve().parents[1]), str(Path(__file__).parent)]
    old = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths + ([old] if old else [])))


def run_workers(target: Callable[..., None], args_for: Callable[[int], tuple],
                processes: int) -> List[Any]:
    """Start ``processes`` spawn children on ``target`` sharing a barrier and
    a result queue; return one result per child."""
    start = SPAWN.Barrier(processes)
    results = SPAWN.Queue()
    children = [SPAWN.Process(target=target, args=(*args_for(n), start, results))
                for n in range(processes)]
    for child in children:
        child.start()
    try:
        collected = [results.get(timeout=120) for _ in children]
    finally:
        for child in children:
            child.join(timeout=60)
    assert [child.exitcode for child in children] == [0] * processes
    return collected


# -- 1. many processes, one file ---------------------------------------------------


@pytest.mark.slow
def test_four_processes_writing_one_new_file_lose_no_row(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    per_process = 1500
    results = run_workers(workers.record_rows,
                          lambda n: (str(path), n, per_process), processes=4)

    assert [error for _, _, error in results] == [None] * 4
    returned = {row_id for _, ids, _ in results for row_id in ids}
    assert len(returned) == 4 * per_process
    conn = sqlite3.connect(path)
    counts = dict(conn.execute("SELECT repo, COUNT(DISTINCT delivery_id) FROM executions "
                               "GROUP BY repo"))
    conn.close()
    assert counts == {f"worker{n}/repo": per_process for n in range(4)}
    assert ids_in(path) == returned
    assert integrity(path) == "ok"


@pytest.mark.slow
def test_processes_setting_up_the_same_files_at_the_same_moment_all_succeed(
        tmp_path: Path) -> None:
    # Half the files are new, half are old narrow tables that need upgrading;
    # for each file every process opens it right after the same barrier.
    names = []
    for i in range(12):
        name = f"f{i}.db"
        if i % 2:
            make_seed_database(tmp_path / name, rows=2)
        names.append(name)
    results = run_workers(workers.open_each, lambda n: (str(tmp_path), n, names), processes=4)

    assert [errors for _, errors in results] == [[]] * 4
    for i, name in enumerate(names):
        conn = sqlite3.connect(tmp_path / name)
        assert conn.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 4 + 2 * (i % 2)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        conn.close()
        assert integrity(tmp_path / name) == "ok"


# -- 2. crash safety ---------------------------------------------------------------


@pytest.mark.slow
def test_writer_killed_at_random_moments_loses_nothing_it_returned(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    returned: Set[int] = set()
    script = str(Path(workers.__file__))
    for round_ in range(12):
        child = subprocess.Popen([sys.executable, script, "record-until-killed", str(path)],
                                 stdout=subprocess.PIPE, env=child_env())
        assert child.stdout is not None
        # Let it return a random number of rows, then kill it wherever it is.
        for _ in range(rng.randint(1, 400)):
            line = child.stdout.readline()
            if not line:
                break
            returned.add(int(line))
        child.send_signal(signal.SIGKILL)
        # Ids it printed before dying are still in the pipe.
        returned.update(int(line) for line in child.stdout.read().split())
        child.stdout.close()
        assert child.wait() == -signal.SIGKILL, f"round {round_} (seed {seed})"

        assert integrity(path) == "ok", f"round {round_} (seed {seed})"
        missing = returned - ids_in(path)
        assert not missing, f"round {round_} (seed {seed}): lost {sorted(missing)[:10]}"
    assert len(returned) >= 12
    with create_telemetry_store(path) as store:
        store.record(minimal())


# -- 3. retention in bounded chunks ------------------------------------------------


def test_purge_deletes_in_short_transactions_of_at_most_a_chunk(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    expired = 2 * PURGE_CHUNK + 123
    insert_backdated(db_path, expired, days_ago=100)
    insert_backdated(db_path, 50, days_ago=1, repo="recent/repo")
    store.rollup()
    witness = sqlite3.connect(db_path)
    statements: List[str] = []
    remaining: List[int] = []

    def trace(sql: str) -> None:
        statements.append(sql)
        if sql.startswith("BEGIN"):
            # Runs before the statement: every earlier transaction is
            # committed, and the witness sees what is left.
            remaining.append(witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0])

    store.database.connection().set_trace_callback(trace)
    assert store.purge_older_than(90) == expired
    store.database.connection().set_trace_callback(None)
    remaining.append(witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0])
    witness.close()

    transactions: List[List[str]] = []
    current = None
    for sql in statements:
        if sql.startswith("BEGIN"):
            assert sql == "BEGIN IMMEDIATE" and current is None
            current = []
        elif sql == "COMMIT":
            assert current is not None
            transactions.append(current)
            current = None
        elif current is not None:
            current.append(sql)
        else:
            assert not sql.startswith("DELETE"), "a DELETE outside a short transaction"
    assert current is None
    deleted = [a - b for a, b in zip(remaining, remaining[1:], strict=False)]
    assert len(deleted) == len(transactions)
    # Each chunk: the rollups' look at which rows they count, the fold of
    # those they do not (none here: all are counted above), the cutoff
    # remembered, then one DELETE.
    chunks = [(t, n) for t, n in zip(transactions, deleted, strict=True)
              if any(s.startswith("DELETE") for s in t)]
    for statements_of_chunk, _ in chunks:
        *before, last = statements_of_chunk
        assert last.startswith("DELETE FROM \"executions\"")
        assert all(s.startswith(("SELECT", 'INSERT INTO "telemetry_orm_rollup_state"'))
                   for s in before), before
    # The other transactions only create the rollup tables.
    others = [t for t, n in zip(transactions, deleted, strict=True) if n == 0]
    assert all(s.startswith("CREATE") for t in others for s in t)
    deleted_per_transaction = [n for _, n in chunks]
    assert len(deleted_per_transaction) == len(chunks) >= 2
    # The first chunk has the default size; the others are sized from the
    # time their predecessor held the lock, within bounds.
    assert deleted_per_transaction[0] == PURGE_CHUNK
    assert all(0 < n <= PURGE_CHUNK_MAX for n in deleted_per_transaction)
    assert sum(deleted_per_transaction) == expired
    assert remaining[-1] == 50


def test_purge_returns_the_total_over_all_chunks(store: PeeweeTelemetryStore,
                                                 db_path: Path) -> None:
    insert_backdated(db_path, PURGE_CHUNK * 3, days_ago=91)
    assert store.count_older_than(90) == PURGE_CHUNK * 3
    assert store.purge_older_than(90) == PURGE_CHUNK * 3
    assert store.purge_older_than(90) == 0


def test_big_purge_leaves_an_empty_wal_file(store: PeeweeTelemetryStore, db_path: Path) -> None:
    insert_backdated(db_path, 3 * PURGE_CHUNK, days_ago=100)
    store.checkpoint()
    assert store.purge_older_than(90) == 3 * PURGE_CHUNK
    assert wal_size(db_path) == 0


def test_purge_does_not_wait_for_a_reader_holding_an_old_snapshot(db_path: Path) -> None:
    # The TRUNCATE checkpoint after a big purge holds the write lock while it
    # waits for readers; it must give up quickly, not after the busy timeout.
    store = create_telemetry_store(db_path, busy_timeout=120_000)
    insert_backdated(db_path, 2 * PURGE_CHUNK, days_ago=100)
    reader = sqlite3.connect(db_path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM executions").fetchone()
    outcome: List[Any] = []
    purge = threading.Thread(target=lambda: outcome.append(store.purge_older_than(90)))
    purge.start()
    purge.join(timeout=60)
    try:
        assert not purge.is_alive(), "purge waited for the reader"
        assert outcome == [2 * PURGE_CHUNK]
        # ... and the reader still sees its snapshot.
        assert reader.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 2 * PURGE_CHUNK
    finally:
        reader.execute("COMMIT")
        reader.close()
        purge.join()
        store.close()


@pytest.mark.slow
def test_writer_in_another_process_never_fails_while_many_rows_expire(
        tmp_path: Path) -> None:
    # The writer gives up after 1 s; one DELETE of these rows takes longer.
    path = tmp_path / "retention.db"
    create_telemetry_store(path).close()
    expired = 200_000
    insert_backdated(path, expired, days_ago=100)
    insert_backdated(path, 10, days_ago=1, repo="recent/repo")
    ready, stop, results = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    writer = SPAWN.Process(target=workers.record_paced,
                           args=(str(path), 1000, ready, stop, results))
    writer.start()
    store = create_telemetry_store(path)
    try:
        assert ready.wait(60)
        deleted = store.purge_older_than(90)
        wal_after = wal_size(path)
    finally:
        stop.set()
        ids, error = results.get(timeout=60)
        writer.join(timeout=60)
        store.close()

    assert error is None
    assert deleted == expired
    assert ids and set(ids) <= ids_in(path)
    assert len(ids_in(path)) == 10 + len(ids)
    assert wal_after < 1 * MiB
    assert integrity(path) == "ok"


# -- 4. dry run --------------------------------------------------------------------


def test_count_older_than_deletes_nothing_and_matches_the_purge(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    insert_backdated(db_path, 7, days_ago=40)
    insert_backdated(db_path, 3, days_ago=10, repo="newer/repo")
    witness = sqlite3.connect(db_path)
    version = witness.execute("PRAGMA data_version").fetchone()[0]

    assert store.count_older_than(30) == 7
    assert store.count_older_than(5) == 10
    assert store.count_older_than(50) == 0

    assert witness.execute("PRAGMA data_version").fetchone()[0] == version
    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 10
    assert store.purge_older_than(30) == 7
    witness.close()


# -- 7. bounded -wal ---------------------------------------------------------------


def test_default_journal_size_limit_is_64_mib(store: PeeweeTelemetryStore,
                                               db_path: Path) -> None:
    conn = store.database.connection()
    assert conn.execute("PRAGMA journal_size_limit").fetchone()[0] == 64 * MiB


def test_wal_shrinks_back_to_the_limit_once_a_long_reader_lets_go(db_path: Path) -> None:
    limit = 1 * MiB
    store = create_telemetry_store(db_path, journal_size_limit=limit)
    store.record(minimal())
    reader = sqlite3.connect(db_path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM executions").fetchone()
    try:
        for n in range(400):
            store.record(minimal(session_id=f"{n}:" + "x" * 10_000))
        store.checkpoint()
        # The reader's snapshot keeps every frame in the log.
        grown = wal_size(db_path)
        assert grown > 3 * limit
    finally:
        reader.execute("COMMIT")
        reader.close()

    sizes = []
    for _ in range(3):
        store.record(minimal())
        sizes.append(wal_size(db_path))
    store.close()
    assert sizes[-1] <= limit, sizes
    assert len(ids_in(db_path)) == 404
    assert integrity(db_path) == "ok"


# -- 8. busy is an error, not a loss -----------------------------------------------


def test_record_raises_busy_when_the_write_lock_is_held_and_keeps_working(
        db_path: Path) -> None:
    store = create_telemetry_store(db_path, busy_timeout=100)
    first = store.record(minimal(repo="before/lock"))
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusyError) as caught:
            store.record(minimal(repo="during/lock"))
        with pytest.raises(StoreBusyError):
            store.purge_older_than(0)
        # Reading is not blocked by a writer.
        assert store.count_older_than(1) == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    message = str(caught.value)
    assert "busy" in message and str(db_path) in message
    after = store.record(minimal(repo="after/lock"))
    store.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT id, repo FROM executions ORDER BY id").fetchall() == [
        (first, "before/lock"), (after, "after/lock")]
    conn.close()


def test_busy_timeout_defaults_to_5000_ms_and_is_configurable(db_path: Path) -> None:
    with create_telemetry_store(db_path) as store:
        conn = store.database.connection()
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    with create_telemetry_store(db_path, busy_timeout=250) as store:
        conn = store.database.connection()
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 250


@pytest.mark.parametrize("name", ["busy_timeout", "journal_size_limit"])
@pytest.mark.parametrize("value", [-1, 1.5, "100", True, None])
def test_refuses_bad_tuning_values(db_path: Path, name: str, value: object) -> None:
    with pytest.raises(telemetry_orm.TelemetryValidationError) as caught:
        create_telemetry_store(db_path, **{name: value})  # type: ignore[arg-type]
    assert caught.value.field == name
    assert not db_path.exists()


def test_opening_a_file_to_upgrade_while_locked_raises_busy_and_changes_nothing(
        tmp_path: Path) -> None:
    path = tmp_path / "ts.db"
    make_seed_database(path, rows=2)
    before = path.read_bytes()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusyError, match="busy") as caught:
            create_telemetry_store(path, busy_timeout=100)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert str(path) in str(caught.value)
    assert path.read_bytes() == before
    with create_telemetry_store(path) as store:
        assert store.record(minimal()) == 3


# -- 9. fork -----------------------------------------------------------------------


def _fork(child: Callable[[], None]) -> int:
    """Fork; run ``child`` in the child and leave with its outcome (1 on an
    exception, after printing it). Returns the child's pid."""
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads; the
        # store is built for it, that is what is tested here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            child()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_store_opened_before_fork_works_in_parent_and_child(db_path: Path) -> None:
    store = create_telemetry_store(db_path)
    store.record(minimal(repo="before/fork"))
    inherited = store.database.connection()
    read_end, write_end = os.pipe()

    def child() -> None:
        os.close(read_end)
        assert store.database.connection() is not inherited
        ids = [store.record(minimal(repo="child/repo", num_turns=n)) for n in range(300)]
        os.write(write_end, " ".join(map(str, ids)).encode())
        store.close()

    pid = _fork(child)
    os.close(write_end)
    parent_ids = [store.record(minimal(repo="parent/repo", num_turns=n)) for n in range(300)]
    with os.fdopen(read_end, "rb") as reader:
        child_ids = [int(x) for x in reader.read().split()]
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    parent_ids.append(store.record(minimal(repo="parent/repo", num_turns=300)))
    store.close()

    assert len(child_ids) == 300 and not set(child_ids) & set(parent_ids)
    conn = sqlite3.connect(db_path)
    counts = dict(conn.execute("SELECT repo, COUNT(*) FROM executions GROUP BY repo"))
    conn.close()
    assert counts == {"before/fork": 1, "child/repo": 300, "parent/repo": 301}
    assert ids_in(db_path) >= set(child_ids) | set(parent_ids)
    assert integrity(db_path) == "ok"


class _Signal(logging.Handler):
    """Sets an event when a log message contains some text."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_waits_for_a_transaction_in_progress_so_the_child_can_write(
        db_path: Path) -> None:
    store = create_telemetry_store(db_path, busy_timeout=2000)
    insert_backdated(db_path, 3, days_ago=100)
    in_transaction, go_on = threading.Event(), threading.Event()

    def purge_in_thread() -> None:
        def pause_inside(sql: str) -> None:
            if sql.startswith("DELETE"):
                in_transaction.set()
                go_on.wait(30)

        store.database.connection().set_trace_callback(pause_inside)
        store.purge_older_than(90)

    # This thread stops inside a purge transaction, holding the write lock.
    purger = threading.Thread(target=purge_in_thread)
    purger.start()
    assert in_transaction.wait(30)

    read_end, write_end = os.pipe()

    def child() -> None:
        os.close(read_end)
        store.record(minimal(repo="child/repo"))
        store.close()
        os.write(write_end, b"done")

    logger = logging.getLogger("telemetry_orm")
    signal_ = _Signal("fork() waits")
    logger.addHandler(signal_)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    pids: List[int] = []
    forker = threading.Thread(target=lambda: pids.append(_fork(child)))
    try:
        forker.start()
        waited = signal_.seen.wait(30)
    finally:
        go_on.set()
        forker.join()
        purger.join()
        logger.removeHandler(signal_)
        logger.setLevel(old_level)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], 60)
    if not ready:  # pragma: no cover - the failure this test exists for
        os.kill(pids[0], signal.SIGKILL)
    os.close(read_end)
    _, status = os.waitpid(pids[0], 0)
    store.record(minimal(repo="parent/repo"))
    store.close()

    assert waited, "fork() did not wait for the transaction in progress"
    assert ready and os.waitstatus_to_exitcode(status) == 0
    conn = sqlite3.connect(db_path)
    assert sorted(r[0] for r in conn.execute("SELECT repo FROM executions")) == [
        "child/repo", "parent/repo"]
    conn.close()
    assert integrity(db_path) == "ok"


# -- 10. close races ---------------------------------------------------------------


def test_close_waits_for_a_read_in_another_thread_and_then_refuses_new_ones(
        db_path: Path) -> None:
    # A read runs without the store lock; closing its connection under it
    # would break it ("bad parameter or other API misuse").
    store = create_telemetry_store(db_path)
    store.record(minimal())
    inside, go_on, closed = threading.Event(), threading.Event(), threading.Event()
    counted: List[Any] = []

    def read() -> None:
        with store.reading() as database:
            inside.set()
            go_on.wait(30)
            counted.append(database.execute_sql("SELECT COUNT(*) FROM executions").fetchone())

    def close() -> None:
        store.close()
        closed.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert inside.wait(30)
    closer = threading.Thread(target=close)
    closer.start()
    # close() has refused new reads but waits for the one running.
    assert not closed.wait(0.3)
    with pytest.raises(StoreClosedError), store.reading():
        pass
    go_on.set()
    reader.join(30)
    closer.join(30)
    assert closed.is_set() and counted == [(1,)]
    # A thread that closes the store inside its own read is not kept waiting.
    other = create_telemetry_store(db_path)
    with other.reading():
        other.close()
    assert other.closed


@pytest.mark.parametrize("round_", range(3))
def test_close_while_threads_record_either_completes_or_raises_closed(
        db_path: Path, round_: int) -> None:
    store = create_telemetry_store(db_path)
    returned: List[int] = []
    unexpected: List[BaseException] = []
    closed_seen: List[str] = []
    started = [threading.Event() for _ in range(3)]

    def record(n: int) -> None:
        try:
            for count in itertools.count():
                returned.append(store.record(minimal(repo=f"t{n}/r")))
                if count == 20:
                    started[n].set()
        except StoreClosedError:
            closed_seen.append(f"t{n}")
        except BaseException as exc:  # pragma: no cover - reported below
            unexpected.append(exc)
        finally:
            started[n].set()

    def maintain() -> None:
        try:
            while True:
                store.count_older_than(1)
                store.purge_older_than(365)
                store.checkpoint()
        except StoreClosedError:
            closed_seen.append("maintenance")
        except BaseException as exc:  # pragma: no cover - reported below
            unexpected.append(exc)

    threads = [threading.Thread(target=record, args=(n,)) for n in range(3)]
    threads.append(threading.Thread(target=maintain))
    for t in threads:
        t.start()
    for event in started:
        event.wait()
    store.close()
    for t in threads:
        t.join()

    assert unexpected == []
    assert sorted(closed_seen) == ["maintenance", "t0", "t1", "t2"]
    assert ids_in(db_path) == set(returned)
    assert integrity(db_path) == "ok"
    with pytest.raises(StoreClosedError):
        store.record(minimal())


# -- a committed write is reported as written --------------------------------------


def test_a_failing_automatic_checkpoint_does_not_fail_the_committed_writes(
        db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = create_telemetry_store(db_path)
    store.checkpoint_every = 3

    def broken(**options: Any) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    store.checkpoint = broken  # type: ignore[method-assign]
    ids = [store.record(minimal(num_turns=n)) for n in range(3)]
    ids += store.record_many([minimal(num_turns=n) for n in range(3, 6)])
    store.close()

    assert ids_in(db_path) == set(ids) and len(ids) == 6
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "automatic checkpoint failed: can't create new thread at interpreter shutdown"] * 2
