"""The executions table is the original store's table, column for column."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from support import SEED_DDL, make_seed_database, minimal

from telemetry_orm import FIELD_NAMES, SCHEMA_VERSION, Execution, create_telemetry_store
from telemetry_orm.schema import INDEX_NAMES


def describe(path: Path) -> tuple:
    conn = sqlite3.connect(path)
    try:
        columns = conn.execute("PRAGMA table_info(executions)").fetchall()
        indexes = sorted(
            (name, unique, [c[2] for c in conn.execute(f"PRAGMA index_info({name})")])
            for _, name, unique, origin, _partial in conn.execute("PRAGMA index_list(executions)")
            if origin == "c"
        )
        autoincrement = conn.execute(
            "SELECT sql LIKE '%AUTOINCREMENT%' FROM sqlite_master WHERE name = 'executions'"
        ).fetchone()[0]
        return columns, indexes, autoincrement
    finally:
        conn.close()


def test_created_table_matches_the_original_ddl(tmp_path: Path) -> None:
    seed = tmp_path / "seed.db"
    conn = sqlite3.connect(seed)
    conn.executescript(SEED_DDL)
    conn.close()
    ours = tmp_path / "ours.db"
    create_telemetry_store(ours).close()
    assert describe(ours) == describe(seed)


def test_table_has_exactly_the_two_named_indexes(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    create_telemetry_store(path).close()
    _, indexes, autoincrement = describe(path)
    assert indexes == [
        ("idx_executions_created_at", 0, ["created_at"]),
        ("idx_executions_repo", 0, ["repo"]),
    ]
    assert autoincrement == 1


def test_model_columns_are_id_created_at_and_the_record_fields() -> None:
    columns = tuple(f.column_name for f in Execution._meta.sorted_fields)
    assert columns == ("id", "created_at") + FIELD_NAMES


def test_model_declares_the_indexes_in_meta() -> None:
    rendered = [idx._name for idx in Execution._meta.indexes]
    assert tuple(rendered) == INDEX_NAMES


def test_typescript_database_opens_unchanged_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ts.db"
    make_seed_database(path, rows=3)
    conn = sqlite3.connect(path)
    master = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    schema_before = conn.execute(master).fetchall()
    rows_before = conn.execute("SELECT * FROM executions ORDER BY id").fetchall()
    conn.close()

    with create_telemetry_store(path) as store:
        new_id = store.record(minimal())

    conn = sqlite3.connect(path)
    assert conn.execute(master).fetchall() == schema_before
    assert conn.execute("SELECT * FROM executions WHERE id <= 3 ORDER BY id").fetchall() \
        == rows_before
    assert new_id == 4
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_typescript_rows_read_back_through_the_model(tmp_path: Path) -> None:
    path = tmp_path / "ts.db"
    make_seed_database(path, rows=2)
    with create_telemetry_store(path) as store:
        rows = list(store.model.select().order_by(store.model.id))
    assert [r.delivery_id for r in rows] == ["d-0", "d-1"]
    assert rows[0].created_at.tzinfo is not None
