"""The demo: its data needs nothing but the package, and it writes only into
a database of its own, once (``--append`` to add more)."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest
from support import digest, run_cli

import telemetry_orm
from telemetry_orm import create_telemetry_store
from telemetry_orm.demo import MODELS, REPOS, fill

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


run = run_cli


def rows_of(path: Path) -> List[Tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM executions ORDER BY id").fetchall()
    finally:
        conn.close()


def test_a_second_demo_run_is_refused_and_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "demo.db"
    status, _, err = run("demo", "--db", str(path), "--rows", "300", capsys=capsys)
    assert (status, err) == (0, "")
    before = digest(path)
    status, out, err = run("demo", "--db", str(path), "--rows", "300", capsys=capsys)
    assert (status, out) == (1, "")
    assert err == (f"telemetry-orm: error: {path}: already holds 300 demo executions, and "
                   "another run would double every figure; pass --append to add to them, or "
                   "give another --db PATH\n")
    assert digest(path) == before
    assert len(rows_of(path)) == 300


def test_demo_append_adds_new_rows_to_the_demo_data(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "demo.db"
    assert run("demo", "--db", str(path), "--rows", "300", capsys=capsys)[0] == 0
    status, out, err = run("demo", "--db", str(path), "--rows", "200", "--append",
                           capsys=capsys)
    assert (status, err) == (0, "")
    assert out.startswith(f"wrote 200 demo executions over the last 60 days to {path}\n")
    conn = sqlite3.connect(path)
    total, distinct = conn.execute(
        "SELECT COUNT(*), COUNT(DISTINCT delivery_id) FROM executions").fetchone()
    conn.close()
    assert total == distinct == 500  # other rows than the first run's, not the same again


def _foreign_file(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("version", [0, 3])
@pytest.mark.parametrize("append", [False, True])
def test_demo_refuses_another_programs_file_without_changing_a_byte(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], version: int, append: bool) -> None:
    path = tmp_path / "app.db"
    _foreign_file(path, version)
    before = digest(path)
    argv = ["demo", "--db", str(path), "--rows", "10"] + (["--append"] if append else [])
    status, out, err = run(*argv, capsys=capsys)
    assert (status, out) == (1, "")
    assert str(path) in err and err.count("\n") == 1
    assert "another" in err  # another program's tables, or another application's database
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal, no -shm
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version
    conn.close()


def test_demo_names_the_foreign_tables(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.db"
    _foreign_file(path, 0)
    status, _, err = run("demo", "--db", str(path), capsys=capsys)
    assert status == 1
    assert err == (f"telemetry-orm: error: {path}: holds tables of another program (users); "
                   "the demo writes only into a database of its own and has left this one "
                   "untouched: give it another --db PATH\n")


def test_demo_runs_without_factory_boy_or_faker(tmp_path: Path) -> None:
    # What a plain "pip install ." has: neither can be imported.
    code = ("import sys; sys.modules['factory'] = None; sys.modules['faker'] = None\n"
            "from telemetry_orm.cli import main\n"
            "sys.exit(main(['demo', '--db', 'demo.db', '--rows', '200']))")
    env = dict(os.environ)
    root = str(Path(telemetry_orm.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("wrote 200 demo executions")
    assert len(rows_of(tmp_path / "demo.db")) == 200


def test_demo_data_is_the_same_for_the_same_seed_and_realistic() -> None:
    def rows(seed: int) -> List[Tuple[object, ...]]:
        with create_telemetry_store(":memory:") as store:
            fill(store, 5000, now=NOW, seed=seed)
            cursor = store.database.execute_sql(
                "SELECT created_at, delivery_id, repo, model, input_tokens, output_tokens, "
                "cache_read_tokens, cache_creation_tokens, cost_usd, duration_ms, conclusion "
                "FROM executions ORDER BY id")
            return list(cursor.fetchall())

    first = rows(0)
    assert first == rows(0)
    assert first != rows(1)
    assert {r[2] for r in first} == set(REPOS) and {r[3] for r in first} == set(MODELS)
    assert min(str(r[0]) for r in first) >= "2025-12-31 12:00:00"
    assert max(str(r[0]) for r in first) <= "2026-03-01 12:00:00"
    # The shape of real agent runs (and of the README's sample): cache reads
    # dominate, a run costs cents, about one in seven does not succeed.
    n = len(first)
    cost = sum(float(r[8]) for r in first) / n
    cache_share = sum(int(r[6]) for r in first) / sum(sum(int(x) for x in r[4:8]) for r in first)
    failed = sum(r[10] != "success" for r in first) / n
    assert 0.05 < cost < 0.2, cost
    assert 0.75 < cache_share < 0.9, cache_share
    assert 0.1 < failed < 0.18, failed
    assert all(float(r[8]) > 0 for r in first)  # every demo model has a price
