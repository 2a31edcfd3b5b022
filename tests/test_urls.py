"""Where a store lives: file paths, ``sqlite:`` URLs and unsupported schemes
(no server needed; PostgreSQL URLs are in test_postgres.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from support import minimal

from telemetry_orm import TelemetryValidationError, create_telemetry_store


def test_sqlite_url_with_an_absolute_path_opens_that_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "t.db"
    with create_telemetry_store(f"sqlite:///{target}") as store:
        store.record(minimal())
        assert store.backend.name == "sqlite"
    conn = sqlite3.connect(target)
    try:
        assert conn.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 1
    finally:
        conn.close()


def test_sqlite_url_with_a_relative_path_is_relative_to_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with create_telemetry_store("sqlite:///data/rel.db") as store:
        store.record(minimal())
    assert (tmp_path / "data" / "rel.db").is_file()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_sqlite_url_without_a_file_is_in_memory(url: str, tmp_path: Path) -> None:
    with create_telemetry_store(url) as store:
        assert store.path == ":memory:"
        store.record(minimal())
        assert store.model.select().count() == 1


@pytest.mark.parametrize(
    "url", ["mysql://u:p@localhost/db", "cockroachdb://root@localhost:26257/db", "http://x/y"]
)
def test_unsupported_scheme_names_the_argument_and_what_would_do(url: str) -> None:
    with pytest.raises(TelemetryValidationError, match="postgresql://") as info:
        create_telemetry_store(url)
    assert info.value.field == "db_path"


def test_sqlite_url_parameters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TelemetryValidationError, match="timeout") as info:
        create_telemetry_store(f"sqlite:///{tmp_path}/t.db?timeout=5")
    assert info.value.field == "db_path"
    assert not (tmp_path / "t.db").exists()
