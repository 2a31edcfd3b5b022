"""Where a store lives (telemetry_orm.engines): file paths, ``sqlite:`` URLs,
unsupported schemes, and the registry that picks an engine (no server
needed; PostgreSQL URLs are in test_postgres_backend.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import peewee
import pytest
from support import minimal

from telemetry_orm import DatabaseError, TelemetryValidationError, create_telemetry_store, engines


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
    "url", ["mssql://u:p@localhost/db", "cockroachdb://root@localhost:26257/db", "http://x/y"]
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


# -- the registry ---------------------------------------------------------------


def test_each_location_picks_its_engine_by_scheme() -> None:
    assert engines.engine_for("data/t.db").name == "sqlite"
    assert engines.engine_for(":memory:").name == "sqlite"
    assert engines.engine_for("SQLITE:///t.db").name == "sqlite"
    for scheme in ("postgresql", "postgres", "postgresql+pool", "Postgres+Pool"):
        assert engines.engine_for(f"{scheme}://u:p@h/db").name == "postgresql"


def test_a_peewee_database_picks_its_engine_by_class() -> None:
    class AppDatabase(peewee.SqliteDatabase):
        pass

    assert engines.backend_class_of(AppDatabase(":memory:")).name == "sqlite"
    assert engines.backend_class_of(peewee.PostgresqlDatabase(None)).name == "postgresql"
    assert engines.backend_class_of(peewee.MySQLDatabase(None)).name == "mysql"

    class OtherDatabase(peewee.Database):
        pass

    with pytest.raises(TelemetryValidationError,
                       match="database: OtherDatabase databases are not supported"):
        engines.backend_class_of(OtherDatabase(None))


def test_a_registered_engine_is_one_line_and_imported_only_when_used(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A third engine, as a contributor would add it: here SQLite's backend
    # under another scheme, with a module path that does not exist yet.
    monkeypatch.setattr(engines, "ENGINES", dict(engines.ENGINES))
    engines.register_engine("example", "telemetry_orm.backends.sqlite:SqliteBackend",
                            schemes=("example",), databases=())
    backend = engines.backend_for(f"example:///{tmp_path}/e.db")
    assert backend.name == "sqlite"
    engines.register_engine("missing", "telemetry_orm.backends.nope:Backend",
                            schemes=("nope",), databases=(), extra="nope")
    with pytest.raises(DatabaseError, match=r"pip install 'telemetry_orm\[nope\]'"):
        create_telemetry_store("nope://somewhere/db")
