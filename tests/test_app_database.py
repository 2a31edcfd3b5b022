"""A store on an application's own peewee database: its transactions, its
proxy, its pool, its settings, on both engines and, on PostgreSQL, both
drivers (psycopg 3 and psycopg2); checked through independent connections
(plain sqlite3, psycopg)."""

from __future__ import annotations

import datetime as _dt
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import peewee
import pytest
from support import Witness, app_database, make_seed_database, minimal, psycopg2_url

from telemetry_orm import (
    SCHEMA_VERSION,
    DatabaseError,
    StoreBusyError,
    TelemetryValidationError,
    TransactionOpenError,
    create_telemetry_store,
)
from telemetry_orm.reports import report
from telemetry_orm.schema import format_timestamp

#: These tests fork while threads run: that is the case they check.
FORKS_WITH_THREADS = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning")


class Boom(Exception):
    """What makes the application's transaction roll back."""


def _order_model(database: Any) -> Any:
    class Order(peewee.Model):
        name = peewee.TextField()

        class Meta:
            table_name = "app_orders"

    Order.bind(database)
    return Order


@pytest.fixture(params=["sqlite", "sqlite-pooled", "postgresql", "postgresql-pooled",
                        "psycopg2", "psycopg2-pooled"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """(location, the application's database with one table of its own)."""
    kind = request.param
    if kind.startswith("sqlite"):
        location = str(tmp_path / "app.db")
        pooled = kind.endswith("pooled")
        # A pool shared by threads needs check_same_thread=False (docs/peewee-apps.md).
        extra = {"check_same_thread": False} if pooled else {}
        database = app_database(location, pooled=pooled, pragmas={"journal_mode": "wal"},
                                **extra)
    else:
        location = request.getfixturevalue("pg_url")
        if kind.startswith("psycopg2"):
            location = psycopg2_url(location)
        database = app_database(location, pooled=kind.endswith("pooled"))
    Order = _order_model(database)
    database.create_tables([Order])
    yield location, database, Order
    if not database.is_closed():
        database.close()
    if hasattr(database, "close_all"):
        database.close_all()


def _count(location: str, table: str = "executions") -> int:
    witness = Witness(location)
    try:
        return int(witness.scalar(f"SELECT COUNT(*) FROM {table}"))
    finally:
        witness.close()


def test_a_rolled_back_app_transaction_leaves_no_telemetry_and_a_committed_one_does(
        app: Any) -> None:
    location, database, Order = app
    store = create_telemetry_store(database)
    try:
        with pytest.raises(Boom), database.atomic():
            Order.create(name="refund")
            store.record(minimal(repo="acme/rolled-back"))
            store.record(minimal(repo="acme/rolled-back"), key="delivery-1")
            store.record_many([minimal(repo="acme/rolled-back")] * 2)
            # Inside the transaction the rows are there for its own reads.
            assert store.model.select().count() == 4
            raise Boom
        assert _count(location) == 0
        assert _count(location, "app_orders") == 0

        with database.atomic():
            Order.create(name="order")
            first = store.record(minimal(repo="acme/committed"))
            keyed = store.record(minimal(repo="acme/committed"), key="delivery-1")
            ids = store.record_many([minimal(repo="acme/committed")] * 2)
            # Not visible to another connection before the commit.
            assert _count(location) == 0
        assert _count(location) == 4
        assert _count(location, "app_orders") == 1
        witness = Witness(location)
        try:
            rows = witness.rows("SELECT id, repo FROM executions ORDER BY id")
            assert [r["id"] for r in rows] == [first, keyed, *ids]
            assert {r["repo"] for r in rows} == {"acme/committed"}
            # The rolled-back key is free again; the committed one holds.
            assert witness.scalar("SELECT COUNT(*) FROM telemetry_orm_keys") == 1
        finally:
            witness.close()
        assert store.record(minimal(), key="delivery-1") == keyed

        # A savepoint of the application's rolls back only its part.
        with database.atomic():
            store.record(minimal(repo="acme/outer"))
            with pytest.raises(Boom), database.atomic():
                store.record(minimal(repo="acme/inner"))
                raise Boom
        repos = [r.repo for r in store.model.select().order_by(store.model.id)]
        assert repos[-1] == "acme/outer" and "acme/inner" not in repos
    finally:
        store.close()


def test_outside_a_transaction_each_call_commits_on_its_own(app: Any) -> None:
    location, database, _ = app
    with create_telemetry_store(database) as store:
        store.record(minimal())
        assert _count(location) == 1
        store.record_many([minimal(), minimal()])
        assert _count(location) == 3


def test_the_store_never_closes_or_rebinds_the_apps_database(app: Any) -> None:
    location, database, Order = app
    database.connect(reuse_if_open=True)
    store = create_telemetry_store(database)
    store.record(minimal())
    store.report()
    store.close()
    assert not database.is_closed()
    assert Order._meta.database is database
    Order.create(name="after close")  # the same connection, still usable
    assert _count(location, "app_orders") == 1
    # The store's own model is bound to the database, the Execution base is not.
    assert store.model._meta.database is database


def test_reports_keys_rollups_export_and_purge_work_on_the_apps_database(
        app: Any, pinned_clock: _dt.datetime) -> None:
    # The stores' "now" pinned before the rows' own hour: only the backdated
    # row is in a complete hour, whenever the test runs.
    location, database, _ = app
    with create_telemetry_store(database) as store:
        for i in range(6):
            store.record(minimal(repo=f"acme/r{i % 2}", cost_usd=0.5, duration_ms=100 * i),
                         key=f"k{i}")
        witness = Witness(location)
        try:
            old = witness.scalar("SELECT MIN(id) FROM executions")
            witness.backdate(old, 100)
        finally:
            witness.close()
        assert store.rollup().rows == 1  # the one complete hour: the backdated row
        by_repo = {row.keys["repo"]: row.metrics.executions for row in store.report().rows}
        assert by_repo == {"acme/r0": 3, "acme/r1": 3}
        assert report(database).totals.executions == 6
        assert store.purge_older_than(90) == 1
        assert _count(location) == 5
        # Its key went with it; the report still counts it from the rollups.
        assert store.report().totals.executions == 6
        assert store.model.select().where(store.model.repo == "acme/r1").count() == 3
        from telemetry_orm.reports import export_rows

        columns, rows = export_rows(database)
        assert "repo" in columns and len(list(rows)) == 5


def test_a_report_inside_an_app_transaction_reads_in_it(app: Any) -> None:
    _, database, _ = app
    with create_telemetry_store(database) as store:
        store.record(minimal())
        with database.atomic():
            store.record(minimal())
            assert store.report().totals.executions == 2
        assert store.report().totals.executions == 2


def test_purge_and_rollup_refuse_inside_an_app_transaction(app: Any) -> None:
    location, database, _ = app
    with create_telemetry_store(database) as store:
        row = store.record(minimal())
        witness = Witness(location)
        try:
            witness.backdate(row, 100)
        finally:
            witness.close()
        with database.atomic():
            for work in (lambda: store.purge_older_than(90), store.rollup):
                with pytest.raises(TransactionOpenError, match="inside a transaction"):
                    work()
        assert _count(location) == 1
        assert store.purge_older_than(90) == 1


def test_an_owned_store_refuses_them_inside_its_own_atomic_too(tmp_path: Path) -> None:
    with create_telemetry_store(tmp_path / "t.db") as store, store.database.atomic(), \
            pytest.raises(TransactionOpenError, match="cannot purge"):
        store.purge_older_than(1)


def _on_write(database: Any, started: threading.Event) -> None:
    """Set ``started`` when this thread's connection begins a write
    statement (SQLite calls the trace callback as a statement starts)."""
    database.connection().set_trace_callback(
        lambda sql: started.set() if sql.lstrip().upper().startswith(("UPDATE", "INSERT"))
        else None)


@pytest.mark.parametrize("many", [False, True], ids=["record", "record_many"])
def test_keyed_records_racing_in_deferred_app_transactions_wait_for_each_other(
        tmp_path: Path, many: bool) -> None:
    # peewee's atomic() is BEGIN DEFERRED. The second transaction's record
    # starts while the first holds the write lock and commits only after:
    # it must wait and answer the first one's row. A store that read
    # anything first (its keys table, at its first keyed record) would hold
    # a snapshot, and SQLite would refuse its write at once.
    location = str(tmp_path / "app.db")
    database = app_database(location, pragmas={"journal_mode": "wal"},
                            check_same_thread=False)
    first, second = create_telemetry_store(database), create_telemetry_store(database)
    writing = threading.Event()
    results: List[Any] = []

    def record_in_second_transaction() -> None:
        try:
            with database.atomic():
                _on_write(database, writing)
                results.append(second.record_many([minimal()], keys=["d-1"])[0] if many
                               else second.record(minimal(), key="d-1"))
        except Exception as exc:  # noqa: BLE001 - the assertion shows it
            results.append(exc)
        finally:
            database.close()

    try:
        thread = threading.Thread(target=record_in_second_transaction)
        with database.atomic():
            row = first.record(minimal(), key="d-1")  # the write lock, held
            thread.start()
            assert writing.wait(10), results  # its write began; this one commits now
        thread.join(30)
        assert results == [row]
        assert _count(location) == 1 and _count(location, "telemetry_orm_keys") == 1
    finally:
        first.close()
        second.close()
        database.close()


def test_a_record_after_a_read_in_a_deferred_transaction_says_to_open_it_immediate(
        tmp_path: Path) -> None:
    # SQLite cannot make a transaction that has read into a writing one once
    # another connection has written since: the store's write fails at once,
    # and the error says what to do. With the write lock taken first
    # (IMMEDIATE), the same read-then-record succeeds and others wait.
    location = str(tmp_path / "app.db")
    database = app_database(location, pragmas={"journal_mode": "wal"},
                            check_same_thread=False)
    store = create_telemetry_store(database)
    other = sqlite3.connect(location, timeout=30, isolation_level=None)
    insert = ("INSERT INTO executions (repo, event_type, model, conclusion) "
              "VALUES ('acme/other', 'push', 'm', 'success')")
    try:
        for key in ("d-1", None):
            with database.atomic():
                assert database.execute_sql("SELECT COUNT(*) FROM executions").fetchone()
                other.execute(insert)  # another connection writes after the read
                with pytest.raises(StoreBusyError, match="lock_type='IMMEDIATE'"):
                    store.record(minimal(), key=key)
        assert _count(location) == 2 and _count(location, "telemetry_orm_keys") == 0

        waiting = threading.Event()
        done: List[Any] = []

        def write_meanwhile() -> None:
            conn = sqlite3.connect(location, timeout=30, isolation_level=None)
            conn.set_trace_callback(lambda sql: waiting.set())
            try:
                done.append(conn.execute(insert).lastrowid)
            finally:
                conn.close()

        writer = threading.Thread(target=write_meanwhile)
        with database.atomic(lock_type="IMMEDIATE"):
            seen = database.execute_sql("SELECT COUNT(*) FROM executions").fetchone()[0]
            writer.start()
            assert waiting.wait(10)  # it began its INSERT: it waits for this transaction
            row = store.record(minimal(), key="d-1")
            assert not done
        writer.join(30)
        assert seen == 2 and done and done[0] > row
        assert _count(location) == 4 and _count(location, "telemetry_orm_keys") == 1
    finally:
        other.close()
        store.close()
        database.close()


# --- DatabaseProxy and deferred databases --------------------------------------


def test_a_store_on_a_proxy_opens_at_its_first_use(app: Any) -> None:
    location, database, _ = app
    proxy = peewee.DatabaseProxy()
    store = create_telemetry_store(proxy)  # at import time, say
    assert "not yet initialized" in repr(store)
    with pytest.raises(DatabaseError, match="DatabaseProxy is not initialized"):
        store.record(minimal())
    proxy.initialize(database)
    row = store.record(minimal(repo="acme/proxy"))
    assert location in store.path or store.backend.name == "postgresql"
    witness = Witness(location)
    try:
        assert witness.scalar("SELECT repo FROM executions WHERE id = ?", row) == "acme/proxy"
        assert witness.schema_version() == SCHEMA_VERSION
    finally:
        witness.close()
    # The application's transactions on the proxy hold it too.
    with pytest.raises(Boom), proxy.atomic():
        store.record(minimal())
        raise Boom
    assert _count(location) == 1
    store.close()
    assert not database.is_closed() or location.startswith("postgresql://")


def test_a_proxy_store_first_used_inside_a_transaction(app: Any) -> None:
    location, database, _ = app
    # Tables missing: they cannot be made inside the application's
    # transaction (a rollback would undo them), and nothing is half done.
    proxy = peewee.DatabaseProxy()
    store = create_telemetry_store(proxy)
    proxy.initialize(database)
    with database.atomic(), pytest.raises(TransactionOpenError, match="store.prepare"):
        store.record(minimal())
    assert store.prepare() is store  # at start-up, as the message says
    assert _count(location) == 0
    # Tables there: a first use inside a transaction is fine.
    late = peewee.DatabaseProxy()
    late_store = create_telemetry_store(late)
    late.initialize(database)
    with database.atomic():
        late_store.record(minimal())
    assert _count(location) == 1
    store.close()
    late_store.close()


def test_a_deferred_sqlite_database_is_used_once_initialized(tmp_path: Path) -> None:
    database = peewee.SqliteDatabase(None)
    store = create_telemetry_store(database)
    with pytest.raises(DatabaseError, match=r"database.init\(\.\.\.\)"):
        store.record(minimal())
    database.init(str(tmp_path / "late.db"))
    store.record(minimal())
    assert _count(str(tmp_path / "late.db")) == 1
    store.close()
    database.close()


def test_closing_a_store_never_opened_opens_nothing() -> None:
    proxy = peewee.DatabaseProxy()
    store = create_telemetry_store(proxy)
    store.close()
    proxy.initialize(peewee.SqliteDatabase(":memory:"))
    with pytest.raises(Exception, match="closed"):
        store.record(minimal())
    assert proxy.obj.is_closed()


# --- Settings ------------------------------------------------------------------

_PRAGMAS = ("busy_timeout", "synchronous", "journal_size_limit", "wal_autocheckpoint",
            "cache_size", "journal_mode")


def _settings(database: Any) -> List[Any]:
    conn = database.connection()
    return [conn.execute(f"PRAGMA {name}").fetchone()[0] for name in _PRAGMAS]


def test_sqlite_connection_settings_are_left_as_the_app_set_them(tmp_path: Path) -> None:
    database = peewee.SqliteDatabase(
        str(tmp_path / "app.db"),
        pragmas={"journal_mode": "wal", "busy_timeout": 1234, "synchronous": 2,
                 "cache_size": -4096, "wal_autocheckpoint": 700})
    before = _settings(database)
    with create_telemetry_store(database) as store:
        for i in range(3):
            store.record(minimal(), key=f"k{i}")
        store.record_many([minimal()] * 10)
        store.checkpoint()
        store.checkpoint(truncate=True)
        store.purge_older_than(0)
        store.rollup()
        store.report()
        with store.background(max_delay=0.01) as recorder:
            for _ in range(20):
                recorder.record(minimal())
        assert _settings(database) == before
    assert _settings(database) == before
    database.close()


def test_a_database_not_in_wal_mode_is_used_as_it_is_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "app.db"
    database = peewee.SqliteDatabase(str(path))
    with caplog.at_level(logging.WARNING, logger="telemetry_orm"), \
            create_telemetry_store(database) as store:
        store.record(minimal())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'delete' journal mode, not WAL" in warnings[0] and "configure=True" in warnings[0]
    plain = sqlite3.connect(path)
    assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert plain.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 1
    plain.close()
    database.close()


def test_configure_applies_the_stores_settings(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "app.db"
    database = peewee.SqliteDatabase(str(path))
    with caplog.at_level(logging.WARNING, logger="telemetry_orm"):
        store = create_telemetry_store(database, configure=True, busy_timeout=2500)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    store.record(minimal())
    assert _settings(database)[:3] == [2500, 1, 64 * 1024 * 1024]
    assert _settings(database)[-1] == "wal"
    # Connections the database opens from now on get them too.
    seen: List[Any] = []
    def settings_of_a_new_connection() -> None:
        seen.append(_settings(database))
        database.close()

    thread = threading.Thread(target=settings_of_a_new_connection)
    thread.start()
    thread.join()
    assert seen[0][:3] == [2500, 1, 64 * 1024 * 1024]
    store.close()
    database.close()
    with pytest.raises(TelemetryValidationError, match="configure"):
        create_telemetry_store(path, configure=True)


def test_an_older_schema_in_the_apps_database_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "seed.db"
    make_seed_database(path, rows=3)
    database = peewee.SqliteDatabase(str(path))
    with create_telemetry_store(database) as store:
        assert store.report().totals.executions == 3
    database.close()
    plain = sqlite3.connect(path)
    assert plain.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    plain.close()


def test_unsupported_databases_are_refused_by_name(tmp_path: Path) -> None:
    class OtherDatabase(peewee.Database):
        pass

    with pytest.raises(TelemetryValidationError,
                       match="database: OtherDatabase databases are not supported"):
        create_telemetry_store(OtherDatabase("app"))
    from playhouse.sqliteq import SqliteQueueDatabase

    queued = SqliteQueueDatabase(str(tmp_path / "q.db"), autostart=False)
    with pytest.raises(TelemetryValidationError, match="SqliteQueueDatabase is not supported"):
        create_telemetry_store(queued)
    assert not (tmp_path / "q.db").exists()
    # MySQL through another driver than PyMySQL (made, never connected).
    from playhouse import mysql_ext

    class AppMariaDB(mysql_ext.MariaDBConnectorDatabase):
        pass

    for cls, named in ((mysql_ext.MySQLConnectorDatabase, "MySQLConnectorDatabase"),
                       (mysql_ext.MariaDBConnectorDatabase, "MariaDBConnectorDatabase"),
                       (AppMariaDB, r"AppMariaDB \(a MariaDBConnectorDatabase\)")):
        with pytest.raises(TelemetryValidationError,
                           match=f"database: {named} is not supported: .* speaks PyMySQL"):
            create_telemetry_store(cls("app"))


def test_a_postgresql_database_as_peewee_makes_it_by_default_is_driven_by_psycopg2(
        pg_url: str) -> None:
    # What a new user writes: peewee's own PostgresqlDatabase (psycopg2 on
    # peewee 3, and on peewee 4 when psycopg2 is installed), refused before.
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed")
    from playhouse import db_url

    params = db_url.parse(pg_url, unquote_password=True)
    database = peewee.PostgresqlDatabase(params.pop("database"), **params)
    with create_telemetry_store(database) as store:
        assert store.backend.driver.name == "psycopg2"
        store.record(minimal(repo="acme/pg2", cost_usd=0.25), key="k")
        store.record(minimal(repo="acme/pg2", cost_usd=0.25), key="k")
    database.close()
    witness = Witness(pg_url)
    try:
        assert witness.rows("SELECT repo, cost_usd FROM executions") == [
            {"repo": "acme/pg2", "cost_usd": 0.25}]
    finally:
        witness.close()


# --- Threads, pools, background -------------------------------------------------


def test_a_pooled_sqlite_database_gets_back_every_connection_the_store_used(
        tmp_path: Path) -> None:
    # check_same_thread=False, as any threaded application with a pooled
    # SQLite database needs: the pool may hand a connection one thread
    # closed to another (peewee 3's pool does).
    database = app_database(str(tmp_path / "app.db"), pooled=True,
                            pragmas={"journal_mode": "wal"}, max_connections=4,
                            check_same_thread=False)
    store = create_telemetry_store(database)
    store.checkpoint_every = 5
    with store.background(max_delay=0.01) as recorder:
        for _ in range(30):
            recorder.record(minimal())
        recorder.flush()
    for _ in range(12):  # automatic checkpoints on the helper thread
        store.record(minimal())
    store.close()  # waits for the helper
    in_use = [conn for conn in database._in_use.values()]  # noqa: SLF001
    mine = database.connection()
    assert all(c.connection is mine for c in in_use), "a store thread kept a connection"
    assert _count(str(tmp_path / "app.db")) == 42
    database.close()
    database.close_all()


def _waiting_on_my_key(store: Any, database: Any, witness: Witness, key: str
                       ) -> Tuple[threading.Thread, List[Any]]:
    """Start a thread that records ``key``, which this thread's open
    transaction holds, and return once it waits for it (PostgreSQL's
    advisory lock, seen in pg_locks): (the thread, where its result goes)."""
    results: List[Any] = []

    def record_same_key() -> None:
        try:
            results.append(store.record(minimal(repo="acme/b"), key=key))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            results.append(exc)

    pid = database.connection().info.backend_pid
    waiter = threading.Thread(target=record_same_key)
    waiter.start()
    deadline = time.monotonic() + 10
    while not witness.scalar("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' "
                             "AND NOT granted AND pid <> ?", pid):
        assert time.monotonic() < deadline, "the other thread never waited for the key"
        time.sleep(0.01)
    return waiter, results


def test_a_write_inside_an_app_transaction_never_waits_for_another_threads_write(
        pg_driver_url: str) -> None:
    # Thread B waits on the database for a key that thread A's open
    # transaction holds. A must still be able to record: if B held a lock of
    # the store while it waited, A would wait for B until B's lock_timeout
    # (3 s here) gave B a StoreBusyError.
    database = app_database(pg_driver_url, pooled=True, options="-c lock_timeout=3000")
    store = create_telemetry_store(database)
    witness = Witness(pg_driver_url)
    try:
        with database.atomic():
            first = store.record(minimal(repo="acme/a"), key="shared")
            waiter, results = _waiting_on_my_key(store, database, witness, "shared")
            started = time.monotonic()
            store.record(minimal(repo="acme/a"), key="other")
            store.record(minimal(repo="acme/a"))
            assert time.monotonic() - started < 2
        waiter.join(10)
        assert results == [first]  # B got A's row: one row for the key
        assert witness.scalar("SELECT COUNT(*) FROM executions") == 3
    finally:
        witness.close()
        store.close()
        database.close_all()


def test_postgresql_sessions_keep_their_zone_and_reports_still_cut_days_in_utc(
        pg_driver_url: str) -> None:
    # A session zone off UTC by a half hour: any cut made in it would move
    # the rows near midnight to another day and the hours to other buckets.
    database = app_database(pg_driver_url, pooled=True, options="-c TimeZone=Asia/Kolkata")
    store = create_telemetry_store(database)
    witness = Witness(pg_driver_url)
    try:
        instants = [_dt.datetime(2026, 3, 1, 23, 50, tzinfo=_dt.timezone.utc),
                    _dt.datetime(2026, 3, 2, 0, 10, tzinfo=_dt.timezone.utc),
                    _dt.datetime(2026, 3, 2, 18, 40, tzinfo=_dt.timezone.utc)]
        for when in instants:
            row = store.record(minimal(cost_usd=1.0))
            witness.execute("UPDATE executions SET created_at = ? WHERE id = ?", when, row)
        since = _dt.datetime(2026, 3, 1, tzinfo=_dt.timezone.utc)
        days = {r.keys["day"]: r.metrics.executions
                for r in store.report(group_by="day", since=since).rows}
        assert days == {"2026-03-01": 1, "2026-03-02": 2}
        store.rollup()
        hours = witness.rows("SELECT hour, executions FROM telemetry_orm_rollups ORDER BY hour")
        assert [(r["hour"].astimezone(_dt.timezone.utc).hour, r["executions"])
                for r in hours] == [(23, 1), (0, 1), (18, 1)]
        store.purge_older_than(0)
        days = {r.keys["day"]: r.metrics.executions
                for r in store.report(group_by="day", since=since).rows}
        assert days == {"2026-03-01": 1, "2026-03-02": 2}
        # The application's own session, read the way the application would.
        assert database.execute_sql("SHOW TimeZone").fetchone()[0] == "Asia/Kolkata"
        assert database.execute_sql("SHOW lock_timeout").fetchone()[0] == "0"
    finally:
        witness.close()
        store.close()
        database.close_all()


def test_a_pooled_postgresql_database_keeps_its_pool_and_gets_every_connection_back(
        pg_driver_url: str) -> None:
    database = app_database(pg_driver_url, pooled=True, max_connections=3)
    store = create_telemetry_store(database)
    with store.background(max_delay=0.01) as recorder:
        for _ in range(25):
            recorder.record(minimal())
        recorder.flush()
    store.record(minimal())
    store.rollup()
    store.report()
    assert not database._in_use  # noqa: SLF001 - every connection handed back
    idle = len(database._connections)  # noqa: SLF001
    assert idle >= 1
    store.close()
    # Closing the store closed none of the pool's connections.
    assert len(database._connections) == idle  # noqa: SLF001
    with database.connection_context():
        assert database.execute_sql("SELECT COUNT(*) FROM executions").fetchone()[0] == 26
    database.close_all()


def test_a_store_opened_inside_an_app_transaction_on_missing_tables_creates_nothing(
        app: Any) -> None:
    location, database, _ = app
    with database.atomic(), pytest.raises(TransactionOpenError,
                                          match=r"create_telemetry_store\(database\)"):
        create_telemetry_store(database)
    witness = Witness(location)
    try:
        if witness.kind == "sqlite":
            tables = [r["name"] for r in witness.rows(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
        else:
            tables = [r["table_name"] for r in witness.rows(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()")]
        assert tables == ["app_orders"]
    finally:
        witness.close()
    with create_telemetry_store(database) as store:  # outside: it opens
        store.record(minimal())


# --- Review regressions --------------------------------------------------------


def test_a_background_recorder_is_refused_where_it_would_write_elsewhere(
        tmp_path: Path) -> None:
    shared = peewee.SqliteDatabase(str(tmp_path / "shared.db"), thread_safe=False,
                                   check_same_thread=False)
    memory = peewee.SqliteDatabase(":memory:")
    for database, why in ((shared, "thread_safe=False"), (memory, "in-memory")):
        with create_telemetry_store(database) as store:
            with pytest.raises(DatabaseError, match=why):
                store.background()
            store.record(minimal())  # recording directly works
            assert store.report().totals.executions == 1
        database.close()


def test_closing_the_store_during_a_purge_puts_the_apps_settings_back(
        tmp_path: Path, pinned_clock: _dt.datetime) -> None:
    database = app_database(str(tmp_path / "app.db"), pragmas={"journal_mode": "wal"})
    store = create_telemetry_store(database)
    store.record_many([minimal()] * 50)
    store.purge_older_than(0)  # nothing old yet: the settings are read back alike
    before = _settings(database)
    store.record_many([minimal()] * 50)
    witness = Witness(str(tmp_path / "app.db"))
    witness.execute("UPDATE executions SET created_at = ?",
                    format_timestamp(pinned_clock - _dt.timedelta(days=10)))
    witness.close()
    with pytest.raises(Exception, match="closed"):
        store.purge(1, progress=lambda _: store.close())
    assert not database.is_closed()
    assert _settings(database) == before
    database.close()


def test_close_inside_an_app_transaction_does_not_wait_for_a_write_waiting_on_it(
        pg_driver_url: str) -> None:
    # B waits for the key A's open transaction holds; A closes the store.
    # Waiting for B there would last until B's lock_timeout (3 s here).
    database = app_database(pg_driver_url, pooled=True, options="-c lock_timeout=3000")
    store = create_telemetry_store(database)
    witness = Witness(pg_driver_url)
    try:
        with database.atomic():
            first = store.record(minimal(), key="shared")
            waiter, results = _waiting_on_my_key(store, database, witness, "shared")
            store.close()
            assert waiter.is_alive(), "close() waited for B until B gave up"
        waiter.join(10)
        assert results == [first]  # B's call, under way before close, finished
    finally:
        witness.close()
        database.close_all()


def test_a_batch_writer_on_an_app_thread_leaves_its_connection_open(tmp_path: Path) -> None:
    database = app_database(str(tmp_path / "app.db"), pragmas={"journal_mode": "wal"})
    with create_telemetry_store(database) as store, database.connection_context():
        conn = database.connection()
        writer = store.batch_writer()
        writer.write([store.checked_row(minimal())])
        writer.close()
        assert not database.is_closed() and database.connection() is conn
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000


def test_opening_a_store_leaves_no_connection_open_that_the_thread_did_not_have(
        app: Any) -> None:
    _, database, _ = app
    if not database.is_closed():
        database.close()
    store = create_telemetry_store(database)
    assert database.is_closed()
    store.record(minimal())  # connects as peewee does, and keeps it, as peewee does
    store.close()
    proxy = peewee.DatabaseProxy()
    late = create_telemetry_store(proxy)
    proxy.initialize(database)
    database.close()
    late.prepare()
    assert database.is_closed()
    late.close()


@FORKS_WITH_THREADS
def test_fork_waits_for_a_write_in_progress_on_the_apps_database(tmp_path: Path) -> None:
    import os

    if not hasattr(os, "fork"):
        pytest.skip("needs fork()")
    # A fork in the middle of a write copies SQLite's in-process lock records
    # saying "locked" into the child, where nobody unlocks them: the child
    # can never write, even once the parent's writer has stopped.
    path = tmp_path / "app.db"
    database = app_database(str(path), pragmas={"journal_mode": "wal"}, timeout=1)
    store = create_telemetry_store(database)
    failed = 0
    try:
        for _ in range(5):
            stop = threading.Event()

            def write(stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    store.record_many([minimal()] * 2000)
                database.close()

            writer = threading.Thread(target=write)
            writer.start()
            time.sleep(0.03)  # the writer is in the middle of a batch, most of the time
            ready, go = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: once the parent's writer is done, write
                code = 0
                try:
                    os.read(ready, 1)
                    conn = sqlite3.connect(path, timeout=2)
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("ROLLBACK")
                except (sqlite3.Error, OSError):
                    code = 1
                os._exit(code)
            stop.set()
            writer.join()
            os.write(go, b"x")
            _, status = os.waitpid(pid, 0)
            os.close(ready)
            os.close(go)
            failed += os.waitstatus_to_exitcode(status) != 0
    finally:
        store.close()
    assert failed == 0


def test_a_pooled_sqlite_database_in_one_thread_gets_its_checkpoints(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Defaults (check_same_thread on): the helper thread must not take a
    # pooled connection opened by the application's thread.
    database = app_database(str(tmp_path / "app.db"), pooled=True,
                            pragmas={"journal_mode": "wal"})
    with caplog.at_level(logging.DEBUG, logger="telemetry_orm"):
        store = create_telemetry_store(database)
        store.checkpoint_every = 10
        for _ in range(35):
            store.record(minimal())
        store.close()  # waits for the helper's last pass
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    passes = [r for r in caplog.records if r.getMessage().startswith("checkpoint PASSIVE")
              and r.threadName == "telemetry_orm-checkpoint"]
    assert passes
    database.close_all()


def test_a_postgresql_label_never_shows_a_password() -> None:
    pytest.importorskip("psycopg")
    from telemetry_orm.backends.postgres import database_label

    uri = app_database("postgresql://u:secret@db.example:5433/app")
    uri.database = "postgresql://u:secret@db.example:5433/app?sslmode=require"
    assert database_label(uri) == "postgresql://u:***@db.example:5433/app?sslmode=require"
    conninfo = app_database("postgresql://u@h/app")
    conninfo.database = "host=db.example dbname=app user=u password=secret"
    assert "secret" not in database_label(conninfo)
    plain = app_database("postgresql://u:secret@db.example:5433/app")
    assert database_label(plain) == "postgresql://u@db.example:5433/app"
    for name in ("host=h dbname=app password='it\\'s secret'",
                 "host=h dbname=app PASSWORD = secret sslpassword=secret",
                 "postgresql://u@h/app?password=secret&sslpassword=secret"):
        conninfo.database = name
        assert "secret" not in database_label(conninfo), name


def _fork_while_a_write_waits(tmp_path: Path, second: Callable[[Any], Any]
                              ) -> Dict[str, Any]:
    """X records inside a transaction (holding the write lock), then calls
    ``second(store)`` in it while W's write waits for that lock and the
    process forks. Holding X's call back would keep W waiting until its busy
    timeout (1 s here): StoreBusyError. Returns what X's call and W's write gave."""
    import os

    if not hasattr(os, "fork"):
        pytest.skip("needs fork()")
    database = app_database(str(tmp_path / "app.db"), pragmas={"journal_mode": "wal"},
                            timeout=1)
    store = create_telemetry_store(database)
    outcome: Dict[str, Any] = {}
    holding = threading.Event()

    def x() -> None:
        with database.atomic():
            store.record(minimal(repo="acme/x"))
            holding.set()
            time.sleep(0.3)  # the fork starts meanwhile
            outcome["x"] = second(store)
        database.close()

    def w() -> None:
        try:
            outcome["w"] = store.record(minimal(repo="acme/w"))
        except Exception as exc:  # noqa: BLE001 - the assertion shows it
            outcome["w"] = exc
        database.close()

    tx = threading.Thread(target=x)
    tx.start()
    holding.wait(10)
    tw = threading.Thread(target=w)
    tw.start()
    time.sleep(0.1)  # W is waiting for the write lock by now, most of the time
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    tx.join(10)
    tw.join(10)
    store.close()
    return outcome


@FORKS_WITH_THREADS
def test_fork_lets_through_the_call_that_ends_a_transaction_a_running_write_waits_for(
        tmp_path: Path) -> None:
    outcome = _fork_while_a_write_waits(tmp_path, lambda s: s.record(minimal(repo="acme/x")))
    assert isinstance(outcome["x"], int)  # X committed
    assert isinstance(outcome["w"], int), outcome["w"]
    assert _count(str(tmp_path / "app.db")) == 3


@FORKS_WITH_THREADS
def test_fork_lets_through_a_report_inside_the_transaction_a_running_write_waits_for(
        tmp_path: Path) -> None:
    outcome = _fork_while_a_write_waits(tmp_path, lambda s: s.report().totals.executions)
    assert outcome["x"] == 1
    assert isinstance(outcome["w"], int), outcome["w"]


@FORKS_WITH_THREADS
def test_fork_does_not_wait_for_ever_for_a_proxy_store_that_is_opening(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from telemetry_orm.store import gate

    if not hasattr(os, "fork"):
        pytest.skip("needs fork()")
    monkeypatch.setattr(gate, "FORK_WAIT", 0.3)
    path = tmp_path / "app.db"
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("PRAGMA journal_mode = WAL")
    blocker.execute("BEGIN IMMEDIATE")  # the store's tables must wait for it
    proxy = peewee.DatabaseProxy()
    store = create_telemetry_store(proxy)
    proxy.initialize(peewee.SqliteDatabase(str(path), timeout=10))
    opener = threading.Thread(target=store.prepare)
    opener.start()
    release = threading.Timer(3.0, lambda: blocker.execute("ROLLBACK"))
    release.start()
    try:
        time.sleep(0.2)  # the opener waits for the lock by now
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        took = time.monotonic() - started
        os.waitpid(pid, 0)
    finally:
        release.join()
        opener.join(15)
        store.close()
        blocker.close()
    assert took < 1.5, f"fork() waited {took:.1f} s for the opening store"


def test_closing_inside_a_transaction_with_an_open_recorder_is_refused(app: Any) -> None:
    location, database, _ = app
    store = create_telemetry_store(database)
    recorder = store.background(max_delay=0.01)
    with database.atomic():
        store.record(minimal())
        recorder.record(minimal())
        with pytest.raises(TransactionOpenError, match="background recorder"):
            store.close()
        assert not store.closed and not recorder.closed
    store.close()  # after the transaction: the recorder writes what it holds
    assert recorder.closed
    assert _count(location) == 2


@pytest.mark.parametrize("name", ["file::memory:?cache=shared",
                                  "file:telemetry-test-memdb?mode=memory&cache=shared"])
def test_shared_in_memory_databases_keep_their_tables(name: str) -> None:
    database = peewee.SqliteDatabase(name, uri=True)
    keep = sqlite3.connect(name, uri=True)  # an application's other connection to it
    try:
        with create_telemetry_store(database) as store:
            store.record(minimal())
            assert store.report().totals.executions == 1
        assert keep.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 1
    finally:
        keep.close()
        database.close()


def test_an_owned_memory_store_purges_while_another_thread_writes() -> None:
    # Its threads share one connection: another thread's write must not
    # look like a transaction of the purging thread's.
    store = create_telemetry_store(":memory:")
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            store.record_many([minimal()] * 500)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(40):
            store.purge(30)
            store.rollup()
    finally:
        stop.set()
        writer.join()
        store.close()
