"""The fold: ``rollup()`` against one grouped ``INSERT`` of the same rows
into an empty table shaped as the hour rollups, and against every table
``rollup()`` writes by hand (:func:`hand_sql`), on SQLite, PostgreSQL and
MySQL/MariaDB; and the longest a writer recording every 2 ms waits while
``rollup()`` runs.

    python -m bench.fold --rows 200000                # every engine whose URL is set
    python -m bench.fold --rows 100000 --engines postgres,mysql --rounds 1

The rows are :func:`bench.rollups.build`'s two years of executions, built
once into a SQLite file; the servers get the same rows read back out of it
(``COPY`` on PostgreSQL, multi-row ``INSERT`` on MySQL), into a database of
their own dropped afterwards (``$TELEMETRY_TEST_POSTGRES_URL``,
``$TELEMETRY_TEST_MYSQL_URL``: an engine whose URL is not set is skipped
with that reason). Each round folds a fresh copy with the store and runs the
baseline on another fresh copy (which side goes first alternates); the first
round folds first and checks that both counted the same executions, with the
same sums, through connections of their own. Only the store's public
``rollup()`` is called, so the figures are those of whatever the fold does.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import multiprocessing
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import quote, urlencode, urlsplit

from bench.retention import _writer
from bench.rollups import build
from bench.timing import Result, Settings, raw_connect
from telemetry_orm import FIELD_NAMES, create_telemetry_store, rollups
from telemetry_orm.rollups import ROLLUPS_TABLE

#: Where the baseline's rows go: an empty table with the hour rollups'
#: columns and key.
BASELINE_TABLE = "fold_baseline"

#: The issue's baseline: one raw grouped INSERT, what a hand-written fold
#: of the same rows into the hour table would be (``{hour}``: the engine's
#: way of cutting ``created_at`` to its UTC hour).
BASELINE_SQL = (
    f"INSERT INTO {BASELINE_TABLE} (hour, repo, model, provider, event_type, conclusion, "
    "paid, executions, input_tokens, output_tokens, cache_read_tokens, "
    "cache_creation_tokens, cost_usd, duration_ms, failed) "
    "SELECT {hour}, repo, model, provider, event_type, conclusion, "
    "CASE WHEN cost_usd > 0 THEN 1 ELSE 0 END, COUNT(*), SUM(input_tokens), "
    "SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_creation_tokens), "
    "SUM(cost_usd), SUM(duration_ms), SUM(CASE WHEN conclusion <> 'success' THEN 1 ELSE 0 END) "
    "FROM executions WHERE created_at < '{end}' GROUP BY 1, 2, 3, 4, 5, 6, 7"
)

#: The second baseline: every table ``rollup()`` writes, each by one
#: hand-written grouped INSERT over the whole range in one transaction,
#: the tiers from the hours as ``rollup()`` builds them: what the fold's
#: SQL costs at best. Each (table it writes, the rollup table it is shaped
#: as, the SELECT filling it), in an engine's SQL (see :func:`hand_sql`).
_SUMS = ("SUM(executions), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), "
         "SUM(cache_creation_tokens), SUM(ROUND(cost_usd * 1e9)) / 1e9, SUM(duration_ms), "
         "SUM(failed)")
_DIMS = "repo, model, provider, event_type, conclusion"
_EMPTY = "''"


def hand_sql(engine: Any) -> Tuple[Tuple[str, str, str], ...]:
    """The statements of the second baseline in ``engine``'s SQL: its way of
    cutting a time to its hour, day and month, and of bucketing a duration
    as the sketches do."""
    bucket = ("CASE WHEN duration_ms > 0 THEN CAST(ceil(ln(duration_ms) / "
              f"{rollups.LOG_GAMMA!r} - 1e-9) AS {engine.integer}) + 1 ELSE 0 END")
    return (
        ("hand_hours", rollups.ROLLUPS_TABLE,
         f"SELECT {engine.hour}, {_DIMS}, "
         "CASE WHEN cost_usd > 0 THEN 1 ELSE 0 END, COUNT(*), SUM(input_tokens), "
         "SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_creation_tokens), "
         "SUM(ROUND(cost_usd * 1e9)) / 1e9, SUM(duration_ms), "
         "SUM(CASE WHEN conclusion <> 'success' THEN 1 ELSE 0 END) FROM executions "
         "WHERE created_at < '{end}' GROUP BY 1, 2, 3, 4, 5, 6, 7"),
        ("hand_hour_sketches", rollups.DURATIONS_TABLE,
         f"SELECT {engine.hour}, {_DIMS}, {bucket}, COUNT(*) "
         "FROM executions WHERE created_at < '{end}' GROUP BY 1, 2, 3, 4, 5, 6, 7"),
        ("hand_days", rollups.DAYS_TABLE,
         f"SELECT {engine.day.format('hour')}, {_DIMS}, paid, {_SUMS} FROM hand_hours "
         "GROUP BY 1, 2, 3, 4, 5, 6, 7"),
        ("hand_months", rollups.MONTHS_TABLE,
         f"SELECT {engine.month.format('day')}, {_DIMS}, paid, {_SUMS} FROM hand_days "
         "GROUP BY 1, 2, 3, 4, 5, 6, 7"),
        *(("hand_month_sketches", rollups.MONTH_DURATIONS_TABLE,
           f"SELECT {engine.month.format('hour')}, '{name}', {name or _EMPTY}, bucket, "
           "SUM(executions) FROM hand_hour_sketches GROUP BY 1, 2, 3, 4")
          for name in ("", *rollups.DIMENSIONS)),
    )


#: What the two sides' tables are compared by before anything is timed.
TOTALS_SQL = ("SELECT SUM(executions), SUM(input_tokens), SUM(output_tokens), "
              "SUM(cache_read_tokens), SUM(cache_creation_tokens), SUM(duration_ms), "
              "SUM(failed), SUM(cost_usd) FROM {table}")

HOLD_LIMIT_MS = 50.0
RATIO_LIMIT = 2.0
_COLUMNS = ["created_at", *FIELD_NAMES]



class Engine:
    """One engine's copies of the source rows, each a *place*: SQLite
    files here; the servers override how a copy is made, reached and
    shaped."""

    label = "SQLite"
    hour = "strftime('%Y-%m-%d %H:00:00', created_at)"
    #: A time column (``{}``) cut to its day and to its month.
    day = "strftime('%Y-%m-%d 00:00:00', {})"
    month = "strftime('%Y-%m-01 00:00:00', {})"
    #: The type a bucket is cast to.
    integer = "INTEGER"
    begin = "BEGIN IMMEDIATE"
    #: The variable naming a server's URL (none for SQLite).
    env = ""

    def __init__(self, source: Path) -> None:
        self.source = source

    def load(self) -> None:
        """Put the source rows where :meth:`copy` takes them from."""

    def copy(self, name: str) -> str:
        """A fresh copy of the source rows, without rollups: its place."""
        target = self.source.parent / f"{name}.db"
        self.drop(str(target))
        shutil.copyfile(self.source, target)
        # Write the copy out now: the kernel flushing it later, in the middle
        # of a measurement, stalls every write on the disk.
        os.sync()
        return str(target)

    def store(self, place: str) -> str:
        """What ``create_telemetry_store`` opens for ``place``."""
        return place

    def connect(self, place: str) -> Any:
        """A plain autocommit DB-API connection to ``place`` (for SQLite:
        with the store's pragmas)."""
        return raw_connect(Path(place))

    def shape(self, conn: Any, template: str) -> None:
        """Create the baseline table on ``conn`` with the columns and key of
        the hour rollups as ``rollup()`` made them in ``template``."""
        self.shape_as(conn, template, BASELINE_TABLE, ROLLUPS_TABLE)

    def shape_as(self, conn: Any, template: str, table: str, shaped_as: str) -> None:
        """Create ``table`` on ``conn`` with the columns and key of the
        rollup table ``shaped_as`` as ``rollup()`` made it in ``template``."""
        with contextlib.closing(sqlite3.connect(template)) as other:
            ddl = other.execute("SELECT sql FROM sqlite_master WHERE type = 'table' "
                                "AND name = ?", (shaped_as,)).fetchone()[0]
        conn.execute(ddl.replace(shaped_as, table, 1))

    def by_hand(self, place: str, template: str, end: str) -> Callable[[], float]:
        """The second baseline on ``place``: the tables of :func:`hand_sql`
        made as ``rollup()`` made theirs in ``template``, then a call filling
        them in one transaction and returning its seconds."""
        tables = hand_sql(self)
        with contextlib.closing(self.connect(place)) as conn:
            for table, shaped_as in dict((t, a) for t, a, _ in tables).items():
                self.shape_as(conn, template, table, shaped_as)
        statements = [f"INSERT INTO {table} {select.replace('{end}', end)}"
                      for table, _, select in tables]

        def run() -> float:
            with contextlib.closing(self.connect(place)) as conn:
                started = time.perf_counter()
                _run(conn, self.begin, *statements, "COMMIT")
                return time.perf_counter() - started
        return run

    def drop(self, place: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{place}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        """Drop what :meth:`load` made."""


def _source_rows(source: Path) -> Iterator[Sequence[Any]]:
    with contextlib.closing(sqlite3.connect(source)) as conn:
        yield from conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM executions ORDER BY id")


def _copy_sql(source: str) -> str:
    # New ids in the same order: each copy's own sequence stays ahead of them.
    columns = ", ".join(_COLUMNS)
    return (f"INSERT INTO executions ({columns}) SELECT {columns} FROM {source}.executions "
            "ORDER BY id")


class Postgres(Engine):
    """A database of its own (dropped afterwards); a place is a schema."""

    label = "PostgreSQL"
    hour = "date_trunc('hour', created_at)"
    day = "date_trunc('day', {})"
    month = "date_trunc('month', {})"
    begin = "BEGIN"
    env = "TELEMETRY_TEST_POSTGRES_URL"

    def __init__(self, source: Path, server: str) -> None:
        super().__init__(source)
        self.server = server
        self.database = f"telemetry_test_fold_{uuid.uuid4().hex[:8]}"
        self.url = urlsplit(server)._replace(path=f"/{self.database}").geturl()

    def _connect(self, url: str) -> Any:
        import psycopg

        conn = psycopg.connect(url, autocommit=True)
        # Times read and written as the store's: UTC, whatever the server's zone.
        conn.execute("SET TIME ZONE 'UTC'")
        return conn

    def _schema(self, name: str) -> str:
        with contextlib.closing(self._connect(self.url)) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
            conn.execute(f"CREATE SCHEMA {name}")
        create_telemetry_store(self.store(name)).close()
        return name

    def load(self) -> None:
        with contextlib.closing(self._connect(self.server)) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        with contextlib.closing(self.connect(self._schema("src"))) as conn, \
                conn.cursor() as cursor:
            with cursor.copy(f"COPY executions ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
                for row in _source_rows(self.source):
                    copy.write_row(row)
            cursor.execute("VACUUM ANALYZE executions")

    def copy(self, name: str) -> str:
        with contextlib.closing(self.connect(self._schema(name))) as conn:
            conn.execute(_copy_sql("src"))
            # As a table that has been in use a while: visible to the planner.
            conn.execute("VACUUM ANALYZE executions")
        return name

    def store(self, place: str) -> str:
        options = urlencode({"options": f"-c search_path={place}"}, quote_via=quote)
        return f"{self.url}?{options}"

    def connect(self, place: str) -> Any:
        conn = self._connect(self.url)
        conn.execute(f"SET search_path TO {place}")
        return conn

    def shape_as(self, conn: Any, template: str, table: str, shaped_as: str) -> None:
        conn.execute(f"CREATE TABLE {table} (LIKE {template}.{shaped_as} INCLUDING ALL)")

    def drop(self, place: str) -> None:
        with contextlib.closing(self._connect(self.url)) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {place} CASCADE")

    def close(self) -> None:
        import psycopg

        # Not WITH (FORCE): that needs the right to end an autovacuum
        # worker, which a plain DROP asks to stop by itself.
        with contextlib.closing(self._connect(self.server)) as conn:
            for attempt in range(10):
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.database}"')
                    return
                except psycopg.errors.ObjectInUse:
                    if attempt == 9:
                        raise
                    time.sleep(1)


class MySQL(Engine):
    """A place is a database named after the server URL's own (a test user
    may create those); all dropped afterwards."""

    label = "MySQL/MariaDB"
    hour = "DATE_FORMAT(created_at, '%Y-%m-%d %H:00:00')"
    day = "DATE_FORMAT({}, '%Y-%m-%d 00:00:00')"
    month = "DATE_FORMAT({}, '%Y-%m-01 00:00:00')"
    integer = "SIGNED"
    begin = "BEGIN"
    env = "TELEMETRY_TEST_MYSQL_URL"

    def __init__(self, source: Path, server: str) -> None:
        super().__init__(source)
        self.parts = urlsplit(server)
        self.prefix = (f"{self.parts.path.lstrip('/') or 'telemetry_test'}"
                       f"_fold_{uuid.uuid4().hex[:8]}")
        self.made: List[str] = []

    def _connect(self, database: Optional[str]) -> Any:
        import pymysql

        p = self.parts
        return pymysql.connect(host=p.hostname or "localhost", port=p.port or 3306,
                               user=p.username or "", password=p.password or "",
                               database=database, autocommit=True, charset="utf8mb4")

    def _database(self, name: str) -> str:
        place = f"{self.prefix}_{name}"
        self.drop(place)
        with contextlib.closing(self._connect(None)) as conn, conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{place}` CHARACTER SET utf8mb4")
        self.made.append(place)
        create_telemetry_store(self.store(place)).close()
        return place

    def load(self) -> None:
        sql = (f"INSERT INTO executions ({', '.join(_COLUMNS)}) "
               f"VALUES ({', '.join(['%s'] * len(_COLUMNS))})")
        with contextlib.closing(self.connect(self._database("src"))) as conn, \
                conn.cursor() as cursor:
            batch: List[Sequence[Any]] = []
            cursor.execute("BEGIN")
            # PyMySQL sends an executemany of INSERT … VALUES as multi-row INSERTs.
            for row in _source_rows(self.source):
                batch.append(row)
                if len(batch) == 5000:
                    cursor.executemany(sql, batch)
                    batch.clear()
            cursor.executemany(sql, batch)
            cursor.execute("COMMIT")
            cursor.execute("ANALYZE TABLE executions")
            cursor.fetchall()

    def copy(self, name: str) -> str:
        place = self._database(name)
        with contextlib.closing(self.connect(place)) as conn, conn.cursor() as cursor:
            cursor.execute(_copy_sql(f"`{self.prefix}_src`"))
            cursor.execute("ANALYZE TABLE executions")
            cursor.fetchall()
        return place

    def store(self, place: str) -> str:
        return self.parts._replace(path=f"/{place}").geturl()

    def connect(self, place: str) -> Any:
        return self._connect(place)

    def shape_as(self, conn: Any, template: str, table: str, shaped_as: str) -> None:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {table} LIKE `{template}`.{shaped_as}")

    def drop(self, place: str) -> None:
        with contextlib.closing(self._connect(None)) as conn, conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{place}`")

    def close(self) -> None:
        for place in self.made:
            self.drop(place)


# --- the measurements ---------------------------------------------------------


def _run(conn: Any, *statements: str) -> Any:
    cursor = conn.cursor()
    try:
        for sql in statements:
            cursor.execute(sql)
        return cursor.fetchall() if cursor.description else None
    finally:
        cursor.close()


def _fold(engine: Engine, place: str) -> Dict[str, Any]:
    """One ``rollup()`` of ``place`` through a store: seconds, rows, steps, end."""
    with create_telemetry_store(engine.store(place)) as store:
        started = time.perf_counter()
        result = store.rollup()
        seconds = time.perf_counter() - started
    end = result.counted_before
    return {"seconds": seconds, "rows": result.rows, "steps": result.steps,
            "end": None if end is None else _text(end)}


def _text(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _this_hour() -> str:
    """Where ``rollup()`` stops now: the start of the current UTC hour."""
    return _text(dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0))


def _baseline(engine: Engine, place: str, end: str) -> Callable[[], float]:
    """The baseline on ``place`` (its table already made): a call running
    it in one transaction and returning its seconds."""
    sql = BASELINE_SQL.format(hour=engine.hour, end=end)

    def run() -> float:
        with contextlib.closing(engine.connect(place)) as conn:
            started = time.perf_counter()
            _run(conn, engine.begin, sql, "COMMIT")
            return time.perf_counter() - started
    return run


def _shaped(engine: Engine, place: str, template: str) -> str:
    with contextlib.closing(engine.connect(place)) as conn:
        engine.shape(conn, template)
    return place


def _totals(engine: Engine, place: str, table: str) -> List[float]:
    with contextlib.closing(engine.connect(place)) as conn:
        row = _run(conn, TOTALS_SQL.format(table=table).replace(
            "SELECT ", "SELECT COUNT(*), ", 1))[0]
    return [float(value or 0) for value in row]


def _check(engine: Engine, ours: str, theirs: str, folded: Dict[str, Any],
           table: str = BASELINE_TABLE) -> None:
    """Both sides counted the same executions into as many hour groups,
    with the same sums (the cost within rounding), or the ratio means nothing."""
    a = _totals(engine, ours, ROLLUPS_TABLE)
    b = _totals(engine, theirs, table)
    if a[:-1] != b[:-1] or abs(a[-1] - b[-1]) > 1e-6 * max(abs(b[-1]), 1.0) \
            or a[1] != folded["rows"]:
        raise AssertionError(f"{engine.label}: rollup() and the baseline differ: "
                             f"{a} against {b} ({folded['rows']} rows folded)")


def _with_writer(engine: Engine, place: str, work: Callable[[], Any]) -> Dict[str, Any]:
    """Run ``work`` while another process records into ``place`` every
    2 ms through a store; the writer's waits and ``work``'s seconds."""
    ctx = multiprocessing.get_context("spawn")
    ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    writer = ctx.Process(target=_writer, args=(engine.store(place), ready, stop, results))
    writer.start()
    try:
        # A writer that dies on its way up never says it is ready.
        deadline = time.monotonic() + 60
        while not ready.wait(0.5):
            if not writer.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the writer process did not start ({writer.exitcode})")
        started = time.perf_counter()
        work()
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        writer.join(300)
    return {"seconds": seconds, **results.get(timeout=10)}


def measure(engine: Engine, rounds: int, loaded: bool = True) -> Dict[str, Any]:
    """``rounds`` pairs of ``rollup()`` and the baseline on fresh copies
    (the first checked, folding first; then alternating), and with
    ``loaded`` one more pair while a writer records."""
    template = engine.copy("ours0")
    first = _fold(engine, template)
    theirs = _shaped(engine, engine.copy("base0"), template)
    seconds = [(first["seconds"], _baseline(engine, theirs, first["end"])())]
    _check(engine, template, theirs, first)
    engine.drop(theirs)
    for i in range(1, rounds):
        ours, theirs = engine.copy(f"ours{i}"), _shaped(engine, engine.copy(f"base{i}"), template)
        if i % 2:
            base = _baseline(engine, theirs, _this_hour())()
            seconds.append((_fold(engine, ours)["seconds"], base))
        else:
            folded = _fold(engine, ours)
            seconds.append((folded["seconds"], _baseline(engine, theirs, folded["end"])()))
        engine.drop(ours)
        engine.drop(theirs)
    figures: Dict[str, Any] = {
        "label": engine.label, "rows": first["rows"], "steps": first["steps"],
        "rounds": rounds, "fold_s": statistics.median(s for s, _ in seconds),
        "baseline_s": statistics.median(b for _, b in seconds),
        "ratio": statistics.median(s / b for s, b in seconds)}
    # Each round's rollup() against the same tables written by hand.
    hand = []
    for i, (fold_s, _) in enumerate(seconds):
        place = engine.copy(f"hand{i}")
        hand.append((fold_s, engine.by_hand(place, template, first["end"])()))
        if i == 0:  # the hand-written hours hold what rollup()'s hold
            _check(engine, template, place, first, "hand_hours")
        engine.drop(place)
    figures["hand_s"] = statistics.median(h for _, h in hand)
    figures["hand_ratio"] = statistics.median(s / h for s, h in hand)
    if loaded:
        ours, theirs = engine.copy("loaded"), _shaped(engine, engine.copy("loaded_base"), template)
        figures["writer"] = _with_writer(engine, ours, lambda: _fold(engine, ours))
        figures["writer_baseline"] = _with_writer(
            engine, theirs, _baseline(engine, theirs, _this_hour()))
        engine.drop(ours)
        engine.drop(theirs)
    engine.drop(template)
    return figures


def results(figures: Dict[str, Any]) -> List[Result]:
    """The bench lines of :func:`measure`'s figures (``built``: the rows
    made, of which ``rows`` were before the current hour and folded)."""
    label, folded, fold_s = figures["label"], figures["rows"], figures["fold_s"]
    lines = [Result(
        f"fold ({label}): rollup() of {figures['built']:,} rows against one grouped INSERT",
        fold_s, "s", figures["baseline_s"], figures["ratio"], RATIO_LIMIT,
        f"<= {RATIO_LIMIT:g}x",
        f"{folded / fold_s:,.0f} rows/s, {figures['steps']:,} steps; baseline: INSERT … "
        "SELECT … GROUP BY into an empty table shaped as the hour rollups (the same "
        f"{folded:,} executions and sums); the case took {figures['case_s']:.0f} s",
        figures["rounds"])]
    if "hand_s" in figures:
        lines.append(Result(
            f"fold ({label}): rollup() of {figures['built']:,} rows against the same tables "
            "written by hand", fold_s, "s", figures["hand_s"], figures["hand_ratio"],
            RATIO_LIMIT, f"<= {RATIO_LIMIT:g}x",
            "baseline: one grouped INSERT per table rollup() writes (hour sums and sketches "
            "from the rows, day and month sums and the six month sketches from the hours), "
            "in one transaction", figures["rounds"]))
    if "writer" in figures:
        writer, single = figures["writer"], figures["writer_baseline"]
        worst, single_worst = writer["worst_wait_s"] * 1000, single["worst_wait_s"] * 1000
        lines.append(Result(
            f"fold ({label}): longest record() wait during rollup(), a writer every 2 ms",
            worst, "ms", single_worst, worst / max(single_worst, 1e-9), HOLD_LIMIT_MS,
            f"<= {HOLD_LIMIT_MS:g} ms",
            # A writer held off most of the time records a handful of rows,
            # whose estimated p99 may lie past the worst one.
            f"p99 {min(writer['p99_wait_s'] * 1000, worst):.0f} ms of {writer['records']:,} "
            f"records, {writer['busy_errors']} busy errors, rollup() {writer['seconds']:.1f} s "
            "meanwhile; baseline: during the one INSERT"
            + (f"; the writer failed: {writer['error']}" if writer["error"] else ""), 1,
            passed=worst <= HOLD_LIMIT_MS and not writer["busy_errors"]
            and not writer["error"]))
    return lines


#: The servers, by the name ``--engines`` knows them by.
SERVERS = {"postgres": Postgres, "mysql": MySQL}


def _server(name: str, source: Path) -> Engine | str:
    """The server engine on ``source``'s rows, or why it is skipped."""
    kind = SERVERS[name]
    server = os.environ.get(kind.env, "")
    driver = "psycopg" if kind is Postgres else "pymysql"
    try:
        __import__(driver)
    except ImportError:
        return f"skipped: {driver} is not installed"
    if not server:
        return f"skipped: set {kind.env}"
    return kind(source, server)


def _skipped(name: str, why: str) -> Result:
    return Result(f"fold ({SERVERS[name].label}): rollup() against one grouped INSERT", None,
                  "", target=f"<= {RATIO_LIMIT:g}x", note=why)


def run(rows: int, rounds: int, engines: Sequence[str] = ("sqlite", *SERVERS),
        folder: Optional[Path] = None, loaded: bool = True) -> List[Result]:
    """Build ``rows`` rows once, then measure each of ``engines`` on them."""
    lines: List[Result] = []
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fold-")))
        source = folder / "fold-source.db"
        build(source, rows)
        for name in engines:
            engine = Engine(source) if name == "sqlite" else _server(name, source)
            if isinstance(engine, str):
                lines.append(_skipped(name, engine))
                continue
            started = time.perf_counter()
            try:
                engine.load()
                figures = measure(engine, rounds, loaded)
            finally:
                engine.close()
            lines += results({**figures, "built": rows,
                              "case_s": time.perf_counter() - started})
        source.unlink()
    return lines


#: Rows of the SQLite lines in a quick and in a full run (the issue's
#: million in a full one), and of the server lines (full run only): there
#: the fold took 15 s (PostgreSQL) and 25 s (MariaDB) a round for 200,000
#: rows before it was made faster, and its ratio hardly moves with the size.
QUICK_ROWS, FULL_ROWS, SERVER_ROWS = 200_000, 1_000_000, 200_000


def fold(settings: Settings) -> List[Result]:
    """The fold case of ``python -m bench``: SQLite, and in a full run the
    servers whose URL is set; three rounds each."""
    # A quick run: one round, without the pair measured while a writer records.
    lines = run(QUICK_ROWS if settings.quick else FULL_ROWS, 1 if settings.quick else 3,
                ("sqlite",), folder=settings.workdir, loaded=not settings.quick)
    if settings.quick:
        return lines + [_skipped(name, "full run only (or python -m bench.fold --engines "
                                       f"{name})") for name in SERVERS]
    return lines + run(SERVER_ROWS, 3, tuple(SERVERS), folder=settings.workdir)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=QUICK_ROWS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", default="sqlite,postgres,mysql",
                        help="comma-separated, among sqlite, postgres and mysql")
    parser.add_argument("--no-writer", action="store_true",
                        help="skip the pair run while a writer records")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    for line in run(args.rows, args.rounds, args.engines.split(","),
                    loaded=not args.no_writer):
        ratio = "" if line.ratio is None else f"  {line.ratio:.2f}x"
        ours = "-" if line.ours is None else f"{line.ours:,.2f} {line.unit}"
        base = "-" if line.baseline is None else f"{line.baseline:,.2f} {line.unit}"
        print(f"{line.case}: {ours} against {base}{ratio}  {line.target}  {line.outcome}"
              f"  ({line.note})")
    print(f"{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
