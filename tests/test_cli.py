"""The command line, run in-process through ``main(argv)`` (and a few times as
``python -m telemetry_orm``); results checked through a plain sqlite3 connection."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest
from support import FIXED_NOW, make_seed_database, program, tmpfs

from telemetry_orm import PeeweeTelemetryStore, create_telemetry_store
from telemetry_orm.cli import main, parse_when
from telemetry_orm.factories import ExecutionFactory
from telemetry_orm.reports import METRICS
from telemetry_orm.schema import COLUMN_NAMES

UTC = dt.timezone.utc
NOW = FIXED_NOW
# Rows are placed relative to NOW, which the commands take as "now"
# (--since 20d, purge --days 30): the same answers at any time of day.
pytestmark = pytest.mark.usefixtures("pinned_clock")
REPOS = ("acme/api", "acme/web", "globex/billing")


def stamp(value: dt.datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def filled(store: PeeweeTelemetryStore) -> PeeweeTelemetryStore:
    """60 executions, one every 36 hours back from now (90 days)."""
    with store.database.atomic():
        for i in range(60):
            ExecutionFactory.create(
                store=store, repo=REPOS[i % 3], model=("m-a", "m-b")[i % 2],
                created_at=NOW - dt.timedelta(hours=36 * i, minutes=30),
            )
    return store


def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> Tuple[int, str, str]:
    out = io.StringIO()
    status = main(list(argv), out=out)
    captured = capsys.readouterr()
    return status, out.getvalue() + captured.out, captured.err


def count(conn: sqlite3.Connection, where: str = "1", params: Tuple[Any, ...] = ()) -> int:
    return int(conn.execute(f"SELECT COUNT(*) FROM executions WHERE {where}", params).fetchone()[0])


# --- report ----------------------------------------------------------------


def test_report_defaults_to_a_table_of_the_last_30_days_by_repo(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run("report", "--db", str(db_path), capsys=capsys)
    assert (status, err) == (0, "")
    assert out.startswith("Executions since ")
    assert ", by repo\n" in out
    totals = out.rstrip("\n").split("\n")[-1].split()
    assert totals[0] == "TOTAL"
    since = stamp(NOW - dt.timedelta(days=30))
    assert int(totals[1]) == count(witness, "created_at >= ?", (since,))
    for repo in REPOS:
        assert f"\n{repo} " in out


def test_report_as_json_matches_independent_sql(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run("report", "--db", str(db_path), "--format", "json", "--since", "20d",
                         capsys=capsys)
    assert status == 0
    document = json.loads(out)
    since = dt.datetime.fromisoformat(document["filters"]["since"].replace("Z", "+00:00"))
    assert since == NOW - dt.timedelta(days=20)
    assert document["group_by"] == ["repo"]
    wanted = {
        repo: (n, cost)
        for repo, n, cost in witness.execute(
            "SELECT repo, COUNT(*), SUM(cost_usd) FROM executions WHERE created_at >= ?"
            " GROUP BY repo", (stamp(since),))
    }
    got = {r["repo"]: (r["executions"], r["cost_usd"]) for r in document["rows"]}
    assert set(got) == set(wanted)
    for repo, (n, cost) in got.items():
        assert n == wanted[repo][0]
        assert cost == pytest.approx(wanted[repo][1], abs=1e-6)
    assert document["totals"]["executions"] == sum(n for n, _ in wanted.values())
    assert set(document["totals"]) == set(METRICS)


def test_report_as_csv_with_repeated_by(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run("report", "--db", str(db_path), "--format", "csv", "--since",
                         "2000-01-01", "--by", "month", "--by", "model", capsys=capsys)
    assert status == 0
    table = list(csv.DictReader(io.StringIO(out)))
    assert list(table[0]) == ["month", "model", *METRICS]
    wanted = dict(
        ((month, model), n) for month, model, n in witness.execute(
            "SELECT substr(created_at, 1, 7), model, COUNT(*) FROM executions GROUP BY 1, 2")
    )
    assert {(r["month"], r["model"]): int(r["executions"]) for r in table} == wanted
    assert [r["month"] for r in table] == sorted(r["month"] for r in table)


def test_report_filters_by_repo_model_event_and_time(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    until = NOW - dt.timedelta(days=10)
    status, out, _ = run(
        "report", "--db", str(db_path), "--format", "json", "--since", "2000-01-01T00:00:00Z",
        "--until", until.isoformat(), "--repo", "acme/web", "--model", "m-b", "--by", "pr",
        capsys=capsys,
    )
    assert status == 0
    document = json.loads(out)
    assert document["filters"]["repo"] == "acme/web"
    assert document["totals"]["executions"] == count(
        witness, "created_at < ? AND repo = 'acme/web' AND model = 'm-b'", (stamp(until),))
    assert document["totals"]["executions"] > 0
    event = witness.execute("SELECT event_type FROM executions LIMIT 1").fetchone()[0]
    status, out, _ = run("report", "--db", str(db_path), "--format", "json", "--since", "100d",
                         "--event", event, capsys=capsys)
    assert json.loads(out)["totals"]["executions"] == count(witness, "event_type = ?", (event,))


def test_report_as_markdown(
    filled: PeeweeTelemetryStore, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run("report", "--db", str(db_path), "--format", "markdown", "--by", "week",
                         capsys=capsys)
    lines = out.rstrip("\n").split("\n")
    assert status == 0
    assert lines[0].startswith("| week | executions |")
    assert lines[-1].startswith("| **TOTAL** |")


def test_parse_when_understands_relative_times_dates_and_iso_datetimes() -> None:
    now = dt.datetime(2025, 3, 10, 15, 30, 45, 123456, tzinfo=UTC)
    assert parse_when("7d", now) == dt.datetime(2025, 3, 3, 15, 30, 45, tzinfo=UTC)
    assert parse_when("12h", now) == dt.datetime(2025, 3, 10, 3, 30, 45, tzinfo=UTC)
    assert parse_when("2w", now) == dt.datetime(2025, 2, 24, 15, 30, 45, tzinfo=UTC)
    assert parse_when("2025-01-31", now) == dt.datetime(2025, 1, 31, tzinfo=UTC)
    assert parse_when("2025-01-31T10:00:00", now) == dt.datetime(2025, 1, 31, 10, tzinfo=UTC)
    assert parse_when("2025-01-31T10:00:00+02:00") == dt.datetime(2025, 1, 31, 8, tzinfo=UTC)
    assert parse_when("2025-01-31T10:00:00Z") == dt.datetime(2025, 1, 31, 10, tzinfo=UTC)
    for bad in ("yesterdayish", "7", "d7", "-3d", "7y", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_when(bad, now)


# --- Bad arguments: exit 2 with a usage message ------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "--since", "yesterdayish"],
        ["report", "--until", "soon"],
        ["report", "--format", "xml"],
        ["report", "--by", "hour"],
        ["purge", "--days", "-4"],
        ["purge", "--days", "ninety"],
        ["purge", "--days", "nan"],
        ["purge"],
        ["stats", "--format", "csv"],
        ["export", "--format", "xml"],
        ["demo", "--rows", "0"],
        ["frobnicate"],
        [],
    ],
)
def test_bad_arguments_exit_2_with_usage(
    filled: PeeweeTelemetryStore, db_path: Path, witness: sqlite3.Connection,
    capsys: pytest.CaptureFixture[str], argv: List[str],
) -> None:
    before = count(witness)
    status, out, err = run(*argv, "--db", str(db_path), capsys=capsys)
    assert status == 2
    assert err.startswith("usage: telemetry-orm")
    assert "error:" in err
    assert count(witness) == before


# --- Missing files and other failures ------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["report"], ["stats"], ["export"], ["purge", "--days", "1"], ["checkpoint"],
     ["purge", "--days", "1", "--dry-run"]],
)
def test_a_missing_database_is_one_line_exit_1_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: List[str]
) -> None:
    path = tmp_path / "nowhere" / "telemetry.db"
    status, out, err = run(*argv, "--db", str(path), capsys=capsys)
    assert status == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"telemetry-orm: error: {path}: no such database file")
    assert "Traceback" not in err
    assert not (tmp_path / "nowhere").exists()


def test_db_defaults_to_the_environment_then_data_telemetry_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from_env = tmp_path / "env.db"
    make_seed_database(from_env, rows=2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("TELEMETRY_DB_PATH", str(from_env))
    status, out, _ = run("stats", "--format", "json", capsys=capsys)
    assert status == 0
    assert json.loads(out)["path"] == str(from_env)
    monkeypatch.delenv("TELEMETRY_DB_PATH")
    status, _, err = run("stats", capsys=capsys)
    assert status == 1
    assert f"error: {os.path.join('.', 'data', 'telemetry.db')}: no such database file" in err
    assert list(elsewhere.iterdir()) == []
    (elsewhere / "data").mkdir()
    make_seed_database(elsewhere / "data" / "telemetry.db", rows=3)
    status, out, _ = run("stats", "--format", "json", capsys=capsys)
    assert status == 0 and json.loads(out)["rows"] == 3


def test_other_failures_are_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database\n" * 200)
    for command in (["report"], ["stats"], ["export"], ["purge", "--days", "3"]):
        status, out, err = run(*command, "--db", str(path), capsys=capsys)
        assert status == 1
        assert err.count("\n") == 1 and "Traceback" not in err
        assert str(path) in err and "not a SQLite database" in err
    status, _, err = run("stats", "--db", str(path), "--debug", capsys=capsys)
    assert status == 1
    assert "Traceback (most recent call last)" in err
    assert path.read_text() == "not a database\n" * 200


# --- purge, checkpoint, stats -------------------------------------------------------


def test_purge_dry_run_counts_and_deletes_nothing(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = count(witness, "created_at < ?", (stamp(NOW - dt.timedelta(days=30)),))
    status, out, _ = run("purge", "--db", str(db_path), "--days", "30", "--dry-run",
                         capsys=capsys)
    assert status == 0
    assert out == f"would delete {old} executions older than 30 days\n"
    assert count(witness) == 60


def test_purge_deletes_rows_older_than_days(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = count(witness, "created_at < ?", (stamp(NOW - dt.timedelta(days=30)),))
    assert 0 < old < 60
    status, out, _ = run("purge", "--db", str(db_path), "--days", "30", capsys=capsys)
    assert status == 0
    assert out == f"deleted {old} executions older than 30 days\n"
    assert count(witness) == 60 - old
    assert count(witness, "created_at < ?", (stamp(NOW - dt.timedelta(days=30)),)) == 0


def test_checkpoint_truncate_empties_the_wal_file(
    filled: PeeweeTelemetryStore, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wal = Path(f"{db_path}-wal")
    assert wal.stat().st_size > 0  # the open store keeps its log
    status, out, _ = run("checkpoint", "--db", str(db_path), capsys=capsys)
    assert status == 0 and out.startswith("checkpoint (PASSIVE) done")
    status, out, _ = run("checkpoint", "--db", str(db_path), "--truncate", capsys=capsys)
    assert status == 0
    assert out == f"checkpoint (TRUNCATE) done; {wal} is 0 bytes\n"
    assert wal.stat().st_size == 0


def test_stats_show_rows_time_span_sizes_version_and_mode(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run("stats", "--db", str(db_path), "--format", "json", capsys=capsys)
    assert status == 0
    stats = json.loads(out)
    oldest, newest = witness.execute(
        "SELECT MIN(created_at), MAX(created_at) FROM executions").fetchone()
    assert stats["rows"] == count(witness) == 60
    assert (stats["oldest"], stats["newest"]) == (oldest, newest)
    assert stats["file_bytes"] == db_path.stat().st_size
    assert stats["wal_bytes"] == Path(f"{db_path}-wal").stat().st_size
    assert (stats["schema_version"], stats["journal_mode"]) == (1, "wal")
    status, out, _ = run("stats", "--db", str(db_path), capsys=capsys)
    assert status == 0 and re.search(r"^rows +60$", out, re.M)


def test_rollup_folds_hours_once_and_stats_show_what_the_rollups_cover(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    witness.execute("UPDATE executions SET created_at = datetime(created_at, '-2 hours')")
    witness.commit()
    status, out, _ = run("rollup", "--db", str(db_path), capsys=capsys)
    assert status == 0 and out.startswith("rolled up 60 executions in ")
    status, out, _ = run("rollup", "--db", str(db_path), capsys=capsys)
    assert status == 0 and out.startswith("rolled up 0 executions in 0 steps")
    status, out, _ = run("stats", "--db", str(db_path), "--format", "json", capsys=capsys)
    stats = json.loads(out)
    first, last = witness.execute(
        "SELECT strftime('%Y-%m-%d %H:00:00', MIN(created_at)), "
        "strftime('%Y-%m-%d %H:00:00', MAX(created_at)) FROM executions").fetchone()
    assert stats["rollup_executions"] == 60
    assert (stats["rollup_first_hour"], stats["rollup_last_hour"]) == (first, last)
    assert stats["rollup_counted_before"] > last and stats["purged_before"] is None


def test_rollup_keeps_and_forgets_the_days_of_a_zone(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    witness.execute("UPDATE executions SET created_at = datetime(created_at, '-3 days')")
    witness.commit()
    status, out, _ = run("rollup", "--db", str(db_path), "--zone", "Asia/Kolkata", "--zone",
                         "America/Los_Angeles", capsys=capsys)
    assert status == 0
    assert out.splitlines()[-1] == "days kept in America/Los_Angeles, Asia/Kolkata"
    days = witness.execute("SELECT zone, SUM(executions) FROM telemetry_orm_zone_days "
                           "GROUP BY zone ORDER BY zone").fetchall()
    assert [zone for zone, _ in days] == ["America/Los_Angeles", "Asia/Kolkata"]
    status, out, _ = run("rollup", "--db", str(db_path), "--forget-zone", "Asia/Kolkata",
                         capsys=capsys)
    assert status == 0 and out.splitlines()[-1] == "days kept in America/Los_Angeles"
    assert witness.execute("SELECT COUNT(*) FROM telemetry_orm_zone_days "
                           "WHERE zone = 'Asia/Kolkata'").fetchone()[0] == 0
    status, _, err = run("rollup", "--db", str(db_path), "--zone", "Mars/Olympus",
                         capsys=capsys)
    assert status == 2 and "--zone" in err and "Mars/Olympus" in err


# --- export -------------------------------------------------------------------------


def test_export_csv_to_stdout_has_every_column_of_every_row(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run("export", "--db", str(db_path), capsys=capsys)
    assert status == 0
    table = list(csv.reader(io.StringIO(out)))
    # Every column, the labels (none here), then the export format's version.
    assert table[0] == [*COLUMN_NAMES, "labels", "export_version"]
    wanted = witness.execute("SELECT * FROM executions ORDER BY created_at, id").fetchall()
    assert table[1:] == [["" if v is None else str(v) for v in row] + ["{}", "3"]
                         for row in wanted]


def test_export_jsonl_to_a_file_with_a_time_range(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "export.jsonl"
    status, out, _ = run("export", "--db", str(db_path), "--format", "jsonl", "--since", "30d",
                         "--until", "7d", "--out", str(target), capsys=capsys)
    assert (status, out) == (0, "")
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    since, until = stamp(NOW - dt.timedelta(days=30)), stamp(NOW - dt.timedelta(days=7))
    wanted = witness.execute(
        "SELECT * FROM executions WHERE created_at >= ? AND created_at < ?"
        " ORDER BY created_at, id", (since, until)).fetchall()
    assert rows == [{**dict(row), "labels": {}, "export_version": 3} for row in wanted]
    assert len(rows) > 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "export.jsonl"]


def test_export_to_an_unwritable_place_fails_in_one_line(
    filled: PeeweeTelemetryStore, db_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, err = run("export", "--db", str(db_path), "--out",
                         str(tmp_path / "no" / "such" / "dir" / "x.csv"), capsys=capsys)
    assert status == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "no").exists()


class Sink(io.TextIOBase):
    """Counts what is written and keeps none of it."""

    def __init__(self) -> None:
        self.chars = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


def exported_peak(*argv: str) -> Tuple[int, int]:
    """Characters written and the peak of Python memory while exporting."""
    sink = Sink()
    tracemalloc.start()
    try:
        status = main(["export", *argv], out=sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 0
    return sink.chars, peak


def test_export_streams_with_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    make_seed_database(path)
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO executions (created_at, repo, event_type, model, conclusion, session_id)"
        " VALUES (?, 'acme/api', 'push', 'claude-sonnet-4-5', 'success', ?)",
        ((("2025-01-01 00:00:00" if i < 4000 else "2025-01-02 00:00:00"),
          f"session-{i:06d}-" + "x" * 60) for i in range(12_000)),
    )
    conn.commit()
    conn.close()
    db = ["--db", str(path), "--format", "jsonl"]
    exported_peak(*db, "--until", "2025-01-01")  # warm up: imports, caches
    small_chars, small_peak = exported_peak(*db, "--until", "2025-01-02")
    big_chars, big_peak = exported_peak(*db)
    assert big_chars > 2.9 * small_chars  # three times the rows went through ...
    # ... in the same memory: held rows would add about 4 MB
    assert big_peak < small_peak + 1_000_000, (small_peak, big_peak)


# --- demo ---------------------------------------------------------------------------


def test_demo_fills_a_new_database_and_prints_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "demo" / "telemetry.db"
    status, out, err = run("demo", "--db", str(path), "--rows", "300", capsys=capsys)
    assert (status, err) == (0, "")
    assert out.startswith(f"wrote 300 demo executions over the last 60 days to {path}\n")
    assert "\nTOTAL " in out
    assert "telemetry-orm report" in out
    conn = sqlite3.connect(path)
    oldest, newest, n, demo = conn.execute(
        "SELECT MIN(created_at), MAX(created_at), COUNT(*), SUM(delivery_id LIKE 'demo-%')"
        " FROM executions").fetchone()
    conn.close()
    assert n == demo == 300
    # The demo spreads its rows over the 60 days before this machine's clock.
    now = dt.datetime.now(UTC)
    days_ago = [stamp(now - dt.timedelta(days=d)) for d in (60.01, 30, -0.01)]
    assert days_ago[0] <= oldest < days_ago[1] < newest <= days_ago[2]


def test_demo_refuses_a_database_with_real_telemetry(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, err = run("demo", "--db", str(db_path), "--rows", "10", capsys=capsys)
    assert status == 1
    assert "not demo data" in err and str(db_path) in err
    assert count(witness) == 60


# --- The original store's files ------------------------------------------------------


def test_commands_work_on_a_typescript_store_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "telemetry.db"
    make_seed_database(path, rows=12)
    for argv in (["report", "--format", "json"], ["stats", "--format", "json"], ["export"]):
        status, out, err = run(*argv, "--db", str(path), capsys=capsys)
        assert (status, err) == (0, ""), argv
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0  # untouched by reading
    conn.close()
    status, out, _ = run("report", "--db", str(path), "--format", "json", capsys=capsys)
    assert json.loads(out)["totals"]["executions"] == 12
    status, out, _ = run("purge", "--db", str(path), "--days", "0", "--dry-run", capsys=capsys)
    assert status == 0 and out.startswith("would delete ")


# --- As a program ---------------------------------------------------------------------




def test_python_m_telemetry_orm_reports_as_json(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path, tmp_path: Path
) -> None:
    done = program("report", "--db", str(db_path), "--format", "json", "--since", "1000d",
                   cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout)["totals"]["executions"] == count(witness)


def test_python_m_telemetry_orm_exit_codes(tmp_path: Path) -> None:
    done = program("report", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        f"telemetry-orm: error: {os.path.join('.', 'data', 'telemetry.db')}: no such database "
        "file (give --db PATH or set TELEMETRY_DB_PATH)\n"
    )
    assert not (tmp_path / "data").exists()
    done = program("report", "--since", "yesterdayish", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("usage: ")
    done = program("--help", cwd=tmp_path)
    assert done.returncode == 0 and "report" in done.stdout and "demo" in done.stdout


# -- hardening: outputs never overwrite the database, usage errors are exit 2 ----


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("spelling", ["same", "relative", "symlink", "hardlink", "url", "wal",
                                      "shm"])
def test_export_refuses_to_write_over_the_database_by_any_spelling(
        filled: PeeweeTelemetryStore, db_path: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        spelling: str) -> None:
    filled.checkpoint()
    monkeypatch.chdir(db_path.parent)
    db = str(db_path)
    out = {"same": db, "relative": db_path.name, "wal": f"{db}-wal", "shm": f"{db}-shm",
           "url": db}[spelling] if spelling not in ("symlink", "hardlink") else None
    if spelling == "symlink":
        (tmp_path / "link.csv").symlink_to(db_path)
        out = str(tmp_path / "link.csv")
    if spelling == "hardlink":
        os.link(db_path, tmp_path / "hard.csv")
        out = str(tmp_path / "hard.csv")
    assert out is not None
    if spelling == "url":
        db = f"sqlite:///{db}"
    before = {p: _digest(p) for p in db_path.parent.iterdir() if p.is_file()}
    status, _, err = run("export", "--db", db, "--out", out, capsys=capsys)
    assert status == 2, err
    assert "is the database file" in err and err.count("error:") == 1
    assert {p: _digest(p) for p in db_path.parent.iterdir() if p.is_file()} == before


def test_export_writes_into_a_fifo_and_follows_a_symlink(
        filled: PeeweeTelemetryStore, db_path: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: List[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    status, _, err = run("export", "--db", str(db_path), "--out", str(fifo), capsys=capsys)
    reader.join(timeout=30)
    assert status == 0, err
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert got and got[0].count(b"\n") == 61  # header and 60 rows
    target = tmp_path / "real.csv"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert run("export", "--db", str(db_path), "--out", str(link), capsys=capsys)[0] == 0
    assert link.is_symlink() and target.read_text().count("\n") == 61
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # an existing file keeps its mode


def test_a_new_export_file_gets_the_umask_mode(
        filled: PeeweeTelemetryStore, db_path: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    old = os.umask(0o027)
    try:
        assert run("export", "--db", str(db_path), "--out", str(tmp_path / "n.csv"),
                   capsys=capsys)[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "n.csv").stat().st_mode) == 0o640


@pytest.mark.parametrize("argv", [
    ["report", "--since", "999999999d"],
    ["report", "--since", "0001-01-01T00:00:00+05:00"],
    ["report", "--since", "9999-12-31T23:59:59-05:00"],
    ["report", "--repo", ""],
    ["report", "--since", "2025-02-01", "--until", "2025-01-01"],
    ["migrate", "--from", "x.db", "--to", "y.db", "--batch-size", "99999999999999999999"],
    ["purge", "--days", "1e400"],
], ids=["huge-relative", "before-year-1", "after-9999", "empty-repo", "until-before-since",
        "huge-batch", "infinite-days"])
def test_bad_arguments_are_usage_errors_without_traceback(
        filled: PeeweeTelemetryStore, db_path: Path, argv: List[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(*argv, "--db", str(db_path), capsys=capsys) if argv[0] != "migrate" \
        else run(*argv, capsys=capsys)
    assert status == 2, err
    assert "Traceback" not in err and "usage:" in err and "error:" in err


def test_purge_with_a_huge_retention_deletes_nothing(
        filled: PeeweeTelemetryStore, db_path: Path, witness: sqlite3.Connection,
        capsys: pytest.CaptureFixture[str]) -> None:
    future = filled.record({"repo": "a/b", "event_type": "e", "model": "m",
                            "conclusion": "success"})
    witness.execute("UPDATE executions SET created_at = '2999-01-01 00:00:00' WHERE id = ?",
                    (future,))
    witness.commit()
    status, out, err = run("purge", "--db", str(db_path), "--days", "99999999", capsys=capsys)
    assert (status, out) == (0, "deleted 0 executions older than 1e+08 days\n"), err
    assert count(witness) == 61


def test_export_into_a_closed_pipe_is_quiet(filled: PeeweeTelemetryStore, db_path: Path) -> None:
    command = f"{sys.executable} -m telemetry_orm export --db {db_path} | head -1"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("id,created_at")
    assert done.stderr == ""


def test_a_truncate_checkpoint_blocked_by_a_reader_says_so(
        filled: PeeweeTelemetryStore, db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reader = sqlite3.connect(db_path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM executions").fetchone()
    filled.record({"repo": "a/b", "event_type": "e", "model": "m", "conclusion": "success"})
    try:
        started = time.monotonic()
        status, out, err = run("checkpoint", "--db", str(db_path), "--truncate", capsys=capsys)
        assert time.monotonic() - started < 30
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert status == 1 and out == ""
    assert "a reader kept the log from being truncated" in err and err.count("\n") == 1


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 600 KiB file system of its own (tmpfs): a disk that fills up."""
    with tmpfs(tmp_path / "tiny", "600k") as folder:
        yield folder


def test_a_full_disk_is_named_not_the_failed_rollback(
        tiny_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run("demo", "--db", str(tiny_disk / "full.db"), "--rows", "5000",
                         capsys=capsys)
    assert status == 1
    assert "disk is full" in err and "no transaction is active" not in err, err
    assert err.count("\n") == 1


def test_report_fits_columns_and_a_pipe_or_file_gets_every_column(
        db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with create_telemetry_store(db_path) as store:
        for n, repo in enumerate(REPOS * 2):
            store.record({"repo": repo, "event_type": "push", "model": f"claude-model-{n % 2}",
                          "conclusion": "success", "input_tokens": 123_456_789,
                          "cache_read_tokens": 9_876_543_210, "duration_ms": 1_234_567,
                          "cost_usd": 1234.5})
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE executions SET created_at = '2026-05-01 12:00:00'")
    conn.close()
    argv = ("report", "--db", str(db_path), "--since", "2026-04-01", "--until", "2026-06-01",
            "--by", "model", "--by", "repo")
    monkeypatch.delenv("COLUMNS", raising=False)
    status, text, _ = run(*argv, capsys=capsys)
    assert status == 0
    header = text.split("\n")[2]
    assert re.split(r"\s{2,}", header.strip())[2:] == [
        "executions", "input", "output", "cache read", "cache write", "total tokens", "cost",
        "avg ms", "p95 ms", "failed"]
    assert len(header) > 120
    for width in (80, 120):
        monkeypatch.setenv("COLUMNS", str(width))
        for extra in ((), ("--chart",)):
            status, text, _ = run(*argv, *extra, capsys=capsys)
            assert status == 0
            assert max(len(line) for line in text.split("\n")) <= width, text
            assert "$1,234.50" in text and "Not shown in" in text
