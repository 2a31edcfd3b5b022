"""How fast the ``-wal`` file comes back under ``journal_size_limit`` once a
reader that held an old snapshot lets go, while writes keep coming.

    python bench/wal_catch_up.py                  # every pattern, 3 runs each
    python bench/wal_catch_up.py --pattern procs --runs 5

A plain ``sqlite3`` connection holds a snapshot (``BEGIN``, one read) while
``--hold`` rows are recorded, which grows the log past 100 MB; then it lets
go and ``--after`` more rows are written back to back, by one of:

``single``   one thread calling ``record()``;
``threads``  four threads calling ``record()`` on one store;
``procs``    four processes, each with its own store on the file;
``many``     one thread calling ``record_many()`` with 100 rows a call.

Printed per run: the time per row while the reader held (the ``procs``
figure is the slowest process's, per its own rows), the ``-wal`` size every
``--step`` rows after the reader let go, the row from which it stays within
``journal_size_limit``, the longest single call (and the most CPU time one
call spent on the caller's own thread), and the rows per second of the
catch-up.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

if __package__ in (None, ""):  # run as a script: python bench/wal_catch_up.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.timing import Result, Settings  # noqa: E402
from telemetry_orm import create_telemetry_store  # noqa: E402
from telemetry_orm.backends.sqlite import JOURNAL_SIZE_LIMIT  # noqa: E402

ENTRY = {"repo": "acme/api", "event_type": "push", "model": "m", "conclusion": "success"}
BATCH = 100
WRITERS = 4
PATTERNS = ("single", "threads", "procs", "many")
LABELS = {"single": "one thread, record()", "threads": "4 threads, record()",
          "procs": "4 processes, record()", "many": "record_many() of 100"}

#: Targets of the suite's case (see :func:`catch_up`): rows written after the
#: reader let go until the -wal file stays within journal_size_limit, and the
#: longest call meanwhile.
SETTLE_ROWS = {"single": 4000, "threads": 4000, "procs": 4000, "many": 20_000}
LONGEST_CALL_MS = 50.0
#: record() while a reader holds the log back, against record() without one.
HELD_RATIO = 1.5

Curve = List[Tuple[int, int]]


def wal_size(path: Path) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        return 0


class Calls:
    """The longest call (wall clock and the caller thread's CPU time) of
    the writers of one run; shared by threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wall = 0.0
        self.cpu = 0.0
        self.rows = 0
        self.curve: Curve = []

    def add(self, wall: float, cpu: float, rows: int, path: Optional[Path], step: int) -> None:
        with self.lock:
            self.wall = max(self.wall, wall)
            self.cpu = max(self.cpu, cpu)
            before, self.rows = self.rows, self.rows + rows
            if path is not None and before // step != self.rows // step:
                self.curve.append((self.rows, wal_size(path)))


def write(store: Any, rows: int, batch: int, calls: Optional[Calls], path: Optional[Path],
          step: int) -> None:
    entries = [ENTRY] * batch
    for _ in range(rows // batch):
        wall, cpu = time.perf_counter(), time.thread_time()
        if batch == 1:
            store.record(ENTRY)
        else:
            store.record_many(entries)
        if calls is not None:
            calls.add(time.perf_counter() - wall, time.thread_time() - cpu, batch, path, step)


def in_threads(store: Any, rows: int, calls: Optional[Calls], path: Optional[Path],
               step: int) -> None:
    workers = [threading.Thread(target=write, args=(store, rows // WRITERS, 1, calls, path, step))
               for _ in range(WRITERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def child(path: str, hold: int, after: int, step: int, held: Any, go: Any,
          results: Any) -> None:
    store = create_telemetry_store(path)
    started = time.perf_counter()
    write(store, hold, 1, None, None, step)
    holding = time.perf_counter() - started
    held.wait()
    go.wait()
    calls = Calls()
    started = time.perf_counter()
    write(store, after, 1, calls, None, step)
    elapsed = time.perf_counter() - started
    store.close()
    results.put((calls.wall, calls.cpu, elapsed, holding))


def run_procs(path: Path, hold: int, after: int, step: int,
              reader: sqlite3.Connection) -> Dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    held, go = context.Barrier(WRITERS + 1), context.Barrier(WRITERS + 1)
    results = context.Queue()
    procs = [context.Process(target=child, args=(str(path), hold // WRITERS, after // WRITERS,
                                                 step, held, go, results))
             for _ in range(WRITERS)]
    for proc in procs:
        proc.start()
    held.wait()
    size_held = wal_size(path)
    if reader.in_transaction:
        reader.execute("COMMIT")
    reader.close()
    witness = sqlite3.connect(path, isolation_level=None)
    base = witness.execute("SELECT coalesce(max(id), 0) FROM executions").fetchone()[0]
    go.wait()
    curve: Curve = []
    newest = "SELECT coalesce(max(id), 0) FROM executions"
    while any(proc.is_alive() for proc in procs) and len(curve) < 100_000:
        written = witness.execute(newest).fetchone()[0] - base
        curve.append((written, wal_size(path)))
        time.sleep(0.002)
    figures = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    witness.close()
    # The processes started and ended together: the catch-up's rate is the
    # rows over the longest of their times.
    return {"held": size_held, "curve": curve, "wall": max(f[0] for f in figures),
            "cpu": max(f[1] for f in figures), "seconds": max(f[2] for f in figures),
            "holding": max(f[3] for f in figures)}


def run(pattern: str, path: Path, hold: int, after: int, step: int,
        hold_back: bool = True) -> Dict[str, Any]:
    """One run; ``hold_back=False``: the same writes with a reader that
    reads nothing (the baseline)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    create_telemetry_store(path).close()
    reader = sqlite3.connect(path, isolation_level=None)
    if hold_back:
        reader.execute("BEGIN")
        reader.execute("SELECT * FROM executions LIMIT 1").fetchall()
    if pattern == "procs":
        return run_procs(path, hold, after, step, reader)
    store = create_telemetry_store(path)
    started = time.perf_counter()
    if pattern == "threads":
        in_threads(store, hold, None, None, step)
    else:
        write(store, hold, 1, None, None, step)
    holding = time.perf_counter() - started
    size_held = wal_size(path)
    if reader.in_transaction:
        reader.execute("COMMIT")
    reader.close()
    calls = Calls()
    started = time.perf_counter()
    if pattern == "threads":
        in_threads(store, after, calls, path, step)
    else:
        write(store, after, BATCH if pattern == "many" else 1, calls, path, step)
    elapsed = time.perf_counter() - started
    store.close()
    return {"held": size_held, "curve": calls.curve, "wall": calls.wall, "cpu": calls.cpu,
            "seconds": elapsed, "holding": holding}


def settled(curve: Curve, limit: int) -> Optional[int]:
    """The first row count from which the -wal size stays within ``limit``."""
    row = None
    for written, size in curve:
        if size > limit:
            row = None
        elif row is None:
            row = written
    return row


def thin(curve: Curve, points: int = 13) -> Curve:
    if len(curve) <= points:
        return curve
    every = len(curve) / (points - 1)
    return [curve[int(i * every)] for i in range(points - 1)] + [curve[-1]]


def defaults(pattern: str) -> Tuple[int, int]:
    """Rows after the reader let go, and rows between two -wal sizes:
    record_many() writes rows about seven times as fast, so the same
    catch-up time is more rows."""
    return (40_000, 2000) if pattern == "many" else (6000, 500)


def catch_up(settings: Settings) -> List[Result]:
    """The suite's case: each pattern with a reader that holds 6,000 rows
    back, and, as its baseline, the same writes with no reader holding
    anything, run by run in turn."""
    runs = 3 if settings.quick else 5
    results: List[Result] = []
    for pattern in PATTERNS:
        after, step = defaults(pattern)
        path = settings.workdir / f"wal-{pattern}.db"
        held: List[Dict[str, Any]] = []
        free: List[Dict[str, Any]] = []
        for number in range(runs):
            order = (True, False) if number % 2 == 0 else (False, True)
            for hold_back in order:
                figures = run(pattern, path, 6000, after, step, hold_back)
                (held if hold_back else free).append(figures)
        settles = [settled(f["curve"], JOURNAL_SIZE_LIMIT) for f in held]
        reached = [row for row in settles if row is not None]
        worst = max(reached) if len(reached) == runs else None
        label = LABELS[pattern]
        results.append(Result(
            f"wal catch-up ({label}): rows until the -wal is back within its limit",
            statistics.median(reached) if reached else None, "rows", None, None, None,
            f"<= {SETTLE_ROWS[pattern]:,} rows",
            f"after a reader held back 6,000 rows (-wal "
            f"{statistics.median(f['held'] for f in held) / 1e6:.0f} MB); "
            f"worst {'never' if worst is None else f'{worst:,}'} of {after:,}", runs,
            passed=worst is not None and worst <= SETTLE_ROWS[pattern],
        ))
        longest = statistics.median(f["wall"] for f in held) * 1000
        baseline = statistics.median(f["wall"] for f in free) * 1000
        target = pattern != "procs"
        results.append(Result(
            f"wal catch-up ({label}): longest call meanwhile", longest, "ms", baseline,
            longest / baseline, None, f"<= {LONGEST_CALL_MS:.0f} ms" if target else "reference",
            "median of each run's longest; baseline: the same writes, no reader before"
            + ("" if target else "; four processes contend for the write lock, whose "
               "waiters sleep in SQLite's busy handler (up to 100 ms a sleep)"), runs,
            passed=longest <= LONGEST_CALL_MS if target else None,
        ))
        if pattern == "single":
            ours = statistics.median(f["holding"] for f in held) / 6000 * 1e6
            base = statistics.median(f["holding"] for f in free) / 6000 * 1e6
            ratios = [a["holding"] / b["holding"] for a, b in zip(held, free, strict=True)]
            results.append(Result(
                "record() while a reader holds an old snapshot, per row",
                ours, "us/row", base, statistics.median(ratios), HELD_RATIO,
                f"<= {HELD_RATIO}x", "baseline: the same writes, nobody holding the log back",
                runs,
            ))
    return results


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pattern", choices=(*PATTERNS, "all"), default="all")
    parser.add_argument("--hold", type=int, default=6000, help="rows while the reader holds")
    parser.add_argument("--after", type=int, default=None,
                        help="rows after it let go (default 6000; 40000 for many)")
    parser.add_argument("--step", type=int, default=None,
                        help="rows between two -wal sizes (default 500; 2000 for many)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    patterns = PATTERNS if args.pattern == "all" else (args.pattern,)
    limit = JOURNAL_SIZE_LIMIT
    with tempfile.TemporaryDirectory(prefix="wal-catch-up-") as scratch:
        for pattern in patterns:
            after = args.after or defaults(pattern)[0]
            step = args.step or defaults(pattern)[1]
            settles: List[Optional[int]] = []
            walls: List[float] = []
            holds: List[float] = []
            for number in range(args.runs):
                figures = run(pattern, Path(scratch) / f"{pattern}.db", args.hold, after, step)
                row = settled(figures["curve"], limit)
                settles.append(row)
                walls.append(figures["wall"])
                holds.append(figures["holding"] / max(args.hold, 1) * 1e6)
                curve = " ".join(f"{n}:{size / 1e6:.0f}" for n, size in thin(figures["curve"]))
                hold_us = figures["holding"] / max(args.hold, 1) * 1e6
                print(f"{pattern} run {number + 1}: {hold_us:.0f} us/row while the reader held; "
                      f"-wal {figures['held'] / 1e6:.0f} MB when it let go; rows:MB {curve}")
                print(f"    within journal_size_limit from row "
                      f"{'never' if row is None else row} of {after}; longest call "
                      f"{figures['wall'] * 1000:.1f} ms "
                      f"(caller CPU {figures['cpu'] * 1000:.1f} ms); "
                      f"{after / figures['seconds']:,.0f} rows/s", flush=True)
            reached = [r for r in settles if r is not None]
            print(f"{pattern}: settled in {len(reached)} of {args.runs} runs"
                  + (f", median row {statistics.median(reached):.0f}, worst {max(reached)}"
                     if reached else "")
                  + f"; median longest call {statistics.median(walls) * 1000:.1f} ms; "
                  f"median {statistics.median(holds):.0f} us/row while the reader held\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
