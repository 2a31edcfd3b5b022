"""Code that runs in child processes of the reliability tests.

The functions are targets for ``multiprocessing`` (any start method); run as
a script, the module is a writer to be killed:
``python workers.py record-until-killed PATH`` records rows forever and
prints each returned id on its own line, flushed right after ``record()``
returned.
"""

from __future__ import annotations

import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any, List, Tuple

from telemetry_orm import create_telemetry_store


def entry(repo: str, n: int, **extra: Any) -> dict:
    """A valid entry whose ``delivery_id`` and ``num_turns`` identify it."""
    values: dict = {
        "repo": repo, "event_type": "pull_request.opened", "model": "claude-sonnet-4-5",
        "conclusion": "success", "delivery_id": f"{repo}#{n}", "num_turns": n,
        "input_tokens": n * 3, "cost_usd": n / 1000,
    }
    values.update(extra)
    return values


def record_rows(path: str, worker: int, count: int, start: Any, results: Any) -> None:
    """Open a store once every worker is ready, record ``count`` rows, and
    report ``(worker, ids, error)``; ``error`` is ``None`` or a traceback."""
    ids: List[int] = []
    try:
        start.wait()
        with create_telemetry_store(path) as store:
            for n in range(count):
                ids.append(store.record(entry(f"worker{worker}/repo", n)))
        results.put((worker, ids, None))
    except BaseException:
        results.put((worker, ids, traceback.format_exc()))


def open_each(folder: str, worker: int, names: List[str], start: Any, results: Any) -> None:
    """For each file name, at the same moment as the other workers: open a
    store on it (schema set-up or upgrade included) and record one row."""
    errors: List[str] = []
    for name in names:
        try:
            start.wait()
            with create_telemetry_store(Path(folder) / name) as store:
                store.record(entry(f"worker{worker}/repo", 0))
        except BaseException:
            errors.append(f"{name}: {traceback.format_exc()}")
    results.put((worker, errors))


def record_paced(path: str, busy_timeout: int, ready: Any, stop: Any, results: Any) -> None:
    """Record a row every millisecond or so until ``stop`` is set; report
    ``(ids, error)``."""
    ids: List[int] = []
    try:
        with create_telemetry_store(path, busy_timeout=busy_timeout) as store:
            ready.set()
            while not stop.is_set():
                ids.append(store.record(entry("paced/writer", len(ids))))
                time.sleep(0.001)
        results.put((ids, None))
    except BaseException:
        ready.set()
        results.put((ids, traceback.format_exc()))


def page_entry(repo: str, n: int) -> dict:
    """An entry whose 3 KB ``session_id`` puts each row on a database page of
    its own (an overflow page): a log of such rows changes as many pages as it
    has rows, and copying it into the database file writes all of them."""
    return entry(repo, n, session_id=f"{n:08d}" + "s" * 3000)


def wal_size(path: str) -> int:
    """Bytes in the ``-wal`` file of the database at ``path`` (0 if none)."""
    try:
        return os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        return 0


def record_through_a_reader(path: str, hold_to: int, after: int, held: Any, go: Any,
                            results: Any) -> None:
    """Record rows of :func:`page_entry` until the ``-wal`` file is past
    ``hold_to`` bytes, wait at ``held`` (the parent's reader then lets go)
    and ``go``, then record ``after`` rows one by one; report ``(calls,
    error)``, ``calls`` as ``(when it returned on the wall clock shared by
    processes, 1 row, -wal bytes right after)``."""
    calls: List[Tuple[float, int, int]] = []
    try:
        store = create_telemetry_store(path)
        try:
            n = 0
            while wal_size(path) <= hold_to:
                store.record(page_entry("held/back", n))
                n += 1
            held.wait()
            go.wait()
            for n in range(after):
                store.record(entry("catch/up", n))
                calls.append((time.time(), 1, wal_size(path)))
        finally:
            store.close()
        results.put((calls, None))
    except BaseException:
        results.put((calls, traceback.format_exc()))


def record_until_killed(path: str) -> None:
    """Record forever, printing each id once ``record()`` has returned."""
    rng = random.Random(os.getpid())
    store = create_telemetry_store(path)
    n = 0
    while True:
        # Now and then a big row, so a kill may land in a long write too.
        size = rng.choice((10, 10, 10, 50_000))
        row_id = store.record(entry("crash/victim", n, session_id="x" * size))
        os.write(1, f"{row_id}\n".encode())
        n += 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["record-until-killed"]:
        record_until_killed(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} record-until-killed PATH")


def reserve_rounds(location: str, worker: int, budget: str, rounds: int, estimate: float,
                   costs: Tuple[float, float], start: Any, results: Any) -> None:
    """Race the other workers for ``budget``: ``rounds`` times, reserve
    ``estimate``, spend a moment, record a run costing a draw in ``costs``
    inside the hold (or count a refusal); report ``(worker, recorded,
    refused, error)``."""
    from telemetry_orm import BudgetExceededError

    recorded: List[float] = []
    refused = 0
    rng = random.Random(worker)
    try:
        with create_telemetry_store(location) as store:
            start.wait()
            for n in range(rounds):
                cost = round(rng.uniform(*costs), 6)
                try:
                    with store.reserve(budget, usd=estimate) as hold:
                        time.sleep(rng.uniform(0, 0.004))
                        hold.record(entry("race/repo", n, cost_usd=cost,
                                           delivery_id=f"race/w{worker}#{n}"))
                    recorded.append(cost)
                except BudgetExceededError:
                    refused += 1
        results.put((worker, recorded, refused, None))
    except BaseException:
        results.put((worker, recorded, refused, traceback.format_exc()))


def hold_and_wait(location: str, budget: str, usd: float, ttl: float, ready: Any) -> None:
    """Reserve ``usd`` against ``budget`` and wait inside the hold, to be killed."""
    with create_telemetry_store(location) as store, store.reserve(budget, usd=usd, ttl=ttl):
        ready.set()
        time.sleep(600)
