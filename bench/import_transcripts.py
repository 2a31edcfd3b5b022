"""Importing Claude Code transcripts: ``telemetry-orm import claude-code``
on a generated folder, into a fresh SQLite file, then once more on the same
folder and file (which must write nothing).

    python bench/import_transcripts.py                 # 50,000 API-call lines, 3 rounds
    python bench/import_transcripts.py --lines 200000 --rounds 1

The folder comes from ``tests/transcripts.py`` (an API call on one to three
lines, user and summary lines between them). Each import runs in a child
process: wall time, and the child's peak RSS from ``wait4``. The baseline is
reading every line of the folder and ``json.loads`` it, in this process.
After the second import the file is checked with plain sqlite3: the same
rows, the same checksum of the ``executions`` table, and whether anything at
all was committed (``PRAGMA data_version`` of a connection held open across
the run). Figures are medians over the rounds; ``run(lines, rounds)``
returns them as a dict, for a bench runner.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

try:
    import telemetry_orm
except ImportError:  # run from a checkout: python bench/import_transcripts.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import telemetry_orm

# The generator lives with the tests, which are not a package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from transcripts import ASSISTANT_LINES_PER_CALL, Expected, expected_totals, write_folder  # noqa: E402

#: API calls per session: a long working session.
CALLS_PER_SESSION = 250


def _generate(root: Path, lines: int) -> Tuple[Path, Expected]:
    """A folder with at least ``lines`` API-call lines, and what it holds."""
    calls = math.ceil(lines / ASSISTANT_LINES_PER_CALL)
    while True:
        sessions = max(1, math.ceil(calls / CALLS_PER_SESSION))
        projects = write_folder(root / f"claude-{calls}", sessions=sessions,
                                calls_per_session=math.ceil(calls / sessions), seed=1)
        expected = expected_totals(projects)
        if expected.api_lines >= lines:
            return projects, expected
        calls = math.ceil(calls * 1.05)


def _parse_all(projects: Path) -> float:
    """Seconds to read every line under ``projects`` and ``json.loads`` it."""
    started = time.perf_counter()
    for path in sorted(projects.rglob("*.jsonl")):
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                json.loads(line)
    return time.perf_counter() - started


def _import(projects: Path, db: Path) -> Tuple[float, float]:
    """Run ``telemetry-orm import claude-code`` in a child process; return
    its wall time (s) and peak RSS (MiB)."""
    env = dict(os.environ)
    package_root = str(Path(telemetry_orm.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "telemetry_orm", "import", "claude-code", str(projects),
               "--db", str(db)]
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=env)
        # wait4 gives this child's own rusage; RUSAGE_CHILDREN would be the
        # largest of all children so far.
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}:\n"
                               + errors.read().decode(errors="replace"))
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    kib = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss
    return elapsed, kib / 1024


def _contents(conn: sqlite3.Connection) -> Tuple[int, str]:
    """The number of rows in ``executions`` and a sha256 of all of them, in id order."""
    digest = hashlib.sha256()
    rows = 0
    for row in conn.execute("SELECT * FROM executions ORDER BY id"):
        digest.update(repr(row).encode())
        rows += 1
    return rows, digest.hexdigest()


def _token_sums(conn: sqlite3.Connection) -> Dict[Tuple[str, str], Tuple[int, ...]]:
    return {(session, model): tuple(sums) for session, model, *sums in conn.execute(
        "SELECT session_id, model, SUM(input_tokens), SUM(output_tokens),"
        " SUM(cache_read_tokens), SUM(cache_creation_tokens) FROM executions"
        " WHERE event_type = 'claude-code' GROUP BY session_id, model")}


def _round(projects: Path, expected: Expected, db: Path) -> Dict[str, Any]:
    """Both imports into a fresh file at ``db``, with the checks."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    first_s, first_mb = _import(projects, db)
    witness = sqlite3.connect(db)
    try:
        sums = _token_sums(witness)
        if sums != {key: tuple(tokens) for key, tokens in expected.by_session_model.items()}:
            raise AssertionError("the imported token sums differ from the generator's")
        before = _contents(witness)
        version = witness.execute("PRAGMA data_version").fetchone()[0]
        second_s, second_mb = _import(projects, db)
        after = _contents(witness)
        untouched = witness.execute("PRAGMA data_version").fetchone()[0] == version
    finally:
        witness.close()
    return {"first_s": first_s, "first_peak_mb": first_mb, "second_s": second_s,
            "second_peak_mb": second_mb, "rows": before[0],
            "executions_unchanged": before == after, "file_untouched": untouched}


def run(lines: int = 50_000, rounds: int = 3) -> Dict[str, Any]:
    """Generate at least ``lines`` API-call lines, import them twice per
    round for ``rounds`` rounds, and return the figures (medians)."""
    with tempfile.TemporaryDirectory(prefix="import-transcripts-") as tmp:
        projects, expected = _generate(Path(tmp), lines)
        size = sum(path.stat().st_size for path in projects.rglob("*.jsonl"))
        results: List[Dict[str, Any]] = []
        parse: List[float] = []
        for _ in range(rounds):
            parse.append(_parse_all(projects))
            results.append(_round(projects, expected, Path(tmp) / "t.db"))

    def median(key: str) -> float:
        return float(statistics.median(r[key] for r in results))

    parse_s = statistics.median(parse)
    return {
        "lines": expected.lines,
        "api_lines": expected.api_lines,
        "calls": sum(expected.calls.values()),
        "files": expected.files,
        "sessions": len(expected.sessions),
        "megabytes": size / 1e6,
        "rows": results[0]["rows"],
        "rounds": rounds,
        "first_s": median("first_s"),
        "first_peak_mb": median("first_peak_mb"),
        "second_s": median("second_s"),
        "second_peak_mb": median("second_peak_mb"),
        "parse_s": parse_s,
        "first_ratio": median("first_s") / parse_s,
        "second_ratio": median("second_s") / parse_s,
        "second_wrote_nothing": all(r["executions_unchanged"] for r in results),
        "second_untouched_file": all(r["file_untouched"] for r in results),
    }


def _report(figures: Dict[str, Any]) -> None:
    def yes(value: bool) -> str:
        return "yes" if value else "NO"

    print(f"{figures['lines']:,} lines ({figures['api_lines']:,} API-call lines, "
          f"{figures['calls']:,} distinct calls), {figures['files']:,} files, "
          f"{figures['sessions']:,} sessions, {figures['megabytes']:.1f} MB")
    print(f"median of {figures['rounds']} rounds, each into a fresh SQLite file:")
    print(f"  first import  {figures['first_s']:8.2f} s   peak RSS "
          f"{figures['first_peak_mb']:6.1f} MiB   {figures['rows']:,} rows   "
          f"ratio {figures['first_ratio']:.2f}x")
    print(f"  second import {figures['second_s']:8.2f} s   peak RSS "
          f"{figures['second_peak_mb']:6.1f} MiB   "
          f"ratio {figures['second_ratio']:.2f}x")
    print(f"  baseline: read and json.loads every line {figures['parse_s']:.2f} s")
    print(f"  second import wrote nothing: {yes(figures['second_wrote_nothing'])} "
          "(row count and sha256 of executions unchanged); "
          f"nothing committed at all (data_version): {yes(figures['second_untouched_file'])}")


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=50_000,
                        help="at least this many API-call lines (default 50,000)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    _report(run(args.lines, args.rounds))


if __name__ == "__main__":
    main()
