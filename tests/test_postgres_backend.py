"""What is particular to PostgreSQL, against the real test server (skipped,
with the reason, when none is configured)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest
from support import (
    HAVE_PSYCOPG,
    Witness,
    make_seed_database,
    minimal,
    needs_psycopg,
    record_in_process,
    with_query,
)

from telemetry_orm import (
    SCHEMA_VERSION,
    DatabaseError,
    PeeweeTelemetryStore,
    StoreBusyError,
    TelemetryValidationError,
    create_telemetry_store,
)
from telemetry_orm.backends.postgres import safe_url


def with_option(url: str, option: str) -> str:
    """``url`` with a server setting (``-c name=value``) added to ``options``."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query["options"] = f"{query.get('options', '')} {option}".strip()
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@pytest.fixture
def pg_store(pg_driver_url: str) -> Iterator[PeeweeTelemetryStore]:
    store = create_telemetry_store(pg_driver_url)
    yield store
    store.close()


@pytest.fixture
def pg_witness(pg_url: str, pg_store: PeeweeTelemetryStore) -> Iterator[Witness]:
    witness = Witness(pg_url)
    yield witness
    witness.close()


def test_safe_url_hides_the_password() -> None:
    url = "postgresql://bot:s3cret%21@db.example:5432/telemetry?sslmode=require&password=s3cret"
    shown = safe_url(url)
    assert "s3cret" not in shown
    assert shown.startswith("postgresql://bot:***@db.example:5432/telemetry?")
    assert "sslmode=require" in shown


def test_column_types_suit_postgresql(pg_store: PeeweeTelemetryStore, pg_witness: Witness) -> None:
    types = {
        r["column_name"]: (r["data_type"], r["is_identity"])
        for r in pg_witness.rows(
            "SELECT column_name, data_type, is_identity FROM information_schema.columns "
            "WHERE table_name = 'executions' AND table_schema = current_schema()"
        )
    }
    assert types["id"] == ("bigint", "YES")
    assert types["created_at"][0] == "timestamp with time zone"
    assert types["input_tokens"][0] == "bigint"
    assert types["cost_usd"][0] == "double precision"
    assert types["repo"][0] == "text"
    default = pg_witness.scalar(
        "SELECT column_default FROM information_schema.columns WHERE table_name = "
        "'executions' AND column_name = 'created_at' AND table_schema = current_schema()"
    )
    assert default == "now()"


def test_schema_version_lives_in_a_one_row_table(
    pg_store: PeeweeTelemetryStore, pg_witness: Witness
) -> None:
    assert pg_witness.rows("SELECT version FROM telemetry_orm_schema") == [
        {"version": SCHEMA_VERSION}
    ]


def test_sessions_use_utc_whatever_the_url_asks(pg_url: str) -> None:
    url = with_option(pg_url, "-c TimeZone=Asia/Tokyo")
    with create_telemetry_store(url) as store:
        row_id = store.record(minimal())
        (zone,) = store.database.execute_sql("SHOW TimeZone").fetchone()
        assert zone == "UTC"
        created = store.model.get_by_id(row_id).created_at
        assert created.utcoffset().total_seconds() == 0
        # Bucketing by day in SQL happens in UTC, as on SQLite.
        (day,) = store.database.execute_sql(
            "SELECT to_char(created_at, 'YYYY-MM-DD') FROM executions WHERE id = %s", (row_id,)
        ).fetchone()
        assert day == created.strftime("%Y-%m-%d")
        store.database.close()


def test_wrong_password_is_a_database_error_without_the_password(pg_url: str) -> None:
    parts = urlsplit(pg_url)
    wrong = parts._replace(netloc=f"{parts.username}:not-the-password-{uuid.uuid4().hex[:6]}"
                                  f"@{parts.hostname}:{parts.port or 5432}")
    url = urlunsplit(wrong)
    with pytest.raises(DatabaseError) as info:
        create_telemetry_store(url)
    assert "not-the-password" not in str(info.value)
    assert "***" in str(info.value)


@pytest.mark.skipif(HAVE_PSYCOPG, reason="checks the message without psycopg")
def test_without_the_driver_the_error_names_the_extra() -> None:
    with pytest.raises(DatabaseError, match=r"pip install 'telemetry_orm\[postgres\]'") as info:
        create_telemetry_store("postgresql://telemetry:secret@127.0.0.1:1/telemetry")
    assert "secret" not in str(info.value)


@needs_psycopg
def test_unreachable_server_is_a_database_error() -> None:
    # Port 1 on the loopback: nothing listens, the connection is refused at once.
    # The message names the store (password hidden) and says why; every error
    # of this store names 127.0.0.1, so the reason is what is checked.
    with pytest.raises(DatabaseError) as info:
        create_telemetry_store("postgresql://telemetry:x@127.0.0.1:1/telemetry")
    message = str(info.value)
    assert message.startswith("postgresql://telemetry:***@127.0.0.1:1/telemetry: ")
    assert re.search(r"port 1 failed: Connection refused", message), message
    assert not isinstance(info.value, StoreBusyError)


@needs_psycopg
def test_url_without_a_database_is_refused() -> None:
    with pytest.raises(DatabaseError, match="names no database"):
        create_telemetry_store("postgresql://telemetry:x@127.0.0.1:5432/")


def test_lock_held_too_long_is_store_busy_and_writes_nothing(pg_url: str) -> None:
    import psycopg

    url = with_option(pg_url, "-c lock_timeout=200")
    with create_telemetry_store(url) as store:
        store.record(minimal())
        with psycopg.connect(pg_url) as blocker:  # a transaction, not autocommit
            blocker.execute("LOCK TABLE executions IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreBusyError, match="busy"):
                store.record(minimal())
            blocker.rollback()
        store.record(minimal())
    witness = Witness(pg_url)
    try:
        assert witness.count() == 2
    finally:
        witness.close()


def test_close_returns_every_connection(pg_url: str) -> None:
    name = f"telemetry-test-{uuid.uuid4().hex[:8]}"
    url = with_query(pg_url, application_name=name)
    witness = Witness(pg_url)
    sessions = "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = ?"
    try:
        store = create_telemetry_store(url)
        # A model query in another thread keeps that thread's connection.
        worker = threading.Thread(target=lambda: store.model.select().count())
        worker.start()
        worker.join()
        store.record(minimal())
        assert witness.scalar(sessions, name) == 2
        store.close()
        # A server process leaves pg_stat_activity when it has finished
        # exiting, a moment after the client hung up: wait for that, boundedly.
        deadline = time.monotonic() + 10
        while witness.scalar(sessions, name) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert witness.scalar(sessions, name) == 0
    finally:
        witness.close()


def test_a_small_pool_serves_many_threads(pg_url: str) -> None:
    url = with_query(pg_url, max_connections="1")
    with create_telemetry_store(url) as store:
        threads = [threading.Thread(target=lambda: [store.record(minimal()) for _ in range(20)])
                   for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        witness = Witness(pg_url)
        try:
            assert witness.count() == 100
        finally:
            witness.close()


def test_four_processes_create_the_schema_and_record_at_once(pg_url: str) -> None:
    """4 processes × 500 records on one server, all starting on an empty
    schema at the same moment: every row arrives, no process fails."""
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(4)
    processes = [
        spawn.Process(target=record_in_process, args=(pg_url, barrier, 500, f"p{n}"))
        for n in range(4)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    witness = Witness(pg_url)
    try:
        assert witness.count() == 2000
        per_repo = witness.rows(
            "SELECT repo, COUNT(*) AS n, COUNT(DISTINCT num_turns) AS turns "
            "FROM executions GROUP BY repo ORDER BY repo"
        )
        assert per_repo == [{"repo": f"acme/p{n}", "n": 500, "turns": 500} for n in range(4)]
        assert witness.schema_version() == SCHEMA_VERSION
    finally:
        witness.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_connection(pg_store: PeeweeTelemetryStore,
                                              pg_witness: Witness) -> None:
    pg_store.record(minimal(repo="acme/parent"))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            pg_store.record(minimal(repo="acme/child"))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    pg_store.record(minimal(repo="acme/parent"))
    rows = pg_witness.rows("SELECT repo, COUNT(*) AS n FROM executions GROUP BY repo ORDER BY repo")
    assert rows == [{"repo": "acme/child", "n": 1}, {"repo": "acme/parent", "n": 2}]


def test_store_lives_in_the_first_schema_of_the_search_path(pg_url: str) -> None:
    """Tables of the same names further down the search_path (here: a newer
    schema version and a foreign executions table) are not the store's."""
    import psycopg
    from conftest import postgres_server_url

    server = postgres_server_url()
    other = f"test_other_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{other}"')
        conn.execute(f'CREATE TABLE "{other}".executions (name TEXT)')
        conn.execute(f'CREATE TABLE "{other}".telemetry_orm_schema (version INTEGER NOT NULL)')
        conn.execute(f'INSERT INTO "{other}".telemetry_orm_schema VALUES (99)')
    try:
        mine = dict(parse_qsl(urlsplit(pg_url).query))["options"].split("=", 1)[1]
        url = with_option(server, f"-c search_path={mine},{other}")
        with create_telemetry_store(url) as store:
            store.record(minimal())
        witness = Witness(pg_url)
        try:
            assert witness.count() == 1
            assert witness.schema_version() == SCHEMA_VERSION
        finally:
            witness.close()
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{other}" CASCADE')


def test_store_recovers_when_the_server_ends_its_connections(pg_driver_url: str) -> None:
    name = f"telemetry-test-{uuid.uuid4().hex[:8]}"
    witness = Witness(pg_driver_url)
    try:
        with create_telemetry_store(with_query(pg_driver_url, application_name=name)) as store:
            store.record(minimal())
            ended = witness.rows(
                "SELECT pg_terminate_backend(pid, 5000) AS ended FROM pg_stat_activity "
                "WHERE application_name = ?", name,
            )
            assert ended == [{"ended": True}]
            # peewee 3's pool only notices a dead connection on use: one
            # call may fail, as a DatabaseError; the next one must work.
            with contextlib.suppress(DatabaseError):
                store.record(minimal())
            store.record(minimal())
        assert witness.count() in (2, 3)
    finally:
        witness.close()


def test_a_row_the_server_refuses_rolls_back_the_whole_batch(
    pg_store: PeeweeTelemetryStore, pg_witness: Witness
) -> None:
    pg_witness.execute(
        "ALTER TABLE executions ADD CONSTRAINT no_evil CHECK (repo <> 'acme/evil')"
    )
    pg_store.record(minimal())
    with pytest.raises(DatabaseError, match="no_evil"):
        pg_store.record_many([minimal(), minimal(repo="acme/evil"), minimal()])
    assert pg_witness.count() == 1
    assert len(pg_store.record_many([minimal(), minimal()])) == 2
    assert pg_witness.count() == 3


def test_busy_timeout_is_the_sessions_lock_timeout(pg_driver_url: str) -> None:
    def lock_timeout(url: str) -> str:
        with create_telemetry_store(url, busy_timeout=1234) as store, \
                store.database.connection_context():
            (value,) = store.database.execute_sql("SHOW lock_timeout").fetchone()
        return str(value)

    assert lock_timeout(pg_driver_url) == "1234ms"
    # The URL's own setting wins.
    assert lock_timeout(with_option(pg_driver_url, "-c lock_timeout=777")) == "777ms"


# -- what PostgreSQL cannot store ---------------------------------------------------


def test_a_nul_character_is_refused_naming_the_field(pg_driver_url: str) -> None:
    with create_telemetry_store(pg_driver_url) as store:
        with pytest.raises(TelemetryValidationError) as info:
            store.record(minimal(session_id="a\x00b"))
        assert info.value.field == "session_id" and "NUL" in str(info.value)
        with pytest.raises(TelemetryValidationError) as info:
            store.record_many([minimal(), minimal(repo="x\x00")])
        assert (info.value.field, info.value.index) == ("repo", 1)
        with store.background(max_batch=100) as recorder:
            for i in range(99):
                recorder.record(minimal(delivery_id=f"good-{i}"))
            with pytest.raises(TelemetryValidationError):
                recorder.record(minimal(delivery_id="bad\x00"))
        # The good batch-mates went in; nothing else did.
        assert store.model.select().count() == 99


def test_migrate_skips_a_nul_row_and_lists_it_by_id(pg_url: str, tmp_path: Path) -> None:
    from telemetry_orm.migrate import migrate

    source = tmp_path / "nul.db"
    make_seed_database(source, 3001)
    conn = sqlite3.connect(source)
    conn.execute("UPDATE executions SET model = 'a' || char(0) || 'b' WHERE id = 1500")
    conn.commit()
    conn.close()
    first = migrate(source, pg_url)
    assert first.copied == 3000 and first.invalid_count == 1
    assert first.invalid[0][0] == 1500 and "model" in first.invalid[0][1]
    again = migrate(source, pg_url)
    assert again.copied == 0 and again.already_copied == 3000 and again.invalid_count == 1


@needs_psycopg
@pytest.mark.parametrize("query", ["max_connections=abc", "timeout=soon", "max_connections=0"])
def test_a_pool_setting_that_is_not_a_number_names_itself(query: str) -> None:
    name = query.partition("=")[0]
    with pytest.raises(TelemetryValidationError) as info:
        create_telemetry_store(f"postgresql://u:p@127.0.0.1:1/db?{query}")
    assert info.value.field == name
