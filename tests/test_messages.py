"""What the package says when something is wrong: the real cause, the path,
and what to do."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pytest
from support import Witness, app_database, digest, minimal, run_cli, tmpfs

import telemetry_orm
from telemetry_orm import (
    DatabaseError,
    StoreBusyError,
    create_telemetry_store,
)
from telemetry_orm.demo import fill
from telemetry_orm.schema import SCHEMA_VERSION

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.timezone.utc)


run = run_cli


# --- Schema versions -----------------------------------------------------------------


def test_another_programs_schema_version_is_not_called_newer(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    conn.execute("PRAGMA user_version = 42")
    conn.commit()
    conn.close()
    before = digest(path)
    for command in (["report"], ["stats"], ["export"], ["purge", "--days", "1"], ["rollup"]):
        status, _, err = run(*command, "--db", str(path), capsys=capsys)
        assert status == 1, command
        assert "upgrade" not in err and "newer" not in err, (command, err)
        assert str(path) in err and "another" in err, (command, err)
    with pytest.raises(DatabaseError, match="schema version 42 .*another (program|application)'s"):
        create_telemetry_store(path)
    assert digest(path) == before


def test_a_newer_version_of_our_own_table_asks_for_an_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.db"
    create_telemetry_store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(DatabaseError, match="newer than this telemetry_orm understands.*"
                                            "upgrade telemetry_orm"):
        create_telemetry_store(path)


# --- A full disk ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB file system of its own (tmpfs): a disk that fills up."""
    with tmpfs(tmp_path / "small", "2m") as folder:
        yield folder


def _nearly_full(folder: Path) -> Path:
    """2,000 rows in a store on ``folder``, then the disk filled up to 48 KiB:
    room to open the store, not to fold or delete the rows."""
    path = folder / "t.db"
    with create_telemetry_store(path) as store:
        fill(store, 2000, now=NOW)
        store.checkpoint(truncate=True)
    room = os.statvfs(folder)
    with open(folder / "filler", "wb") as filler:
        filler.write(b"x" * (room.f_bavail * room.f_frsize - 48 * 1024))
    return path


def _totals(path: Path) -> Tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT COUNT(*), SUM(input_tokens) FROM executions").fetchone()
        return int(rows[0]), int(rows[1])
    finally:
        conn.close()


@pytest.mark.parametrize("command", [["rollup"], ["purge", "--days", "1"]])
def test_a_full_disk_during_rollup_or_purge_is_named_and_nothing_is_lost(
        small_disk: Path, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    path = _nearly_full(small_disk)
    before = _totals(path)
    status, out, err = run(*command, "--db", str(path), capsys=capsys)
    assert (status, out) == (1, "")
    assert err.startswith(f"telemetry-orm: error: {path}: the disk is full"), err
    assert "nothing was lost" in err and "no transaction is active" not in err
    assert err.count("\n") == 1
    assert _totals(path) == before  # no row deleted unless counted: none at all here
    conn = sqlite3.connect(path)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "telemetry_orm_rollup_state" not in tables  # the rollup tables were rolled back too


def test_the_library_names_a_full_disk_too(small_disk: Path) -> None:
    path = _nearly_full(small_disk)
    with create_telemetry_store(path) as store, pytest.raises(DatabaseError) as caught:
        store.rollup()
    assert str(caught.value).startswith(f"{path}: the disk is full")
    assert "no transaction is active" not in str(caught.value)


# --- PostgreSQL: serialization failures ----------------------------------------------


def test_a_serialization_failure_is_not_reported_as_a_held_lock(pg_url: str) -> None:
    # The application's database runs at repeatable read: a row changed by
    # another transaction after this one's snapshot cannot be replaced.
    database = app_database(pg_url, options=r"-c default_transaction_isolation=repeatable\ read")
    store = create_telemetry_store(database)
    witness = Witness(pg_url)
    try:
        row = store.record(minimal(), key="delivery-1")
        with pytest.raises(StoreBusyError) as caught, database.atomic():
            database.execute_sql("SELECT COUNT(*) FROM executions").fetchone()  # the snapshot
            witness.execute("UPDATE executions SET num_turns = 9 WHERE id = ?", row)
            store.record(minimal(model="claude-haiku-4-5"), key="delivery-1", replace=True)
        message = str(caught.value)
        assert "serialization failure" in message and "retry" in message, message
        assert "write lock" not in message and "busy timeout" not in message
        stored = witness.scalar("SELECT model FROM executions WHERE id = ?", row)
        assert stored == minimal()["model"]  # the other transaction's row, not replaced
    finally:
        witness.close()
        store.close()
        database.close()


# --- --out ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["export"], ["report", "--format", "html"]])
def test_out_onto_a_dangling_symlink_names_the_real_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    path = tmp_path / "telemetry.db"
    with create_telemetry_store(path) as store:
        store.record(minimal())
    link = tmp_path / "out.csv"
    target = tmp_path / "gone" / "out.csv"
    link.symlink_to(target)
    status, out, err = run(*command, "--db", str(path), "--out", str(link), capsys=capsys)
    assert (status, out) == (1, "")
    assert err == (f"telemetry-orm: error: {link} (a link to {target}): no such folder "
                   f"{target.parent}\n")
    assert ".export-" not in err


# --- report: filters that match nothing ----------------------------------------------


@pytest.fixture
def demo_db(tmp_path: Path) -> Path:
    path = tmp_path / "telemetry.db"
    with create_telemetry_store(path) as store:
        fill(store, 500, now=dt.datetime.now(dt.timezone.utc))
    return path


def test_report_with_a_mistyped_model_names_the_models_there_are(
        demo_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = sqlite3.connect(demo_db)
    models = sorted(m for (m,) in conn.execute("SELECT DISTINCT model FROM executions"))
    conn.close()
    status, out, err = run("report", "--db", str(demo_db), "--model", "claude-sonet-4-5",
                           "--since", "90d", capsys=capsys)
    assert status == 0 and "\nTOTAL           0" in out
    assert err == ("telemetry-orm report: no executions with --model 'claude-sonet-4-5' in this "
                   "range; did you mean 'claude-sonnet-4-5'? the model values there: "
                   f"{', '.join(models)}\n")


def test_report_with_a_matching_filter_or_an_empty_range_says_only_what_is_true(
        demo_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run("report", "--db", str(demo_db), "--model", "claude-sonnet-4-5",
                         capsys=capsys)
    assert (status, err) == (0, "")
    status, _, err = run("report", "--db", str(demo_db), "--model", "claude-sonnet-4-5",
                         "--since", "2090-01-01", capsys=capsys)
    assert status == 0
    assert err == "telemetry-orm report: there are no executions in this range at all\n"


# --- A closed pipe -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["export", "report --by pr --by day --since 90d"])
def test_a_closed_pipe_ends_every_command_quietly_with_status_0(
        tmp_path: Path, command: str) -> None:
    path = tmp_path / "telemetry.db"
    with create_telemetry_store(path) as store:
        fill(store, 3000, now=dt.datetime.now(dt.timezone.utc))
    env = dict(os.environ)
    root = str(Path(telemetry_orm.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    # Far more than a pipe holds, so the writer meets the closed pipe.
    script = (f"{sys.executable} -m telemetry_orm {command} --db {path} | head -c 100; "
              'status=${PIPESTATUS[0]}; echo; echo "status $status"')
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.stderr == ""
    assert done.stdout.endswith("\nstatus 0\n"), done.stdout
