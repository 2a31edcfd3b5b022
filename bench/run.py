"""Run the benchmark suite and print one table: case, ours, baseline, ratio,
target, result.

    python -m bench            # full run (1,000,000 rows for the memory phases)
    python -m bench --quick    # under two minutes on 2 cores
    python bench/run.py --quick --format markdown

Every case builds its own data in a scratch folder and measures ours against
its baseline in this same run, interleaving rounds so that machine noise falls
on both sides; figures are medians. A missed target prints FAIL and still
exits 0 (``--strict`` makes it exit 1); a crash exits non-zero. The results
also go to ``bench/results.json``.

A case is a function taking :class:`~bench.timing.Settings` and returning a
list of :class:`~bench.timing.Result`; add one to :data:`CASES`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence

if __package__ in (None, ""):  # run as a script: python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import peewee  # noqa: E402

from bench import (  # noqa: E402
    background,
    budgets,
    fold,
    inserts,
    intake,
    labels,
    memory,
    mysql_record,
    peer,
    psycopg2_record,
    report_cases,
    rollups,
    scrape,
    wal_catch_up,
)
from bench.timing import Result, Settings  # noqa: E402

Case = Callable[[Settings], List[Result]]

RESULTS_JSON = Path(__file__).resolve().parent / "results.json"


def as_results(value: Any, name: str) -> List[Result]:
    """Results from a case written elsewhere: :class:`Result` objects, or
    mappings with the same keys (``case``, ``ours``, ``unit``, ``baseline``,
    ``ratio``, ``limit``, ``target``, ``note``, ``rounds``, ``passed``)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    results = []
    for item in items:
        if isinstance(item, Result):
            results.append(item)
        elif isinstance(item, Mapping):
            ours, baseline = item.get("ours"), item.get("baseline")
            ratio = item.get("ratio")
            if ratio is None and ours is not None and baseline:
                ratio = ours / baseline
            results.append(Result(
                str(item.get("case") or item.get("name") or name), ours,
                str(item.get("unit", "")), baseline, ratio, item.get("limit"),
                str(item.get("target", "reference")), str(item.get("note", "")),
                int(item.get("rounds", 0)), item.get("passed"),
            ))
        else:
            raise TypeError(f"{name}: cannot show {item!r} as a result")
    return results


def retention(settings: Settings) -> List[Result]:
    """Target 5, measured by ``bench/retention.py``: its ``run(rows, rounds,
    order=…)`` purges the expired half of ``rows`` rows in chunks and with
    one ``DELETE``, alone and while another process records, and returns the
    figures; once with ``created_at`` in time order, once scattered."""
    if importlib.util.find_spec("bench.retention") is None:
        return [Result("retention: purge half of the rows", None, "", target="<= 1.5x",
                       note="skipped: bench/retention.py is not here yet")]
    module = importlib.import_module("bench.retention")
    rounds = 3 if settings.quick else 5
    results: List[Result] = []
    for order in module.ORDERS:
        figures = module.run(settings.memory_rows, rounds, order=order)
        if not (isinstance(figures, Mapping) and "purge_s" in figures):
            results.extend(as_results(figures, f"retention ({order} order)"))
            continue
        results.extend(_retention_results(figures, order, rounds))
    folding = module.run(settings.memory_rows, rounds, rolled=False)
    results.append(Result(
        f"retention, nothing rolled up ahead: purge {folding['expired']:,} of "
        f"{folding['rows']:,} rows, folding each into the rollups", folding["purge_s"], "s",
        folding["single_delete_s"], folding["ratio"], 2.5, "<= 2.5x",
        f"the fold {folding.get('fold_s', 0):.2f} s ({folding.get('fold_share', 0):.0%}) of "
        "it; baseline: one DELETE (which counts nothing); run rollup() ahead to purge at "
        "the cost above", rounds))
    if "hand_s" in folding:
        results.append(Result(
            "retention, nothing rolled up ahead: the purge against the same work by hand",
            folding["purge_s"], "s", folding["hand_s"], folding["hand_ratio"], 2.0, "<= 2x",
            "baseline: the expired rows' hour sums and hour sketches (what the purge folds) "
            "each by one grouped INSERT, then one DELETE, in one transaction", rounds))
    results.append(_hold_result("nothing rolled up ahead", folding, rounds))
    if "loaded_hold_ms" in folding:
        results.extend(_loaded_results(folding, "nothing rolled up ahead"))
    if hasattr(module, "run_keyed"):
        keyed = module.run_keyed(settings.memory_rows, rounds)
        results.append(Result(
            f"retention, every row under a key: purge {keyed['expired']:,} of "
            f"{keyed['rows']:,} rows and their keys", keyed["purge_s"], "s",
            keyed["single_delete_s"], keyed["ratio"], 1.5, "<= 1.5x",
            "baseline: one transaction deleting the rows and the keys whose row is gone",
            rounds,
        ))
        results.append(_hold_result("every row under a key", keyed, rounds))
        if "loaded_hold_ms" in keyed:
            results.extend(_loaded_results(keyed, "every row under a key"))
    return results


def _hold_result(what: str, figures: Mapping[str, Any], rounds: int) -> Result:
    single_ms = figures["single_delete_s"] * 1000
    hold_ms = figures["longest_hold_ms"]
    return Result(
        f"retention, {what}: longest write-lock hold", hold_ms, "ms", single_ms,
        hold_ms / single_ms, 50.0, "<= 50 ms",
        f"median of each round's longest; worst {figures['worst_hold_ms']:.0f} ms; "
        "baseline: the DELETE holds it throughout", rounds, passed=hold_ms <= 50.0)


def _retention_results(figures: Mapping[str, Any], order: str, rounds: int) -> List[Result]:
    what = f"{figures['expired']:,} of {figures['rows']:,} rows, {order} order"
    single_ms = figures["single_delete_s"] * 1000
    return [
        Result(
            f"retention: purge {what}", figures["purge_s"], "s",
            figures["single_delete_s"], figures["ratio"], 1.5, "<= 1.5x",
            "baseline: one DELETE; nobody else writing", rounds,
        ),
        Result(
            f"retention ({order} order): longest write-lock hold of one chunk",
            figures["longest_hold_ms"], "ms", single_ms, figures["longest_hold_ms"] / single_ms,
            50.0, "<= 50 ms",
            f"median of each round's longest; worst {figures['worst_hold_ms']:.0f} ms; "
            "baseline: the DELETE holds it throughout", rounds,
            passed=figures["longest_hold_ms"] <= 50.0,
        ),
    ] + _loaded_results(figures, f"{order} order")


def _loaded_results(figures: Mapping[str, Any], what: str) -> List[Result]:
    """The lines of one purge while another process records every 2 ms."""
    wait_ms = figures["writer_worst_wait_s"] * 1000
    loaded_ms = figures["loaded_single_delete_s"] * 1000
    return [
        Result(
            f"retention under load ({what}): purge, a writer recording every 2 ms",
            figures["loaded_purge_s"], "s", figures["loaded_single_delete_s"],
            figures["loaded_ratio"], note="the purge leaves the writer a gap after each chunk",
            rounds=1,
        ),
        Result(
            f"retention under load ({what}): longest write-lock hold",
            figures["loaded_hold_ms"], "ms", loaded_ms, figures["loaded_hold_ms"] / loaded_ms,
            50.0, "<= 50 ms", "one round; baseline: the DELETE holds it throughout", 1,
            passed=figures["loaded_hold_ms"] <= 50.0,
        ),
        Result(
            f"retention under load ({what}): longest record() wait", wait_ms, "ms",
            figures["single_writer_worst_wait_s"] * 1000,
            wait_ms / max(figures["single_writer_worst_wait_s"] * 1000, 1e-9), 250.0,
            "<= 250 ms",
            f"p99 {figures['writer_p99_wait_s'] * 1000:.0f} ms, "
            f"{figures['writer_busy_errors']} busy errors; baseline: during one DELETE"
            + (f"; the writer failed: {figures['writer_error']}"
               if figures.get("writer_error") else ""), 1,
            passed=wait_ms <= 250.0 and figures["writer_busy_errors"] == 0
            and not figures.get("writer_error"),
        ),
    ]


#: The cases, in the order they run and print.
CASES: List[Case] = [
    inserts.per_row,
    inserts.batch,
    labels.labels,
    psycopg2_record.psycopg2_record,
    mysql_record.mysql_record,
    background.background,
    memory.memory,
    peer.bun,
    report_cases.reports,
    retention,
    wal_catch_up.catch_up,
    rollups.rollups,
    fold.fold,
    budgets.budgets,
    intake.intake,
    scrape.scrape,
]


def _number(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"


def _cells(result: Result) -> List[str]:
    unit = f" {result.unit}" if result.unit else ""
    return [
        result.case,
        "-" if result.ours is None else _number(result.ours) + unit,
        "-" if result.baseline is None else _number(result.baseline) + unit,
        "-" if result.ratio is None else f"{result.ratio:.2f}x",
        result.target,
        result.outcome,
        result.note,
    ]


HEADER = ["case", "ours", "baseline", "ratio", "target", "result", "note"]


def table(results: Sequence[Result], style: str = "text") -> str:
    """The results as an aligned text table or a Markdown table."""
    rows = [_cells(r) for r in results]
    if style == "markdown":
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    def line(row: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(HEADER), rule, *(line(row) for row in rows)]).rstrip()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "peewee": peewee.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under two minutes)")
    parser.add_argument("--only", action="append", default=[], metavar="CASE",
                        help="run only the cases whose function name contains CASE")
    parser.add_argument("--memory-rows", type=int, default=None,
                        help="rows for the memory phases (default 200,000 quick, 1,000,000 full)")
    parser.add_argument("--format", choices=("text", "markdown"), default="text")
    parser.add_argument("--json", type=Path, default=RESULTS_JSON, help="where to write results")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    cases = [c for c in CASES if not args.only or any(o in c.__name__ for o in args.only)]
    results: List[Result] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as scratch:
        settings = Settings.make(args.quick, Path(scratch), args.memory_rows)
        for case in cases:
            print(f"... {case.__name__}", file=sys.stderr, end="", flush=True)
            began = time.perf_counter()
            results.extend(case(settings))
            print(f" ({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started

    info = machine()
    print(f"telemetry_orm benchmarks ({'quick' if args.quick else 'full'} run, "
          f"{elapsed:.0f} s): Python {info['python']}, SQLite {info['sqlite']}, "
          f"peewee {info['peewee']}, {info['cpus']} CPUs")
    print(table(results, args.format))
    args.json.write_text(json.dumps({
        "machine": info, "quick": args.quick, "seconds": elapsed,
        "results": [{**dataclasses.asdict(r), "result": r.outcome} for r in results],
    }, indent=2) + "\n", encoding="utf-8")
    failed = [r.case for r in results if r.outcome == "FAIL"]
    if failed:
        print(f"missed: {', '.join(failed)}")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
