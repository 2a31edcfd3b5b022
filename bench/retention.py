"""Retention under load: ``purge_older_than`` in short chunks against one
``DELETE`` of the same rows, while another process records every 2 ms.

    python bench/retention.py                 # 1,000,000 rows, half expired
    python bench/retention.py --rows 200000 --repeat 3

Prints the purge time of each way, their ratio, the worst time the writer
waited for one ``record()`` during each, and the ``-wal`` size afterwards.
``run(rows)`` returns the same figures as a dict, for a bench runner.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

try:
    from telemetry_orm import StoreBusyError, create_telemetry_store
except ImportError:  # run from a checkout: python bench/retention.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from telemetry_orm import StoreBusyError, create_telemetry_store

RETENTION_DAYS = 90
WRITER_PERIOD_S = 0.002

_INSERT = (
    "INSERT INTO executions (created_at, delivery_id, repo, pr_number, event_type, model,"
    " input_tokens, output_tokens, cache_read_tokens, duration_ms, cost_usd, conclusion,"
    " session_id, num_turns, stop_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _build(path: Path, rows: int) -> int:
    """``rows`` rows, the older half past the retention period; returns that half."""
    create_telemetry_store(path).close()
    expired = rows // 2
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(_INSERT, (
            (
                (now - dt.timedelta(days=RETENTION_DAYS + 100 if i < expired else 1,
                                    seconds=rows - i)).strftime("%Y-%m-%d %H:%M:%S"),
                f"d-{i}", f"owner{i % 50}/repo{i % 7}", i % 4000 + 1, "pull_request.opened",
                "claude-sonnet-4-5", 1000 + i % 500, 300, 20000, 60000, 0.05, "success",
                f"s-{i}", 7, "end_turn",
            )
            for i in range(rows)
        ))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return expired


def _writer(path: str, ready: Any, stop: Any, results: Any) -> None:
    """Record one row every 2 ms until told to stop; report the worst wait."""
    waits: List[float] = []
    busy = 0
    with create_telemetry_store(path) as store:
        entry = {"repo": "live/writer", "event_type": "push", "model": "claude-sonnet-4-5",
                 "conclusion": "success"}
        ready.set()
        next_at = time.perf_counter()
        while not stop.is_set():
            started = time.perf_counter()
            try:
                store.record(entry)
            except StoreBusyError:
                busy += 1
            waits.append(time.perf_counter() - started)
            next_at += WRITER_PERIOD_S
            time.sleep(max(0.0, next_at - time.perf_counter()))
    results.put({"records": len(waits), "busy_errors": busy, "worst_wait_s": max(waits),
                 "p99_wait_s": statistics.quantiles(waits, n=100)[98]})


def _single_delete(path: Path) -> int:
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        conn.execute("BEGIN IMMEDIATE")
        deleted = conn.execute(
            "DELETE FROM executions WHERE created_at < datetime('now', ?)",
            (f"-{RETENTION_DAYS} days",),
        ).rowcount
        conn.execute("COMMIT")
        return deleted
    finally:
        conn.close()


def _under_load(path: Path, how: str) -> Dict[str, Any]:
    """Purge ``path`` one way while a writer process records; time both."""
    ctx = multiprocessing.get_context("spawn")
    ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    writer = ctx.Process(target=_writer, args=(str(path), ready, stop, results))
    writer.start()
    store = create_telemetry_store(path) if how == "chunked" else None
    try:
        if not ready.wait(60):
            raise RuntimeError("the writer process did not start")
        started = time.perf_counter()
        if store is not None:
            deleted = store.purge_older_than(RETENTION_DAYS)
        else:
            deleted = _single_delete(path)
        elapsed = time.perf_counter() - started
        wal = Path(f"{path}-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
    finally:
        stop.set()
        figures = results.get(timeout=60)
        writer.join()
        if store is not None:
            store.close()
    return {"deleted": deleted, "seconds": elapsed, "wal_bytes": wal_bytes, **figures}


def run(rows: int) -> Dict[str, Any]:
    """Build ``rows`` rows (half expired), purge them both ways under load,
    and return the figures (seconds, bytes)."""
    with tempfile.TemporaryDirectory(prefix="retention-") as tmp:
        chunked_path = Path(tmp) / "chunked.db"
        single_path = Path(tmp) / "single.db"
        expired = _build(chunked_path, rows)
        shutil.copyfile(chunked_path, single_path)
        chunked = _under_load(chunked_path, "chunked")
        single = _under_load(single_path, "single")
    if chunked["deleted"] != expired or single["deleted"] != expired:
        raise AssertionError(f"expected {expired} deleted, got {chunked} / {single}")
    return {
        "rows": rows,
        "expired": expired,
        "purge_s": chunked["seconds"],
        "single_delete_s": single["seconds"],
        "ratio": chunked["seconds"] / single["seconds"],
        "writer_worst_wait_s": chunked["worst_wait_s"],
        "writer_p99_wait_s": chunked["p99_wait_s"],
        "writer_busy_errors": chunked["busy_errors"],
        "writer_records": chunked["records"],
        "single_writer_worst_wait_s": single["worst_wait_s"],
        "single_writer_busy_errors": single["busy_errors"],
        "wal_bytes_after": chunked["wal_bytes"],
        "single_wal_bytes_after": single["wal_bytes"],
    }


def _report(runs: List[Dict[str, Any]]) -> None:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    mib = 1024 * 1024
    first = runs[0]
    label = "median of" if len(runs) > 1 else "runs:"
    print(f"{first['rows']:,} rows, {first['expired']:,} expired; {label} {len(runs)}")
    print(f"  purge_older_than (chunked) {med('purge_s'):8.2f} s   "
          f"single DELETE {med('single_delete_s'):8.2f} s   ratio {med('ratio'):.2f}x")
    print(f"  writer worst wait: chunked {med('writer_worst_wait_s') * 1000:8.1f} ms   "
          f"single DELETE {med('single_writer_worst_wait_s') * 1000:8.1f} ms")
    print(f"  writer p99 wait (chunked) {med('writer_p99_wait_s') * 1000:.1f} ms; "
          f"busy errors: chunked {max(r['writer_busy_errors'] for r in runs)}, "
          f"single {max(r['single_writer_busy_errors'] for r in runs)}")
    print(f"  -wal after: chunked {med('wal_bytes_after') / mib:.2f} MiB   "
          f"single DELETE {med('single_wal_bytes_after') / mib:.2f} MiB")
    if len(runs) > 1:
        worst = max(r["writer_worst_wait_s"] for r in runs)
        print(f"  worst writer wait over all chunked runs: {worst * 1000:.1f} ms")


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    runs = [run(args.rows) for _ in range(args.repeat)]
    _report(runs)


if __name__ == "__main__":
    main()
