"""How fast the ``-wal`` file comes back under ``journal_size_limit`` once a
reader that held an old snapshot lets go, while writes keep coming, and how
large it grows meanwhile.

    python bench/wal_catch_up.py                  # every pattern, 3 runs each
    python bench/wal_catch_up.py --pattern procs --runs 5

A plain ``sqlite3`` connection holds a snapshot (``BEGIN``, one read) while
``--hold`` rows are written one per call, which grows the log past 100 MB;
then it lets go and ``--after`` more rows are written back to back, by one
of:

``single``      one thread calling ``record()``;
``threads``     four threads calling ``record()`` on one store;
``procs``       four processes, each with its own store on the file;
``many``        one thread calling ``record_many()`` with 100 rows a call;
``many1000``    the same with 1,000 rows a call;
``background``  a ``BackgroundRecorder`` (``max_batch=500``): 500 records,
                then ``flush()``, which returns once they are committed;
``keyed``       one thread calling ``record(entry, key=...)``.

While the reader holds, each pattern writes one row per call through its own
path (a batch of one, a flush per record). The ``-wal`` size is read after
every call; printed per run: the time per row while the reader held, the
size every so many rows after it let go, the rows from then until the file is
within ``journal_size_limit`` for good, the largest size meanwhile as a
multiple of what the reader held, the longest single call (and the most CPU
time one call spent on the caller's own thread), and the rows per second.
Then one PASS or FAIL line per pattern and target.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

if __package__ in (None, ""):  # run as a script: python bench/wal_catch_up.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.timing import Result, Settings  # noqa: E402
from telemetry_orm import create_telemetry_store  # noqa: E402
from telemetry_orm.backends.sqlite import JOURNAL_SIZE_LIMIT  # noqa: E402

ENTRY = {"repo": "acme/api", "event_type": "push", "model": "m", "conclusion": "success"}
WRITERS = 4
PATTERNS = ("single", "threads", "procs", "many", "many1000", "background", "keyed")
LABELS = {"single": "one thread, record()", "threads": "4 threads, record()",
          "procs": "4 processes, record()", "many": "record_many() of 100",
          "many1000": "record_many() of 1,000", "background": "background recorder",
          "keyed": "keyed record()"}
#: Rows per call after the reader let go.
BATCH = {"many": 100, "many1000": 1000, "background": 500}

#: Targets: rows written after the reader let go until the -wal file is
#: within journal_size_limit for good, and its largest size meanwhile as a
#: multiple of its size when the reader let go.
ROWS_TARGET = 2000
PEAK_TARGET = 1.1
#: record() while a reader holds the log back, against record() without one.
HELD_RATIO = 1.5

#: (rows written since the reader let go, -wal bytes), after each call.
Curve = List[Tuple[int, int]]
#: Writes ``rows`` rows, ``batch`` a call, noting each call in ``calls``.
Write = Callable[[int, int, Optional["Calls"]], None]


def wal_size(path: Path) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        return 0


class Calls:
    """The calls of one run's writers after the reader let go: the -wal size
    after each, and the longest (wall clock and the caller thread's CPU
    time); shared by threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.wall = 0.0
        self.cpu = 0.0
        self.rows = 0
        self.curve: Curve = []

    def add(self, wall: float, cpu: float, rows: int) -> None:
        size = wal_size(self.path)
        with self.lock:
            self.wall = max(self.wall, wall)
            self.cpu = max(self.cpu, cpu)
            self.rows += rows
            self.curve.append((self.rows, size))


def timed(calls: Optional[Calls], rows: int, call: Callable[[], object]) -> None:
    wall, cpu = time.perf_counter(), time.thread_time()
    call()
    if calls is not None:
        calls.add(time.perf_counter() - wall, time.thread_time() - cpu, rows)


def one_by_one(store: Any, stack: contextlib.ExitStack, keyed: bool = False) -> Write:
    numbers = iter(range(10**9))

    def write(rows: int, batch: int, calls: Optional[Calls]) -> None:
        for _ in range(rows):
            if keyed:
                key = f"delivery-{next(numbers)}"
                timed(calls, 1, lambda: store.record(ENTRY, key=key))  # noqa: B023
            else:
                timed(calls, 1, lambda: store.record(ENTRY))
    return write


def in_threads(store: Any, stack: contextlib.ExitStack) -> Write:
    single = one_by_one(store, stack)

    def write(rows: int, batch: int, calls: Optional[Calls]) -> None:
        workers = [threading.Thread(target=single, args=(rows // WRITERS, 1, calls))
                   for _ in range(WRITERS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    return write


def in_batches(store: Any, stack: contextlib.ExitStack) -> Write:
    def write(rows: int, batch: int, calls: Optional[Calls]) -> None:
        entries = [ENTRY] * batch
        for _ in range(rows // batch):
            timed(calls, batch, lambda: store.record_many(entries))
    return write


def in_background(store: Any, stack: contextlib.ExitStack) -> Write:
    recorder = stack.enter_context(store.background(max_batch=BATCH["background"]))

    def flushed(batch: int) -> None:
        for _ in range(batch):
            recorder.record(ENTRY)
        recorder.flush()

    def write(rows: int, batch: int, calls: Optional[Calls]) -> None:
        for _ in range(rows // batch):
            timed(calls, batch, lambda: flushed(batch))
    return write


PATTERN_WRITERS: Dict[str, Callable[[Any, contextlib.ExitStack], Write]] = {
    "single": one_by_one, "threads": in_threads, "many": in_batches, "many1000": in_batches,
    "background": in_background,
    "keyed": lambda store, stack: one_by_one(store, stack, keyed=True),
}


def child(path: str, hold: int, after: int, held: Any, go: Any, results: Any) -> None:
    """One of the ``procs`` writers: its calls as (wall clock when each
    returned, -wal bytes right after)."""
    store = create_telemetry_store(path)
    started = time.perf_counter()
    for _ in range(hold):
        store.record(ENTRY)
    holding = time.perf_counter() - started
    held.wait()
    go.wait()
    stamps: List[Tuple[float, int]] = []
    longest = cpu_longest = 0.0
    started = time.perf_counter()
    for _ in range(after):
        wall, cpu = time.perf_counter(), time.thread_time()
        store.record(ENTRY)
        longest = max(longest, time.perf_counter() - wall)
        cpu_longest = max(cpu_longest, time.thread_time() - cpu)
        stamps.append((time.time(), wal_size(Path(path))))
    elapsed = time.perf_counter() - started
    store.close()
    results.put((stamps, longest, cpu_longest, elapsed, holding))


def run_procs(path: Path, hold: int, after: int, reader: sqlite3.Connection,
              hold_back: bool) -> Dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    held, go = context.Barrier(WRITERS + 1), context.Barrier(WRITERS + 1)
    results = context.Queue()
    procs = [context.Process(target=child, args=(str(path), hold // WRITERS, after // WRITERS,
                                                 held, go, results))
             for _ in range(WRITERS)]
    for proc in procs:
        proc.start()
    held.wait()
    size_held = wal_size(path)
    if reader.in_transaction:
        reader.execute("COMMIT")
    reader.close()
    go.wait()
    figures = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    stamps = sorted(stamp for f in figures for stamp in f[0])
    curve = [(n + 1, size) for n, (_, size) in enumerate(stamps)]
    # The processes started and ended together: the catch-up's rate is the
    # rows over the longest of their times.
    return {"held": size_held, "curve": curve, "wall": max(f[1] for f in figures),
            "cpu": max(f[2] for f in figures), "seconds": max(f[3] for f in figures),
            "holding": max(f[4] for f in figures)}


def run(pattern: str, path: Path, hold: int, after: int,
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
        return run_procs(path, hold, after, reader, hold_back)
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(create_telemetry_store(path))
        write = PATTERN_WRITERS[pattern](store, stack)
        started = time.perf_counter()
        write(hold, 1, None)
        holding = time.perf_counter() - started
        size_held = wal_size(path)
        if reader.in_transaction:
            reader.execute("COMMIT")
        reader.close()
        calls = Calls(path)
        started = time.perf_counter()
        write(after, BATCH.get(pattern, 1), calls)
        elapsed = time.perf_counter() - started
    return {"held": size_held, "curve": calls.curve, "wall": calls.wall, "cpu": calls.cpu,
            "seconds": elapsed, "holding": holding}


def recovered(curve: Curve, limit: int) -> Optional[int]:
    """Rows written until the -wal size is within ``limit`` for good (the
    call that brought it back included); ``None``: still over at the end."""
    if not curve or curve[-1][1] > limit:
        return None
    over = [written for written, size in curve if size > limit]
    if not over:
        return curve[0][0]  # within the first call
    return next(written for written, size in curve if written > over[-1])


def peak(figures: Dict[str, Any]) -> float:
    """The largest -wal size after the reader let go, over its size then."""
    return max(size for _, size in figures["curve"]) / max(figures["held"], 1)


def thin(curve: Curve, points: int = 13) -> Curve:
    if len(curve) <= points:
        return curve
    every = len(curve) / (points - 1)
    return [curve[int(i * every)] for i in range(points - 1)] + [curve[-1]]


def after_rows(pattern: str, quick: bool = False) -> int:
    """Rows after the reader let go: batches write rows several times as
    fast, and before the log was restarted promptly took far longer."""
    if pattern in ("many", "many1000"):
        return 10_000 if quick else 40_000
    return 4000 if quick else 6000


def verdicts(pattern: str, held: List[Dict[str, Any]]) -> List[Result]:
    """The rows-to-recover and peak lines of one pattern's runs."""
    label = LABELS[pattern]
    runs = len(held)
    rows = [recovered(f["curve"], JOURNAL_SIZE_LIMIT) for f in held]
    reached = [r for r in rows if r is not None]
    worst = max(reached) if len(reached) == runs else None
    peaks = [peak(f) for f in held]
    size = statistics.median(f["held"] for f in held) / 1e6
    return [
        Result(
            f"wal catch-up ({label}): rows until the -wal is back within its limit",
            statistics.median(reached) if reached else None, "rows", None, None, None,
            f"<= {ROWS_TARGET:,} rows",
            f"after a reader held a {size:.0f} MB -wal; worst "
            f"{'never' if worst is None else f'{worst:,}'} of "
            f"{held[0]['curve'][-1][0]:,}", runs,
            passed=worst is not None and worst <= ROWS_TARGET,
        ),
        Result(
            f"wal catch-up ({label}): largest -wal over what the reader held",
            statistics.median(peaks), "x", None, None, PEAK_TARGET, f"<= {PEAK_TARGET}x",
            f"worst {max(peaks):.3f}x", runs, passed=max(peaks) <= PEAK_TARGET,
        ),
    ]


def catch_up(settings: Settings) -> List[Result]:
    """The suite's case: each pattern with a reader that holds 6,000 rows
    back; for one thread, also the same writes with no reader holding
    anything (the baseline of the cost per row while it holds, and of the
    longest call), run by run in turn."""
    runs = 3 if settings.quick else 5
    results: List[Result] = []
    for pattern in PATTERNS:
        after = after_rows(pattern, settings.quick)
        path = settings.workdir / f"wal-{pattern}.db"
        held: List[Dict[str, Any]] = []
        free: List[Dict[str, Any]] = []
        for number in range(runs):
            order = (True, False) if number % 2 == 0 else (False, True)
            for hold_back in order:
                if hold_back or pattern == "single":
                    figures = run(pattern, path, 6000, after, hold_back)
                    (held if hold_back else free).append(figures)
        results.extend(verdicts(pattern, held))
        longest = statistics.median(f["wall"] for f in held) * 1000
        baseline = statistics.median(f["wall"] for f in free) * 1000 if free else None
        results.append(Result(
            f"wal catch-up ({LABELS[pattern]}): longest call meanwhile", longest, "ms",
            baseline, None if baseline is None else longest / baseline, None, "reference",
            "median of each run's longest" + ("; baseline: no reader before" if free else ""),
            runs,
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
                        help="rows after it let go (default 6000; 40000 for batches)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    patterns = PATTERNS if args.pattern == "all" else (args.pattern,)
    limit = JOURNAL_SIZE_LIMIT
    lines: List[Result] = []
    with tempfile.TemporaryDirectory(prefix="wal-catch-up-") as scratch:
        for pattern in patterns:
            after = args.after or after_rows(pattern)
            held: List[Dict[str, Any]] = []
            for number in range(args.runs):
                figures = run(pattern, Path(scratch) / f"{pattern}.db", args.hold, after)
                held.append(figures)
                row = recovered(figures["curve"], limit)
                curve = " ".join(f"{n}:{size / 1e6:.0f}" for n, size in thin(figures["curve"]))
                hold_us = figures["holding"] / max(args.hold, 1) * 1e6
                print(f"{pattern} run {number + 1}: {hold_us:.0f} us/row while the reader held; "
                      f"-wal {figures['held'] / 1e6:.0f} MB when it let go; rows:MB {curve}")
                print(f"    within journal_size_limit after {'never' if row is None else row} "
                      f"of {after} rows; largest {peak(figures):.3f}x what was held; "
                      f"longest call {figures['wall'] * 1000:.1f} ms "
                      f"(caller CPU {figures['cpu'] * 1000:.1f} ms); "
                      f"{after / figures['seconds']:,.0f} rows/s", flush=True)
            lines.extend(verdicts(pattern, held))
    for result in lines:
        figure = ("never" if result.ours is None else f"{result.ours:,.0f} rows"
                  if result.unit == "rows" else f"{result.ours:.3f}{result.unit}")
        print(f"{result.outcome.upper():4} {result.case}: median {figure}, target "
              f"{result.target}; {result.note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
