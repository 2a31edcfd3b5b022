"""What ``store.record()`` costs on MySQL/MariaDB against plain PyMySQL.

    python bench/mysql_record.py [N] [MYSQL_URL]

N (default 2,000) single-row inserts, each its own transaction (autocommit),
in a fresh database dropped afterwards: through a store (validation, a pooled
connection borrowed and handed back per call), and with one PyMySQL
connection running the same parameterised INSERT. Rounds alternate; the
ratio is the median of the rounds' ratios, measured in the same run. In
``python -m bench`` it runs when ``$TELEMETRY_TEST_MYSQL_URL`` is set.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as a script: python bench/mysql_record.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.timing import Result, Settings  # noqa: E402
from telemetry_orm import FIELD_NAMES, TelemetryRecord, create_telemetry_store  # noqa: E402

ROUNDS = 5
URL_ENV = "TELEMETRY_TEST_MYSQL_URL"


def _connect(url: str, database: Optional[str]) -> Any:
    import pymysql

    parts = urlsplit(url)
    return pymysql.connect(host=parts.hostname or "localhost", port=parts.port or 3306,
                           user=parts.username or "", password=parts.password or "",
                           database=database, autocommit=True, charset="utf8mb4")


def measure(server: str, n: int, rounds: int = ROUNDS) -> Dict[str, List[float]]:
    """Seconds per row of each round: ``store`` and ``pymysql``."""
    parts = urlsplit(server)
    name = f"{parts.path.lstrip('/') or 'telemetry_test'}_bench_{uuid.uuid4().hex[:8]}"
    admin = _connect(server, None)
    admin.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    url = parts._replace(path=f"/{name}").geturl()
    record = TelemetryRecord(repo="acme/api", event_type="pull_request.opened",
                             model="claude-sonnet-4-5", conclusion="success",
                             input_tokens=1200, output_tokens=340, cost_usd=0.0087)
    entry, row = record.as_dict(), record.as_row()
    sql = (f"INSERT INTO executions ({', '.join(FIELD_NAMES)}) "
           f"VALUES ({', '.join(['%s'] * len(FIELD_NAMES))})")
    per_row: Dict[str, List[float]] = {"store": [], "pymysql": []}
    try:
        with create_telemetry_store(url) as store:
            raw = _connect(url, name)
            try:
                each = max(1, n // rounds)
                for _ in range(rounds):
                    started = time.perf_counter()
                    for _ in range(each):
                        store.record(entry)
                    per_row["store"].append((time.perf_counter() - started) / each)
                    started = time.perf_counter()
                    with raw.cursor() as cursor:
                        for _ in range(each):
                            cursor.execute(sql, row)
                            _ = cursor.lastrowid
                    per_row["pymysql"].append((time.perf_counter() - started) / each)
            finally:
                raw.close()
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
    return per_row


def mysql_record(settings: Settings) -> List[Result]:
    """The bench line: ``record()`` on MySQL ≤ 1.2× plain PyMySQL."""
    case = "record() on MySQL/MariaDB, one row per transaction"
    server = os.environ.get(URL_ENV, "")
    try:
        import pymysql  # noqa: F401
    except ImportError:
        server = ""
    if not server:
        return [Result(case, None, "", target="<= 1.2x",
                       note=f"skipped: set {URL_ENV} (and install the mysql extra)")]
    n = 2000 if settings.quick else 5000
    per_row = measure(server, n)
    ratios = [s / p for s, p in zip(per_row["store"], per_row["pymysql"], strict=True)]
    return [Result(case, statistics.median(per_row["store"]) * 1e6, "µs/row",
                   statistics.median(per_row["pymysql"]) * 1e6, statistics.median(ratios),
                   1.2, "<= 1.2x", "baseline: the same INSERT through one PyMySQL connection",
                   ROUNDS)]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    server = sys.argv[2] if len(sys.argv) > 2 else os.environ[URL_ENV]
    per_row = measure(server, n)
    ratios = [s / p for s, p in zip(per_row["store"], per_row["pymysql"], strict=True)]
    for name, times in per_row.items():
        print(f"{name:10s} {statistics.median(times) * 1e6:8.0f} µs/row")
    print(f"ratio      {statistics.median(ratios):8.2f}x pymysql (median of the rounds' ratios)")


if __name__ == "__main__":
    main()
