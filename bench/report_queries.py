"""How fast is a usage report, against raw sqlite3 on the same file, in the same run?

    python bench/report_queries.py [--rows 300000] [--repeat 5]

Builds a database of ``--rows`` executions spread over a year (50 repos), then
times, for the last 30 days and for all time, grouped by repo:

- ``report()``: the package (open read-only, sums, per-repo p95, total p95);
- ``raw same SQL``: the same three statements through a plain sqlite3 connection;
- ``raw sums only``: one plain ``GROUP BY +repo`` (no percentiles);
- ``raw naive``: ``GROUP BY repo`` as one would write it, which lets SQLite walk
  idx_executions_repo over the whole table.

Prints medians and ratios to ``raw same SQL``. Machines differ; trust the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from telemetry_orm import create_telemetry_store, open_readonly, report  # noqa: E402
from telemetry_orm.record import FIELD_NAMES  # noqa: E402

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)


def build(path: Path, rows: int) -> None:
    create_telemetry_store(path).close()
    rng = random.Random(42)
    repos = [f"org/repo{i:02d}" for i in range(50)]
    models = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]
    columns = ("created_at",) + FIELD_NAMES
    sql = (f"INSERT INTO executions ({', '.join(columns)}) "
           f"VALUES ({', '.join('?' for _ in columns)})")

    def row(i: int) -> Tuple[Any, ...]:
        when = NOW - dt.timedelta(seconds=rng.randint(0, 365 * 86400))
        return (when.strftime("%Y-%m-%d %H:%M:%S"), f"d-{i}", rng.choice(repos),
                rng.randint(1, 500), "pull_request.opened", "anthropic", rng.choice(models),
                rng.randint(0, 5000), rng.randint(0, 3000), rng.randint(0, 50000),
                rng.randint(0, 5000), rng.randint(1000, 200000), rng.random(),
                rng.choice(("success",) * 9 + ("failure",)), "s", 3, "end_turn")

    conn = sqlite3.connect(path)
    # In time order, as a live store writes them.
    conn.executemany(sql, sorted(row(i) for i in range(rows)))
    conn.commit()
    conn.close()


def captured_sql(path: Path, since: dt.datetime) -> List[Tuple[str, Any]]:
    """The statements report() runs (peewee logs each one)."""
    statements: List[Tuple[str, Any]] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if isinstance(record.msg, tuple) and str(record.msg[0]).startswith("SELECT"):
                statements.append(record.msg)

    logger = logging.getLogger("peewee")
    handler = Grab()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    database = open_readonly(path)
    try:
        report(database, since=since, group_by="repo")
    finally:
        database.close()
        logger.removeHandler(handler)
        logger.setLevel(logging.WARNING)
    return statements


def median_seconds(run: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(path: Path, raw: sqlite3.Connection, since: dt.datetime,
            repeat: int) -> Dict[str, float]:
    """Median seconds of each case for one time range."""
    statements = captured_sql(path, since)
    cutoff = since.strftime("%Y-%m-%d %H:%M:%S")

    def package() -> Any:
        database = open_readonly(path)
        try:
            return report(database, since=since, group_by="repo")
        finally:
            database.close()

    def same_sql() -> Any:
        return [raw.execute(sql, params).fetchall() for sql, params in statements]

    def sums(group_by: str) -> Callable[[], Any]:
        sql = ("SELECT repo, COUNT(*), SUM(cost_usd), AVG(duration_ms) FROM executions"
               f" WHERE created_at >= ? GROUP BY {group_by}")
        return lambda: raw.execute(sql, (cutoff,)).fetchall()

    cases: Dict[str, Callable[[], Any]] = {
        "report()": package,
        "raw same SQL": same_sql,
        "raw sums only": sums("+repo"),
        "raw naive": sums("repo"),
    }
    return {name: median_seconds(run, repeat) for name, run in cases.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        start = time.perf_counter()
        build(path, args.rows)
        print(f"{args.rows:,} rows built in {time.perf_counter() - start:.1f} s; "
              f"sqlite {sqlite3.sqlite_version}; median of {args.repeat}")
        raw = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        for label, since in (("last 30 days", NOW - dt.timedelta(days=30)),
                             ("all time", dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))):
            timings = compare(path, raw, since, args.repeat)
            base = timings["raw same SQL"]
            print(f"\n{label}:")
            for name, seconds in timings.items():
                print(f"  {name:<14} {seconds * 1000:9.1f} ms   {seconds / base:5.2f}x")
        raw.close()


if __name__ == "__main__":
    main()
