"""PostgreSQL through psycopg2 (``postgresql+psycopg2://``): what the driver
spells its own way — transactions, keys, batches, ``COPY``, error codes —
checked against the real server through an independent psycopg 3
connection (skipped, with the reason, without a server or without psycopg2)."""

from __future__ import annotations

import datetime as _dt
import sqlite3
from pathlib import Path
from typing import Iterator

import pytest
from support import Witness, make_seed_database, minimal, psycopg2_url
from test_postgres_backend import with_option

from telemetry_orm import DatabaseError, StoreBusyError, create_telemetry_store
from telemetry_orm.backends import postgres_drivers
from telemetry_orm.engines import engine_for


@pytest.fixture
def pg2_url(pg_url: str) -> str:
    return psycopg2_url(pg_url)


@pytest.fixture
def witness(pg_url: str) -> Iterator[Witness]:
    w = Witness(pg_url)
    yield w
    w.close()


@pytest.mark.parametrize("scheme", ["postgresql+psycopg2", "postgres+psycopg2",
                                    "postgresql+psycopg2+pool", "postgres+psycopg2+pool"])
def test_a_psycopg2_scheme_is_the_postgresql_engine_with_that_driver(scheme: str) -> None:
    url = f"{scheme}://u@h/db"
    assert engine_for(url).name == "postgresql"
    assert postgres_drivers.driver_for_url(url) is postgres_drivers.PSYCOPG2
    assert postgres_drivers.driver_for_url("postgresql://u@h/db") is postgres_drivers.PSYCOPG3


def test_without_psycopg2_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_drivers, "psycopg2", None)
    with pytest.raises(DatabaseError, match=r"psycopg2.*pip install 'telemetry_orm\[postgres2\]'"
                       ) as info:
        create_telemetry_store("postgresql+psycopg2://telemetry:secret@127.0.0.1:1/db")
    assert "secret" not in str(info.value)


def test_without_psycopg_3_a_plain_url_says_psycopg2_would_do(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed")
    monkeypatch.setattr(postgres_drivers, "psycopg", None)
    with pytest.raises(DatabaseError, match=r"\[postgres\]'; psycopg2 is installed: a "
                       r"postgresql\+psycopg2:// URL uses it"):
        create_telemetry_store("postgresql://telemetry:secret@127.0.0.1:1/db")


def test_records_keys_batches_purge_and_rollups_through_psycopg2(
        pg2_url: str, witness: Witness, pinned_clock: _dt.datetime) -> None:
    with create_telemetry_store(pg2_url) as store:
        assert store.backend.driver.name == "psycopg2"
        first = store.record(minimal(repo="acme/a", cost_usd=0.5), key="k")
        assert store.record(minimal(repo="acme/a", cost_usd=0.5), key="k") == first
        ids = store.record_many([minimal(repo="acme/b", duration_ms=10 * i) for i in range(4)])
        assert ids == sorted(ids) and len(set(ids)) == 4
        with store.background(max_delay=0.01) as recorder:
            for _ in range(5):
                recorder.record(minimal(repo="acme/c"))
        assert witness.count() == 10
        witness.backdate(first, 100)
        assert store.purge_older_than(90) == 1
        assert witness.count() == 9
        totals = {row.keys["repo"]: row.metrics.executions for row in store.report().rows}
        # The purged row is still counted, from the rollups its purge folded it into.
        assert totals == {"acme/a": 1, "acme/b": 4, "acme/c": 5}
        assert witness.scalar("SELECT SUM(executions) FROM telemetry_orm_rollups") == 1


def test_a_failing_row_rolls_back_the_whole_batch(pg2_url: str, witness: Witness) -> None:
    with create_telemetry_store(pg2_url) as store:
        store.record(minimal())
        witness.execute("ALTER TABLE executions ADD CONSTRAINT no_b CHECK (repo <> 'acme/b')")
        with pytest.raises(DatabaseError):
            store.record_many([minimal(repo="acme/a"), minimal(repo="acme/b")])
        store.record(minimal())  # the connection is usable again
    assert witness.count() == 2


def test_a_lock_held_too_long_is_store_busy_and_writes_nothing(
        pg_url: str, pg2_url: str, witness: Witness) -> None:
    import psycopg

    url = with_option(pg2_url, "-c lock_timeout=200")
    with create_telemetry_store(url) as store:
        store.record(minimal())
        with psycopg.connect(pg_url) as blocker:  # a transaction, not autocommit
            blocker.execute("LOCK TABLE executions IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreBusyError, match="busy"):  # 55P03, from pgcode
                store.record(minimal(), key="k")
            blocker.rollback()
        store.record(minimal())
    assert witness.count() == 2


def test_migrate_copies_awkward_text_through_copy(
        pg2_url: str, witness: Witness, tmp_path: Path) -> None:
    from telemetry_orm.migrate import migrate

    source = tmp_path / "seed.db"
    make_seed_database(source, 3)
    awkward = "tab\there\nnew line\\ back\rslash \\N é ✓"
    conn = sqlite3.connect(source)
    conn.execute("UPDATE executions SET model = ?, session_id = NULL WHERE id = 2", (awkward,))
    conn.commit()
    conn.close()
    assert migrate(source, pg2_url).copied == 3
    rows = witness.rows("SELECT model, session_id FROM executions ORDER BY id")
    assert rows[1] == {"model": awkward, "session_id": None}
    assert witness.count() == 3


def test_an_export_imports_into_a_store_on_a_psycopg2_app_database(
        pg_url: str, pg2_url: str, witness: Witness, tmp_path: Path) -> None:
    from support import app_database

    from telemetry_orm.reports import export_rows
    from telemetry_orm.transfer import import_files

    source = create_telemetry_store(str(tmp_path / "source.db"))
    for i in range(3):
        source.record(minimal(repo=f"acme/r{i}", cost_usd=0.5))
    columns, rows = export_rows(source.database)
    export = tmp_path / "export.csv"
    import csv

    with export.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(rows)
    source.close()
    database = app_database(pg2_url)
    with create_telemetry_store(database) as store:
        assert import_files("csv", [export], store).imported == 3
        assert import_files("csv", [export], store).imported == 0  # each row under its key
    database.close()
    assert witness.scalar("SELECT COUNT(DISTINCT repo) FROM executions") == 3
    assert witness.count() == 3
