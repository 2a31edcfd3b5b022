"""Target 6: recording, exporting and purging many rows in flat memory.

Each phase runs in a child process of its own, so its peak resident size
belongs to that phase alone; the child reports how far the peak rose above
its size just before the phase began (``/proc/self/status`` on Linux,
``resource.getrusage`` elsewhere; no psutil).

Run one phase by hand: ``python -m bench.memory record /tmp/m.db 1000000``.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO

from bench.data import iter_records
from bench.timing import Result, Settings
from telemetry_orm import PeeweeTelemetryStore, create_telemetry_store, formats, reports

PHASES = ("record", "export", "purge")
LIMIT_MB = 50.0
ROOT = Path(__file__).resolve().parent.parent


def export_rows(store: PeeweeTelemetryStore, out: TextIO) -> int:
    """Stream every row out as CSV, as ``telemetry-orm export`` does; return how many."""
    columns, rows = reports.export_rows(store.database)
    return formats.write_rows(columns, rows, "csv", out)


def _status_mb(field: str) -> Optional[float]:
    """A size from ``/proc/self/status`` (Linux), in MB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> None:
    # Linux: make the peak ("high water mark") the current size, so that the
    # peak read later belongs to the phase alone.
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        pass


def _resident_mb() -> float:
    """Resident size now (Linux), else the peak so far."""
    now = _status_mb("VmRSS")
    return now if now is not None else _peak_mb()


def _peak_mb() -> float:
    """Peak resident size of this process.

    ``VmHWM`` where there is one: ``getrusage``'s ``ru_maxrss`` is kept across
    ``exec``, so in a child it can be the peak of the parent that started it.
    """
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def _wait_until_all_are_older_than_now(store: PeeweeTelemetryStore) -> None:
    # created_at has whole seconds; rows of the current second are not
    # "older than 0 days" yet.
    while True:
        latest, now = store.database.execute_sql(
            "SELECT MAX(created_at), datetime('now') FROM executions"
        ).fetchone()
        if latest is None or latest < now:
            return
        time.sleep(0.25)


def run_phase(phase: str, path: str, rows: int) -> Dict[str, Any]:
    """Run one phase in this process and describe it."""
    store = create_telemetry_store(path)
    if phase == "purge":
        _wait_until_all_are_older_than_now(store)
    gc.collect()
    _reset_peak()
    before = _resident_mb()
    start = time.perf_counter()
    if phase == "record":
        with store.background() as recorder:
            for record in iter_records(rows, seed=6):
                recorder.record(record)
        done = rows
    elif phase == "export":
        with open(os.devnull, "w", newline="", encoding="utf-8") as out:
            done = export_rows(store, out)
    elif phase == "purge":
        done = store.purge_older_than(0)
    else:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
    seconds = time.perf_counter() - start
    peak = _peak_mb()
    store.close()
    return {"phase": phase, "rows": done, "seconds": seconds, "before_mb": before,
            "peak_mb": peak, "growth_mb": peak - before}


def memory(settings: Settings) -> List[Result]:
    """Record, export and purge ``settings.memory_rows`` rows, one child each."""
    rows = settings.memory_rows
    path = settings.workdir / "memory.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    results = []
    for phase in PHASES:
        done = subprocess.run(
            [sys.executable, "-m", "bench.memory", phase, str(path), str(rows)],
            capture_output=True, text=True, env=env, cwd=ROOT, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"memory phase {phase!r} failed:\n{done.stderr}")
        info = json.loads(done.stdout.strip().splitlines()[-1])
        if info["rows"] != rows:
            raise RuntimeError(f"memory phase {phase!r} handled {info['rows']} of {rows} rows")
        how = {"record": "background recorder", "export": "CSV via reports.export_rows",
               "purge": "purge_older_than(0)"}[phase]
        results.append(Result(
            f"memory: {phase} {rows:,} rows", info["growth_mb"], "MB peak RSS growth",
            limit=LIMIT_MB, target=f"<= {LIMIT_MB:.0f} MB",
            note=f"{how}; {info['seconds']:.1f} s, peak {info['peak_mb']:.0f} MB",
            rounds=1,
        ))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return results


if __name__ == "__main__":
    phase_name, db_path, row_count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(run_phase(phase_name, db_path, row_count)))
