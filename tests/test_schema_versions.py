"""Schema versions in PRAGMA user_version: adopting the original store's
files, upgrading older tables in place, refusing newer ones, and writing
nothing when a file is already current."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path
from typing import Any, List, Sequence, Tuple

import pytest
from support import SEED_DDL, make_seed_database, minimal

from telemetry_orm import (
    SCHEMA_VERSION,
    DatabaseError,
    TelemetryError,
    TelemetryRecord,
    create_telemetry_store,
    schema,
)

#: Columns the original store added over time; older files lack them.
LATER_COLUMNS = ("cache_read_tokens", "cache_creation_tokens", "session_id", "num_turns",
                 "stop_reason")

MASTER = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"


def narrow_ddl() -> str:
    """The original DDL without the columns added later."""
    lines = [line for line in SEED_DDL.splitlines()
             if not any(line.strip().startswith(c + " ") for c in LATER_COLUMNS)]
    return "\n".join(lines).replace("conclusion TEXT NOT NULL,", "conclusion TEXT NOT NULL")


def make_narrow_database(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(narrow_ddl())
    conn.executemany(
        "INSERT INTO executions (created_at, delivery_id, repo, pr_number, event_type, model,"
        " input_tokens, output_tokens, duration_ms, cost_usd, conclusion)"
        " VALUES ('2025-01-02 03:04:05', ?, 'old/repo', ?, 'push', 'claude-3-5-sonnet',"
        " ?, 20, 900, 0.5, 'success')",
        ((f"d-{i}", i + 1, 100 + i) for i in range(rows)),
    )
    conn.commit()
    conn.close()


def query(path: Path, sql: str) -> List[Tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def user_version(path: Path) -> int:
    return int(query(path, "PRAGMA user_version")[0][0])


def columns(path: Path) -> dict:
    """name -> (type, notnull, default, pk) for the executions table."""
    return {r[1]: (r[2], r[3], r[4], r[5]) for r in query(path, "PRAGMA table_info(executions)")}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_beside(path: Path) -> List[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_new_file_gets_the_current_version_and_history_is_a_list_of_named_steps(
        db_path: Path) -> None:
    create_telemetry_store(db_path).close()
    assert user_version(db_path) == SCHEMA_VERSION == len(schema.MIGRATIONS) == 1
    names = [step.__name__ for step in schema.MIGRATIONS]
    assert names == sorted(names)
    assert all(re.fullmatch(r"m\d{3}_[a-z0-9_]+", name) for name in names)
    assert all(step.__doc__ for step in schema.MIGRATIONS)


def test_typescript_database_is_adopted_as_version_1_without_changing_its_schema(
        tmp_path: Path) -> None:
    path = tmp_path / "ts.db"
    make_seed_database(path, rows=5)
    assert user_version(path) == 0
    master = query(path, MASTER)
    rows = query(path, "SELECT * FROM executions ORDER BY id")

    create_telemetry_store(path).close()

    assert user_version(path) == 1
    assert query(path, MASTER) == master
    assert query(path, "SELECT * FROM executions ORDER BY id") == rows


def test_narrow_table_is_upgraded_in_place_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_narrow_database(path, rows=4)
    rows_before = query(path, "SELECT * FROM executions ORDER BY id")
    assert not set(LATER_COLUMNS) & set(columns(path))

    with create_telemetry_store(path) as store:
        new_id = store.record(TelemetryRecord(
            repo="new/repo", event_type="push", model="m", conclusion="success",
            cache_read_tokens=7, cache_creation_tokens=8, session_id="s", num_turns=3,
            stop_reason="end_turn"))

    seed = tmp_path / "seed.db"
    conn = sqlite3.connect(seed)
    conn.executescript(SEED_DDL)
    conn.close()
    upgraded, original = columns(path), columns(seed)
    assert set(upgraded) == set(original)
    for name in LATER_COLUMNS:
        assert upgraded[name] == original[name], name
    assert user_version(path) == 1
    old_names = [c for c in original if c not in LATER_COLUMNS]
    kept = query(path, f"SELECT {', '.join(old_names)} FROM executions WHERE id <= 4 ORDER BY id")
    assert kept == rows_before
    assert query(path, f"SELECT DISTINCT {', '.join(LATER_COLUMNS)} FROM executions "
                       "WHERE id <= 4") == [(0, 0, None, None, None)]
    assert query(path, f"SELECT {', '.join(LATER_COLUMNS)} FROM executions WHERE id = {new_id}"
                 ) == [(7, 8, "s", 3, "end_turn")]
    assert sorted(r[1] for r in query(path, "PRAGMA index_list(executions)")) == [
        "idx_executions_created_at", "idx_executions_repo"]


def _failing_step(database: Any, model: Any, columns: Sequence[str]) -> None:
    """A step that fails after the first one has changed the table."""
    database.execute_sql("SELECT no_such_column FROM executions")


def test_upgrade_runs_in_one_transaction(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.db"
    make_narrow_database(path, rows=3)
    master, rows = query(path, MASTER), query(path, "SELECT * FROM executions ORDER BY id")
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, _failing_step))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)

    with pytest.raises(DatabaseError, match="no_such_column") as caught:
        create_telemetry_store(path)

    assert str(path) in str(caught.value)
    # The first step's added columns were rolled back with the rest.
    assert query(path, MASTER) == master
    assert query(path, "SELECT * FROM executions ORDER BY id") == rows
    assert user_version(path) == 0


def test_only_pending_steps_run_in_order_and_then_never_again(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[str] = []
    (m001,) = schema.MIGRATIONS

    def m001_spy(database: Any, model: Any, columns: Sequence[str]) -> None:
        calls.append("m001")
        m001(database, model, columns)

    def m002_add_note(database: Any, model: Any, columns: Sequence[str]) -> None:
        calls.append("m002")
        database.execute_sql("ALTER TABLE executions ADD COLUMN note TEXT")

    create_telemetry_store(db_path).close()  # version 1
    monkeypatch.setattr(schema, "MIGRATIONS", (m001_spy, m002_add_note))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)

    create_telemetry_store(db_path).close()
    assert calls == ["m002"]
    assert user_version(db_path) == 2 and "note" in columns(db_path)

    create_telemetry_store(db_path).close()
    assert calls == ["m002"]

    create_telemetry_store(db_path.with_name("fresh.db")).close()
    assert calls == ["m002", "m001", "m002"]
    assert user_version(db_path.with_name("fresh.db")) == 2


def test_newer_version_is_refused_and_the_file_left_as_is(db_path: Path) -> None:
    with create_telemetry_store(db_path) as store:
        store.record(minimal())
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    before, listing = digest(db_path), files_beside(db_path)

    with pytest.raises(TelemetryError) as caught:
        create_telemetry_store(db_path)

    message = str(caught.value)
    assert str(db_path) in message and "newer" in message and "2" in message
    assert isinstance(caught.value, DatabaseError)
    assert digest(db_path) == before
    assert files_beside(db_path) == listing
    assert user_version(db_path) == 2


def test_opening_a_current_file_writes_nothing(db_path: Path) -> None:
    with create_telemetry_store(db_path) as store:
        for _ in range(3):
            store.record(minimal())
    before, mtime = digest(db_path), db_path.stat().st_mtime_ns
    witness = sqlite3.connect(db_path)
    data_version = witness.execute("PRAGMA data_version").fetchone()[0]
    changes = witness.total_changes

    store = create_telemetry_store(db_path)
    # Another connection's commit would change data_version; a write, even
    # one not committed yet, would put frames in the log.
    assert witness.execute("PRAGMA data_version").fetchone()[0] == data_version
    assert Path(f"{db_path}-wal").stat().st_size == 0
    assert digest(db_path) == before
    store.close()
    witness.close()

    assert digest(db_path) == before and db_path.stat().st_mtime_ns == mtime
    assert changes == 0


def test_opening_a_current_file_needs_no_write_lock(db_path: Path) -> None:
    create_telemetry_store(db_path).close()
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        # A store that tried to write at open would time out here.
        with create_telemetry_store(db_path, busy_timeout=50) as store:
            assert store.count_older_than(0) == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_current_version_missing_columns_is_refused(db_path: Path) -> None:
    create_telemetry_store(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("ALTER TABLE executions DROP COLUMN stop_reason")
    conn.close()
    before = digest(db_path)

    with pytest.raises(DatabaseError, match="stop_reason") as caught:
        create_telemetry_store(db_path)

    assert str(db_path) in str(caught.value)
    assert digest(db_path) == before


def test_versioned_database_without_our_table_belongs_to_someone_else(
        tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO settings VALUES ('theme', 'dark')")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    before, listing = digest(path), files_beside(path)

    with pytest.raises(DatabaseError, match="another application") as caught:
        create_telemetry_store(path)

    assert str(path) in str(caught.value)
    assert digest(path) == before and files_beside(path) == listing
