"""What is particular to MySQL/MariaDB: column lengths, InnoDB and utf8mb4,
keyed writers in several processes, an application's pooled or proxied
database, a migration from SQLite, and reports by zone equal to SQLite's.

Needs a server: ``TELEMETRY_TEST_MYSQL_URL`` (.ci/run starts one)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import peewee
import pytest
from support import (
    Witness,
    app_database,
    minimal,
    mysql_connect,
    place,
    record_in_process,
    record_keys_in_process,
)

from telemetry_orm import (
    DatabaseError,
    PeeweeTelemetryStore,
    StoreBusyError,
    TelemetryValidationError,
    create_telemetry_store,
)
from telemetry_orm.backends.mysql import TEXT_LENGTHS, MySQLBackend, lock_name, safe_url
from telemetry_orm.transfer import migrate

UTC = dt.timezone.utc


@pytest.fixture
def store(mysql_url: str) -> Iterator[PeeweeTelemetryStore]:
    s = create_telemetry_store(mysql_url)
    yield s
    s.close()


@pytest.fixture
def witness(mysql_url: str, store: PeeweeTelemetryStore) -> Iterator[Witness]:
    w = Witness(mysql_url)
    yield w
    w.close()


@pytest.mark.parametrize("field", sorted(TEXT_LENGTHS))
def test_a_value_longer_than_its_column_is_refused_naming_the_field(
        store: PeeweeTelemetryStore, witness: Witness, field: str) -> None:
    limit = TEXT_LENGTHS[field]
    store.record(minimal(**{field: "é" * limit}))  # the longest fits, in characters
    with pytest.raises(TelemetryValidationError, match=f"{field}.*at most {limit}"):
        store.record(minimal(**{field: "x" * (limit + 1)}))
    with pytest.raises(TelemetryValidationError, match=field):
        store.record_many([minimal(), minimal(**{field: "x" * (limit + 1)})])
    # Nothing cut, nothing half written.
    assert witness.rows(f"SELECT CHAR_LENGTH({field}) AS n FROM executions") == [{"n": limit}]


def test_an_unindexed_text_past_its_bytes_is_refused(
        store: PeeweeTelemetryStore, witness: Witness) -> None:
    store.record(minimal(stop_reason="€" * (65_535 // 3)))
    with pytest.raises(TelemetryValidationError, match="stop_reason"):
        store.record(minimal(stop_reason="€" * (65_535 // 3 + 1)))
    assert witness.count() == 1


def test_every_table_is_innodb_utf8mb4_binary(
        store: PeeweeTelemetryStore, witness: Witness) -> None:
    store.record(minimal(), key="k")
    store.rollup()
    tables = witness.rows(
        "SELECT table_name AS name, engine, table_collation AS collation "
        "FROM information_schema.tables WHERE table_schema = DATABASE()")
    assert {t["name"] for t in tables} >= {"executions", "telemetry_orm_keys",
                                          "telemetry_orm_rollups", "telemetry_orm_schema"}
    assert {(t["engine"], t["collation"]) for t in tables
            if t["name"] != "telemetry_orm_schema"} == {("InnoDB", "utf8mb4_bin")}
    # Text compares as on SQLite: case and trailing spaces matter, and
    # four-byte characters stay.
    store.record(minimal(repo="Acme/🚀"))
    store.record(minimal(repo="acme/🚀"))
    store.record(minimal(repo="acme/🚀 "))
    expected = ["Acme/🚀", "acme/api", "acme/🚀", "acme/🚀 "]
    assert sorted(r.keys["repo"] for r in store.report(group_by=["repo"]).rows) == expected
    store.rollup()
    assert sorted(r.keys["repo"] for r in store.report(group_by=["repo"]).rows) == expected
    assert store.record(minimal(), key="k ") != store.record(minimal(), key="k")


def test_a_myisam_telemetry_table_is_refused_naming_innodb(mysql_url: str) -> None:
    witness = Witness(mysql_url)
    try:
        create_telemetry_store(mysql_url).close()
        witness.execute("ALTER TABLE executions ENGINE=MyISAM")
        with pytest.raises(DatabaseError, match="MyISAM.*InnoDB"):
            create_telemetry_store(mysql_url)
    finally:
        witness.close()


def test_created_at_is_utc_whatever_the_sessions_time_zone(mysql_url: str) -> None:
    database = app_database(mysql_url)
    database.connect()
    database.execute_sql("SET time_zone = '+05:00'")
    store = create_telemetry_store(database)
    witness = Witness(mysql_url)
    try:
        row_id = store.record(minimal())
        stored = witness.created_at(row_id)
        assert abs((witness.now() - stored).total_seconds()) < 60
    finally:
        store.close()
        database.close()
        witness.close()


def test_four_processes_recording_the_same_keys_give_one_row_each(mysql_url: str) -> None:
    create_telemetry_store(mysql_url).close()
    keys = [f"delivery-{i}" for i in range(60)]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    workers = [context.Process(target=record_keys_in_process,
                               args=(mysql_url, barrier, keys, f"w{n}", results))
               for n in range(4)]
    for worker in workers:
        worker.start()
    answers = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len({tuple(ids) for ids in answers.values()}) == 1
    witness = Witness(mysql_url)
    try:
        assert witness.count() == 60
        assert witness.scalar("SELECT COUNT(*) FROM telemetry_orm_keys") == 60
    finally:
        witness.close()


@pytest.mark.parametrize("how", ["pooled", "proxy"])
def test_an_applications_pooled_or_proxied_database(mysql_url: str, how: str) -> None:
    database = app_database(mysql_url, pooled=True)
    proxy = peewee.DatabaseProxy()
    store = create_telemetry_store(proxy if how == "proxy" else database)
    proxy.initialize(database)
    witness = Witness(mysql_url)
    try:
        first = store.record(minimal(input_tokens=5), key="a")
        assert store.record(minimal(input_tokens=7), key="a") == first
        assert store.record_many([minimal(input_tokens=1)] * 3) == [first + 1, first + 2,
                                                                     first + 3]
        with database.atomic() as transaction:  # the application's transaction, joined
            store.record(minimal())
            transaction.rollback()
        assert witness.count() == 4
        assert store.report().totals.input_tokens == 8
    finally:
        store.close()
        database.close_all()
        witness.close()


def _rows_at(store: PeeweeTelemetryStore, witness: Witness) -> None:
    start = dt.datetime(2026, 3, 7, 20, 0, tzinfo=UTC)
    instants = [start + dt.timedelta(minutes=97 * i) for i in range(60)]
    place(store, witness, instants, input_tokens=3, duration_ms=1200)
    place(store, witness, instants[::7], repo="acme/web", cost_usd=0.25, duration_ms=90)


def _figures(store: PeeweeTelemetryStore, zone: str) -> Dict[Tuple[Any, ...], Any]:
    report = store.report(group_by=["day", "repo"], tz=zone)
    return {tuple(row.keys.values()): row.metrics for row in report.rows}


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kathmandu"])
def test_reports_by_zone_equal_sqlites_from_rows_and_rollups(
        mysql_url: str, tmp_path: Path, zone: str) -> None:
    figures = []
    for location in (str(tmp_path / "t.db"), mysql_url):
        store = create_telemetry_store(location)
        witness = Witness(location)
        try:
            _rows_at(store, witness)
            from_rows = _figures(store, zone)
            store.rollup()  # then whole hours come from the rollups
            figures.append((from_rows, _figures(store, zone)))
        finally:
            store.close()
            witness.close()
    assert figures[0] == figures[1]


def test_migrate_from_a_sqlite_file_copies_every_row_once(
        mysql_url: str, tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    source = create_telemetry_store(path)
    witness = Witness(path)
    try:
        _rows_at(source, witness)
        expected = _figures(source, "UTC")
    finally:
        source.close()
        witness.close()
    assert migrate(path, mysql_url).copied == 69
    assert migrate(path, mysql_url).copied == 0
    target = create_telemetry_store(mysql_url)
    try:
        assert _figures(target, "UTC") == expected
        assert target.checkpoint().applies is False
    finally:
        target.close()


def test_names_and_urls() -> None:
    pytest.importorskip("pymysql")
    assert safe_url("mysql://bot:secret@db:3306/t") == "mysql://bot:***@db:3306/t"
    assert len(lock_name("a" * 64, "schema")) <= 64
    assert lock_name("one", "schema") != lock_name("two", "schema")
    assert isinstance(MySQLBackend.from_location("mariadb://u@h/d", busy_timeout=1,
                                                 log_size_limit=1), MySQLBackend)
    with pytest.raises(DatabaseError, match="names no database"):
        MySQLBackend("mysql://u@h").open()


def test_an_unreachable_server_is_one_clear_error() -> None:
    pytest.importorskip("pymysql")
    with pytest.raises(DatabaseError, match="cannot reach the MySQL server"):
        create_telemetry_store("mysql://u:p@127.0.0.1:1/db?connect_timeout=2")


def test_the_test_server_keeps_no_zone_tables(mysql_url: str) -> None:
    # Reports by zone above ran without them: the store never reads them.
    conn = mysql_connect(mysql_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT CONVERT_TZ('2026-01-01 00:00:00', 'UTC', 'Asia/Tokyo')")
            assert cursor.fetchone()[0] is None
    finally:
        conn.close()


def test_a_row_still_being_written_is_counted_by_a_later_rollup(
        store: PeeweeTelemetryStore, witness: Witness) -> None:
    past = (witness.now() - dt.timedelta(hours=3)).replace(tzinfo=None)
    insert = ("INSERT INTO executions (created_at, repo, event_type, model, conclusion) "
              "VALUES (?, 'acme/api', 'e', 'm', 'success')")
    witness.execute("UPDATE executions SET created_at = ? WHERE id = ?", past,
                    store.record(minimal()))
    witness.conn.begin()
    witness.execute(insert, past)  # its id is given out; not committed yet
    later = Witness(witness.location)
    try:
        later.execute(insert, past)  # a larger id, committed first
        store.rollup()
        witness.conn.commit()
        store.rollup()
        folded = later.scalar("SELECT SUM(executions) FROM telemetry_orm_rollups")
        assert int(folded) == later.count() == 3
    finally:
        later.close()


def test_a_connection_the_server_ended_fails_once_and_is_not_used_again(
        store: PeeweeTelemetryStore, witness: Witness) -> None:
    store.record(minimal())
    for row in witness.rows("SELECT id FROM information_schema.processlist "
                            "WHERE db = DATABASE() AND id <> CONNECTION_ID()"):
        witness.execute(f"KILL {int(row['id'])}")
    with pytest.raises(DatabaseError, match="gone away or cannot be reached"):
        store.record(minimal())
    store.record(minimal())  # on a new connection
    assert witness.count() == 2


def test_a_lock_held_past_the_busy_timeout_is_store_busy(mysql_url: str) -> None:
    store = create_telemetry_store(mysql_url, busy_timeout=1000)
    witness = Witness(mysql_url)
    try:
        row_id = store.record(minimal(), key="k")
        witness.conn.begin()
        witness.rows("SELECT id FROM executions WHERE id = ? FOR UPDATE", row_id)
        with pytest.raises(StoreBusyError, match="busy"):
            store.record(minimal(input_tokens=9), key="k", replace=True)
        witness.conn.rollback()
        assert store.record(minimal(input_tokens=9), key="k", replace=True) == row_id
        assert witness.scalar("SELECT input_tokens FROM executions") == 9
    finally:
        store.close()
        witness.close()


def test_four_processes_create_the_schema_and_record_at_once(mysql_url: str) -> None:
    """Set-up on an empty database from 4 processes at the same moment: they
    queue on GET_LOCK, every row arrives, no process fails."""
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(4)
    processes = [spawn.Process(target=record_in_process, args=(mysql_url, barrier, 200, f"p{n}"))
                 for n in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    witness = Witness(mysql_url)
    try:
        assert witness.rows("SELECT repo, COUNT(*) AS n FROM executions GROUP BY repo "
                            "ORDER BY repo") == [{"repo": f"acme/p{n}", "n": 200} for n in range(4)]
        assert witness.schema_version() == 1
    finally:
        witness.close()


def test_a_gone_key_already_among_the_purged_keys_is_swept_without_error(
        store: PeeweeTelemetryStore, witness: Witness) -> None:
    row_id = store.record(minimal(), key="k")
    witness.backdate(row_id, 100)
    assert store.purge(90).deleted == 1
    assert witness.scalar("SELECT COUNT(*) FROM telemetry_orm_purged_keys") == 1
    # Another program writes the key again, for a row that is not there.
    witness.execute("INSERT INTO telemetry_orm_keys (key, execution_id) VALUES (?, ?)", "k",
                    row_id + 100)
    store.purge(90)
    assert witness.scalar("SELECT COUNT(*) FROM telemetry_orm_keys") == 0
    assert witness.rows("SELECT key, execution_id FROM telemetry_orm_purged_keys") == [
        {"key": "k", "execution_id": row_id}]
