"""What every case shares: results, the run's settings, paired timing, files."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

from telemetry_orm import PeeweeTelemetryStore, create_telemetry_store
from telemetry_orm.backends.sqlite import PRAGMAS


@dataclasses.dataclass
class Result:
    """One line of the table.

    ``ratio`` is ours ÷ baseline (a cost: lower is better), as the median of
    the per-round ratios, each taken from an ours round and a baseline round
    run back to back; ``limit`` is the largest passing value of ``ratio``, or
    of ``ours`` when there is no baseline. No limit: a reference line.
    """

    case: str
    ours: Optional[float]
    unit: str
    baseline: Optional[float] = None
    ratio: Optional[float] = None
    limit: Optional[float] = None
    target: str = "reference"
    note: str = ""
    rounds: int = 0
    #: A verdict given by the case itself, when no ``limit`` expresses it.
    passed: Optional[bool] = None

    @property
    def outcome(self) -> str:
        if self.ours is None:
            return "skip"
        if self.passed is not None:
            return "pass" if self.passed else "FAIL"
        if self.limit is None:
            return "ref"
        value = self.ratio if self.baseline is not None else self.ours
        assert value is not None
        return "pass" if value <= self.limit else "FAIL"


@dataclasses.dataclass
class Settings:
    """How big and how long: ``quick`` keeps a run under two minutes on 2 cores."""

    quick: bool
    workdir: Path
    rounds: int
    rows_per_round: int
    batches_per_round: int
    stream_rows: int
    memory_rows: int
    report_rows: int

    @classmethod
    def make(cls, quick: bool, workdir: Path, memory_rows: Optional[int] = None) -> Settings:
        if quick:
            return cls(quick, workdir, rounds=7, rows_per_round=2000, batches_per_round=3,
                       stream_rows=10_000, memory_rows=memory_rows or 200_000,
                       report_rows=200_000)
        return cls(quick, workdir, rounds=15, rows_per_round=5000, batches_per_round=5,
                   stream_rows=30_000, memory_rows=memory_rows or 1_000_000,
                   report_rows=1_000_000)


def per_item(run: Callable[[], object], items: int) -> float:
    """Seconds per item of one call of ``run`` (which handles ``items`` items),
    with the cyclic garbage collector paused as ``timeit`` does."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) / items
    finally:
        if enabled:
            gc.enable()


def paired(
    ours: Callable[[], float], baseline: Callable[[], float], rounds: int
) -> Tuple[float, float, float]:
    """Median seconds of ours, of the baseline, and median of their ratios.

    One warm-up round each, then ``rounds`` pairs; which side goes first
    alternates, so drifting machine load falls on both sides alike.
    """
    ours()
    baseline()
    mine: List[float] = []
    theirs: List[float] = []
    for i in range(rounds):
        if i % 2 == 0:
            mine.append(ours())
            theirs.append(baseline())
        else:
            theirs.append(baseline())
            mine.append(ours())
    ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
    return statistics.median(mine), statistics.median(theirs), statistics.median(ratios)


def median_of(run: Callable[[], float], rounds: int) -> float:
    """Median of ``rounds`` runs after one warm-up run."""
    run()
    return statistics.median(run() for _ in range(rounds))


def raw_connect(path: Path) -> sqlite3.Connection:
    """A plain ``sqlite3`` connection with the store's own pragmas (autocommit)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for name, value in PRAGMAS:
        conn.execute(f"PRAGMA {name} = {value}")
    conn.execute("PRAGMA journal_mode = WAL")
    return conn


@contextlib.contextmanager
def store_and_raw(
    settings: Settings, name: str
) -> Iterator[Tuple[PeeweeTelemetryStore, sqlite3.Connection]]:
    """A store and a raw connection on two files made the same way (by the store)."""
    ours_path = settings.workdir / f"{name}-ours.db"
    raw_path = settings.workdir / f"{name}-raw.db"
    create_telemetry_store(raw_path).close()
    store = create_telemetry_store(ours_path)
    raw = raw_connect(raw_path)
    try:
        yield store, raw
    finally:
        raw.close()
        store.close()
        for path in (ours_path, raw_path):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


def us(seconds: float) -> float:
    """Seconds to microseconds."""
    return seconds * 1e6
