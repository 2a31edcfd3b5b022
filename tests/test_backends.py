"""The store's behaviour on every backend: each test runs on a SQLite file and
on a fresh PostgreSQL schema (skipped, with the reason, when no server is
configured), checked through an independent connection."""

from __future__ import annotations

import datetime as _dt
import math
import threading
from pathlib import Path
from typing import Any, List

import pytest
from support import OLD_TABLE_DDL, Witness, minimal, place, record_keys_in_process

from telemetry_orm import (
    FIELD_NAMES,
    SCHEMA_VERSION,
    DatabaseError,
    PeeweeTelemetryStore,
    StoreClosedError,
    TelemetryRecord,
    TelemetryValidationError,
    clock,
    create_telemetry_store,
)
from telemetry_orm.backends.base import PURGE_CHUNK
from telemetry_orm.factories import ExecutionFactory, TelemetryRecordFactory
from telemetry_orm.schema import COLUMN_NAMES, INDEX_NAMES

INSERT_MINIMAL = (
    "INSERT INTO executions (repo, event_type, model, conclusion) VALUES (?, ?, ?, ?)"
)


def test_record_writes_every_field(any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    record = TelemetryRecordFactory()
    row_id = any_store.record(record)
    (row,) = any_witness.rows("SELECT * FROM executions WHERE id = ?", row_id)
    assert {name: row[name] for name in FIELD_NAMES} == record.as_dict()


def test_minimal_record_gets_the_defaults_and_the_database_clock(
    any_store: PeeweeTelemetryStore, any_witness: Witness
) -> None:
    before = any_witness.now().replace(microsecond=0)
    row_id = any_store.record(minimal())
    after = any_witness.now()
    (row,) = any_witness.rows("SELECT * FROM executions WHERE id = ?", row_id)
    assert row["provider"] == "anthropic"
    for name in ("input_tokens", "output_tokens", "cache_read_tokens",
                 "cache_creation_tokens", "duration_ms", "cost_usd"):
        assert row[name] == 0, name
    for name in ("delivery_id", "pr_number", "session_id", "num_turns", "stop_reason"):
        assert row[name] is None, name
    assert before <= any_witness.created_at(row_id) <= after


def test_the_table_itself_carries_the_defaults(
    any_store: PeeweeTelemetryStore, any_witness: Witness
) -> None:
    any_witness.execute(INSERT_MINIMAL, "acme/api", "push", "claude-sonnet-4-5", "success")
    (row,) = any_witness.rows("SELECT * FROM executions")
    assert row["provider"] == "anthropic"
    assert row["input_tokens"] == row["duration_ms"] == row["cost_usd"] == 0
    assert row["created_at"] is not None


def test_ids_increase(any_store: PeeweeTelemetryStore) -> None:
    ids = [any_store.record(minimal()) for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_large_counts_and_precise_costs_round_trip(
    any_store: PeeweeTelemetryStore, any_witness: Witness
) -> None:
    # 64-bit integers (the bound of a count is past 2**32) and double precision on every engine.
    row_id = any_store.record(minimal(cache_read_tokens=10**12, cost_usd=0.1234567890123))
    (row,) = any_witness.rows("SELECT * FROM executions WHERE id = ?", row_id)
    assert row["cache_read_tokens"] == 10**12
    assert row["cost_usd"] == 0.1234567890123


def test_invalid_record_names_the_field_and_writes_nothing(
    any_store: PeeweeTelemetryStore, any_witness: Witness
) -> None:
    with pytest.raises(TelemetryValidationError) as info:
        any_store.record(minimal(input_tokens=-1))
    assert info.value.field == "input_tokens"
    assert any_witness.count() == 0


def test_columns_and_indexes_match_the_original_store(
    any_store: PeeweeTelemetryStore, any_witness: Witness
) -> None:
    assert any_witness.columns() == list(COLUMN_NAMES)
    assert set(INDEX_NAMES) <= set(any_witness.indexes())
    assert any_witness.schema_version() == SCHEMA_VERSION


def test_model_reads_rows_with_utc_datetimes(any_store: PeeweeTelemetryStore) -> None:
    row_id = any_store.record(minimal(repo="acme/web"))
    row = any_store.model.get_by_id(row_id)
    assert row.repo == "acme/web"
    assert row.created_at.tzinfo is not None
    assert row.created_at.utcoffset() == _dt.timedelta(0)


def test_factory_backdates_rows(any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    when = _dt.datetime(2024, 3, 1, 12, 30, 5, tzinfo=_dt.timezone.utc)
    row = ExecutionFactory.create(store=any_store, created_at=when)
    assert any_witness.created_at(row.id) == when
    assert row.created_at == when


def test_purge_deletes_only_old_rows_by_the_database_clock(
    any_store: PeeweeTelemetryStore, any_witness: Witness
) -> None:
    old = [any_store.record(minimal()) for _ in range(3)]
    recent = any_store.record(minimal())
    for row_id in old:
        any_witness.backdate(row_id, 100)
    any_witness.backdate(recent, 80)
    assert any_store.count_older_than(90) == 3
    assert any_witness.count() == 4  # a dry run deletes nothing
    assert any_store.purge_older_than(90) == 3
    assert [r["id"] for r in any_witness.rows("SELECT id FROM executions")] == [recent]


def test_purge_zero_days_removes_rows_from_the_past(
    any_store: PeeweeTelemetryStore, any_witness: Witness
) -> None:
    row_id = any_store.record(minimal())
    any_witness.backdate(row_id, 1)
    assert any_store.purge_older_than(0) == 1
    assert any_witness.count() == 0


def test_purge_works_in_chunks_and_deletes_them_all(
    any_store: PeeweeTelemetryStore, any_witness: Witness
) -> None:
    old = 2 * PURGE_CHUNK + 7
    any_witness.executemany(INSERT_MINIMAL, [("acme/api", "push", "m", "success")] * old)
    any_witness.execute(
        "UPDATE executions SET created_at = ?", "2020-01-01 00:00:00"
        if any_witness.kind == "sqlite"
        else _dt.datetime(2020, 1, 1, tzinfo=_dt.timezone.utc),
    )
    keep = any_store.record(minimal())
    assert any_store.purge_older_than(30) == old
    assert [r["id"] for r in any_witness.rows("SELECT id FROM executions")] == [keep]


@pytest.mark.parametrize("days", [-1, math.nan, math.inf, True, "90", None])
def test_purge_refuses_bad_days_and_deletes_nothing(
    any_store: PeeweeTelemetryStore, any_witness: Witness, days: object
) -> None:
    row_id = any_store.record(minimal())
    any_witness.backdate(row_id, 100)
    with pytest.raises(TelemetryValidationError) as info:
        any_store.purge_older_than(days)  # type: ignore[arg-type]
    assert info.value.field == "days"
    assert any_witness.count() == 1


def test_checkpoint_says_what_it_did(any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    any_store.record(minimal())
    result = any_store.checkpoint()
    assert any_witness.count() == 1
    if any_witness.kind == "sqlite":
        # Everything the log held is in the file now (the SQLite backend's
        # tests check the file alone holds the row).
        assert result.applies and result.complete and result.copied == result.logged > 0
    else:
        # The server keeps its own log: nothing was done, and it says so.
        assert not result.applies and result.log_file is None
        assert not any_store.checkpoint(truncate=True).applies


def test_closed_store_refuses_work(any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    any_store.record(minimal())
    any_store.close()
    any_store.close()  # twice is fine
    for call in (lambda: any_store.record(minimal()), lambda: any_store.purge_older_than(1),
                 any_store.checkpoint, lambda: any_store.count_older_than(1)):
        with pytest.raises(StoreClosedError):
            call()
    assert any_witness.count() == 1


def test_rows_survive_reopening(any_location: str) -> None:
    with create_telemetry_store(any_location) as first:
        row_id = first.record(minimal(repo="acme/kept"))
    with create_telemetry_store(any_location) as second:
        assert second.model.get_by_id(row_id).repo == "acme/kept"


def test_newer_schema_is_refused_and_left_alone(
    any_location: str, any_store: PeeweeTelemetryStore, any_witness: Witness
) -> None:
    any_store.record(minimal())
    any_store.close()
    any_witness.set_schema_version(SCHEMA_VERSION + 1)
    with pytest.raises(DatabaseError, match="newer"):
        create_telemetry_store(any_location)
    assert any_witness.schema_version() == SCHEMA_VERSION + 1
    assert any_witness.count() == 1


def test_foreign_executions_table_is_refused(any_location: str) -> None:
    witness = Witness(any_location)
    try:
        witness.execute("CREATE TABLE executions (name TEXT)")
        with pytest.raises(DatabaseError, match="not a telemetry table"):
            create_telemetry_store(any_location)
        assert witness.columns() == ["name"]
    finally:
        witness.close()


def test_old_table_is_upgraded_keeping_its_rows(any_location: str) -> None:
    witness = Witness(any_location)
    try:
        witness.execute(OLD_TABLE_DDL[witness.kind])
        witness.execute(INSERT_MINIMAL, "acme/old", "push", "m", "success")
        with create_telemetry_store(any_location) as store:
            store.record(minimal(repo="acme/new", stop_reason="end_turn"))
        # Added columns come last: ALTER TABLE appends.
        assert sorted(witness.columns()) == sorted(COLUMN_NAMES)
        assert set(INDEX_NAMES) <= set(witness.indexes())
        rows = witness.rows(
            "SELECT repo, stop_reason, cache_read_tokens FROM executions ORDER BY id"
        )
        assert rows == [
            {"repo": "acme/old", "stop_reason": None, "cache_read_tokens": 0},
            {"repo": "acme/new", "stop_reason": "end_turn", "cache_read_tokens": 0},
        ]
        assert witness.schema_version() == SCHEMA_VERSION
    finally:
        witness.close()


def test_threads_record_concurrently(any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    errors: List[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                any_store.record(TelemetryRecord(repo=f"acme/{n}", event_type="push",
                                                 model="m", conclusion="success",
                                                 num_turns=i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert any_witness.count() == 300
    assert any_witness.scalar("SELECT COUNT(DISTINCT repo) FROM executions") == 6


# --- Batches and background recording ------------------------------------------------


def test_record_many_returns_the_ids_in_order(
    any_store: PeeweeTelemetryStore, any_witness: Witness
) -> None:
    any_store.record(minimal())  # ids need not start at 1
    records = TelemetryRecordFactory.build_batch(40)
    ids = any_store.record_many(records)
    rows = {r["id"]: r["delivery_id"] for r in any_witness.rows("SELECT id, delivery_id "
                                                               "FROM executions")}
    assert [rows[i] for i in ids] == [r.delivery_id for r in records]
    assert any_witness.count() == 41


def test_record_many_with_a_bad_entry_writes_nothing(
    any_store: PeeweeTelemetryStore, any_witness: Witness
) -> None:
    entries = [minimal(), minimal(), minimal(cost_usd=-1.0)]
    with pytest.raises(TelemetryValidationError) as info:
        any_store.record_many(entries)
    assert (info.value.index, info.value.field) == (2, "cost_usd")
    assert any_witness.count() == 0


def test_record_many_joins_a_transaction_of_ones_own(
    any_store: PeeweeTelemetryStore, any_witness: Witness
) -> None:
    with pytest.raises(RuntimeError), any_store.database.atomic():
        any_store.record_many([minimal(), minimal()])
        any_store.record(minimal())
        raise RuntimeError("roll it all back")
    assert any_witness.count() == 0
    with any_store.database.atomic():
        any_store.record_many([minimal(), minimal()])
    assert any_witness.count() == 2


def test_background_recorder_writes_everything_from_many_threads(
    any_store: PeeweeTelemetryStore, any_witness: Witness
) -> None:
    with any_store.background(max_batch=25) as recorder:
        threads = [
            threading.Thread(target=lambda n=n: [recorder.record(minimal(repo=f"acme/{n}"))
                                                 for _ in range(40)])
            for n in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        recorder.flush()
        assert any_witness.count() == 160
    assert any_witness.scalar("SELECT COUNT(DISTINCT repo) FROM executions") == 4


# -- retention at the edges of time ------------------------------------------------


@pytest.mark.parametrize("days", [5_000_000, 99_999_999, 1e20])
def test_a_cutoff_before_the_earliest_time_deletes_nothing(
        any_store: PeeweeTelemetryStore, any_witness: Witness, days: float) -> None:
    old = any_store.record(minimal())
    any_witness.backdate(old, 400)
    future = any_store.record(minimal())
    any_witness.execute("UPDATE executions SET created_at = ? WHERE id = ?",
                        "2999-01-01 00:00:00", future)
    assert any_store.count_older_than(days) == 0
    result = any_store.purge(days)
    assert result.deleted == 0 and result.cutoff is None
    assert any_witness.count() == 2


def test_a_retention_too_large_for_a_float_is_the_package_error(
        any_store: PeeweeTelemetryStore) -> None:
    with pytest.raises(TelemetryValidationError) as info:
        any_store.purge_older_than(10**400)
    assert info.value.field == "days"


def test_record_many_of_none_names_the_argument(any_store: PeeweeTelemetryStore) -> None:
    with pytest.raises(TelemetryValidationError) as info:
        any_store.record_many(None)  # type: ignore[arg-type]
    assert info.value.field == "entries"


def test_a_nul_in_the_location_names_the_argument(tmp_path: Path) -> None:
    with pytest.raises(TelemetryValidationError) as info:
        create_telemetry_store(f"{tmp_path}/a\x00b.db")
    assert info.value.field == "db_path"
    assert list(tmp_path.iterdir()) == []


# -- idempotent recording ------------------------------------------------------------


def test_a_key_records_one_row_and_replace_updates_it(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    first = any_store.record(minimal(repo="acme/api", cost_usd=0.5), key="delivery-1")
    created = any_witness.rows("SELECT created_at FROM executions WHERE id = ?", first)
    assert any_store.record(minimal(repo="acme/other", cost_usd=9.0), key="delivery-1") == first
    assert any_witness.rows("SELECT repo, cost_usd FROM executions") == [
        {"repo": "acme/api", "cost_usd": 0.5}]
    replaced = any_store.record(minimal(repo="acme/web", cost_usd=0.75), key="delivery-1",
                                replace=True)
    assert replaced == first
    rows = any_witness.rows("SELECT id, repo, cost_usd, created_at FROM executions")
    assert rows == [{"id": first, "repo": "acme/web", "cost_usd": 0.75,
                     "created_at": created[0]["created_at"]}]
    other = any_store.record(minimal(), key="delivery-2")
    unkeyed = any_store.record(minimal())
    assert len({first, other, unkeyed}) == 3 and any_witness.count() == 3
    assert any_witness.rows("SELECT key, execution_id FROM telemetry_orm_keys ORDER BY key") == [
        {"key": "delivery-1", "execution_id": first},
        {"key": "delivery-2", "execution_id": other}]


@pytest.mark.parametrize("key", ["", 5, "a\x00b"])
def test_a_bad_key_names_itself_and_writes_nothing(
        any_store: PeeweeTelemetryStore, any_witness: Witness, key: Any) -> None:
    with pytest.raises(TelemetryValidationError) as info:
        any_store.record(minimal(), key=key)
    assert info.value.field == "key"
    assert any_witness.count() == 0


def test_the_longest_key_is_indexed_on_every_engine_and_a_longer_one_refused(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    # 512 characters of 4 bytes each: the most room a key can take.
    longest = "\U0001f600" * 512
    first = any_store.record(minimal(), key=longest)
    assert any_store.record(minimal(), key=longest) == first
    too_long = "k" * 513
    with pytest.raises(TelemetryValidationError) as info:
        any_store.record(minimal(), key=too_long)
    assert info.value.field == "key" and "at most 512 characters" in str(info.value)
    with pytest.raises(TelemetryValidationError) as info:
        any_store.record_many([minimal(), minimal()], keys=["fine", too_long])
    assert info.value.field == "keys" and info.value.index == 1
    with any_store.background(max_batch=10, max_delay=0.01) as recorder:
        with pytest.raises(TelemetryValidationError) as info:
            recorder.record(minimal(), key=too_long)
        assert info.value.field == "key"
    assert any_witness.rows("SELECT key FROM telemetry_orm_keys") == [{"key": longest}]
    assert any_witness.count() == 1


def test_a_key_with_a_lone_surrogate_is_refused_at_the_call(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    with pytest.raises(TelemetryValidationError) as info:
        any_store.record(minimal(), key="a\ud800")
    assert info.value.field == "key" and "lone surrogate at position 1" in str(info.value)
    with pytest.raises(TelemetryValidationError) as info:
        any_store.record_many([minimal(), minimal()], keys=["fine", "\udfff"])
    assert info.value.field == "keys" and info.value.index == 1
    # The background recorder refuses it at the call: its batch is not lost.
    with any_store.background(max_batch=10, max_delay=0.01) as recorder:
        recorder.record(minimal(), key="before")
        with pytest.raises(TelemetryValidationError) as info:
            recorder.record(minimal(), key="\ud800")
        assert info.value.field == "key"
        recorder.record(minimal(), key="after")
    assert any_witness.rows("SELECT key FROM telemetry_orm_keys ORDER BY key") == [
        {"key": "after"}, {"key": "before"}]


def test_two_processes_recording_the_same_keys_give_one_row_each(any_location: str) -> None:
    import multiprocessing

    create_telemetry_store(any_location).close()
    keys = [f"delivery-{i}" for i in range(40)]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.Queue()
    workers = [context.Process(target=record_keys_in_process,
                               args=(any_location, barrier, keys, f"w{n}", results))
               for n in range(3)]
    for worker in workers:
        worker.start()
    answers = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    # Every process got the same id for each key, and there is one row per key.
    assert answers["w0"] == answers["w1"] == answers["w2"]
    witness = Witness(any_location)
    try:
        assert witness.count() == 40
    finally:
        witness.close()


def test_a_purge_moves_the_keys_of_the_rows_it_deletes_to_the_purged_keys(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    old = [any_store.record(minimal(), key=f"old-{i}") for i in range(3)]
    new = any_store.record(minimal(), key="new")
    for row_id in old:
        any_witness.backdate(row_id, 100)
    assert any_store.purge_older_than(90) == 3
    assert any_witness.rows("SELECT key, execution_id FROM telemetry_orm_keys") == [
        {"key": "new", "execution_id": new}]
    assert any_witness.rows("SELECT key, execution_id FROM telemetry_orm_purged_keys "
                            "ORDER BY key") == [
        {"key": f"old-{i}", "execution_id": row_id} for i, row_id in enumerate(old)]
    # The rollups count the purged rows: their keys answer their old ids,
    # replace or not, and nothing is written.
    assert any_store.record(minimal(), key="old-0") == old[0]
    assert any_store.record(minimal(repo="acme/other"), key="old-1", replace=True) == old[1]
    assert any_witness.count() == 1


def test_a_scattered_purge_deletes_exactly_the_keys_of_its_rows(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    ids = {any_store.record(minimal(), key=f"k-{i}"): f"k-{i}" for i in range(3000)}
    # Every other row expired: the SQLite purge walks stretches of ids.
    expired = sorted(ids)[::2]
    any_witness.executemany("UPDATE executions SET created_at = '2000-01-01 00:00:00' "
                            "WHERE id = ?", [(row_id,) for row_id in expired])
    assert any_store.purge_older_than(90) == len(expired)
    left = {r["execution_id"] for r in any_witness.rows("SELECT execution_id FROM "
                                                         "telemetry_orm_keys")}
    assert left == set(ids) - set(expired)


def test_a_batch_of_keys_past_one_look_up_finds_each_known_one(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    known = {n: any_store.record(minimal(), key=f"k-{n}") for n in (0, 499, 500, 1_100)}
    keys = [f"k-{n}" for n in range(1_200)]

    ids = any_store.record_many([minimal()] * len(keys), keys=keys)

    assert [ids[n] for n in known] == list(known.values())
    assert len(set(ids)) == 1_200 and any_witness.count() == 1_200
    assert any_store.record_many([minimal()] * len(keys), keys=keys) == ids


def test_record_many_takes_one_key_per_entry(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    first = any_store.record(minimal(repo="acme/first"), key="a")
    ids = any_store.record_many([minimal(), minimal(), minimal(), minimal()],
                                keys=["a", None, "b", "b"])
    assert ids[0] == first and ids[2] == ids[3] and len(set(ids)) == 3
    assert any_witness.count() == 3
    replaced = any_store.record_many([minimal(repo="acme/new")], keys=["a"], replace=True)
    assert replaced == [first]
    assert any_witness.rows("SELECT repo FROM executions WHERE id = ?", first) == [
        {"repo": "acme/new"}]
    for keys, index in ((["a"], None), (["a", ""], 1), ("ab", None)):
        with pytest.raises(TelemetryValidationError) as info:
            any_store.record_many([minimal(), minimal()], keys=keys)
        assert info.value.field == "keys" and info.value.index == index
    assert any_witness.count() == 3


def test_the_background_recorder_takes_keys(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    with any_store.background(max_batch=10, max_delay=0.01) as recorder:
        for i in range(30):
            recorder.record(minimal(delivery_id=f"d-{i % 10}"), key=f"delivery-{i % 10}")
        recorder.record(minimal())
    assert any_witness.count() == 11
    with pytest.raises(TelemetryValidationError):
        any_store.background().record(minimal(), key="")


def test_a_pinned_clock_is_the_stores_now_until_the_block_ends(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    now = _dt.datetime(2026, 3, 1, 12, tzinfo=_dt.timezone.utc)
    day = _dt.timedelta(days=1)
    second = _dt.timedelta(seconds=1)
    place(any_store, any_witness, [now - day - second, now - day + second])
    with clock.pinned(now):
        with clock.pinned(now + 2 * second):
            assert any_store.count_older_than(1) == 2
        assert any_store.count_older_than(1) == 1
        assert any_store.purge_older_than(1) == 1
        assert any_store.rollup().counted_before == now.replace(minute=0)
    assert clock.pinned_now() is None
    assert any_witness.count() == 1
    with pytest.raises(TypeError, match="aware"), clock.pinned(_dt.datetime(2026, 3, 1)):
        pass
