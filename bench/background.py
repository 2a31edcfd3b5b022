"""Target 3: background recording. What a caller pays per ``record()``, and
how many rows per second reach the database, against per-row ``record()``."""

from __future__ import annotations

import statistics
import time
from typing import Any, List, Sequence, Tuple

from bench.data import records
from bench.timing import Result, Settings, paired, per_item, us
from telemetry_orm import BackgroundRecorder, create_telemetry_store


def _caller_side(recorder: BackgroundRecorder, entries: Sequence[Any]) -> Tuple[float, float]:
    """Wall-clock and CPU seconds per ``record()`` in the calling thread; the
    flush after is not counted."""
    record = recorder.record
    cpu = time.thread_time()

    def run() -> None:
        for entry in entries:
            record(entry)

    seconds = per_item(run, len(entries))
    cpu = (time.thread_time() - cpu) / len(entries)
    recorder.flush()
    return seconds, cpu


def background(settings: Settings) -> List[Result]:
    """Caller-side cost (records and dicts) and sustained throughput."""
    burst = 2000  # below the queue bound: what a request handler sees
    pool = records(burst, seed=3)
    dicts = [r.as_dict() for r in pool]
    results = []

    store = create_telemetry_store(settings.workdir / "background-caller.db")
    try:
        with store.background(max_batch=500, max_delay=0.2) as recorder:
            for label, entries in (("TelemetryRecord", pool), ("dict, validated", dicts)):
                _caller_side(recorder, entries)  # warm-up
                rounds = [_caller_side(recorder, entries) for _ in range(settings.rounds)]
                wall = statistics.median(r[0] for r in rounds)
                cpu = statistics.median(r[1] for r in rounds)
                results.append(Result(
                    f"background record({label}), caller side", us(wall), "us/row",
                    limit=10.0, target="<= 10 us",
                    note=f"wall clock; caller CPU {us(cpu):.2f} us; writer busy meanwhile",
                    rounds=settings.rounds,
                ))
    finally:
        store.close()

    n = settings.stream_rows
    stream = records(n, seed=4)
    ours_store = create_telemetry_store(settings.workdir / "throughput-background.db")
    per_row_store = create_telemetry_store(settings.workdir / "throughput-per-row.db")
    recorder = ours_store.background(max_batch=500, max_delay=0.2)
    try:
        def sustained() -> float:
            record = recorder.record

            def run() -> None:
                for entry in stream:
                    record(entry)
                recorder.flush()

            return per_item(run, n)

        # Per-row cost does not depend on how many rows follow, so the
        # baseline times fewer of them; the rest are added untimed, so that
        # both tables grow alike (inserts slow down as a table grows).
        few, rest = stream[: max(500, n // 5)], stream[max(500, n // 5):]

        def one_by_one() -> float:
            record = per_row_store.record

            def run() -> None:
                for entry in few:
                    record(entry)

            seconds = per_item(run, len(few))
            for start in range(0, len(rest), 1000):
                per_row_store.record_many(rest[start:start + 1000])
            return seconds

        rounds = max(5, settings.rounds)
        mine, theirs, ratio = paired(sustained, one_by_one, rounds)
        results.append(Result(
            f"background, {n:,} rows until flushed", us(mine), "us/row", us(theirs), ratio,
            0.2, "<= 0.2x (5x rows/s)", "baseline: record() per row", rounds,
        ))
    finally:
        recorder.close()
        ours_store.close()
        per_row_store.close()
    return results
