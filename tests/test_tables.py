"""The tables object: one database's models, bound once, and its missing side tables."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import peewee
import pytest

from telemetry_orm import TelemetryValidationError, create_telemetry_store, rollups
from telemetry_orm.engines import backend_for
from telemetry_orm.tables import Tables, tables_of


def test_a_database_has_one_tables_object_whose_models_are_bound_to_it_alone() -> None:
    db = peewee.SqliteDatabase(":memory:")
    tables = tables_of(db)
    assert tables_of(db) is tables
    assert tables_of(peewee.SqliteDatabase(":memory:")) is not tables
    assert tables.executions._meta.database is db
    assert tables.executions._meta.table_name == "executions"
    assert all(model._meta.database is db for model in (*tables.rollups, *tables.keys))
    # The same classes at every call: nothing is bound twice.
    assert tables.rollups is tables.rollups and tables.keys is tables.keys


def test_rollup_models_are_found_by_table_name() -> None:
    tables = tables_of(peewee.SqliteDatabase(":memory:"))
    for name in (rollups.ROLLUPS_TABLE, rollups.DURATIONS_TABLE, rollups.DAYS_TABLE,
                 rollups.MONTHS_TABLE, rollups.MONTH_DURATIONS_TABLE, rollups.STATE_TABLE):
        assert tables.rollup(name)._meta.table_name == name
    with pytest.raises(KeyError):
        tables.rollup("executions")


def test_the_models_come_from_the_engines_backend_class() -> None:
    pg = tables_of(peewee.PostgresqlDatabase(None))
    assert pg.engine.name == "postgresql"
    assert issubclass(pg.executions, pg.engine.model_base)
    assert [m.__mro__[1] for m in pg.rollups] == list(pg.engine.rollup_models)
    assert pg.keys[0].__mro__[1] is pg.engine.key_model


def test_a_proxy_gets_the_tables_of_what_it_stands_for_without_being_kept() -> None:
    proxy = peewee.DatabaseProxy()
    proxy.initialize(peewee.SqliteDatabase(":memory:"))
    tables = tables_of(proxy)
    assert tables.engine.name == "sqlite" and tables.executions._meta.database is proxy


def test_an_unknown_database_class_is_refused() -> None:
    class Other(peewee.Database):
        pass

    with pytest.raises(TelemetryValidationError, match="database"):
        tables_of(Other(None))


def test_create_missing_makes_only_the_missing_tables(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    create_telemetry_store(path).close()
    backend = backend_for(str(path))
    db = backend.open()
    try:
        tables = Tables(db, type(backend))
        tables.create_missing(backend, tables.keys)
        tables.create_missing(backend, tables.keys)  # nothing left to do
    finally:
        db.close()
    with closing(sqlite3.connect(path)) as witness:
        names = {row[0] for row in witness.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"telemetry_orm_keys", "telemetry_orm_purged_keys",
            "telemetry_orm_key_state"} <= names
    assert rollups.ROLLUPS_TABLE not in names


def test_a_side_table_gets_the_engines_column_types_and_is_bound_once() -> None:
    from telemetry_orm.backends.sqlite import SqliteBackend
    from telemetry_orm.schema import KeyTextField
    from telemetry_orm.transfer import _Migrated

    class Narrow(SqliteBackend):
        @classmethod
        def column(cls, field: peewee.Field) -> peewee.Field | None:
            return peewee.CharField(max_length=77) if isinstance(field, KeyTextField) else None

    db = peewee.SqliteDatabase(":memory:")
    plain = tables_of(db).side(_Migrated)
    assert plain is tables_of(db).side(_Migrated) and plain._meta.database is db
    assert plain.source.field_type == "TEXT"
    narrow = Tables(peewee.SqliteDatabase(":memory:"), Narrow).side(_Migrated)
    assert (narrow.source.field_type, narrow.source.max_length) == ("VARCHAR", 77)
    assert narrow._meta.table_name == "telemetry_orm_migrated"
    assert [f.name for f in narrow._meta.get_primary_keys()] == ["source", "source_id"]


def test_statements_is_the_engines_connection_with_execute() -> None:
    from telemetry_orm.backends.base import Backend

    db = peewee.SqliteDatabase(":memory:")
    db.connect()
    try:
        assert Backend.statements(db) is db.connection()
        assert Backend.statements(db).execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()
