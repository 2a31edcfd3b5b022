"""Background recording: validate in the caller, queue, commit in batches."""

from __future__ import annotations

import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from support import minimal

from telemetry_orm import (
    BackgroundRecorder,
    BackgroundWriteError,
    DatabaseError,
    PeeweeTelemetryStore,
    StoreClosedError,
    TelemetryRecord,
    TelemetryValidationError,
    create_telemetry_store,
)
from telemetry_orm.backends import sqlite_checkpoint, sqlite_wal
from telemetry_orm.factories import TelemetryRecordFactory

#: Long enough that nothing is written unless a batch fills or someone flushes.
NEVER = 3600.0

#: Generous bound on waiting for another thread, so a broken recorder fails
#: the test instead of hanging it. Passing tests never wait this long.
PATIENCE = 30.0


def count(witness: sqlite3.Connection) -> int:
    return int(witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0])


def delivery_ids(witness: sqlite3.Connection) -> List[str]:
    return [row[0] for row in witness.execute("SELECT delivery_id FROM executions ORDER BY id")]


@pytest.fixture
def recorder(store: PeeweeTelemetryStore) -> Iterator[BackgroundRecorder]:
    r = store.background(max_batch=500, max_delay=NEVER)
    yield r
    r.close()


@pytest.fixture
def refuse_inserts(witness: sqlite3.Connection) -> Iterator[None]:
    """Make every INSERT fail until the test ends (or drops the trigger)."""
    witness.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON executions "
        "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    witness.commit()
    yield


class _LogEvent(logging.Handler):
    """Sets an event when a log message containing ``text`` is emitted, and
    keeps those messages."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = threading.Event()
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.text in message:
            self.messages.append(message)
            self.seen.set()


@pytest.fixture
def batches() -> Iterator[_LogEvent]:
    """The writer's "background wrote N executions" messages, as they come."""
    handler = _LogEvent("background wrote")
    logger = logging.getLogger("telemetry_orm")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def _sizes(batches: _LogEvent) -> List[int]:
    return [int(m.split()[2]) for m in batches.messages]


def test_record_returns_at_once_and_flush_commits(
    recorder: BackgroundRecorder, witness: sqlite3.Connection
) -> None:
    for i in range(3):
        recorder.record(minimal(delivery_id=str(i)))

    # Neither a full batch nor the delay has come: nothing is written yet.
    assert count(witness) == 0
    assert recorder.pending == 3
    recorder.flush()

    assert delivery_ids(witness) == ["0", "1", "2"]
    assert recorder.pending == 0


def test_rows_are_committed_in_the_order_recorded_across_batches(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection, batches: _LogEvent
) -> None:
    records = TelemetryRecordFactory.build_batch(95)

    with store.background(max_batch=10, max_delay=NEVER) as recorder:
        for record in records:
            recorder.record(record)
        recorder.flush()

    assert delivery_ids(witness) == [r.delivery_id for r in records]
    assert sum(_sizes(batches)) == 95
    assert max(_sizes(batches)) <= 10
    assert len(_sizes(batches)) >= 10


def test_threads_recording_at_once_lose_nothing_and_keep_their_own_order(
    recorder: BackgroundRecorder, witness: sqlite3.Connection
) -> None:
    def produce(name: str) -> None:
        for i in range(200):
            recorder.record(minimal(delivery_id=f"{name}-{i:03d}"))

    threads = [threading.Thread(target=produce, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.flush()

    stored = delivery_ids(witness)
    assert len(stored) == 800
    for n in range(4):
        mine = [d for d in stored if d.startswith(f"t{n}-")]
        assert mine == [f"t{n}-{i:03d}" for i in range(200)]


def test_a_bad_entry_is_refused_in_the_caller_and_not_queued(
    recorder: BackgroundRecorder, witness: sqlite3.Connection
) -> None:
    recorder.record(minimal(delivery_id="good"))

    with pytest.raises(TelemetryValidationError) as caught:
        recorder.record(minimal(delivery_id="bad", input_tokens=-5))

    assert caught.value.field == "input_tokens"
    assert recorder.pending == 1
    recorder.flush()
    assert delivery_ids(witness) == ["good"]


def test_a_batch_is_written_without_flush_once_max_delay_has_passed(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection, batches: _LogEvent
) -> None:
    with store.background(max_batch=500, max_delay=0.01) as recorder:
        recorder.record(minimal(delivery_id="late"))
        assert batches.seen.wait(PATIENCE)

        assert delivery_ids(witness) == ["late"]


def test_a_full_batch_is_written_without_flush(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection, batches: _LogEvent
) -> None:
    with store.background(max_batch=5, max_delay=NEVER) as recorder:
        for i in range(5):
            recorder.record(minimal(delivery_id=str(i)))
        assert batches.seen.wait(PATIENCE)

        assert count(witness) == 5
        assert _sizes(batches) == [5]


def test_a_full_queue_blocks_the_caller_until_the_writer_catches_up(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    full = _LogEvent("background queue full")
    logging.getLogger("telemetry_orm").addHandler(full)
    logging.getLogger("telemetry_orm").setLevel(logging.DEBUG)
    recorder = store.background(max_batch=1, max_delay=0, max_queue=2)
    recorded: List[int] = []

    def produce() -> None:
        for i in range(6):
            recorder.record(minimal(delivery_id=str(i)))
            recorded.append(i)

    # Another connection holds the write lock: the writer cannot commit,
    # so at most one record is in flight and two wait in the queue.
    witness.execute("BEGIN IMMEDIATE")
    producer = threading.Thread(target=produce)
    try:
        producer.start()
        assert full.seen.wait(PATIENCE)
        assert producer.is_alive()
        assert len(recorded) <= 3
        assert count(witness) == 0
    finally:
        witness.execute("ROLLBACK")
        producer.join(PATIENCE)
        logging.getLogger("telemetry_orm").removeHandler(full)
        logging.getLogger("telemetry_orm").setLevel(logging.NOTSET)

    recorder.close()
    assert recorded == list(range(6))
    assert delivery_ids(witness) == [str(i) for i in range(6)]


def test_a_failing_batch_is_retried_then_raised_from_flush_with_its_records(
    store: PeeweeTelemetryStore,
    witness: sqlite3.Connection,
    refuse_inserts: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="telemetry_orm")
    records = [TelemetryRecordFactory.build() for _ in range(3)]
    recorder = store.background(max_delay=NEVER, retries=2, retry_delay=0)
    for record in records:
        recorder.record(record)

    with pytest.raises(BackgroundWriteError, match="3 executions could not be written") as caught:
        recorder.flush()

    assert caught.value.records == records
    assert isinstance(caught.value.__cause__, DatabaseError)
    assert "disk says no" in str(caught.value)
    assert count(witness) == 0
    retried = [r for r in caplog.records if r.levelno == logging.WARNING]
    given_up = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage().split(";")[0] for r in retried] == [
        "background write of 3 executions failed (attempt 1 of 3)",
        "background write of 3 executions failed (attempt 2 of 3)",
    ]
    assert len(given_up) == 1 and "disk says no" in given_up[0].getMessage()

    # The error is raised once; the recorder goes on, and the records
    # handed back can be written once the database accepts them again.
    witness.execute("DROP TRIGGER refuse")
    witness.commit()
    recorder.record(minimal(delivery_id="after"))
    recorder.flush()
    store.record_many(caught.value.records)
    recorder.close()
    assert delivery_ids(witness) == ["after"] + [r.delivery_id for r in records]


def test_close_raises_what_could_not_be_written(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection, refuse_inserts: None
) -> None:
    recorder = store.background(max_delay=NEVER, retries=0)
    recorder.record(minimal(delivery_id="lost"))

    with pytest.raises(BackgroundWriteError) as caught:
        recorder.close()

    assert [r.delivery_id for r in caught.value.records] == ["lost"]
    assert recorder.closed
    recorder.close()  # already reported: a second close has nothing to say


def test_close_writes_what_is_queued_and_refuses_more(
    recorder: BackgroundRecorder, witness: sqlite3.Connection
) -> None:
    for i in range(700):
        recorder.record(minimal(delivery_id=str(i)))

    recorder.close()

    assert count(witness) == 700
    with pytest.raises(StoreClosedError):
        recorder.record(minimal())
    recorder.close()
    recorder.flush()


def test_leaving_the_with_block_closes(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    with store.background(max_delay=NEVER) as recorder:
        recorder.record(minimal())

    assert recorder.closed
    assert count(witness) == 1


def test_closing_the_store_closes_its_recorders_first(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    recorder = store.background(max_delay=NEVER)
    recorder.record(minimal())
    recorder.record(minimal())

    store.close()

    assert recorder.closed
    assert count(witness) == 2


def test_closing_the_store_raises_what_its_recorder_could_not_write(
    store: PeeweeTelemetryStore, refuse_inserts: None
) -> None:
    recorder = store.background(max_delay=NEVER, retries=0)
    recorder.record(minimal(delivery_id="lost"))

    with pytest.raises(BackgroundWriteError) as caught:
        store.close()

    assert [r.delivery_id for r in caught.value.records] == ["lost"]
    assert store.closed


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_batch", 0), ("max_queue", 0), ("max_delay", -1), ("max_delay", float("nan")),
     ("retries", -1), ("retry_delay", "soon"), ("max_batch", 2.5)],
)
def test_bad_options_are_named(store: PeeweeTelemetryStore, option: str, value: Any) -> None:
    with pytest.raises(TelemetryValidationError) as caught:
        store.background(**{option: value})

    assert caught.value.field == option


def test_the_recorder_can_be_made_directly(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    with BackgroundRecorder(store, max_delay=NEVER) as recorder:
        recorder.record(TelemetryRecord(**minimal()))

    assert count(witness) == 1


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )


def test_interpreter_exit_writes_what_is_queued(db_path: Path) -> None:
    done = _run_python(f"""
        from telemetry_orm import create_telemetry_store
        store = create_telemetry_store({str(db_path)!r})
        recorder = store.background(max_batch=500, max_delay=3600)
        for i in range(1234):
            recorder.record({{"repo": "acme/api", "event_type": "push", "model": "m",
                             "conclusion": "success", "delivery_id": str(i)}})
        # no flush, no close
    """)

    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(db_path)
    try:
        stored = [row[0] for row in conn.execute("SELECT delivery_id FROM executions ORDER BY id")]
    finally:
        conn.close()
    assert stored == [str(i) for i in range(1234)]


def test_records_that_cannot_be_written_at_exit_are_reported(db_path: Path) -> None:
    done = _run_python(f"""
        from telemetry_orm import create_telemetry_store
        store = create_telemetry_store({str(db_path)!r})
        store.database.execute_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON executions "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
        recorder = store.background(max_delay=3600, retries=0)
        for i in range(7):
            recorder.record({{"repo": "acme/api", "event_type": "push", "model": "m",
                             "conclusion": "success"}})
    """)

    assert done.returncode == 0, done.stderr
    assert "7 executions could not be written" in done.stderr
    assert "disk says no" in done.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_records_with_a_writer_of_its_own(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    recorder = store.background(max_delay=NEVER)
    recorder.record(minimal(delivery_id="parent-before"))
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process that runs threads.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            recorder.record(minimal(delivery_id="child"))
            recorder.close()
            code = 0 if recorder.pending == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    recorder.record(minimal(delivery_id="parent-after"))
    recorder.close()

    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(delivery_ids(witness)) == ["child", "parent-after", "parent-before"]


# -- checkpoints of a long stream -----------------------------------------------


def test_a_long_stream_keeps_the_log_short_and_every_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # The writer thread turns SQLite's automatic checkpoint off for its
    # connection; the log must still be restarted once it grows past the
    # limit, or it would grow for as long as the stream lasts.
    monkeypatch.setattr(sqlite_wal, "LOG_RESTART_PAGES", 64)
    path = tmp_path / "stream.db"
    store = create_telemetry_store(path)
    rows = 6000
    wal_sizes: List[int] = []
    with caplog.at_level(logging.DEBUG, logger="telemetry_orm"), \
            store.background(max_batch=100, max_delay=0.05) as recorder:
        for i in range(rows):
            recorder.record(minimal(repo=f"stream/{i % 7}"))
            if i % 250 == 249:
                wal = Path(f"{path}-wal")
                wal_sizes.append(wal.stat().st_size if wal.exists() else 0)
    restarts = [r for r in caplog.records if r.getMessage().startswith("checkpoint RESTART")]
    assert restarts, "the log was never restarted"
    assert max(wal_sizes) < 2 * 1024 * 1024, wal_sizes
    witness = sqlite3.connect(path)
    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == rows
    assert witness.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    witness.close()
    store.close()


def test_a_reader_holding_an_old_snapshot_does_not_make_the_stream_wait_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # While a reader keeps an old snapshot the log cannot be restarted: a
    # RESTART between two batches would wait for that reader (its busy
    # timeout, 50 ms) every time and give up. It is tried again once it moves on.
    monkeypatch.setattr(sqlite_wal, "LOG_RESTART_PAGES", 64)
    path = tmp_path / "stream.db"
    store = create_telemetry_store(path)
    store.record(minimal())
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 1
    batch = [TelemetryRecord(**minimal()).as_row()] * 200
    writer = store.batch_writer()
    took: List[float] = []
    for _ in range(15):
        started = time.perf_counter()
        writer.write(batch)  # after the first: the upkeep between two batches
        took.append(time.perf_counter() - started)
        assert not store.checkpoint().complete  # the reader holds the log back
    limit = sqlite_checkpoint.TRUNCATE_BUSY_TIMEOUT_MS / 1000 * 0.8
    assert statistics.median(took[1:]) < limit, took
    reader.execute("COMMIT")
    reader.close()
    store.checkpoint()
    writer.write(batch)  # the log restarts between these two batches
    writer.write(batch)
    assert store.checkpoint().logged < 64
    writer.close()
    assert store.model.select().count() == 1 + 17 * 200
    store.close()


def test_a_batch_writer_turns_checkpoints_off_for_its_stream_only(db_path: Path) -> None:
    # The store's hook for a thread that writes batch after batch: SQLite's
    # automatic checkpoint is off on that thread's connection while the
    # stream lasts, and back to its setting afterwards.
    store = create_telemetry_store(db_path)
    seen: List[int] = []

    def autocheckpoint() -> int:
        with store.connection() as conn:
            return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    def stream() -> None:
        writer = store.batch_writer()
        seen.append(autocheckpoint())
        writer.write([TelemetryRecord(**minimal()).as_row()])
        seen.append(autocheckpoint())
        writer.write([TelemetryRecord(**minimal()).as_row()] * 3)
        writer.close()
        seen.append(autocheckpoint())

    thread = threading.Thread(target=stream)
    thread.start()
    thread.join()
    assert seen == [1000, 0, 1000]
    assert autocheckpoint() == 1000  # other threads' connections never changed
    assert store.model.select().count() == 4
    store.close()


def test_the_recorder_writes_through_one_batch_writer_and_closes_it(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = create_telemetry_store(db_path)
    made: List[Any] = []
    original = store.batch_writer

    def spy() -> Any:
        writer = original()
        made.append(writer)
        calls = {"write": 0, "close": 0}
        write, close = writer.write, writer.close

        def counted_write(rows: Any) -> Any:
            calls["write"] += 1
            return write(rows)

        def counted_close() -> None:
            calls["close"] += 1
            close()

        writer.write, writer.close, writer.calls = counted_write, counted_close, calls
        return writer

    monkeypatch.setattr(store, "batch_writer", spy)
    recorder = store.background(max_batch=10, max_delay=0.01)
    for _ in range(25):
        recorder.record(minimal())
    recorder.flush()
    recorder.close()
    assert len(made) == 1
    assert made[0].calls["write"] >= 3 and made[0].calls["close"] == 1
    assert store.model.select().count() == 25
    store.close()


# -- bounded memory and SIGTERM -----------------------------------------------------


def test_a_recorder_that_cannot_write_holds_at_most_max_queue_and_says_so(
        db_path: Path) -> None:
    store = create_telemetry_store(db_path, busy_timeout=0)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # every write of the store fails: busy
    recorder = store.background(max_batch=50, max_delay=0.001, max_queue=200,
                                retries=0, retry_delay=0)
    handed_back: List[TelemetryRecord] = []
    calls, most = 3000, 0
    try:
        for i in range(calls):
            try:
                recorder.record(minimal(delivery_id=f"r-{i}"))
            except BackgroundWriteError as exc:
                handed_back.extend(exc.records)
            most = max(most, recorder.held)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    try:
        recorder.close()
    except BackgroundWriteError as exc:
        handed_back.extend(exc.records)
    store.close()
    assert most <= 200
    assert handed_back, "record() never told the caller that writes fail"
    witness = sqlite3.connect(db_path)
    written = [r[0] for r in witness.execute("SELECT delivery_id FROM executions")]
    witness.close()
    # Every record is either in the database or handed back, exactly once.
    ids = sorted(written + [r.delivery_id for r in handed_back])
    assert ids == sorted(f"r-{i}" for i in range(calls))


SIGTERM_CHILD = textwrap.dedent("""
    import sys, time
    from telemetry_orm import create_telemetry_store, write_queues_on_sigterm
    store = create_telemetry_store(sys.argv[1])
    recorder = store.background(max_batch=10_000, max_delay=3600, max_queue=10_000)
    if sys.argv[2] == "opt-in":
        write_queues_on_sigterm()
    for i in range(3000):
        recorder.record({"repo": "a/b", "event_type": "e", "model": "m",
                         "conclusion": "success"})
    print("ready", flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("mode", ["default", "opt-in"])
def test_sigterm_writes_the_queue_only_when_asked(tmp_path: Path, mode: str) -> None:
    import signal

    path = tmp_path / "term.db"
    with subprocess.Popen([sys.executable, "-c", SIGTERM_CHILD, str(path), mode],
                          stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
            child.send_signal(signal.SIGTERM)
            assert child.wait(timeout=60) == -signal.SIGTERM  # ended by the signal either way
        finally:
            child.kill()
    witness = sqlite3.connect(path)
    rows = witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0]
    witness.close()
    assert rows == (3000 if mode == "opt-in" else 0)


def test_records_handed_back_keep_their_keys(db_path: Path) -> None:
    store = create_telemetry_store(db_path, busy_timeout=0)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    recorder = store.background(max_batch=5, max_delay=0.001, retries=0, retry_delay=0)
    for i in range(5):
        recorder.record(minimal(delivery_id=f"d-{i}"), key=f"k-{i}" if i % 2 else None)
    try:
        with pytest.raises(BackgroundWriteError) as info:
            recorder.flush()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert info.value.keys == [None, "k-1", None, "k-3", None]
    assert store.record_many(info.value.records, keys=info.value.keys)
    assert store.record_many(info.value.records[1:2], keys=["k-1"]) == [
        store.model.get(store.model.delivery_id == "d-1").id]
    recorder.close()
    store.close()


class _ListWriter:
    """A batch writer that keeps its batches in a list."""

    def __init__(self, batches: List[Any]) -> None:
        self.batches = batches
        self.labels: List[Any] = []
        self.closed = False

    def write(self, rows: List[Any], keys: Any = None, labels: Any = None) -> List[int]:
        self.batches.append((list(rows), keys))
        self.labels.append(labels)
        return list(range(1, len(rows) + 1))

    def close(self) -> None:
        self.closed = True


class _ListStore:
    """Anything with the four members of background.RecordingStore will do."""

    path = "list"
    log = logging.getLogger("test_background")

    def __init__(self) -> None:
        self.batches: List[Any] = []
        self.writers: List[_ListWriter] = []

    def checked_entry(self, entry: Any) -> Any:
        record = TelemetryRecord.from_mapping(entry)
        return record.as_row(), record.labels

    def batch_writer(self) -> _ListWriter:
        self.writers.append(_ListWriter(self.batches))
        return self.writers[-1]


def test_a_recorder_needs_only_its_protocol_not_a_store() -> None:
    store = _ListStore()
    recorder = BackgroundRecorder(store, max_batch=2, max_delay=NEVER)
    recorder.record(minimal(repo="a"))
    recorder.record(minimal(repo="b"), key="k")
    recorder.record(minimal(repo="c"))
    recorder.close()

    assert [[row[1] for row in rows] for rows, _ in store.batches] == [["a", "b"], ["c"]]
    assert [keys for _, keys in store.batches] == [[None, "k"], None]
    assert [writer.closed for writer in store.writers] == [True]


def test_a_recorder_hands_the_labels_to_its_writer() -> None:
    store = _ListStore()
    recorder = BackgroundRecorder(store, max_batch=2, max_delay=NEVER)
    recorder.record({**minimal(repo="a"), "labels": {"user": "alice"}})
    recorder.record(minimal(repo="b"))
    recorder.record(minimal(repo="c"))
    recorder.close()

    assert store.writers[0].labels == [[{"user": "alice"}, {}], None]


def test_a_failing_batch_hands_back_its_records_with_their_labels(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection, refuse_inserts: None) -> None:
    labelled = TelemetryRecordFactory.build(labels={"user": "alice", "team": "platform"})
    plain = TelemetryRecordFactory.build()
    recorder = store.background(max_delay=NEVER, retries=0, retry_delay=0)
    recorder.record(labelled, key="k-1")
    recorder.record(plain)
    with pytest.raises(BackgroundWriteError) as caught:
        recorder.flush()
    assert caught.value.records == [labelled, plain]
    assert [dict(r.labels) for r in caught.value.records] == [
        {"user": "alice", "team": "platform"}, {}]
