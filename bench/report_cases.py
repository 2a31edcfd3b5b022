"""Target 4: ``report()`` on many rows against the same SQL through raw
``sqlite3``, for a recent range and for all time, grouped by repo.

The data and the captured statements come from ``bench/report_queries.py``;
here the rounds of ours and of the baseline are interleaved like every other
case of the suite.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from typing import Any, Callable, List

from bench import report_queries
from bench.timing import Result, Settings, paired
from telemetry_orm import open_readonly, report

RANGES = (
    ("last 30 days", report_queries.NOW - dt.timedelta(days=30)),
    ("all time", dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)),
)


def _seconds(run: Callable[[], Any]) -> Callable[[], float]:
    def timed() -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    return timed


def reports(settings: Settings) -> List[Result]:
    """``report(group_by="repo")`` against the same statements run raw, and
    the naive ``GROUP BY repo`` as a reference (the query-plan trap)."""
    rows = settings.report_rows
    path = settings.workdir / "reports.db"
    report_queries.build(path, rows)
    raw = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rounds = max(5, settings.rounds // 3)
    results = []
    try:
        for label, since in RANGES:
            statements = report_queries.captured_sql(path, since)
            cutoff = since.strftime("%Y-%m-%d %H:%M:%S")

            def ours(since: dt.datetime = since) -> None:
                database = open_readonly(path)
                try:
                    report(database, since=since, group_by="repo")
                finally:
                    database.close()

            def same_sql(statements: List[Any] = statements) -> None:
                for sql, params in statements:
                    raw.execute(sql, params).fetchall()

            def naive(cutoff: str = cutoff) -> None:
                raw.execute(
                    "SELECT repo, COUNT(*), SUM(cost_usd), AVG(duration_ms) FROM executions"
                    " WHERE created_at >= ? GROUP BY repo", (cutoff,)
                ).fetchall()

            mine, theirs, ratio = paired(_seconds(ours), _seconds(same_sql), rounds)
            results.append(Result(
                f"report(group_by='repo'), {label}, {rows:,} rows", mine * 1000, "ms",
                theirs * 1000, ratio, 1.2, "<= 1.2x",
                "baseline: the same statements through raw sqlite3", rounds,
            ))
            if label == RANGES[0][0]:
                def calculated(since: dt.datetime = since) -> None:
                    database = open_readonly(path)
                    try:
                        report(database, since=since, group_by="repo", cost="calculated")
                    finally:
                        database.close()

                priced, recorded, priced_ratio = paired(_seconds(calculated), _seconds(ours),
                                                        rounds)
                results.append(Result(
                    f"report(group_by='repo', cost='calculated'), {label}", priced * 1000, "ms",
                    recorded * 1000, priced_ratio, 1.5, "<= 1.5x",
                    "baseline: the same report with cost='recorded' (one more grouped query, "
                    "per repo and model)", rounds,
                ))
                # Over a recent range, SQLite walks the repo index over the
                # whole table for this query, even for the sums alone.
                slow, _, slow_ratio = paired(_seconds(naive), _seconds(same_sql), 3)
                results.append(Result(
                    f"naive GROUP BY repo, sums only, {label}", slow * 1000, "ms",
                    theirs * 1000, slow_ratio, note="the query plan report() avoids",
                    rounds=3,
                ))
    finally:
        raw.close()
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    return results
