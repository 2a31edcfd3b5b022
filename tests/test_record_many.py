"""record_many(): validate every entry first, then one transaction, ids in order."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from pathlib import Path
from unittest import mock

import pytest
from support import minimal

from telemetry_orm import (
    DatabaseError,
    PeeweeTelemetryStore,
    StoreClosedError,
    TelemetryRecord,
    TelemetryValidationError,
)
from telemetry_orm.factories import TelemetryRecordFactory


def _delivery_ids(witness: sqlite3.Connection, ids: list[int]) -> list[str]:
    marks = ", ".join("?" for _ in ids)
    rows = witness.execute(
        f"SELECT id, delivery_id FROM executions WHERE id IN ({marks})", ids
    ).fetchall()
    by_id = {row["id"]: row["delivery_id"] for row in rows}
    return [by_id[i] for i in ids]


def test_returns_the_ids_of_the_rows_in_the_order_given(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    records = TelemetryRecordFactory.build_batch(50)

    ids = store.record_many(records)

    assert len(ids) == 50
    assert _delivery_ids(witness, ids) == [r.delivery_id for r in records]
    stored = witness.execute("SELECT * FROM executions WHERE id = ?", (ids[7],)).fetchone()
    assert {k: stored[k] for k in records[7].as_dict()} == records[7].as_dict()


def test_ids_stay_right_after_deletes_and_other_writers(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    first = store.record_many(TelemetryRecordFactory.build_batch(20))
    witness.execute("DELETE FROM executions WHERE id > ?", (first[4],))
    witness.commit()
    witness.execute(
        "INSERT INTO executions (repo, event_type, model, conclusion) "
        "VALUES ('other/writer', 'push', 'm', 'success')"
    )
    witness.commit()
    records = TelemetryRecordFactory.build_batch(30)

    ids = store.record_many(records)

    # AUTOINCREMENT: deleted ids are not handed out again.
    assert ids[0] > first[-1] + 1
    assert _delivery_ids(witness, ids) == [r.delivery_id for r in records]


def test_takes_records_and_mappings_in_either_spelling(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    entries = [
        TelemetryRecordFactory.build(delivery_id="a"),
        minimal(delivery_id="b", cost_usd=0.5),
        {"deliveryId": "c", "repo": "acme/web", "eventType": "push", "model": "m",
         "conclusion": "failure", "inputTokens": 12, "costUsd": None},
    ]

    ids = store.record_many(entries)

    assert _delivery_ids(witness, ids) == ["a", "b", "c"]
    row = witness.execute("SELECT * FROM executions WHERE id = ?", (ids[2],)).fetchone()
    assert (row["repo"], row["input_tokens"], row["cost_usd"]) == ("acme/web", 12, 0.0)


def test_takes_any_iterable(store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    ids = store.record_many(minimal(delivery_id=str(i)) for i in range(5))

    assert _delivery_ids(witness, ids) == ["0", "1", "2", "3", "4"]


def test_a_bad_entry_is_named_by_position_and_field_and_nothing_is_written(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    entries = [minimal(), TelemetryRecordFactory.build(), minimal(cost_usd=-1.0), minimal()]

    with pytest.raises(TelemetryValidationError) as caught:
        store.record_many(entries)

    assert caught.value.index == 2
    assert caught.value.field == "cost_usd"
    assert str(caught.value) == "entry 2: cost_usd: must be a finite number >= 0, got -1.0"
    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"repo": "acme/api"}, "event_type"),
        ({**minimal(), "colour": "blue"}, "colour"),
        ({**minimal(), "prNumber": 3, "pr_number": 3}, "pr_number"),
        ("not a mapping", None),
    ],
)
def test_each_kind_of_bad_entry_is_named(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection, entry: object, field: str | None
) -> None:
    with pytest.raises(TelemetryValidationError) as caught:
        store.record_many([minimal(), entry])

    assert (caught.value.index, caught.value.field) == (1, field)
    assert str(caught.value).startswith("entry 1: ")
    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 0


@pytest.mark.parametrize("entries", [minimal(), TelemetryRecord(**minimal()), "acme/api"])
def test_a_single_entry_instead_of_a_list_is_refused(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection, entries: object
) -> None:
    with pytest.raises(TelemetryValidationError, match="record\\(\\) for a single entry") as caught:
        store.record_many(entries)  # type: ignore[arg-type]

    assert caught.value.field == "entries"
    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 0


def test_nothing_to_record_writes_nothing(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    assert store.record_many([]) == []
    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 0


def test_a_row_refused_by_the_database_rolls_back_the_whole_batch(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    witness.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON executions WHEN NEW.repo = 'bad/one' "
        "BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END"
    )
    witness.commit()
    entries = [minimal(), minimal(), minimal(repo="bad/one"), minimal()]

    with pytest.raises(DatabaseError, match="refused by trigger"):
        store.record_many(entries)

    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 0
    # No transaction is left open: the store goes on writing.
    assert len(store.record_many([minimal(), minimal()])) == 2
    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 2


def test_inside_a_transaction_of_ones_own_it_commits_and_rolls_back_with_it(
    store: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    with store.database.atomic() as transaction:
        store.record_many([minimal(delivery_id="gone")])
        transaction.rollback()
    with store.database.atomic():
        store.record(minimal(delivery_id="before"))
        ids = store.record_many([minimal(delivery_id="x"), minimal(delivery_id="y")])

    assert _delivery_ids(witness, ids) == ["x", "y"]
    delivered = [r[0] for r in witness.execute("SELECT delivery_id FROM executions ORDER BY id")]
    assert delivered == ["before", "x", "y"]


def _rows_in_database_file(db_path: Path, scratch: Path) -> int:
    """Rows in the database file itself, leaving out what is only in the
    write-ahead log: a checkpoint is what moves rows from one to the other."""
    copy = scratch / "main-file-only.db"
    shutil.copyfile(db_path, copy)
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM executions").fetchone()[0])
    finally:
        conn.close()
        for leftover in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
            leftover.unlink(missing_ok=True)


def test_rows_count_towards_the_automatic_checkpoint(store: PeeweeTelemetryStore) -> None:
    store.checkpoint_every = 10
    with mock.patch.object(store, "checkpoint", wraps=store.checkpoint) as spy:
        store.record_many([minimal() for _ in range(9)])
        assert spy.call_count == 0
        store.record(minimal())
        assert spy.call_count == 1
        store.record_many([minimal() for _ in range(5)])
        assert spy.call_count == 1
        store.record_many([minimal() for _ in range(25)])
        assert spy.call_count == 2


class _CheckpointSeen(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("checkpoint PASSIVE") and (
            record.threadName == "telemetry_orm-checkpoint"
        ):
            self.seen.set()


def test_the_automatic_checkpoint_runs_on_a_helper_thread_and_fills_the_file(
    store: PeeweeTelemetryStore, db_path: Path, tmp_path: Path
) -> None:
    store.checkpoint_every = 10
    seen = _CheckpointSeen()
    logger = logging.getLogger("telemetry_orm")
    logger.addHandler(seen)
    logger.setLevel(logging.DEBUG)
    try:
        store.record_many([minimal() for _ in range(9)])
        assert _rows_in_database_file(db_path, tmp_path) == 0
        store.record(minimal())
        assert seen.seen.wait(30)
    finally:
        logger.removeHandler(seen)
        logger.setLevel(logging.NOTSET)

    assert _rows_in_database_file(db_path, tmp_path) == 10


def test_a_closed_store_refuses(store: PeeweeTelemetryStore) -> None:
    store.close()

    with pytest.raises(StoreClosedError):
        store.record_many([minimal()])
    with pytest.raises(StoreClosedError):
        store.record_many([])
