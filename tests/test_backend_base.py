"""The Backend base class (telemetry_orm.backends.base): an engine is a
subclass that overrides only what differs. Each test makes an engine of
SQLite with one part overridden or left to the base's default, runs the
store on it, and checks the stored data through an independent connection."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import peewee
import pytest
from support import FIXED_NOW, minimal

from telemetry_orm import PeeweeTelemetryStore, clock, label_rollups, rollups, schema, zone_days
from telemetry_orm.backends.base import Backend, FixedPacer, ServerUpkeep
from telemetry_orm.backends.sqlite import DIALECT, SqliteBackend
from telemetry_orm.sql import upsert_on_conflict
from telemetry_orm.tables import Tables

pytestmark = pytest.mark.usefixtures("pinned_clock")

#: Tables each upsert went to, in order, for the engine below.
UPSERTED: List[str] = []


def _spelled_here(query: Any, key: Sequence[Any], fields: Sequence[Any], add: bool) -> Any:
    UPSERTED.append(query.model._meta.table_name)
    return upsert_on_conflict(query, key, fields, add)


class UpsertingEngine(SqliteBackend):
    """SQLite, with an upsert of its own (as MySQL has ``ON DUPLICATE KEY``),
    through which every row is added (as on MySQL, rows are grouped first)."""

    dialect = dataclasses.replace(DIALECT, upsert=_spelled_here, add_rows=None)


class BasePurgeEngine(SqliteBackend):
    """SQLite, purging as the base class does by default (ids read, then
    deleted by id in a fold transaction; fixed chunks, no pauses)."""

    purge_start = Backend.purge_start
    delete_chunk_before = Backend.delete_chunk_before
    purge_pacer = Backend.purge_pacer


@pytest.fixture
def upserted() -> Iterator[List[str]]:
    UPSERTED.clear()
    yield UPSERTED
    UPSERTED.clear()


def _store(engine: type, path: Path) -> PeeweeTelemetryStore:
    return PeeweeTelemetryStore(engine.from_location(str(path), busy_timeout=5000,
                                                     log_size_limit=1 << 20))


def _age(path: Path, ids: Sequence[int], when: _dt.datetime) -> None:
    with sqlite3.connect(path) as witness:
        witness.executemany("UPDATE executions SET created_at = ? WHERE id = ?",
                            [(when.strftime("%Y-%m-%d %H:%M:%S"), i) for i in ids])


def _rows(path: Path, sql: str) -> List[Any]:
    with sqlite3.connect(path) as witness:
        return list(witness.execute(sql))


def test_the_rollups_add_up_through_the_dialects_upsert(db_path: Path,
                                                         upserted: List[str]) -> None:
    store = _store(UpsertingEngine, db_path)
    ids = [store.record(minimal(input_tokens=10, duration_ms=100)) for _ in range(3)]
    _age(db_path, ids, FIXED_NOW - _dt.timedelta(hours=2))
    store.rollup()
    later = store.record(minimal(input_tokens=5, duration_ms=100))
    _age(db_path, [later], FIXED_NOW - _dt.timedelta(hours=2))
    store.rollup()
    store.close()
    # Every rollup table took its rows through the engine's own upsert, twice.
    tables = {rollups.ROLLUPS_TABLE, rollups.DAYS_TABLE, rollups.MONTHS_TABLE,
              rollups.DURATIONS_TABLE, rollups.MONTH_DURATIONS_TABLE}
    assert tables <= set(upserted)
    assert all(upserted.count(table) >= 2 for table in tables), upserted
    # And the second fold added to the first one's rows.
    assert _rows(db_path, f"SELECT executions, input_tokens FROM {rollups.ROLLUPS_TABLE}") \
        == [(4, 35)]
    assert _rows(db_path, f"SELECT SUM(executions) FROM {rollups.DURATIONS_TABLE}") == [(4,)]
    assert _rows(db_path, f"SELECT counted_ids FROM {rollups.STATE_TABLE}") == [(later,)]


def test_the_rollup_state_is_written_through_the_dialects_upsert(
        db_path: Path, upserted: List[str]) -> None:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    database = peewee.SqliteDatabase(str(db_path))
    models = [schema.bind_model(database, m) for m in rollups.MODELS]
    database.create_tables([models[2]])
    conn = database.connection()
    for n in (5, 9):
        rollups.write_state(conn, models, rollups.State(n, FIXED_NOW.replace(tzinfo=None)),
                            upsert=UpsertingEngine.dialect.upsert)
    database.close()
    assert upserted == [rollups.STATE_TABLE] * 2
    assert _rows(db_path, f"SELECT id, counted_ids, counted_before, purged_before "
                          f"FROM {rollups.STATE_TABLE}") \
        == [(1, 9, FIXED_NOW.strftime("%Y-%m-%d %H:%M:%S"), None)]


def test_keys_are_remembered_moved_and_forgotten_through_the_dialects_upsert(
        db_path: Path, upserted: List[str]) -> None:
    store = _store(UpsertingEngine, db_path)
    first = store.record(minimal(), key="delivery-1")
    assert store.record(minimal(), key="delivery-1") == first
    assert "telemetry_orm_keys" in upserted
    _age(db_path, [first], FIXED_NOW - _dt.timedelta(days=30))
    assert store.purge(7).deleted == 1
    assert "telemetry_orm_purged_keys" in upserted
    assert _rows(db_path, "SELECT key FROM telemetry_orm_purged_keys") == [("delivery-1",)]
    # Two days on, a purge keeping keys one day forgets it, and the state
    # says since when keys may be forgotten.
    with clock.pinned(FIXED_NOW + _dt.timedelta(days=2)):
        store.purge(7, key_days=1)
    assert "telemetry_orm_key_state" in upserted
    assert _rows(db_path, "SELECT COUNT(*) FROM telemetry_orm_purged_keys") == [(0,)]
    assert _rows(db_path, "SELECT COUNT(*) FROM telemetry_orm_keys") == [(0,)]
    assert _rows(db_path, "SELECT forgotten_before IS NOT NULL "
                          "FROM telemetry_orm_key_state") == [(1,)]
    store.close()


def test_the_base_classs_purge_deletes_in_chunks_and_counts_the_rows_in_the_rollups(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FixedPacer, "rows", 4)
    store = _store(BasePurgeEngine, db_path)
    old = [store.record(minimal(output_tokens=1)) for _ in range(10)]
    kept = [store.record(minimal(output_tokens=1)) for _ in range(3)]
    _age(db_path, old, FIXED_NOW - _dt.timedelta(days=30))
    result = store.purge(7)
    store.close()
    assert (result.deleted, result.chunks) == (10, 3)
    assert sorted(i for (i,) in _rows(db_path, "SELECT id FROM executions")) == kept
    # Counted in the rollups in the transactions that deleted them.
    assert _rows(db_path, f"SELECT SUM(executions), SUM(output_tokens) "
                          f"FROM {rollups.ROLLUPS_TABLE}") == [(10, 10)]


def test_an_engine_leaves_to_the_base_what_engines_do_alike() -> None:
    # The SQL every engine runs alike is built once, in the base class.
    for name in ("insert_sql", "keyed_sql", "count_before", "copy_rows"):
        assert name not in vars(SqliteBackend) and name in vars(Backend), name


class WideEngine(SqliteBackend):
    """SQLite with the column types of an engine that cannot index TEXT:
    indexed text gets a length, UTC instants kept as text their own type."""

    @classmethod
    def column(cls, field: peewee.Field) -> Optional[peewee.Field]:
        if isinstance(field, schema.KeyTextField):
            return peewee.CharField(max_length=64)
        if isinstance(field, schema.TimeTextField):
            return peewee.CharField(max_length=19)
        return None


def _types(path: Path, table: str) -> Dict[str, str]:
    return {name: kind for _, name, kind, *_ in _rows(path, f"PRAGMA table_info({table})")}


def test_an_engines_column_types_build_every_table(db_path: Path) -> None:
    store = _store(WideEngine, db_path)
    row_id = store.record(minimal(), key="delivery-1")
    _age(db_path, [row_id], FIXED_NOW - _dt.timedelta(hours=2))
    store.rollup()
    store.close()
    executions = _types(db_path, "executions")
    assert executions["repo"] == "VARCHAR(64)"
    # The other columns, and their order, stay as declared.
    assert list(executions) == list(schema.COLUMN_NAMES)
    assert executions["model"] == executions["created_at"] == "TEXT"
    assert _types(db_path, "telemetry_orm_keys")["key"] == "VARCHAR(64)"
    assert _rows(db_path, "SELECT key, execution_id FROM telemetry_orm_keys") \
        == [("delivery-1", row_id)]
    rollup = _types(db_path, rollups.ROLLUPS_TABLE)
    assert {name: rollup[name] for name in ("hour", *rollups.DIMENSIONS)} == {
        "hour": "VARCHAR(19)", **{name: "VARCHAR(64)" for name in rollups.DIMENSIONS}}
    sketch = _types(db_path, rollups.MONTH_DURATIONS_TABLE)
    assert (sketch["month"], sketch["dimension"], sketch["value"]) \
        == ("VARCHAR(19)", "VARCHAR(64)", "VARCHAR(64)")
    assert _types(db_path, rollups.STATE_TABLE)["counted_before"] == "VARCHAR(19)"
    assert _rows(db_path, f"SELECT repo, executions FROM {rollups.ROLLUPS_TABLE}") \
        == [("acme/api", 1)]
    # The purged keys and the key state, from the engine's side models.
    database = peewee.SqliteDatabase(str(db_path.with_name("side.db")))
    bound = Tables(database, WideEngine).keys
    database.create_tables(list(bound))
    database.close()
    side = db_path.with_name("side.db")
    purged = _types(side, "telemetry_orm_purged_keys")
    assert (purged["key"], purged["purged_at"]) == ("VARCHAR(64)", "VARCHAR(19)")
    assert _types(side, "telemetry_orm_key_state")["forgotten_before"] == "VARCHAR(19)"


def test_an_engine_without_column_types_keeps_the_declared_tables() -> None:
    assert SqliteBackend.model_base is schema.Execution
    assert SqliteBackend.side_models == (schema.PurgedKey, schema.KeyState)
    assert SqliteBackend.rollup_models == (
        *rollups.MODELS, *zone_days.MODELS, *label_rollups.MODELS)


def test_has_table_by_default_looks_in_the_schema_the_store_uses(pg_url: str) -> None:
    from telemetry_orm.backends.postgres import PostgresBackend

    class InformationSchemaEngine(PostgresBackend):
        """PostgreSQL, finding tables as the base class does by default."""

        has_table = vars(Backend)["has_table"]  # the classmethod itself
        sql_database = peewee.PostgresqlDatabase(None)

    store = PeeweeTelemetryStore(InformationSchemaEngine.from_location(
        pg_url, busy_timeout=5000, log_size_limit=0))
    try:
        with store.backend.connection(store.database) as conn:
            # The store's schema (the URL's search_path), not "public".
            assert InformationSchemaEngine.has_table(conn, "executions")
            assert not InformationSchemaEngine.has_table(conn, rollups.STATE_TABLE)
        store.rollup()
        with store.backend.connection(store.database) as conn:
            assert InformationSchemaEngine.has_table(conn, rollups.STATE_TABLE)
    finally:
        store.close()


def test_the_servers_upkeep_checkpoints_nothing_and_closes_the_pool(pg_url: str) -> None:
    from telemetry_orm.backends.postgres import PostgresBackend

    class ServerEngine(PostgresBackend):
        """PostgreSQL, with the base class's upkeep of a server."""

        upkeep = Backend.upkeep

    store = PeeweeTelemetryStore(ServerEngine.from_location(
        pg_url, busy_timeout=5000, log_size_limit=0))
    assert isinstance(store.opened.upkeep, ServerUpkeep)
    row_id = store.record(minimal())
    assert not store.checkpoint().applies
    pool: Any = store.database
    store.close()
    assert pool.is_closed() and not pool._connections and not pool._in_use
    import psycopg

    with psycopg.connect(pg_url) as witness:
        assert witness.execute("SELECT repo FROM executions WHERE id = %s",
                               (row_id,)).fetchall() == [("acme/api",)]


def test_the_default_pacer_starts_a_folding_purge_at_a_rollup_steps_rows() -> None:
    from telemetry_orm.folding import FOLD_ROWS

    # A server's chunk locks only its rows: it folds as much as a rollup step.
    assert FixedPacer().fold_rows == FOLD_ROWS
