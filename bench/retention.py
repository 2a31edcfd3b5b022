"""Retention: ``purge_older_than`` in short chunks against one ``DELETE`` of
the same rows, first alone (median of several rounds, with the longest time
a chunk held the write lock), then while another process records every 2 ms.

Two orders of the same rows: ``time`` (rows inserted as they happen, so
``created_at`` follows the ids) and ``scattered`` (each row's ``created_at``
drawn at random, as in the demo's data, imports and copies from several
sources: the expired rows lie all over the table).

    python bench/retention.py                 # 1,000,000 rows, half expired, both orders
    python bench/retention.py --rows 200000 --rounds 3 --order scattered
    python bench/retention.py --rows 200000 --rounds 3 --keyed --unrolled

Prints the purge time of each way, their ratio, the longest write-lock hold
of a chunk (alone and under load), the worst time the writer waited for one
``record()`` during each, and the ``-wal`` size afterwards. ``run(rows,
rounds, order=…)`` returns the same figures as a dict, for a bench runner;
``run(…, rolled=False)`` the purge that folds its rows in (``--unrolled``:
alone only), also against the same work by hand (the rows' hour sums and
sketches by grouped ``INSERT``s, then one ``DELETE``), and
``run_keyed(rows, rounds)`` the purge of rows under keys, whose baseline
deletes their keys too (``--keyed``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

try:
    from telemetry_orm import StoreBusyError, create_telemetry_store, folding
except ImportError:  # run from a checkout: python bench/retention.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from telemetry_orm import StoreBusyError, create_telemetry_store, folding

RETENTION_DAYS = 90
WRITER_PERIOD_S = 0.002

#: How the rows' ``created_at`` follows their ids (see the module's docstring).
ORDERS = ("time", "scattered")

_INSERT = (
    "INSERT INTO executions (created_at, delivery_id, repo, pr_number, event_type, model,"
    " input_tokens, output_tokens, cache_read_tokens, duration_ms, cost_usd, conclusion,"
    " session_id, num_turns, stop_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _build(path: Path, rows: int, order: str = "time", *, keys: bool = False,
           rolled: bool = True) -> int:
    """``rows`` rows, the older half past the retention period; returns that half.

    In ``scattered`` order the same timestamps are dealt to the rows in a
    random (seeded) order. With ``keys``, every row is recorded under a key
    (random, as GitHub's delivery GUIDs). With ``rolled``, ``rollup()`` has
    run (as from cron, ahead of the purge); without, the purge folds in
    every row it deletes itself."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    with create_telemetry_store(path) as store:
        if keys:
            store.keyed_sql()  # creates the keys table
    expired = rows // 2
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    stamps = [
        (now - dt.timedelta(days=RETENTION_DAYS + 100 if i < expired else 1,
                            seconds=rows - i)).strftime("%Y-%m-%d %H:%M:%S")
        for i in range(rows)
    ]
    if order == "scattered":
        random.Random(20240601).shuffle(stamps)
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(_INSERT, (
            (
                stamps[i],
                f"d-{i}", f"owner{i % 50}/repo{i % 7}", i % 4000 + 1, "pull_request.opened",
                "claude-sonnet-4-5", 1000 + i % 500, 300, 20000, 60000, 0.05, "success",
                f"s-{i}", 7, "end_turn",
            )
            for i in range(rows)
        ))
        if keys:
            conn.execute("INSERT INTO telemetry_orm_keys (key, execution_id) "
                         "SELECT lower(hex(randomblob(16))), id FROM executions")
    conn.close()
    if rolled:
        with create_telemetry_store(path) as store:
            store.rollup()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.sync()
    return expired


def _writer(path: str, ready: Any, stop: Any, results: Any) -> None:
    """Record one row every 2 ms until told to stop; report the worst wait
    (also when something failed: then with the error, so the bench never
    waits for a figure that will not come)."""
    waits: List[float] = [0.0, 0.0]
    busy = 0
    error = ""
    try:
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
    except Exception as exc:  # noqa: BLE001 - reported with the figures
        error = f"{type(exc).__name__}: {exc}"
    finally:
        ready.set()
        results.put({"records": len(waits) - 2, "busy_errors": busy,
                     "worst_wait_s": max(waits),
                     "p99_wait_s": statistics.quantiles(waits, n=100)[98], "error": error})


def _single_delete(path: Path, *, keys: bool = False) -> int:
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")  # as the store's connections
        conn.execute("BEGIN IMMEDIATE")
        deleted = conn.execute(
            "DELETE FROM executions WHERE created_at < datetime('now', ?)",
            (f"-{RETENTION_DAYS} days",),
        ).rowcount
        if keys:
            conn.execute("DELETE FROM telemetry_orm_keys WHERE NOT EXISTS (SELECT 1 FROM "
                         "executions AS e WHERE e.id = telemetry_orm_keys.execution_id)")
        conn.execute("COMMIT")
        return deleted
    finally:
        conn.close()


def _under_load(path: Path, how: str, *, keys: bool = False) -> Dict[str, Any]:
    """Purge ``path`` one way while a writer process records; time both
    (and say the purge's longest write-lock hold)."""
    ctx = multiprocessing.get_context("spawn")
    ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    writer = ctx.Process(target=_writer, args=(str(path), ready, stop, results))
    writer.start()
    store = create_telemetry_store(path) if how == "chunked" else None
    try:
        if not ready.wait(60):
            raise RuntimeError("the writer process did not start")
        started = time.perf_counter()
        hold = None
        if store is not None:
            result = store.purge(RETENTION_DAYS)
            deleted, hold = result.deleted, result.longest_hold
        else:
            deleted = _single_delete(path, keys=keys)
        elapsed = time.perf_counter() - started
        wal = Path(f"{path}-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
    finally:
        stop.set()
        figures = results.get(timeout=300)
        writer.join()
        if store is not None:
            store.close()
    return {"deleted": deleted, "seconds": elapsed, "wal_bytes": wal_bytes,
            "longest_hold_s": elapsed if hold is None else hold, **figures}


def _fresh_copy(source: Path, target: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, target)
    # Write the copy out now: the kernel flushing it later, in the middle of
    # a measurement, stalls every write on the disk.
    os.sync()
    return target


@contextlib.contextmanager
def _timing_folds() -> Iterator[List[float]]:
    """Time the purge's folds (the rollups' share of a purge that folds its
    rows in: the hours it folds first, and what its chunks fold): the list
    holds their total seconds afterwards."""
    original = folding.purge_fold
    spent = [0.0]

    def purge_fold(tables: Any, when: Any) -> Any:
        fold = original(tables, when)

        def timed(conn: Any, rows: Any, state: Any = None) -> None:
            started = time.perf_counter()
            try:
                fold(conn, rows, state)
            finally:
                spent[0] += time.perf_counter() - started
        return timed

    ahead = folding.fold_up

    def fold_up(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return ahead(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    folding.purge_fold, folding.fold_up = purge_fold, fold_up
    try:
        yield spent
    finally:
        folding.purge_fold, folding.fold_up = original, ahead


#: The tables ``rollup()`` gives rows from ``executions`` (their hour sums
#: and hour sketches: what a purge that folds writes), each a grouped
#: ``INSERT`` as :mod:`bench.fold` writes them by hand.
_HAND_FOLD = 2


def _by_hand(source: Path, tmp: Path, template: Path) -> float:
    """The purge that folds, by hand, in one transaction: the expired rows'
    hour sums and sketches, each one grouped ``INSERT`` into an empty table
    shaped as the rollups' in ``template``, then one ``DELETE``; seconds."""
    from bench.fold import Engine, hand_sql  # the fold bench's statements, one source

    path = _fresh_copy(source, tmp / "by-hand.db")
    tables = hand_sql(Engine)[:_HAND_FOLD]
    with contextlib.closing(sqlite3.connect(template)) as other, \
            contextlib.closing(sqlite3.connect(path, isolation_level=None, timeout=5)) as conn:
        for table, shaped_as, _ in tables:
            ddl = other.execute("SELECT sql FROM sqlite_master WHERE type = 'table' "
                                "AND name = ?", (shaped_as,)).fetchone()[0]
            conn.execute(ddl.replace(shaped_as, table, 1))
        conn.execute("PRAGMA synchronous = NORMAL")  # as the store's connections
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        end = conn.execute("SELECT datetime('now', ?)", (f"-{RETENTION_DAYS} days",)
                           ).fetchone()[0]
        for table, _, select in tables:
            conn.execute(f"INSERT INTO {table} {select.replace('{end}', end)}")
        conn.execute("DELETE FROM executions WHERE created_at < ?", (end,))
        conn.execute("COMMIT")
        seconds = time.perf_counter() - started
        counted = conn.execute(f"SELECT SUM(executions) FROM {tables[0][0]}").fetchone()[0]
    with contextlib.closing(sqlite3.connect(template)) as other:
        folded = other.execute("SELECT SUM(executions) FROM telemetry_orm_rollups").fetchone()[0]
    if counted != folded:
        raise AssertionError(f"by hand counted {counted} executions, the purge {folded}")
    return seconds


def _alone(source: Path, tmp: Path, *, keys: bool = False,
           rolled: bool = True) -> Dict[str, Any]:
    """One round with nobody else writing: the single DELETE, then the purge
    (and, for a purge that folds, the same work by hand)."""
    started = time.perf_counter()
    single_deleted = _single_delete(_fresh_copy(source, tmp / "single.db"), keys=keys)
    single_s = time.perf_counter() - started
    with create_telemetry_store(_fresh_copy(source, tmp / "chunked.db")) as store, \
            _timing_folds() as folds:
        started = time.perf_counter()
        result = store.purge(RETENTION_DAYS)
        purge_s = time.perf_counter() - started
    deleted = result.deleted
    hand = {}
    if not rolled:
        hand_s = _by_hand(source, tmp, tmp / "chunked.db")
        hand = {"hand_s": hand_s, "hand_ratio": purge_s / hand_s}
    return {**hand, "deleted": deleted, "single_deleted": single_deleted, "purge_s": purge_s,
            "single_delete_s": single_s, "ratio": purge_s / single_s,
            "chunks": result.chunks, "longest_hold_ms": result.longest_hold * 1000,
            "fold_s": folds[0], "fold_share": folds[0] / purge_s}


def run(rows: int, rounds: int = 3, *, order: str = "time", rolled: bool = True,
        keys: bool = False, loaded: bool = True) -> Dict[str, Any]:
    """Build ``rows`` rows (half expired) in ``order`` (see :data:`ORDERS`),
    rolled up ahead or not, each under a key or not; purge them both ways
    ``rounds`` times alone and (``loaded``) once under load; return the
    figures (seconds, ms, bytes; the loaded ones ``None`` without ``loaded``)."""
    with tempfile.TemporaryDirectory(prefix="retention-") as tmp:
        source = Path(tmp) / "source.db"
        expired = _build(source, rows, order, keys=keys, rolled=rolled)
        alone = [_alone(source, Path(tmp), keys=keys, rolled=rolled) for _ in range(rounds)]
        if keys:
            with contextlib.closing(sqlite3.connect(Path(tmp) / "chunked.db")) as conn:
                left = conn.execute("SELECT count(*) FROM telemetry_orm_keys").fetchone()[0]
            if left != rows - expired:
                raise AssertionError(f"expected the keys of {expired} rows deleted, "
                                     f"{left} of {rows} keys left")
        loads = [_under_load(_fresh_copy(source, Path(tmp) / f"{how}.db"), how, keys=keys)
                 for how in (("chunked", "single") if loaded else ())]
    chunked, single = loads if loads else (None, None)
    for figures in (*alone, *loads):
        deleted = {figures["deleted"], figures.get("single_deleted", expired)}
        if deleted != {expired}:
            raise AssertionError(f"expected {expired} deleted, got {figures}")

    def median(key: str) -> float:
        return statistics.median(r[key] for r in alone)

    return {
        "rows": rows,
        "order": order,
        "keys": keys,
        "expired": expired,
        "rounds": rounds,
        "purge_s": median("purge_s"),
        "single_delete_s": median("single_delete_s"),
        "ratio": median("ratio"),
        "chunks": median("chunks"),
        "longest_hold_ms": median("longest_hold_ms"),
        "fold_s": median("fold_s"),
        "fold_share": median("fold_share"),
        "worst_hold_ms": max(r["longest_hold_ms"] for r in alone),
        **({"hand_s": median("hand_s"), "hand_ratio": median("hand_ratio")}
           if not rolled else {}),
        **(_loaded(chunked, single) if chunked is not None and single is not None else {}),
    }


def _loaded(chunked: Dict[str, Any], single: Dict[str, Any]) -> Dict[str, Any]:
    """The figures of the run under load."""
    return {
        "loaded_purge_s": chunked["seconds"],
        "loaded_single_delete_s": single["seconds"],
        "loaded_ratio": chunked["seconds"] / single["seconds"],
        "loaded_hold_ms": chunked["longest_hold_s"] * 1000,
        "writer_worst_wait_s": chunked["worst_wait_s"],
        "writer_p99_wait_s": chunked["p99_wait_s"],
        "writer_busy_errors": chunked["busy_errors"],
        "writer_records": chunked["records"],
        "single_writer_worst_wait_s": single["worst_wait_s"],
        "single_writer_busy_errors": single["busy_errors"],
        "wal_bytes_after": chunked["wal_bytes"],
        "single_wal_bytes_after": single["wal_bytes"],
        "writer_error": chunked["error"] or single["error"],
    }


def run_keyed(rows: int, rounds: int = 3, *, loaded: bool = True) -> Dict[str, Any]:
    """The same rows (time order), each recorded under a key: the purge with
    its sweep of the keys against one transaction deleting the rows and
    their keys; median figures of ``rounds`` rounds, and (``loaded``) one
    round of each while a writer records."""
    return run(rows, rounds, keys=True, loaded=loaded)


def _report(figures: Dict[str, Any]) -> None:
    mib = 1024 * 1024
    print(f"{figures['rows']:,} rows, {figures['expired']:,} expired, "
          f"created_at in {figures['order']} order"
          + (", every row under a key" if figures.get("keys") else ""))
    print(f"alone, median of {figures['rounds']} rounds:")
    print(f"  purge_older_than (chunked) {figures['purge_s']:8.2f} s   "
          f"single DELETE {figures['single_delete_s']:8.2f} s   "
          f"ratio {figures['ratio']:.2f}x")
    print(f"  longest write-lock hold of a chunk {figures['longest_hold_ms']:.1f} ms "
          f"(worst round {figures['worst_hold_ms']:.1f} ms), {figures['chunks']:.0f} chunks")
    print("while a writer process records every 2 ms:")
    print(f"  purge_older_than (chunked) {figures['loaded_purge_s']:8.2f} s   "
          f"single DELETE {figures['loaded_single_delete_s']:8.2f} s   "
          f"ratio {figures['loaded_ratio']:.2f}x")
    print(f"  longest write-lock hold of a chunk {figures['loaded_hold_ms']:.1f} ms")
    print(f"  writer worst wait: chunked {figures['writer_worst_wait_s'] * 1000:8.1f} ms   "
          f"single DELETE {figures['single_writer_worst_wait_s'] * 1000:8.1f} ms")
    print(f"  writer p99 wait (chunked) {figures['writer_p99_wait_s'] * 1000:.1f} ms; "
          f"busy errors: chunked {figures['writer_busy_errors']}, "
          f"single {figures['single_writer_busy_errors']}")
    print(f"  -wal after: chunked {figures['wal_bytes_after'] / mib:.2f} MiB   "
          f"single DELETE {figures['single_wal_bytes_after'] / mib:.2f} MiB")


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--order", choices=(*ORDERS, "both"), default="both",
                        help="how created_at follows the ids (default: both, one after the other)")
    parser.add_argument("--keyed", action="store_true",
                        help="also every row under a key (time order)")
    parser.add_argument("--unrolled", action="store_true",
                        help="also with nothing rolled up ahead (time order, alone)")
    args = parser.parse_args(argv)
    for order in ORDERS if args.order == "both" else (args.order,):
        _report(run(args.rows, args.rounds, order=order))
    if args.unrolled:
        figures = run(args.rows, args.rounds, rolled=False)
        print(f"nothing rolled up ahead: purge {figures['purge_s']:.2f} s   single DELETE "
              f"{figures['single_delete_s']:.2f} s   ratio {figures['ratio']:.2f}x   "
              f"the fold {figures['fold_share']:.0%} of it   longest hold "
              f"{figures['longest_hold_ms']:.1f} ms")
        print(f"  against the same work by hand (hour sums and sketches, one DELETE): "
              f"{figures['hand_s']:.2f} s   ratio {figures['hand_ratio']:.2f}x")
    if args.keyed:  # the single DELETE also deletes the keys whose row is gone
        _report(run_keyed(args.rows, args.rounds))


if __name__ == "__main__":
    main()
