"""The optional peer line: the same inserts through ``bun:sqlite``, the
original store's runtime, when ``bun`` is on PATH (nothing is installed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import List

from bench.data import RAW_INSERT, records
from bench.timing import Result, Settings, median_of, per_item, raw_connect, us
from telemetry_orm import create_telemetry_store

SCRIPT = Path(__file__).resolve().parent / "bun_inserts.js"
BATCH = 1000


def bun(settings: Settings) -> List[Result]:
    """bun:sqlite per row and 1,000 rows per transaction, beside raw Python sqlite3."""
    executable = shutil.which("bun")
    if executable is None:
        return [Result("peer: bun:sqlite (original runtime)", None, "",
                       target="-", note="skipped: bun not on PATH")]
    n = max(BATCH, settings.rows_per_round // BATCH * BATCH)
    pool = records(n, seed=5)
    rows = [list(r.as_row()) for r in pool]
    rows_path = settings.workdir / "bun-rows.json"
    rows_path.write_text(json.dumps(rows), encoding="utf-8")
    bun_db = settings.workdir / "bun.db"
    py_db = settings.workdir / "bun-python.db"
    for path in (bun_db, py_db):
        create_telemetry_store(path).close()

    conn = raw_connect(py_db)
    try:
        tuples = [tuple(row) for row in rows]

        def one_by_one() -> float:
            def run() -> None:
                for row in tuples:
                    conn.execute(RAW_INSERT, row)

            return per_item(run, n)

        def batched() -> float:
            def run() -> None:
                for i in range(0, n, BATCH):
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(RAW_INSERT, tuples[i:i + BATCH])
                    conn.execute("COMMIT")

            return per_item(run, n)

        python_row = median_of(one_by_one, settings.rounds)
        python_batch = median_of(batched, settings.rounds)
        done = subprocess.run(
            [executable, str(SCRIPT), str(bun_db), str(rows_path), str(settings.rounds)],
            capture_output=True, text=True, check=True,
        )
        peer = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        conn.close()
        for path in (bun_db, py_db, rows_path):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    return [
        Result("peer: bun:sqlite insert, per row", peer["per_row_us"], "us/row",
               us(python_row), peer["per_row_us"] / us(python_row),
               note="baseline: raw Python sqlite3", rounds=settings.rounds),
        Result("peer: bun:sqlite 1,000 rows per transaction", peer["batch_us"], "us/row",
               us(python_batch), peer["batch_us"] / us(python_batch),
               note="baseline: raw Python executemany", rounds=settings.rounds),
    ]
