"""The pytest plugin, run in a separate pytest session through ``pytester``."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import pytest

import telemetry_orm

pytest_plugins = ["pytester"]

# Where telemetry_orm is imported from (this checkout, or site-packages).
ROOT = Path(telemetry_orm.__file__).resolve().parent.parent
PLUGIN = "telemetry_orm.pytest_plugin"

APP_TESTS = '''
import sqlite3

from telemetry_orm import TelemetryRecord


def test_store_is_fresh_and_on_a_file(telemetry_store, tmp_path):
    path = telemetry_store.path
    assert path != ":memory:" and not path.startswith(str(tmp_path))
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 0
    conn.close()


def test_execution_factory_writes_into_the_store(telemetry_store, execution_factory):
    row = execution_factory(repo="acme/api", conclusion="failure")
    execution_factory.create_batch(3, repo="acme/web")
    conn = sqlite3.connect(telemetry_store.path)
    rows = conn.execute("SELECT id, repo, conclusion FROM executions ORDER BY id").fetchall()
    conn.close()
    assert rows[0] == (row.id, "acme/api", "failure")
    assert [r[1] for r in rows[1:]] == ["acme/web"] * 3


def test_my_app_records_failures(telemetry_store, execution_factory):  # the README's example
    execution_factory.create_batch(3, conclusion="failure")
    assert telemetry_store.report(group_by=[]).totals.failed == 3


def test_record_factory_builds_valid_records(telemetry_record_factory):
    record = telemetry_record_factory(model="claude-haiku-4-5")
    assert isinstance(record, TelemetryRecord)
    assert record.model == "claude-haiku-4-5"
'''


@pytest.fixture
def session(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # A subprocess session must import this checkout of telemetry_orm.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")])))
    return pytester


def test_fixtures_give_a_store_and_the_factories(session: pytest.Pytester) -> None:
    session.makepyfile(test_app=APP_TESTS)
    result = session.runpytest("-p", PLUGIN)
    result.assert_outcomes(passed=4)


APP_DATABASE_TESTS = '''
import sqlite3

import peewee
import pytest

db = peewee.DatabaseProxy()  # the application's, initialized by its tests


class Order(peewee.Model):
    name = peewee.TextField()

    class Meta:
        database = db
        table_name = "app_orders"


@pytest.fixture
def app_db(tmp_path):
    database = peewee.SqliteDatabase(str(tmp_path / "app.db"), pragmas={"journal_mode": "wal"})
    db.initialize(database)
    database.create_tables([Order])
    yield database
    # The store was closed first and left the database open.
    assert not database.is_closed()
    database.close()


RUN = {"repo": "acme/api", "event_type": "push", "model": "m", "conclusion": "success"}


def test_a_store_on_the_apps_database_joins_its_transactions(app_db, telemetry_store_for):
    store = telemetry_store_for(db)
    with pytest.raises(ZeroDivisionError), db.atomic():
        Order.create(name="x")
        store.record(RUN)
        1 / 0
    with db.atomic():
        Order.create(name="y")
        store.record(RUN, key="delivery-1")
    plain = sqlite3.connect(app_db.database)
    assert plain.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 1
    assert plain.execute("SELECT COUNT(*) FROM app_orders").fetchone()[0] == 1
    plain.close()


def test_each_test_gets_a_store_of_its_own(app_db, telemetry_store_for):
    store = telemetry_store_for(app_db)
    assert store.report().totals.executions == 0
'''


def test_a_fixture_makes_stores_on_the_apps_own_database(session: pytest.Pytester) -> None:
    session.makepyfile(test_app_db=APP_DATABASE_TESTS)
    result = session.runpytest("-p", PLUGIN)
    result.assert_outcomes(passed=2)


@pytest.mark.slow  # a whole pytest in a new process: seconds on a busy machine
def test_the_plugin_loads_without_factory_boy(session: pytest.Pytester) -> None:
    # A fresh process where "import factory" fails, blocked before the
    # plugin is loaded.
    session.makepyfile(
        block_factory="import sys\nsys.modules['factory'] = None\n",
        test_app=APP_TESTS,
    )
    result = session.runpytest_subprocess("-p", "block_factory", "-p", PLUGIN)
    result.assert_outcomes(passed=1, errors=3)
    assert "pip install factory-boy Faker" in result.stdout.str()


def test_the_entry_points_are_declared() -> None:
    config = configparser.ConfigParser()
    assert config.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    entry_points = config["options.entry_points"]
    assert f"{PLUGIN} = {PLUGIN}" in entry_points["pytest11"].strip().splitlines()
    assert "telemetry-orm = telemetry_orm.cli:main" in entry_points["console_scripts"]
