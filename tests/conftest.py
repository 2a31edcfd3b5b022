"""Shared fixtures: stores on temporary files or a fresh PostgreSQL schema,
and independent witness connections."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from support import (
    FIXED_NOW,
    MYSQL_URL_ENV,
    POSTGRES_URL_ENV,
    Witness,
    mysql_connect,
    psycopg2_url,
    with_query,
)

from telemetry_orm import PeeweeTelemetryStore, clock, create_telemetry_store


@pytest.fixture
def pinned_clock() -> Iterator[dt.datetime]:
    """The stores' "now" pinned at :data:`support.FIXED_NOW` for one test."""
    with clock.pinned(FIXED_NOW) as now:
        yield now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "telemetry.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[PeeweeTelemetryStore]:
    s = create_telemetry_store(db_path)
    yield s
    s.close()


@pytest.fixture
def witness(db_path: Path, store: PeeweeTelemetryStore) -> Iterator[sqlite3.Connection]:
    """An independent sqlite3 connection to the store's file."""
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    yield conn
    conn.close()


# --- The same tests on every backend ------------------------------------------


def postgres_server_url() -> str:
    """The test server's URL, or skip (with the reason shown) when there is none."""
    url = os.environ.get(POSTGRES_URL_ENV, "")
    if not url:
        pytest.skip(
            f"PostgreSQL tests need a server: set {POSTGRES_URL_ENV} "
            "(.ci/run starts one and sets it)"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests need psycopg: pip install 'telemetry_orm[postgres]'")
    return url


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """A URL to a fresh, empty schema on the test server, dropped afterwards.

    The schema is the connection's ``search_path``, so tests (and the
    processes they start) never see each other's tables.
    """
    server = postgres_server_url()  # skips, with its reason, before any import
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_query(server, options=f"-c search_path={schema}")
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema for one test (see :func:`fresh_schema`)."""
    with fresh_schema() as url:
        yield url


@pytest.fixture(scope="module")
def module_pg_url() -> Iterator[str]:
    """A fresh schema shared by the tests of one module (they must not change it)."""
    with fresh_schema() as url:
        yield url


@pytest.fixture(params=["psycopg", "psycopg2"])
def pg_driver_url(request: pytest.FixtureRequest, pg_url: str) -> str:
    """:func:`pg_url` once per PostgreSQL driver: ``postgresql://`` (psycopg
    3), then ``postgresql+psycopg2://`` (skipped, with its reason, when
    psycopg2 is not installed); a store or :func:`support.app_database`
    takes either."""
    return pg_url if request.param == "psycopg" else psycopg2_url(pg_url)


#: Set to 1 to run every ``any_store`` test a third time, on a
#: ``postgresql+psycopg2://`` URL (about 90 s more on the quick suite).
PSYCOPG2_STORES_ENV = "TELEMETRY_TEST_PSYCOPG2_STORES"


def mysql_server_url() -> str:
    """The MySQL/MariaDB test server's URL, or skip (with the reason shown)."""
    url = os.environ.get(MYSQL_URL_ENV, "")
    if not url:
        pytest.skip(f"MySQL tests need a server: set {MYSQL_URL_ENV} (.ci/run starts one and "
                    "sets it)")
    try:
        import pymysql  # noqa: F401
    except ImportError:
        pytest.skip("MySQL tests need PyMySQL: pip install 'telemetry_orm[mysql]'")
    return url


@contextlib.contextmanager
def fresh_mysql_database() -> Iterator[str]:
    """A URL to a fresh, empty database on the MySQL test server (named
    after the server URL's database), dropped afterwards."""
    server = mysql_server_url()
    parts = urlsplit(server)
    name = f"{parts.path.lstrip('/') or 'telemetry_test'}_{uuid.uuid4().hex[:16]}"
    conn = mysql_connect(server, database=None)
    try:
        conn.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh database for one test (see :func:`fresh_mysql_database`)."""
    with fresh_mysql_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql", "mysql",
                        *(["psycopg2"] if os.environ.get(PSYCOPG2_STORES_ENV) == "1" else [])])
def any_location(request: pytest.FixtureRequest, db_path: Path) -> str:
    """Where a store lives: a SQLite file, a fresh PostgreSQL schema, a
    fresh MySQL/MariaDB database (and the PostgreSQL schema through
    psycopg2, see :data:`PSYCOPG2_STORES_ENV`)."""
    if request.param == "sqlite":
        return str(db_path)
    if request.param == "mysql":
        mysql: str = request.getfixturevalue("mysql_url")
        return mysql
    url: str = request.getfixturevalue("pg_url")
    return psycopg2_url(url) if request.param == "psycopg2" else url


@pytest.fixture
def any_store(any_location: str) -> Iterator[PeeweeTelemetryStore]:
    s = create_telemetry_store(any_location)
    yield s
    s.close()


@pytest.fixture
def any_witness(any_location: str, any_store: PeeweeTelemetryStore) -> Iterator[Witness]:
    """An independent connection (sqlite3 or psycopg) to ``any_store``'s database."""
    w = Witness(any_location)
    yield w
    w.close()
