"""The command line, run in-process through ``main(argv)`` (and a few times as
``python -m telemetry_orm``); results checked through a plain sqlite3 connection."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import sqlite3
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, List, Tuple

import pytest
from support import make_seed_database

import telemetry_orm
import telemetry_orm.testing
from telemetry_orm import PeeweeTelemetryStore
from telemetry_orm.cli import main, parse_when
from telemetry_orm.factories import ExecutionFactory
from telemetry_orm.reports import METRICS
from telemetry_orm.schema import COLUMN_NAMES

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC).replace(microsecond=0)
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
    assert abs(since - (NOW - dt.timedelta(days=20))) < dt.timedelta(minutes=5)
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
    old = count(witness, "created_at < datetime('now', '-30 days')")
    status, out, _ = run("purge", "--db", str(db_path), "--days", "30", "--dry-run",
                         capsys=capsys)
    assert status == 0
    assert out == f"would delete {old} executions older than 30 days\n"
    assert count(witness) == 60


def test_purge_deletes_rows_older_than_days(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = count(witness, "created_at < datetime('now', '-30 days')")
    assert 0 < old < 60
    status, out, _ = run("purge", "--db", str(db_path), "--days", "30", capsys=capsys)
    assert status == 0
    assert out == f"deleted {old} executions older than 30 days\n"
    assert count(witness) == 60 - old
    assert count(witness, "created_at < datetime('now', '-30 days')") == 0


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
    assert status == 0 and "rows            60\n" in out


# --- export -------------------------------------------------------------------------


def test_export_csv_to_stdout_has_every_column_of_every_row(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run("export", "--db", str(db_path), capsys=capsys)
    assert status == 0
    table = list(csv.reader(io.StringIO(out)))
    assert table[0] == list(COLUMN_NAMES)
    wanted = witness.execute("SELECT * FROM executions ORDER BY created_at, id").fetchall()
    assert table[1:] == [["" if v is None else str(v) for v in row] for row in wanted]


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
    assert rows == [dict(row) for row in wanted]
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
    days_ago = [stamp(NOW - dt.timedelta(days=d)) for d in (60.01, 30, -0.01)]
    assert days_ago[0] <= oldest < days_ago[1] < newest <= days_ago[2]


def test_demo_refuses_a_database_with_real_telemetry(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, err = run("demo", "--db", str(db_path), "--rows", "10", capsys=capsys)
    assert status == 1
    assert "not demo data" in err and str(db_path) in err
    assert count(witness) == 60


def test_demo_without_factory_boy_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "factory", None)  # "import factory" now fails
    for name in ("factories", "demo"):
        monkeypatch.delitem(sys.modules, f"telemetry_orm.{name}", raising=False)
        monkeypatch.delitem(sys.modules, f"telemetry_orm.testing.{name}", raising=False)
        monkeypatch.delattr(telemetry_orm, name, raising=False)
        monkeypatch.delattr(telemetry_orm.testing, name, raising=False)
    path = tmp_path / "demo" / "telemetry.db"
    status, _, err = run("demo", "--db", str(path), capsys=capsys)
    assert status == 1
    assert "pip install 'telemetry_orm[testing]'" in err
    assert err.count("\n") == 1
    assert not path.parent.exists()


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


def program(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    package_root = str(Path(telemetry_orm.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.pop("TELEMETRY_DB_PATH", None)
    return subprocess.run([sys.executable, "-m", "telemetry_orm", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


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
