"""Copying a SQLite file (as the original TypeScript store leaves it) into
another store: every target runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, List

import pytest
from support import OLD_TABLE_DDL, Witness, make_seed_database, minimal

from telemetry_orm import (
    FIELD_NAMES,
    DatabaseError,
    TelemetryValidationError,
    create_telemetry_store,
)
from telemetry_orm.cli import ProgressLine, main
from telemetry_orm.migrate import MigrationProgress, migrate


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    """A database written by the original store: 25 rows, one hour apart."""
    path = tmp_path / "seed" / "telemetry.db"
    path.parent.mkdir()
    make_seed_database(path, 25)
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE executions SET created_at = datetime('2024-01-01 00:00:00', '+' || id || ' hours')"
    )
    conn.commit()
    conn.close()
    return path


def source_rows(path: Path) -> List[Dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM executions ORDER BY id")]
    finally:
        conn.close()


def target_rows(witness: Witness) -> List[Dict[str, Any]]:
    rows = witness.rows("SELECT * FROM executions ORDER BY id")
    for row in rows:
        row["created_at"] = witness.created_at(row["id"])
    return rows


def utc(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text).replace(tzinfo=_dt.timezone.utc)


def test_copies_every_row_and_column_with_created_at_to_the_second(
    seed: Path, any_location: str
) -> None:
    result = migrate(seed, any_location, batch_size=10)
    assert (result.total, result.copied, result.skipped) == (25, 25, 0)
    witness = Witness(any_location)
    try:
        copied = target_rows(witness)
    finally:
        witness.close()
    original = source_rows(seed)
    assert len(copied) == len(original)
    for before, after in zip(original, copied, strict=True):
        assert after["created_at"] == utc(before["created_at"])
        assert {f: after[f] for f in FIELD_NAMES} == {f: before[f] for f in FIELD_NAMES}


def test_running_twice_copies_nothing_twice(seed: Path, any_location: str) -> None:
    migrate(seed, any_location)
    again = migrate(seed, any_location)
    assert (again.copied, again.already_copied, again.invalid_count) == (0, 25, 0)
    witness = Witness(any_location)
    try:
        assert witness.count() == 25
    finally:
        witness.close()


def test_a_later_run_copies_only_new_rows(seed: Path, any_location: str) -> None:
    migrate(seed, any_location)
    conn = sqlite3.connect(seed)
    conn.execute(
        "INSERT INTO executions (repo, event_type, model, conclusion) "
        "VALUES ('acme/late', 'push', 'm', 'success')"
    )
    conn.commit()
    conn.close()
    result = migrate(seed, any_location)
    assert (result.copied, result.already_copied) == (1, 25)
    witness = Witness(any_location)
    try:
        assert witness.scalar("SELECT COUNT(*) FROM executions WHERE repo = 'acme/late'") == 1
        assert witness.count() == 26
    finally:
        witness.close()


def test_rows_already_in_the_target_stay(seed: Path, any_location: str) -> None:
    with create_telemetry_store(any_location) as store:
        store.record(minimal(repo="acme/already-here"))
        result = migrate(seed, store)
        assert not store.closed  # a store passed in stays open
        store.record(minimal(repo="acme/after"))
    assert result.copied == 25
    witness = Witness(any_location)
    try:
        assert witness.count() == 27
    finally:
        witness.close()


def test_invalid_rows_are_skipped_reported_and_retried_later(
    seed: Path, any_location: str
) -> None:
    conn = sqlite3.connect(seed)
    conn.execute("UPDATE executions SET input_tokens = -5 WHERE id = 3")
    conn.execute("UPDATE executions SET created_at = 'yesterday' WHERE id = 7")
    conn.commit()
    conn.close()
    result = migrate(seed, any_location)
    assert (result.copied, result.invalid_count) == (23, 2)
    reasons = dict(result.invalid)
    assert "input_tokens" in reasons[3]
    assert "created_at" in reasons[7]
    assert "invalid row id 3: input_tokens" in result.summary()
    again = migrate(seed, any_location)
    assert (again.copied, again.already_copied, again.invalid_count) == (0, 23, 2)


def test_older_source_without_newer_columns_gets_their_defaults(
    tmp_path: Path, any_location: str
) -> None:
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute(OLD_TABLE_DDL["sqlite"])
    conn.execute(
        "INSERT INTO executions (created_at, repo, event_type, model, conclusion) "
        "VALUES ('2023-05-06 07:08:09', 'acme/old', 'push', 'm', 'success')"
    )
    conn.commit()
    conn.close()
    assert migrate(old, any_location).copied == 1
    witness = Witness(any_location)
    try:
        (row,) = target_rows(witness)
    finally:
        witness.close()
    assert row["created_at"] == utc("2023-05-06 07:08:09")
    assert (row["cache_read_tokens"], row["stop_reason"], row["num_turns"]) == (0, None, None)


def test_source_file_is_not_changed(seed: Path, any_location: str) -> None:
    before = hashlib.sha256(seed.read_bytes()).hexdigest()
    migrate(seed, any_location)
    assert hashlib.sha256(seed.read_bytes()).hexdigest() == before
    conn = sqlite3.connect(seed)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    finally:
        conn.close()


def test_progress_is_reported_after_each_batch(seed: Path, any_location: str) -> None:
    seen: List[MigrationProgress] = []
    migrate(seed, any_location, batch_size=10, progress=seen.append)
    assert [p.done for p in seen] == [10, 20, 25]
    assert seen[-1] == MigrationProgress(done=25, total=25, copied=25, skipped=0)


def test_progress_line_rewrites_one_line() -> None:
    stream = io.StringIO()
    line = ProgressLine(stream)
    line(MigrationProgress(done=500, total=1000, copied=400, skipped=100))
    line(MigrationProgress(done=1000, total=1000, copied=900, skipped=100))
    line.finish()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "1,000 / 1,000 rows (100%), copied 900, skipped 100" in text


def test_another_file_at_the_same_path_is_refused_until_renamed(
    seed: Path, any_location: str
) -> None:
    migrate(seed, any_location)
    seed.unlink()
    make_seed_database(seed, 3)  # ids start at 1 again, with other created_at
    with pytest.raises(DatabaseError, match="another source name"):
        migrate(seed, any_location)
    result = migrate(seed, any_location, source_name="host-b/telemetry.db")
    assert result.copied == 3


def test_missing_or_foreign_source_is_a_database_error(tmp_path: Path, db_path: Path) -> None:
    with pytest.raises(DatabaseError, match="no such database file"):
        migrate(tmp_path / "missing.db", db_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DatabaseError, match="not a SQLite database"):
        migrate(text, db_path)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE other (x)").connection.close()
    with pytest.raises(DatabaseError, match="no .executions. table"):
        migrate(empty, db_path)


def test_bad_arguments_name_themselves(seed: Path, db_path: Path) -> None:
    with pytest.raises(TelemetryValidationError) as info:
        migrate(seed, db_path, batch_size=0)
    assert info.value.field == "batch_size"
    with pytest.raises(TelemetryValidationError) as info:
        migrate(seed, seed)
    assert info.value.field == "target"


def test_rows_purged_from_the_source_after_copying_are_not_counted_again(
    seed: Path, any_location: str
) -> None:
    migrate(seed, any_location)
    conn = sqlite3.connect(seed)
    conn.execute("DELETE FROM executions WHERE id BETWEEN 5 AND 9")
    conn.commit()
    conn.close()
    again = migrate(seed, any_location)
    assert (again.total, again.copied, again.already_copied) == (20, 0, 20)


# --- telemetry-orm migrate ----------------------------------------------------------


def test_command_line_shows_progress_on_stderr_and_a_summary(
    seed: Path, any_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["migrate", "--from", str(seed), "--to", any_location, "--batch-size", "10"]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert first.err.count("\r") == 3 and first.err.endswith("\n")
    assert "migrate: 25 / 25 rows (100%), copied 25, skipped 0" in first.err
    assert "copied 25 of 25 rows" in first.out
    assert main(argv) == 0
    second = capsys.readouterr()
    assert "copied 0 of 25 rows" in second.out
    assert "skipped 25: 25 copied before, 0 invalid" in second.out
    witness = Witness(any_location)
    try:
        assert witness.count() == 25
    finally:
        witness.close()


def test_command_line_names_a_missing_source_in_one_line(
    tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["migrate", "--from", str(tmp_path / "nope.db"), "--to", str(db_path)])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("telemetry-orm: error: ") and "nope.db: no such database file" in err
    assert err.count("\n") == 1
    assert not db_path.exists()


def test_two_runs_at_once_copy_each_row_once(seed: Path, any_location: str) -> None:
    import threading

    results: List[Any] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        results.append(migrate(seed, any_location, batch_size=5))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    assert sum(r.copied for r in results) == 25
    assert sum(r.already_copied for r in results) == 25
    witness = Witness(any_location)
    try:
        assert witness.count() == 25
    finally:
        witness.close()


# -- hardening ---------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["url", "hardlink", "symlink", "relative"])
def test_the_source_itself_is_refused_by_any_spelling(
        seed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str) -> None:
    before = hashlib.sha256(seed.read_bytes()).hexdigest()
    listing = sorted(p.name for p in seed.parent.iterdir())
    if spelling == "url":
        target = f"sqlite:///{seed}"
    elif spelling == "hardlink":
        os.link(seed, tmp_path / "hard.db")
        target = str(tmp_path / "hard.db")
    elif spelling == "symlink":
        (tmp_path / "link.db").symlink_to(seed)
        target = str(tmp_path / "link.db")
    else:
        monkeypatch.chdir(seed.parent.parent)
        target = "seed/../seed/telemetry.db"
    with pytest.raises(TelemetryValidationError, match="is the source itself") as info:
        migrate(seed, target)
    assert info.value.field == "target"
    assert hashlib.sha256(seed.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in seed.parent.iterdir()) == listing


def test_a_newer_source_schema_is_refused(seed: Path, db_path: Path) -> None:
    conn = sqlite3.connect(seed)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(DatabaseError, match="newer"):
        migrate(seed, db_path)
    assert not db_path.exists()
