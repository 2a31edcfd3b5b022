"""Budgets: a reservation and its record against a plain ``record()``, and
a budget's status against a report by repo of the same month.

- ``reserve + hold.record, per run``: ``with store.reserve(...) as hold:
  hold.record(entry)`` against ``store.record(entry)``, same store (SQLite
  file), same rows, interleaved rounds: target <= 3x.
- ``budget_status, a month of N rows``: ``store.budget_status(name)`` (a
  budget over every execution) against ``store.report(since=…, until=…,
  group_by="repo")`` of the same month: target <= 1.2x.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import time
from pathlib import Path
from typing import Any, List, Tuple

from bench.timing import Result, Settings, paired, per_item
from telemetry_orm import clock, create_telemetry_store
from telemetry_orm.record import FIELD_NAMES

#: The month the status case reads, and the instant taken as "now" in it.
MONTH = (dt.datetime(2025, 5, 1, tzinfo=dt.timezone.utc),
         dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc))
NOW = dt.datetime(2025, 5, 31, 12, tzinfo=dt.timezone.utc)

RUN = {"repo": "acme/api", "event_type": "pull_request.opened", "model": "claude-sonnet-4-5",
       "conclusion": "success", "input_tokens": 1200, "output_tokens": 300,
       "cost_usd": 0.0123, "duration_ms": 42_000}


def _month_rows(path: Path, rows: int) -> None:
    """``rows`` executions in :data:`MONTH` (50 repos, 3 models), in time
    order, written raw."""
    create_telemetry_store(path).close()
    rng = random.Random(7)
    repos = [f"org/repo{i:02d}" for i in range(50)]
    models = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]
    columns = ("created_at",) + FIELD_NAMES
    sql = (f"INSERT INTO executions ({', '.join(columns)}) "
           f"VALUES ({', '.join('?' for _ in columns)})")
    span = int((MONTH[1] - MONTH[0]).total_seconds())

    def row(i: int) -> Tuple[Any, ...]:
        when = MONTH[0] + dt.timedelta(seconds=rng.randrange(span))
        return (when.strftime("%Y-%m-%d %H:%M:%S"), f"d-{i}", rng.choice(repos),
                rng.randint(1, 500), "pull_request.opened", "anthropic", rng.choice(models),
                rng.randint(0, 5000), rng.randint(0, 3000), rng.randint(0, 50000),
                rng.randint(0, 5000), rng.randint(1000, 200000),
                rng.choice((0.0, rng.random())),
                rng.choice(("success",) * 9 + ("failure",)), "s", 3, "end_turn")

    conn = sqlite3.connect(path)
    conn.executemany(sql, sorted(row(i) for i in range(rows)))
    conn.commit()
    conn.close()


def reserve_and_record(settings: Settings) -> List[Result]:
    """Line 2: a reservation and the record inside it, per run."""
    path = settings.workdir / "budget_reserve.db"
    runs = 100 if settings.quick else 300
    results = []
    with create_telemetry_store(path) as store:
        store.set_budget("bench", usd=1e12, repo="acme/api")
        store.set_budget("org", usd=1e12)

        def ours() -> float:
            def run() -> None:
                for _ in range(runs):
                    with store.reserve("bench", usd=0.05) as hold:
                        hold.record(RUN)
            return per_item(run, runs)

        def plain() -> float:
            def run() -> None:
                for _ in range(runs):
                    store.record(RUN)
            return per_item(run, runs)

        mine, theirs, ratio = paired(ours, plain, settings.rounds)
        rows = store.model.select().count()
        # The statements of one run of each, as sent (parameters inlined),
        # after a run that leaves no row past the watermarks (as in a loop).
        with store.reserve("bench", usd=0.05) as hold:
            hold.record(RUN)
        sent: List[str] = []
        conn = store.database.connection()
        conn.set_trace_callback(sent.append)
        try:
            with store.reserve("bench", usd=0.05) as hold:
                hold.record(RUN)
            both = list(sent)
            del sent[:]
            store.record(RUN)
            one = list(sent)
        finally:
            conn.set_trace_callback(None)
    results.append(Result("reserve + hold.record, per run (2 budgets)", mine * 1e6, "us",
                          theirs * 1e6, ratio, 3.0, "<= 3x record()",
                          f"SQLite file; {rows:,} rows of the month at the end",
                          settings.rounds))
    results.append(_floor(path, both, one, runs, settings.rounds))
    return results


def _floor(path: Path, both: List[str], one: List[str], runs: int, rounds: int) -> Result:
    """The same statements sent again from a plain ``sqlite3`` connection:
    the cost of the SQL alone, two write transactions against one INSERT (a
    little under it: sent again, hold.record's UPDATE finds no row to move)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")

    def replay(statements: List[str]) -> float:
        def run() -> None:
            for _ in range(runs):
                for statement in statements:
                    conn.execute(statement).fetchall()
        return per_item(run, runs)

    try:
        mine, theirs, ratio = paired(lambda: replay(both), lambda: replay(one), rounds)
    finally:
        conn.close()
    return Result("  the same SQL from raw sqlite3 (the floor)", mine * 1e6, "us",
                  theirs * 1e6, ratio, None, "reference",
                  f"{len(both)} statements (2 transactions) against record()'s INSERT",
                  rounds)


def status(settings: Settings) -> List[Result]:
    """Line 3: a budget's status against the same month's report by repo."""
    rows = settings.report_rows
    path = settings.workdir / "budget_status.db"
    _month_rows(path, rows)
    rounds = max(5, settings.rounds // 3)
    with create_telemetry_store(path) as store, clock.pinned(NOW):
        store.set_budget("org", usd=1e6)

        def ours() -> float:
            start = time.perf_counter()
            store.budget_status("org")
            return time.perf_counter() - start

        def by_repo() -> float:
            start = time.perf_counter()
            store.report(since=MONTH[0], until=MONTH[1], group_by="repo")
            return time.perf_counter() - start

        mine, theirs, ratio = paired(ours, by_repo, rounds)
    return [Result(f"budget_status, a month of {rows:,} rows", mine * 1000, "ms",
                   theirs * 1000, ratio, 1.2, "<= 1.2x report by repo",
                   "SQLite file, not rolled up", rounds)]


def budgets(settings: Settings) -> List[Result]:
    """Both lines."""
    return [*reserve_and_record(settings), *status(settings)]
