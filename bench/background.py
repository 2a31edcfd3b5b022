"""Target 3: background recording. What a caller pays per ``record()``, and
how many rows per second reach the database, against per-row ``record()``."""

from __future__ import annotations

from typing import Any, List, Sequence

from bench.data import records
from bench.timing import Result, Settings, median_of, paired, per_item, store_and_raw, us
from telemetry_orm import BackgroundRecorder, create_telemetry_store


def _caller_side(recorder: BackgroundRecorder, entries: Sequence[Any]) -> float:
    """Seconds per ``record()`` in the caller; the flush after is not counted."""
    record = recorder.record

    def run() -> None:
        for entry in entries:
            record(entry)

    seconds = per_item(run, len(entries))
    recorder.flush()
    return seconds


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
                seconds = median_of(lambda e=entries: _caller_side(recorder, e), settings.rounds)
                results.append(Result(
                    f"background record({label}), caller side", us(seconds), "us/row",
                    limit=10.0, target="<= 10 us",
                    note="writer thread committing meanwhile", rounds=settings.rounds,
                ))
    finally:
        store.close()

    n = settings.stream_rows
    stream = records(n, seed=4)
    with store_and_raw(settings, "throughput") as (ours_store, raw):
        raw.close()
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

            def one_by_one() -> float:
                record = per_row_store.record

                def run() -> None:
                    for entry in stream:
                        record(entry)

                return per_item(run, n)

            rounds = max(5, settings.rounds // 3)
            mine, theirs, ratio = paired(sustained, one_by_one, rounds)
            results.append(Result(
                f"background, {n:,} rows until flushed", us(mine), "us/row", us(theirs), ratio,
                0.2, "<= 0.2x (5x rows/s)", "baseline: record() per row", rounds,
            ))
        finally:
            recorder.close()
            per_row_store.close()
    return results
