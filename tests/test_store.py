"""The store facade: the original store's behaviour list, then isolation,
threads, closing, time zones and logging."""

from __future__ import annotations

import datetime
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from unittest import mock

import pytest
from support import minimal

from telemetry_orm import (
    PeeweeTelemetryStore,
    StoreClosedError,
    TelemetryRecord,
    TelemetryStore,
    TelemetryValidationError,
    create_telemetry_store,
)
from telemetry_orm.schema import format_timestamp

FULL = dict(
    delivery_id="d-1", repo="acme/api", pr_number=42, event_type="pull_request.opened",
    provider="anthropic", model="claude-sonnet-4-5", input_tokens=1200, output_tokens=340,
    cache_read_tokens=50_000, cache_creation_tokens=2_000, duration_ms=61_000,
    cost_usd=0.0812, conclusion="success", session_id="sess-1", num_turns=7,
    stop_reason="end_turn",
)


# -- the original store's eight cases ------------------------------------------------


def test_record_inserts_a_row_with_every_field(store: PeeweeTelemetryStore,
                                               witness: sqlite3.Connection) -> None:
    row_id = store.record(TelemetryRecord(**FULL))
    row = witness.execute("SELECT * FROM executions WHERE id = ?", (row_id,)).fetchone()
    assert {k: row[k] for k in FULL} == FULL


def test_record_with_only_required_fields_gets_the_defaults(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    row_id = store.record(minimal())
    row = witness.execute("SELECT * FROM executions WHERE id = ?", (row_id,)).fetchone()
    assert row["provider"] == "anthropic"
    assert [row[c] for c in ("input_tokens", "output_tokens", "cache_read_tokens",
                             "cache_creation_tokens", "duration_ms", "cost_usd")] == [0] * 6
    assert [row[c] for c in ("delivery_id", "pr_number", "session_id", "num_turns",
                             "stop_reason")] == [None] * 5


def test_purge_zero_days_deletes_backdated_rows(store: PeeweeTelemetryStore,
                                                witness: sqlite3.Connection,
                                                pinned_clock: datetime.datetime) -> None:
    old = store.record(minimal())
    witness.execute("UPDATE executions SET created_at = datetime(?, '-1 day') WHERE id = ?",
                    (format_timestamp(pinned_clock), old,))
    witness.commit()
    assert store.purge_older_than(0) == 1
    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 0


def test_purge_90_days_keeps_recent_rows(store: PeeweeTelemetryStore,
                                         witness: sqlite3.Connection,
                                         pinned_clock: datetime.datetime) -> None:
    recent = store.record(minimal())
    old = store.record(minimal())
    witness.execute("UPDATE executions SET created_at = datetime(?, '-91 days') WHERE id = ?",
                    (format_timestamp(pinned_clock), old,))
    witness.execute("UPDATE executions SET created_at = datetime(?, '-89 days') WHERE id = ?",
                    (format_timestamp(pinned_clock), recent,))
    witness.commit()
    assert store.purge_older_than(90) == 1
    assert [r[0] for r in witness.execute("SELECT id FROM executions")] == [recent]


def test_checkpoint_runs_and_empties_the_log_into_the_file(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    for _ in range(20):
        store.record(minimal())
    store.checkpoint()
    busy, log_pages, done = witness.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and log_pages == done


def test_database_uses_wal_mode(store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    assert witness.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_connection_pragmas(store: PeeweeTelemetryStore) -> None:
    conn = store.database.connection()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000


def test_close_makes_later_calls_raise(store: PeeweeTelemetryStore) -> None:
    store.close()
    for call in (lambda: store.record(minimal()), lambda: store.purge_older_than(1),
                 store.checkpoint, lambda: store.count_older_than(1)):
        with pytest.raises(StoreClosedError, match="closed"):
            call()


def test_close_is_idempotent(store: PeeweeTelemetryStore) -> None:
    store.close()
    store.close()
    assert store.closed


def test_auto_checkpoint_once_per_thousand_writes(store: PeeweeTelemetryStore) -> None:
    with mock.patch.object(store, "checkpoint", wraps=store.checkpoint) as spy:
        for _ in range(999):
            store.record(minimal())
        assert spy.call_count == 0
        store.record(minimal())
        assert spy.call_count == 1
        for _ in range(1500):
            store.record(minimal())
        assert spy.call_count == 2


def test_failed_writes_are_not_counted_towards_the_checkpoint(
        store: PeeweeTelemetryStore) -> None:
    with mock.patch.object(store, "checkpoint", wraps=store.checkpoint) as spy:
        for _ in range(999):
            store.record(minimal())
        with pytest.raises(TelemetryValidationError):
            store.record(minimal(repo=""))
        assert spy.call_count == 0


def test_startup_runs_one_checkpoint(db_path: Path) -> None:
    with mock.patch.object(PeeweeTelemetryStore, "checkpoint", autospec=True) as spy:
        create_telemetry_store(db_path).close()
    assert spy.call_count == 1


# -- beyond the original -----------------------------------------------------------


def test_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "t.db"
    with create_telemetry_store(path):
        pass
    assert path.is_file()


def test_store_is_a_context_manager_and_an_instance_of_the_interface(db_path: Path) -> None:
    with create_telemetry_store(db_path) as store:
        assert isinstance(store, TelemetryStore)
        store.record(minimal())
    assert store.closed


def test_accepts_str_and_pathlike(tmp_path: Path) -> None:
    for path in (str(tmp_path / "s.db"), tmp_path / "p.db"):
        with create_telemetry_store(path) as store:
            assert store.record(minimal()) == 1


@pytest.mark.parametrize("bad", [None, 42, ""])
def test_refuses_a_non_path(bad: object) -> None:
    with pytest.raises(TelemetryValidationError, match="db_path"):
        create_telemetry_store(bad)  # type: ignore[arg-type]


def test_invalid_entry_writes_nothing(store: PeeweeTelemetryStore,
                                      witness: sqlite3.Connection) -> None:
    with pytest.raises(TelemetryValidationError, match="input_tokens"):
        store.record(minimal(input_tokens=-5))
    with pytest.raises(TelemetryValidationError, match="colour"):
        store.record(minimal(colour="blue"))
    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 0


def test_record_returns_increasing_ids_never_reused_after_delete(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    first = store.record(minimal())
    second = store.record(minimal())
    witness.execute("DELETE FROM executions WHERE id = ?", (second,))
    witness.commit()
    assert store.record(minimal()) == second + 1 > first


@pytest.mark.parametrize("days", [-1, -0.5, float("nan"), float("inf"), True, "90", None])
def test_purge_refuses_bad_days(store: PeeweeTelemetryStore, days: object) -> None:
    store.record(minimal())
    with pytest.raises(TelemetryValidationError) as caught:
        store.purge_older_than(days)  # type: ignore[arg-type]
    assert caught.value.field == "days"
    with pytest.raises(TelemetryValidationError):
        store.count_older_than(days)  # type: ignore[arg-type]


def test_purge_accepts_fractional_days(store: PeeweeTelemetryStore,
                                       witness: sqlite3.Connection,
                                       pinned_clock: datetime.datetime) -> None:
    a = store.record(minimal())
    b = store.record(minimal())
    witness.execute("UPDATE executions SET created_at = datetime(?, '-13 hours') WHERE id = ?",
                    (format_timestamp(pinned_clock), a,))
    witness.execute("UPDATE executions SET created_at = datetime(?, '-11 hours') WHERE id = ?",
                    (format_timestamp(pinned_clock), b,))
    witness.commit()
    assert store.count_older_than(0.5) == 1
    assert store.purge_older_than(0.5) == 1
    assert [r[0] for r in witness.execute("SELECT id FROM executions")] == [b]


def test_model_queries_through_peewee(store: PeeweeTelemetryStore) -> None:
    store.record(minimal(repo="acme/api", cost_usd=0.5))
    store.record(minimal(repo="acme/web", cost_usd=0.25))
    Execution = store.model
    rows = Execution.select().where(Execution.repo == "acme/web")
    assert [(r.repo, r.cost_usd) for r in rows] == [("acme/web", 0.25)]


def test_two_stores_are_isolated(tmp_path: Path) -> None:
    with create_telemetry_store(tmp_path / "a.db") as a, \
            create_telemetry_store(tmp_path / "b.db") as b:
        a.record(minimal(repo="only/a"))
        assert a.model is not b.model
        assert a.model._meta.database is a.database
        assert [r.repo for r in a.model.select()] == ["only/a"]
        assert b.model.select().count() == 0
        b.record(minimal(repo="only/b"))
        assert [r.repo for r in a.model.select()] == ["only/a"]


def test_two_memory_stores_are_isolated() -> None:
    with create_telemetry_store(":memory:") as a, create_telemetry_store(":memory:") as b:
        a.record(minimal())
        a.record(minimal())
        assert a.model.select().count() == 2
        assert b.model.select().count() == 0


def test_opening_a_second_store_does_not_rebind_the_first(tmp_path: Path) -> None:
    with create_telemetry_store(tmp_path / "a.db") as a:
        model, database = a.model, a.database
        with create_telemetry_store(tmp_path / "b.db"):
            pass
        assert a.model is model and model._meta.database is database


def test_memory_store_checkpoint_is_harmless_and_has_no_file(tmp_path: Path) -> None:
    with create_telemetry_store(":memory:") as store:
        store.checkpoint()
        assert store.record(minimal()) == 1
        assert store.purge_older_than(0) == 0


def test_memory_store_is_shared_by_its_threads() -> None:
    with create_telemetry_store(":memory:") as store:
        ids: list = []
        threads = [threading.Thread(target=lambda: ids.append(store.record(minimal())))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(ids) == [1, 2, 3, 4]
        assert store.model.select().count() == 4


def test_many_threads_record_on_one_file(store: PeeweeTelemetryStore,
                                         witness: sqlite3.Connection) -> None:
    errors: list = []
    ids: list = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        try:
            for i in range(250):
                ids.append(store.record(minimal(repo=f"t{n}/r", num_turns=i)))
        except Exception as exc:  # pragma: no cover - the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(ids)) == 2000
    counts = dict(witness.execute("SELECT repo, COUNT(*) FROM executions GROUP BY repo"))
    assert counts == {f"t{n}/r": 250 for n in range(8)}
    assert witness.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_close_closes_connections_of_other_threads(db_path: Path) -> None:
    store = create_telemetry_store(db_path)
    t = threading.Thread(target=lambda: store.record(minimal()))
    t.start()
    t.join()
    store.close()
    # With every connection closed, the last close checkpointed and removed the log.
    assert not Path(f"{db_path}-wal").exists()


# -- created_at is the database's UTC clock, whatever the local zone ---------------

_TZ_SCRIPT = r"""
import datetime, json, sqlite3, sys, time
from telemetry_orm import create_telemetry_store
path = sys.argv[1]
with create_telemetry_store(path) as store:
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    row_id = store.record({"repo": "tz/r", "eventType": "e", "model": "m", "conclusion": "ok"})
    after = datetime.datetime.now(datetime.timezone.utc)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO executions (repo, event_type, model, conclusion, created_at) "
                 "VALUES ('tz/old', 'e', 'm', 'ok', datetime('now', '-10 days', '+30 seconds'))")
    conn.commit()
    stored = conn.execute("SELECT created_at FROM executions WHERE id = ?", (row_id,)).fetchone()[0]
    print(json.dumps({
        "stored": stored, "before": before.strftime("%Y-%m-%d %H:%M:%S"),
        "after": after.strftime("%Y-%m-%d %H:%M:%S"),
        "offset_hours": -time.timezone / 3600,
        "would_purge_10": store.count_older_than(10),
        "would_purge_9": store.count_older_than(9),
    }))
"""


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "America/Adak", "UTC"])
def test_created_at_is_utc_in_any_time_zone(tmp_path: Path, zone: str) -> None:
    env = dict(os.environ, TZ=zone)
    out = subprocess.run([sys.executable, "-c", _TZ_SCRIPT, str(tmp_path / "tz.db")], env=env,
                         check=True, capture_output=True, text=True).stdout
    seen = json.loads(out)
    if zone != "UTC":
        assert seen["offset_hours"] != 0, "the child did not run in the requested zone"
    assert seen["before"] <= seen["stored"] <= seen["after"]
    assert len(seen["stored"]) == 19 and "T" not in seen["stored"]
    assert seen["would_purge_10"] == 0
    assert seen["would_purge_9"] == 1


# -- logging -----------------------------------------------------------------------


def test_logs_purge_counts_at_info_and_never_record_contents(
        db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="telemetry_orm")
    with create_telemetry_store(db_path) as store:
        store.record(minimal(repo="secret-owner/secret-repo", session_id="sess-secret"))
        store.purge_older_than(30)
    infos = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert any("purged 0" in r.getMessage() for r in infos)
    assert not any("secret" in r.getMessage() for r in caplog.records)
    assert any(r.levelno == logging.DEBUG and "checkpoint" in r.getMessage()
               for r in caplog.records)


def test_uses_a_given_logger(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("myapp.telemetry")
    caplog.set_level(logging.INFO, logger="myapp.telemetry")
    with create_telemetry_store(db_path, logger=logger) as store:
        store.purge_older_than(1)
    assert [r.name for r in caplog.records if "purged" in r.getMessage()] == ["myapp.telemetry"]
