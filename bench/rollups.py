"""Rollups: an all-time report over two years of rows, from the rollups
against the same report from the rows alone; the time and peak memory of
``rollup()`` itself, at two sizes (flat memory: the same peak for both).

    python -m bench.rollups --rows 1000000     # by hand, one size
    python -m bench.rollups fold /tmp/r.db     # one rollup in this process (memory)

The rows: the bench's realistic executions (``bench.data``) over 730 days,
with 20 repositories of unequal weight, as a team's history would be.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

from bench.data import iter_records
from bench.memory import _peak_mb, _reset_peak, _resident_mb
from bench.timing import Result, Settings
from telemetry_orm import FIELD_NAMES, create_telemetry_store
from telemetry_orm.dashboard import dashboard, render_html

DAYS = 730
REPOS = [f"acme/repo-{n}" for n in range(20)]
ROOT = Path(__file__).resolve().parent.parent


def build(path: Path, rows: int, days: int = DAYS) -> None:
    """``rows`` executions spread evenly over the last ``days`` days."""
    create_telemetry_store(path).close()
    rnd = random.Random(11)
    weights = [1 / (n + 1) for n in range(len(REPOS))]
    start = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(days=days)
    span = days * 86400
    columns = ["created_at", *FIELD_NAMES]
    repo = FIELD_NAMES.index("repo")
    sql = (f"INSERT INTO executions ({', '.join(columns)}) "
           f"VALUES ({', '.join('?' for _ in columns)})")

    def values() -> Any:
        for n, record in enumerate(iter_records(rows, seed=5)):
            row = list(record.as_row())
            row[repo] = rnd.choices(REPOS, weights)[0]
            at = start + dt.timedelta(seconds=n * span // rows)
            yield [at.strftime("%Y-%m-%d %H:%M:%S"), *row]

    with sqlite3.connect(path) as conn:
        conn.executemany(sql, values())
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def fold(path: str) -> Dict[str, float]:
    """One ``rollup()`` of ``path``: seconds and peak resident growth (MB)."""
    with create_telemetry_store(path) as store:
        _reset_peak()
        before = _resident_mb()
        started = time.perf_counter()
        result = store.rollup()
        seconds = time.perf_counter() - started
        peak = _peak_mb() - before
    return {"rows": result.rows, "seconds": seconds, "peak_mb": peak}


def _fold_in_child(path: Path) -> Dict[str, float]:
    done = subprocess.run([sys.executable, "-m", "bench.rollups", "fold", str(path)],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _median_seconds(call: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


#: The zones of the zone lines: on the whole hour with clocks that change,
#: and off it by a half and a quarter hour.
ZONES = ("America/Los_Angeles", "Asia/Kolkata", "Asia/Kathmandu")


def _same_figures(a: Any, b: Any, rows: int) -> None:
    """The same sums (p95 within 1 %) either way, or the timing means nothing."""
    assert a.from_rollups and a.totals.executions == b.totals.executions == rows
    assert [r.keys for r in a.rows] == [r.keys for r in b.rows]
    for x, y in [(a.totals, b.totals), *((r.metrics, s.metrics)
                                         for r, s in zip(a.rows, b.rows, strict=True))]:
        assert (x.executions, x.total_tokens, x.cost_usd, x.failed) == (
            y.executions, y.total_tokens, y.cost_usd, y.failed)
        assert abs(x.p95_duration_ms - y.p95_duration_ms) <= 0.01 * y.p95_duration_ms


def zone_reports(store: Any, rows: int, rounds: int, periods: Sequence[str],
                 zones: Sequence[str] = ZONES, baselines: Dict[Any, float] | None = None,
                 kept: bool = False) -> List[Result]:
    """The all-time report by each period in each of ``zones``, p95
    included, against the same report from the rows only (its median kept
    in ``baselines``, and taken from there when it is already measured)."""
    results = []
    baselines = {} if baselines is None else baselines
    for period in periods:
        for tz in zones:
            def rolled(period: str = period, tz: str = tz) -> Any:
                return store.report(group_by=[period], since=None, tz=tz)

            def raw(period: str = period, tz: str = tz) -> Any:
                return store.report(group_by=[period], since=None, tz=tz, use_rollups=False)

            _same_figures(rolled(), raw(), rows)
            ours = _median_seconds(rolled, rounds)
            theirs = baselines.get((period, tz))
            if theirs is None:
                theirs = baselines[(period, tz)] = _median_seconds(raw, rounds)
            after = "rollup(zones=...): its days kept" if kept else "rollup()"
            results.append(Result(
                f"all-time report by {period} ({tz}), {rows:,} rows, after {after}",
                ours, "s", theirs, ours / theirs, 0.1, "<= 0.1x",
                "baseline: the same report from the rows only (use_rollups=False)", rounds))
    return results


def kept_zones(store: Any, rows: int, rounds: int, periods: Sequence[str],
               zones: Sequence[str], baselines: Dict[Any, float]) -> List[Result]:
    """``rollup(zones=...)`` building the days of ``zones`` from the hours,
    then the reports by ``periods`` in them."""
    started = time.perf_counter()
    built = store.rollup(zones=zones)
    seconds = time.perf_counter() - started
    results = [Result(
        f"rollup(zones=...) keeping the days of {len(zones)} zone(s), {rows:,} rows over "
        "two years", seconds, "s",
        note=f"once, {built.steps:,} steps; later rollups build only the new days: "
        f"{', '.join(zones)}", rounds=1)]
    return results + zone_reports(store, rows, rounds, periods, zones, baselines, kept=True)


def run(rows: int, rounds: int, periods: Sequence[str] = ("month", "week", "day"),
        kept: Sequence[str] = ("week", "day"), kept_in: Sequence[str] = ZONES
        ) -> List[Result]:
    results: List[Result] = []
    with tempfile.TemporaryDirectory(prefix="rollups-") as tmp:
        folds = {}
        for size in (rows // 4, rows):
            path = Path(tmp) / f"h{size}.db"
            build(path, size)
            if size == rows:
                shutil.copyfile(path, Path(tmp) / "raw.db")
            folds[size] = _fold_in_child(path)
        small, big = folds[rows // 4], folds[rows]
        results.append(Result(
            f"rollup() of {rows:,} rows over two years", big["seconds"], "s",
            note=f"{rows / big['seconds']:,.0f} rows/s; {rows // 4:,} rows: "
            f"{small['seconds']:.1f} s", rounds=1))
        results.append(Result(
            f"rollup() of {rows:,} rows: peak RSS growth", big["peak_mb"], "MB",
            small["peak_mb"], big["peak_mb"] / max(small["peak_mb"], 0.1), 50.0, "<= 50 MB",
            f"baseline: {rows // 4:,} rows (flat memory: about the same)", 1,
            passed=big["peak_mb"] <= 50.0))
        with create_telemetry_store(Path(tmp) / f"h{rows}.db") as store:
            for by, tz in ((["repo"], "UTC"), ([], "UTC")):
                def rolled(by: List[str] = by, tz: str = tz) -> Any:
                    return store.report(group_by=by, since=None, tz=tz)

                def raw(by: List[str] = by, tz: str = tz) -> Any:
                    return store.report(group_by=by, since=None, tz=tz, use_rollups=False)

                # The same figures (p95 within 1 %) either way, or the timing means nothing.
                a, b = rolled(), raw()
                assert a.from_rollups and a.totals.executions == b.totals.executions == rows
                assert abs(a.totals.p95_duration_ms - b.totals.p95_duration_ms) <= (
                    0.01 * b.totals.p95_duration_ms)
                ours, theirs = _median_seconds(rolled, rounds), _median_seconds(raw, rounds)
                what = f"by {by[0]}" if by else "totals only"
                results.append(Result(
                    f"all-time report {what} ({tz}), {rows:,} rows, after rollup()",
                    ours, "s", theirs, ours / theirs,
                    *((0.05, "<= 0.05x") if by == ["repo"] else (None, "reference")),
                    "baseline: the same report from the rows only (use_rollups=False)",
                    rounds))
            baselines: Dict[Any, float] = {}
            results += zone_reports(store, rows, rounds, periods, baselines=baselines)
            if kept:
                results += kept_zones(store, rows, rounds, kept, kept_in, baselines)
            since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=365)
            pages: List[str] = []

            def page() -> None:
                pages.append(render_html(dashboard(store, since=since)))

            seconds = _median_seconds(page, rounds)
            size = len(pages[-1].encode("utf-8")) / 1024
            results.append(Result(
                f"HTML report, one year of {len(REPOS)} repos ({rows:,} rows over two years)",
                seconds, "s", limit=1.0, target="<= 1 s",
                note="report + cost by week and repo, by week and model, the year before; "
                "rendered", rounds=rounds))
            results.append(Result("HTML report, one year: page size", size, "KB", limit=300.0,
                                  target="<= 300 KB", note="one self-contained file", rounds=1))
    return results


#: The size of the target (an all-time report over a million rows): on
#: fewer rows the rows' own report is too quick to beat 20-fold
#: (200,000 rows: about 0.14x), so a quick run leaves the case out.
ROWS = 1_000_000


def rollups(settings: Settings) -> List[Result]:
    """The rollup case of ``python -m bench``."""
    if settings.quick:
        # A million rows built and rolled up twice take about five minutes:
        # most of a quick run, for lines whose figures hardly move.
        return [Result(f"rollup() of {ROWS:,} rows over two years", None, "",
                       note="full run only (about 5 minutes): python -m bench --only rollups")]
    return run(ROWS, 3)


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", nargs="?", choices=["fold", "run"], default="run")
    parser.add_argument("path", nargs="?")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--periods", default="month,week,day",
                        help="the zone lines' periods, comma-separated")
    parser.add_argument("--kept", default="week,day",
                        help="the periods of the lines after rollup(zones=...), "
                        "comma-separated (empty: none)")
    args = parser.parse_args(argv)
    if args.what == "fold":
        print(json.dumps(fold(args.path)))
        return
    kept = [p for p in args.kept.split(",") if p]
    for result in run(args.rows, args.rounds, args.periods.split(","), kept):
        print(result)


if __name__ == "__main__":
    main()
