"""A Prometheus scrape (``GET /metrics``'s text) of a million rows over a
year, after a rollup, against one raw ``SUM … GROUP BY repo, model,
provider, conclusion`` over every row from plain sqlite3 (what a counter
computed from the rows alone would cost at each scrape).

    python -m bench.scrape --rows 1000000     # by hand

In a quick run it is left out (said in its line): on fewer rows the raw
query is too quick for the 10-fold target to mean anything, and building
and folding a million rows costs about a minute of CI.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, List

from bench.rollups import build
from bench.timing import Result, Settings
from telemetry_orm import create_telemetry_store
from telemetry_orm.outlets import metrics_text

ROWS = 1_000_000
DAYS = 365
#: The rows alone, as a naive exporter would count them.
RAW = ("SELECT repo, model, provider, conclusion, COUNT(*), SUM(input_tokens), "
       "SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_creation_tokens), "
       "SUM(cost_usd) FROM executions GROUP BY repo, model, provider, conclusion")
CASE = f"scrape of /metrics, {ROWS:,} rows over a year, after rollup()"


def _paired(ours: Callable[[], Any], theirs: Callable[[], Any], rounds: int
            ) -> tuple[float, float, float]:
    """Medians of ours, of theirs, and of the per-round ratios (run back to back)."""
    a, b, r = [], [], []
    for _ in range(rounds):
        started = time.perf_counter()
        ours()
        mine = time.perf_counter() - started
        started = time.perf_counter()
        theirs()
        base = time.perf_counter() - started
        a.append(mine)
        b.append(base)
        r.append(mine / base)
    return statistics.median(a), statistics.median(b), statistics.median(r)


def run(rows: int = ROWS, rounds: int = 5) -> List[Result]:
    with tempfile.TemporaryDirectory(prefix="scrape-") as tmp:
        path = Path(tmp) / "scrape.db"
        build(path, rows, DAYS)
        with create_telemetry_store(path) as store:
            started = time.perf_counter()
            store.rollup()
            folded = time.perf_counter() - started
            raw = sqlite3.connect(path)
            try:
                text = metrics_text(store)
                total = sum(r[4] for r in raw.execute(RAW))
                executions = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                 if line.startswith("telemetry_orm_executions_total{"))
                assert total == executions == rows, (total, executions)  # the same figures
                ours, theirs, ratio = _paired(lambda: metrics_text(store),
                                              lambda: raw.execute(RAW).fetchall(), rounds)
            finally:
                raw.close()
    return [Result(CASE.replace(f"{ROWS:,}", f"{rows:,}"), ours, "s", theirs, ratio, 0.1,
                   "<= 0.1x", f"baseline: one raw SUM ... GROUP BY repo, model, provider, "
                   f"conclusion over all rows (sqlite3); rollup() took {folded:.0f} s", rounds)]


def scrape(settings: Settings) -> List[Result]:
    """The scrape case of ``python -m bench``."""
    if settings.quick:
        return [Result(CASE, None, "s", note="full runs only: on fewer rows the raw query is "
                       "too quick for a 10-fold target to mean anything, and a million rows "
                       "built and folded cost a minute of CI")]
    return run(ROWS, 5)


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    for result in run(args.rows, args.rounds):
        print(result)


if __name__ == "__main__":
    main()
