"""Helpers shared by the tests: the original store's DDL and sample entries."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import os
import re
import sqlite3
import subprocess
import sys
import threading
import wsgiref.util
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest

import telemetry_orm
from telemetry_orm import clock
from telemetry_orm.schema import format_timestamp

try:
    import psycopg  # noqa: F401
except ImportError:
    HAVE_PSYCOPG = False
else:
    HAVE_PSYCOPG = True

#: For tests that need the PostgreSQL driver but no server.
needs_psycopg = pytest.mark.skipif(
    not HAVE_PSYCOPG, reason="needs psycopg: pip install 'telemetry_orm[postgres]'"
)

#: The original store's DDL, as its plan states it (with the parentheses
#: SQLite needs around an expression default).
SEED_DDL = """
CREATE TABLE IF NOT EXISTS executions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  delivery_id TEXT,
  repo TEXT NOT NULL,
  pr_number INTEGER,
  event_type TEXT NOT NULL,
  provider TEXT NOT NULL DEFAULT 'anthropic',
  model TEXT NOT NULL,
  input_tokens INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0,
  cache_read_tokens INTEGER NOT NULL DEFAULT 0,
  cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
  duration_ms INTEGER NOT NULL DEFAULT 0,
  cost_usd REAL NOT NULL DEFAULT 0,
  conclusion TEXT NOT NULL,
  session_id TEXT,
  num_turns INTEGER,
  stop_reason TEXT
);
CREATE INDEX IF NOT EXISTS idx_executions_created_at ON executions(created_at);
CREATE INDEX IF NOT EXISTS idx_executions_repo ON executions(repo);
"""


def make_seed_database(path: Path, rows: int = 0) -> None:
    """Write a database as the original TypeScript store leaves it: WAL,
    user_version 0, its DDL, and ``rows`` rows inserted with its INSERT."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SEED_DDL)
    for i in range(rows):
        conn.execute(
            "INSERT INTO executions (delivery_id, repo, pr_number, event_type, provider, model,"
            " input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,"
            " duration_ms, cost_usd, conclusion, session_id, num_turns, stop_reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (f"d-{i}", "acme/api", i + 1, "pull_request.opened", "anthropic",
             "claude-sonnet-4-5", 100 + i, 50, 10, 5, 1200, 0.0123, "success",
             f"s-{i}", 3, "end_turn"),
        )
    conn.commit()
    conn.close()


def minimal(**overrides: object) -> dict:
    """A mapping with only the required fields."""
    entry: dict = {
        "repo": "acme/api",
        "event_type": "pull_request.opened",
        "model": "claude-sonnet-4-5",
        "conclusion": "success",
    }
    entry.update(overrides)
    return entry


# --- Any backend -------------------------------------------------------------

#: Environment variable naming the PostgreSQL server the tests may use, e.g.
#: postgresql://telemetry:telemetry@127.0.0.1:5432/telemetry_test
POSTGRES_URL_ENV = "TELEMETRY_TEST_POSTGRES_URL"

#: Environment variable naming the MySQL/MariaDB server the tests may use, e.g.
#: mysql://telemetry:telemetry@127.0.0.1:3306/telemetry_test (the user may
#: create databases named telemetry_test_*: each test gets one of its own).
MYSQL_URL_ENV = "TELEMETRY_TEST_MYSQL_URL"


def mysql_connect(url: str, **options: Any) -> Any:
    """A plain PyMySQL connection (autocommit) to the database of a
    ``mysql://`` URL, or to the server alone with ``database=None``."""
    import pymysql

    parts = urlsplit(url)
    params: Dict[str, Any] = {
        "host": parts.hostname or "localhost", "port": parts.port or 3306,
        "user": parts.username or "", "password": parts.password or "",
        "database": parts.path.lstrip("/") or None, "autocommit": True, "charset": "utf8mb4"}
    params.update(options)
    return pymysql.connect(**params)

#: "Now" for the tests that depend on it: a fixed instant, pinned as the
#: stores' clock by the ``pinned_clock`` fixture, so that a test gives the
#: same answer at any time of day (tests place their rows relative to it).
#: It lies in the past: rows recorded without a placement are newer.
FIXED_NOW = _dt.datetime(2026, 11, 20, 15, 42, 17, tzinfo=_dt.timezone.utc)

#: The original table before the cache token columns, ``session_id``,
#: ``num_turns`` and ``stop_reason`` existed, per engine.
OLD_TABLE_DDL = {
    "sqlite": """
        CREATE TABLE executions (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          created_at TEXT NOT NULL DEFAULT (datetime('now')),
          delivery_id TEXT, repo TEXT NOT NULL, pr_number INTEGER,
          event_type TEXT NOT NULL, provider TEXT NOT NULL DEFAULT 'anthropic',
          model TEXT NOT NULL, input_tokens INTEGER NOT NULL DEFAULT 0,
          output_tokens INTEGER NOT NULL DEFAULT 0, duration_ms INTEGER NOT NULL DEFAULT 0,
          cost_usd REAL NOT NULL DEFAULT 0, conclusion TEXT NOT NULL)
    """,
    "postgresql": """
        CREATE TABLE executions (
          id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
          created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
          delivery_id TEXT, repo TEXT NOT NULL, pr_number BIGINT,
          event_type TEXT NOT NULL, provider TEXT NOT NULL DEFAULT 'anthropic',
          model TEXT NOT NULL, input_tokens BIGINT NOT NULL DEFAULT 0,
          output_tokens BIGINT NOT NULL DEFAULT 0, duration_ms BIGINT NOT NULL DEFAULT 0,
          cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0, conclusion TEXT NOT NULL)
    """,
    "mysql": """
        CREATE TABLE executions (
          id BIGINT AUTO_INCREMENT PRIMARY KEY,
          created_at DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6)),
          delivery_id TEXT, repo VARCHAR(255) NOT NULL, pr_number BIGINT,
          event_type VARCHAR(64) NOT NULL, provider VARCHAR(64) NOT NULL DEFAULT 'anthropic',
          model VARCHAR(160) NOT NULL, input_tokens BIGINT NOT NULL DEFAULT 0,
          output_tokens BIGINT NOT NULL DEFAULT 0, duration_ms BIGINT NOT NULL DEFAULT 0,
          cost_usd DOUBLE NOT NULL DEFAULT 0, conclusion VARCHAR(64) NOT NULL)
          ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
    """,
}


def with_query(url: str, **params: str) -> str:
    """``url`` with query parameters added."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def plain_url(url: str) -> str:
    """``url`` without the driver its scheme names (``postgresql+psycopg2://``
    becomes ``postgresql://``), as libpq reads it."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}" if sep else url


def psycopg2_url(url: str) -> str:
    """The ``postgresql+psycopg2://`` spelling of a ``postgresql://`` URL;
    skips (with the reason shown) when psycopg2 is not installed."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed: pip install "
                        "'telemetry_orm[postgres2]'")
    return "postgresql+psycopg2://" + url.partition("://")[2]


class Witness:
    """An independent connection to a store's database, for checking what a
    store wrote: plain ``sqlite3`` for a file, plain ``psycopg`` for
    PostgreSQL, plain ``PyMySQL`` for MySQL/MariaDB.

    SQL is written with ``?`` placeholders and runs on each engine.
    """

    def __init__(self, location: str) -> None:
        self.location = location
        self.kind = ("postgresql" if location.startswith("postgresql") else
                     "mysql" if location.startswith(("mysql://", "mariadb://")) else "sqlite")
        if self.kind == "sqlite":
            Path(location).parent.mkdir(parents=True, exist_ok=True)
            self.conn: Any = sqlite3.connect(location, isolation_level=None)
        elif self.kind == "mysql":
            self.conn = mysql_connect(location)
        else:
            import psycopg

            # psycopg 3 whatever driver the store was given: a witness of its own.
            self.conn = psycopg.connect(plain_url(location), autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def _sql(self, sql: str) -> str:
        if self.kind == "mysql":
            # KEY is a reserved word on MySQL: the keys tables' column, quoted.
            sql = re.sub(r"(?<!PRIMARY )(?<!UNIQUE )(?<!DUPLICATE )(?<![`'\w])key(?![`'\w(])",
                         "`key`", sql, flags=re.IGNORECASE)
        return sql.replace("?", "%s") if self.kind != "sqlite" else sql

    def _execute(self, sql: str, params: Sequence[Any]) -> Any:
        if self.kind != "mysql":
            return self.conn.execute(self._sql(sql), params)
        cursor = self.conn.cursor()
        if params:
            sql = sql.replace("%", "%%")
        cursor.execute(self._sql(sql), tuple(params) if params else None)
        return cursor

    def utc_text(self, column: str, fmt: str) -> str:
        """SQL rendering the UTC time ``column`` with the ``strftime``
        format ``fmt`` (``%Y``, ``%m``, ``%d``, ``%H`` only) on this engine."""
        if self.kind == "sqlite":
            return f"strftime('{fmt}', {column})"
        if self.kind == "mysql":
            return f"DATE_FORMAT({column}, '{fmt}')"
        pattern = fmt.replace("%Y", "YYYY").replace("%m", "MM").replace("%d", "DD").replace(
            "%H", "HH24")
        return f"to_char({column} AT TIME ZONE 'UTC', '{pattern}')"

    def execute(self, sql: str, *params: Any) -> int:
        """Run one statement; return its row count."""
        return int(self._execute(sql, params).rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.kind == "sqlite":
            self.conn.execute("BEGIN")
            self.conn.executemany(sql, rows)
            self.conn.execute("COMMIT")
        else:
            with self.conn.cursor() as cursor:
                cursor.executemany(self._sql(sql), rows)

    def rows(self, sql: str, *params: Any) -> List[Dict[str, Any]]:
        cursor = self._execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def scalar(self, sql: str, *params: Any) -> Any:
        return self._execute(sql, params).fetchone()[0]

    def count(self) -> int:
        return int(self.scalar("SELECT COUNT(*) FROM executions"))

    def now(self) -> _dt.datetime:
        """What the store takes as "now": the pinned clock (see
        :data:`FIXED_NOW`), else the database's clock, as an aware UTC
        datetime (to the second on SQLite)."""
        pinned = clock.pinned_now()
        if pinned is not None:
            return pinned
        if self.kind == "sqlite":
            return parse_utc(self.scalar("SELECT datetime('now')"))
        if self.kind == "mysql":
            return self.scalar("SELECT UTC_TIMESTAMP(6)").replace(  # type: ignore[no-any-return]
                tzinfo=_dt.timezone.utc)
        return self.scalar("SELECT now()").astimezone(_dt.timezone.utc)  # type: ignore[no-any-return]

    def created_at(self, row_id: int) -> _dt.datetime:
        value = self.scalar("SELECT created_at FROM executions WHERE id = ?", row_id)
        if self.kind == "mysql":
            return value.replace(tzinfo=_dt.timezone.utc)  # type: ignore[no-any-return]
        return parse_utc(value) if isinstance(value, str) else value.astimezone(_dt.timezone.utc)

    def backdate(self, row_id: int, days: float) -> None:
        """Move a row ``days`` days before "now" (:meth:`now`)."""
        if clock.pinned_now() is not None:
            when = self.now() - _dt.timedelta(days=days)
            self.execute("UPDATE executions SET created_at = ? WHERE id = ?",
                         format_timestamp(when) if self.kind == "sqlite" else when, row_id)
        elif self.kind == "sqlite":
            self.execute(
                "UPDATE executions SET created_at = datetime('now', ?) WHERE id = ?",
                f"-{days} days", row_id,
            )
        elif self.kind == "mysql":
            self.execute(
                "UPDATE executions SET created_at = UTC_TIMESTAMP(6) - INTERVAL ? SECOND "
                "WHERE id = ?", round(float(days) * 86400, 6), row_id,
            )
        else:
            self.execute(
                "UPDATE executions SET created_at = now() - ? * interval '1 day' WHERE id = ?",
                float(days), row_id,
            )

    def columns(self) -> List[str]:
        if self.kind == "sqlite":
            return [r[1] for r in self.conn.execute("PRAGMA table_info(executions)")]
        if self.kind == "mysql":
            return [r["column_name"] for r in self.rows(
                "SELECT column_name AS column_name FROM information_schema.columns WHERE "
                "table_name = 'executions' AND table_schema = DATABASE() "
                "ORDER BY ordinal_position")]
        return [
            r["column_name"]
            for r in self.rows(
                "SELECT column_name FROM information_schema.columns WHERE table_name = "
                "'executions' AND table_schema = current_schema() ORDER BY ordinal_position"
            )
        ]

    def indexes(self) -> List[str]:
        if self.kind == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'executions'"
        elif self.kind == "mysql":
            sql = ("SELECT DISTINCT index_name AS name FROM information_schema.statistics "
                   "WHERE table_name = 'executions' AND table_schema = DATABASE() "
                   "AND index_name <> 'PRIMARY'")
        else:
            sql = (
                "SELECT indexname AS name FROM pg_indexes WHERE tablename = 'executions' "
                "AND schemaname = current_schema()"
            )
        return sorted(r["name"] for r in self.rows(sql))

    def schema_version(self) -> int:
        if self.kind == "sqlite":
            return int(self.scalar("PRAGMA user_version"))
        return int(self.scalar("SELECT version FROM telemetry_orm_schema"))

    def set_schema_version(self, version: int) -> None:
        if self.kind == "sqlite":
            self.execute(f"PRAGMA user_version = {int(version)}")
        else:
            self.execute(
                "CREATE TABLE IF NOT EXISTS telemetry_orm_schema (version INTEGER NOT NULL)"
            )
            self.execute("DELETE FROM telemetry_orm_schema")
            self.execute("INSERT INTO telemetry_orm_schema VALUES (?)", version)


def parse_utc(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text).replace(tzinfo=_dt.timezone.utc)


def record_in_process(location: str, barrier: Any, count: int, tag: str) -> None:
    """Work of one process in the concurrency tests: wait for the others,
    open the store (creating the schema if no one has yet), record ``count``
    rows. Raises, so the process exits non-zero, on any error."""
    from telemetry_orm import create_telemetry_store

    barrier.wait()
    with create_telemetry_store(location) as store:
        for i in range(count):
            store.record(minimal(repo=f"acme/{tag}", num_turns=i))


def record_keys_in_process(location: str, barrier: Any, keys: Sequence[str], tag: str,
                           results: Any) -> None:
    """Work of one process in the key tests: wait for the others, then record
    one row per key (the same keys in every process); report the ids."""
    from telemetry_orm import create_telemetry_store

    with create_telemetry_store(location) as store:
        barrier.wait()
        results.put((tag, [store.record(minimal(repo=f"acme/{tag}"), key=k) for k in keys]))


def program(*argv: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m telemetry_orm`` with this checkout's package first on the
    path and no ``$TELEMETRY_DB_PATH``."""
    env = dict(os.environ)
    package_root = str(Path(telemetry_orm.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.pop("TELEMETRY_DB_PATH", None)
    return subprocess.run([sys.executable, "-m", "telemetry_orm", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def place(store: Any, witness: Witness, instants: Sequence[_dt.datetime],
          **fields: Any) -> List[int]:
    """Record one row at each UTC instant (``created_at`` set through the
    witness); return their ids."""
    ids = [store.record(minimal(**fields)) for _ in instants]
    values = [(t.strftime("%Y-%m-%d %H:%M:%S") if witness.kind == "sqlite" else t, row_id)
              for t, row_id in zip(instants, ids, strict=True)]
    witness.executemany("UPDATE executions SET created_at = ? WHERE id = ?", values)
    return ids


def app_database(location: str, *, pooled: bool = False, options: str = "",
                 **settings: Any) -> Any:
    """A peewee database as an application would open it on ``location``:
    ``SqliteDatabase`` (or ``PooledSqliteDatabase``) for a file,
    ``PostgresqlDatabase`` driven by psycopg 3 (or its pooled variant, in
    peewee 3's and 4's spellings) for a ``postgresql://`` URL, by psycopg2
    (peewee's own default) for ``postgresql+psycopg2://``, ``MySQLDatabase``
    (or ``PooledMySQLDatabase``) for a MySQL one; ``options`` are added to
    the sessions' libpq options."""
    import peewee
    from playhouse import db_url, pool

    if location.startswith(("mysql://", "mariadb://")):
        params = db_url.parse(location.replace("mariadb://", "mysql://", 1),
                              unquote_password=True)
        if "passwd" in params:  # playhouse.db_url's name for it, deprecated by PyMySQL
            params["password"] = params.pop("passwd")
        mysql = pool.PooledMySQLDatabase if pooled else peewee.MySQLDatabase
        return mysql(params.pop("database"), **params, **settings)
    if not location.startswith("postgresql"):
        cls: Any = pool.PooledSqliteDatabase if pooled else peewee.SqliteDatabase
        return cls(location, **settings)
    params = db_url.parse(location, unquote_password=True)
    name = params.pop("database")
    params["options"] = f"{params.get('options', '')} {options}".strip()
    if location.startswith("postgresql+psycopg2://"):
        # Both peewee 3 and 4 drive these with psycopg2 when it is installed.
        cls = pool.PooledPostgresqlDatabase if pooled else peewee.PostgresqlDatabase
    elif hasattr(peewee, "Psycopg3Adapter"):  # peewee 4
        cls = pool.PooledPostgresqlDatabase if pooled else peewee.PostgresqlDatabase
        params["prefer_psycopg3"] = True
    else:
        from playhouse.psycopg3_ext import Psycopg3Database

        cls = pool.PooledPsycopg3Database if pooled else Psycopg3Database
    return cls(name, **params, **settings)


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> Tuple[int, str, str]:
    """Run the command line in this process: status, everything printed to
    stdout (its ``out`` and the real one), stderr."""
    from telemetry_orm.cli import main

    out = io.StringIO()
    status = main(list(argv), out=out)
    captured = capsys.readouterr()
    return status, out.getvalue() + captured.out, captured.err


def digest(path: Path) -> str:
    """The SHA-256 of a file's bytes: that nothing changed them."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """``folder`` as a file system of its own of ``size`` (tmpfs): a disk
    that fills up; skips where mounting is not allowed."""
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a tmpfs mount, which needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


# --- WSGI --------------------------------------------------------------------------

#: The headers of each answer :func:`scrape` got, as sent (repeated names kept).
RAW: List[List[Tuple[str, str]]] = []


def scrape(app: Any, path: str = "/metrics", headers: Optional[Dict[str, str]] = None,
           method: str = "GET", query: str = "") -> Tuple[str, Dict[str, str], bytes]:
    """Call a WSGI app: its status, headers and body."""
    environ: Dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path,
                               "QUERY_STRING": query, "wsgi.input": io.BytesIO()}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update({f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items()})
    seen: List[Any] = []
    body = b"".join(app(environ, lambda status, sent: seen.extend([status, sent])))
    RAW.append(seen[1])
    return seen[0], dict(seen[1]), body


@contextlib.contextmanager
def served_at(app: Any, threads: int = 2) -> Iterator[int]:
    """``app`` served by waitress (the ``serve`` extra) on a free port of
    127.0.0.1, on a thread of its own: the port; stopped afterwards."""
    pytest.importorskip("waitress", reason="the serve extra is not installed")
    from telemetry_orm.serving import Serving

    serving = Serving(app, "127.0.0.1", 0, threads=threads)
    runner = threading.Thread(target=serving.run, daemon=True)
    runner.start()
    try:
        yield serving.port
    finally:
        serving.stop()
        assert serving.wait(60)
