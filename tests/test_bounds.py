"""Bounds of what the store accepts and writes: per-execution bounds on the
counts and the cost (so no sum overflows), and the years instants are
written at (four-digit, 1000 to 9998). Rows another program wrote past
either never stop a rollup, a purge or a report."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import sqlite3
from pathlib import Path
from typing import Any, Dict, List
from zoneinfo import ZoneInfo

import pytest
from support import Witness, make_seed_database, minimal

from telemetry_orm import (
    FIELD_NAMES,
    PeeweeTelemetryStore,
    TelemetryRecord,
    TelemetryValidationError,
    create_telemetry_store,
    report,
)
from telemetry_orm.checks import check_instant
from telemetry_orm.record import BOUNDS, MAX_COST_USD, MAX_COUNT
from telemetry_orm.schema import format_timestamp, parse_timestamp
from telemetry_orm.transfer import import_files, migrate

UTC = _dt.timezone.utc
#: A fixed, complete hour long past on any clock.
PAST = _dt.datetime(2024, 3, 10, 12, 15, tzinfo=UTC)


def stamp(witness: Witness, when: _dt.datetime) -> Any:
    """``when`` as the witness's engine takes ``created_at``: text with a
    four-digit year on SQLite (as SQLite's own ``datetime()`` writes it),
    a datetime on PostgreSQL."""
    if witness.kind == "sqlite":
        return when.replace(tzinfo=None).isoformat(" ")
    return when


def insert(witness: Witness, when: _dt.datetime, **values: Any) -> None:
    """Insert one row as another program would, through the witness."""
    row = {"repo": "acme/api", "event_type": "push", "model": "m", "conclusion": "success",
           **values}
    names = ", ".join(["created_at", *row])
    marks = ", ".join("?" * (len(row) + 1))
    witness.execute(f"INSERT INTO executions ({names}) VALUES ({marks})",
                    stamp(witness, when), *row.values())


def totals(store: PeeweeTelemetryStore, **options: Any) -> Dict[str, Any]:
    """The report's totals as a dict (executions, the token sums, the cost)."""
    metrics = report(store, group_by=[], **options).totals
    return {name: getattr(metrics, name) for name in (
        "executions", "input_tokens", "output_tokens", "cache_read_tokens",
        "cache_creation_tokens", "cost_usd", "avg_duration_ms")}


def state(witness: Witness) -> Dict[str, Any]:
    rows = witness.rows("SELECT counted_before, purged_before FROM telemetry_orm_rollup_state")
    return rows[0] if rows else {}


# --- Counts and costs ------------------------------------------------------------


def test_rows_past_the_bounds_count_as_the_bound_and_retention_goes_on(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    """Two rows of 2**63 - 1 tokens in one hour (written by another program
    or by hand) once stopped every rollup and purge with an overflow."""
    for _ in range(2):
        insert(any_witness, PAST, input_tokens=2**63 - 1, output_tokens=-(2**63),
               cache_read_tokens=5, duration_ms=2**63 - 1, cost_usd=1e300)
    insert(any_witness, PAST, input_tokens=7, output_tokens=3, duration_ms=10, cost_usd=0.5)
    # Each bounded value counts as its bound, a negative one as 0.
    expected = {"executions": 3, "input_tokens": 2 * MAX_COUNT + 7, "output_tokens": 3,
                "cache_read_tokens": 10, "cache_creation_tokens": 0,
                "cost_usd": 2 * MAX_COST_USD + 0.5,
                "avg_duration_ms": pytest.approx((2 * MAX_COUNT + 10) / 3)}

    assert totals(any_store) == expected  # from the rows
    assert any_store.rollup().rows == 3
    assert totals(any_store) == expected  # from the rollups
    assert any_store.purge_older_than(1) == 3
    assert any_witness.count() == 0
    assert totals(any_store) == expected  # from the rollups alone
    sums = any_witness.rows("SELECT SUM(executions) AS n, SUM(input_tokens) AS i, "
                            "SUM(output_tokens) AS o, SUM(duration_ms) AS d "
                            "FROM telemetry_orm_rollups")[0]
    assert (sums["n"], sums["i"], sums["o"], sums["d"]) == (
        3, 2 * MAX_COUNT + 7, 3, 2 * MAX_COUNT + 10)
    # Later rows fold and purge as usual.
    insert(any_witness, PAST, input_tokens=1)
    assert any_store.rollup().rows == 1
    assert any_store.purge_older_than(1) == 1


def test_a_value_past_its_bound_is_refused_at_every_entry_point(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    for name, bound in BOUNDS.items():
        past = bound * 2 if isinstance(bound, float) else bound + 1
        with pytest.raises(TelemetryValidationError) as caught:
            store.record(minimal(**{name: past}))
        assert caught.value.field == name
        with pytest.raises(TelemetryValidationError) as caught:
            store.record_many([minimal(), minimal(**{name: past})])
        assert (caught.value.field, caught.value.index) == (name, 1)
        with store.background() as recorder, pytest.raises(TelemetryValidationError):
            recorder.record(minimal(**{name: past}))
    with pytest.raises(TelemetryValidationError) as caught:
        TelemetryRecord.from_usage({"input_tokens": MAX_COUNT + 1, "output_tokens": 1},
                                   repo="acme/api", event_type="push", model="m",
                                   conclusion="success", cost_usd=0.0)
    assert caught.value.field == "input_tokens"
    message = {"subtype": "success", "is_error": False, "duration_ms": 5, "num_turns": 1,
               "total_cost_usd": 0.1, "session_id": "s",
               "usage": {"input_tokens": 1, "output_tokens": MAX_COUNT + 1}}
    with pytest.raises(TelemetryValidationError) as caught:
        TelemetryRecord.from_agent_result(message, repo="acme/api", event_type="push",
                                          model="m")
    assert caught.value.field == "output_tokens"
    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 0
    # The bounds themselves are accepted, and kept exactly.
    row_id = store.record(minimal(**BOUNDS))
    row = witness.execute(f"SELECT {', '.join(BOUNDS)} FROM executions WHERE id = ?",
                          (row_id,)).fetchone()
    assert tuple(row) == tuple(BOUNDS.values())


# --- Instants ----------------------------------------------------------------------


def test_instants_are_written_with_four_digit_years_and_checked_against_the_range() -> None:
    assert format_timestamp(_dt.datetime(657, 12, 24, 5, 44, 15)) == "0657-12-24 05:44:15"
    assert format_timestamp(_dt.datetime(1, 1, 1)) == "0001-01-01 00:00:00"
    # What an earlier version wrote unpadded reads as the year it meant.
    assert parse_timestamp("657-12-24 05:44:15") == _dt.datetime(657, 12, 24, 5, 44, 15,
                                                                 tzinfo=UTC)
    for good in (_dt.datetime(1000, 1, 1), _dt.datetime(9998, 12, 31, 23, 59, 59, 999999)):
        assert check_instant("created_at", good) == good.replace(tzinfo=UTC)
    for bad in (_dt.datetime(999, 12, 31, 23, 59, 59), _dt.datetime(9999, 1, 1)):
        with pytest.raises(TelemetryValidationError, match="1000-01-01 00:00:00 to "
                                                           "9998-12-31 23:59:59 UTC"):
            check_instant("created_at", bad)


def test_purges_reaching_before_year_1000_delete_nothing_and_all_keeps_working(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    """``purge --days 500000`` once wrote ``purged_before='657-…'`` (and
    800000 days raised); a row dated 0999 written by another program
    stopped the first rollup."""
    insert(any_witness, _dt.datetime(999, 1, 1, tzinfo=UTC), input_tokens=11)
    insert(any_witness, PAST, input_tokens=5)
    assert any_store.rollup().rows == 2
    assert state(any_witness)["counted_before"] is not None
    for days in (500_000, 800_000, 10**7):
        assert any_store.count_older_than(days) == 0
        assert any_store.purge_older_than(days) == 0
    assert state(any_witness)["purged_before"] is None
    assert any_witness.count() == 2
    assert totals(any_store)["input_tokens"] == 16
    assert any_store.rollup().rows == 0

    # A cutoff inside the range (in the 15th century on any clock this
    # code meets) deletes the row of year 999, counted in the rollups.
    assert any_store.count_older_than(200_000) == 1
    assert any_store.purge_older_than(200_000) == 1
    purged = state(any_witness)["purged_before"]
    assert isinstance(purged, str) and len(purged.split("-")[0]) == 4, purged
    assert 1000 < parse_timestamp(purged).year < 1600
    assert totals(any_store)["input_tokens"] == 16
    assert totals(any_store, since=_dt.datetime(2000, 1, 1))["input_tokens"] == 5
    assert any_store.purge_older_than(1) == 1
    assert totals(any_store)["executions"] == 2


def test_a_state_an_older_version_wrote_unpadded_is_read(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    insert(any_witness, PAST, input_tokens=5)
    any_store.rollup()
    any_witness.execute("UPDATE telemetry_orm_rollup_state SET purged_before = ?",
                        "657-12-24 05:44:15")
    assert totals(any_store)["input_tokens"] == 5
    assert any_store.rollup().rows == 0
    assert any_store.purge_older_than(1) == 1
    assert totals(any_store)["input_tokens"] == 5


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Pacific/Kiritimati"])
def test_a_row_at_the_end_of_year_9999_leaves_reports_working(
        any_store: PeeweeTelemetryStore, any_witness: Witness, zone: str) -> None:
    """One such row once broke every report outside UTC when rollups existed,
    and any report whose range began in the last hour of year 9999."""
    insert(any_witness, PAST, input_tokens=5)
    assert any_store.rollup().rows == 1
    insert(any_witness, _dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), input_tokens=7)
    for since in (_dt.datetime(9999, 12, 1, tzinfo=UTC),
                  _dt.datetime(9999, 12, 31, 23, 30, tzinfo=UTC)):
        for group_by in ([], ["day"], ["month"], ["repo"]):
            for p95 in (True, False):
                found = report(any_store, tz=zone, since=since, group_by=group_by, p95=p95)
                assert (found.totals.executions, found.totals.input_tokens) == (1, 7)
    found = report(any_store, tz=zone, until=_dt.datetime(2025, 1, 1, tzinfo=UTC))
    assert (found.totals.executions, found.totals.input_tokens) == (1, 5)
    # Over all time: the zone's offsets are looked up for the years that
    # hold rows, not the eight thousand between (that took minutes).
    for use_rollups in (True, False):
        found = report(any_store, tz=zone, group_by=["day"], use_rollups=use_rollups)
        assert (found.totals.executions, found.totals.input_tokens) == (2, 12)
        local = PAST.astimezone(ZoneInfo(zone)).date().isoformat()
        assert found.rows[0].keys == {"day": local}
        assert found.rows[0].metrics.input_tokens == 5


def export_lines() -> List[Dict[str, Any]]:
    """Rows as ``export`` writes them: in range, out of range, past a bound."""
    base = TelemetryRecord.from_mapping(minimal()).as_dict()
    return [
        {"id": 1, "created_at": "2024-03-10 12:00:00", **base},
        {"id": 2, "created_at": "0500-06-01 00:00:00", **base},
        {"id": 3, "created_at": "0999-12-31 23:59:59", **base},
        {"id": 4, "created_at": "9999-01-01 00:00:00", **base},
        {"id": 5, "created_at": "2024-03-10 12:00:00", **base, "input_tokens": MAX_COUNT + 1},
        {"id": 6, "created_at": "1000-01-01 00:00:00", **base},
        {"id": 7, "created_at": "9998-12-31 23:59:59", **base},
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_imports_refuse_instants_out_of_range_and_values_past_a_bound(
        tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"export.{fmt}"
    rows = export_lines()
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        with path.open("w", newline="") as out:
            writer = csv.DictWriter(out, ["id", "created_at", *FIELD_NAMES])
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in row.items()}
                             for row in rows)
    db = tmp_path / "t.db"
    with create_telemetry_store(db) as store:
        result = import_files(fmt, [path], store)
    skipped = dict(result.skipped)
    assert result.imported == 3 and result.skipped_count == 4, result.summary()
    for line in (3, 4, 5):  # the header or none is line 1: rows 2-4 are lines 3-5 in CSV
        where = f"{path}:{line if fmt == 'csv' else line - 1}"
        assert skipped[where].startswith("created_at: not a timestamp in range"), skipped
    where = f"{path}:{6 if fmt == 'csv' else 5}"
    assert skipped[where].startswith("input_tokens: must be an integer <= 10**12"), skipped
    conn = sqlite3.connect(db)
    stored = [r[0] for r in conn.execute("SELECT created_at FROM executions ORDER BY id")]
    newest = conn.execute("SELECT MAX(created_at) FROM executions").fetchone()[0]
    conn.close()
    assert stored == ["2024-03-10 12:00:00", "1000-01-01 00:00:00", "9998-12-31 23:59:59"]
    assert newest == "9998-12-31 23:59:59"


def transcript_line(session: str, message: str, when: str, usage: List[int]) -> str:
    return json.dumps({
        "type": "assistant", "timestamp": when, "sessionId": session, "version": "2.0.1",
        "cwd": "/nowhere/acme/web", "requestId": f"r-{message}",
        "message": {"id": message, "model": "sonnet", "role": "assistant", "usage": dict(zip(
            ("input_tokens", "output_tokens", "cache_read_input_tokens",
             "cache_creation_input_tokens"), usage, strict=True))}})


def test_claude_code_import_refuses_instants_out_of_range_and_sums_past_a_bound(
        tmp_path: Path) -> None:
    path = tmp_path / "projects" / "p" / "s.jsonl"
    path.parent.mkdir(parents=True)
    half = MAX_COUNT // 2 + 1
    path.write_text("\n".join([
        transcript_line("ok", "m1", "2024-03-10T12:00:00Z", [1, 2, 0, 0]),
        transcript_line("ok", "m2", "0500-06-01T00:00:00Z", [1, 2, 0, 0]),
        transcript_line("ok", "m3", "9999-06-01T00:00:00Z", [1, 2, 0, 0]),
        transcript_line("huge", "m4", "2024-03-10T12:00:00Z", [half, 1, 0, 0]),
        transcript_line("huge", "m5", "2024-03-10T12:00:01Z", [half, 1, 0, 0]),
        transcript_line("ok", "m6", "2024-03-10T12:00:02Z", [MAX_COUNT + 1, 1, 0, 0]),
    ]) + "\n")
    db = tmp_path / "t.db"
    with create_telemetry_store(db) as store:
        result = import_files("claude-code", [path.parent.parent], store)
    skipped = dict(result.skipped)
    assert skipped[f"{path}:2"].startswith("timestamp: not an ISO 8601 time in range")
    assert skipped[f"{path}:3"].startswith("timestamp: not an ISO 8601 time in range")
    assert skipped[f"{path}:6"].startswith(
        "message.usage.input_tokens: not a whole number from 0 to 10**12")
    assert any("session huge" in why and "input_tokens: must be an integer <= 10**12" in why
               for why in skipped.values()), skipped
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT session_id, created_at, input_tokens FROM executions").fetchall()
    conn.close()
    assert rows == [("ok", "2024-03-10 12:00:00", 1)]


def test_migrate_refuses_rows_out_of_range_and_past_a_bound(tmp_path: Path) -> None:
    source = tmp_path / "original.db"
    make_seed_database(source, rows=3)
    conn = sqlite3.connect(source)
    conn.execute("UPDATE executions SET created_at = '0999-12-31 23:59:59' WHERE id = 1")
    conn.execute("UPDATE executions SET input_tokens = ? WHERE id = 2", (2**63 - 1,))
    conn.commit()
    conn.close()
    target = tmp_path / "t.db"
    result = migrate(source, target)
    assert (result.copied, result.invalid_count) == (1, 2)
    reasons = dict(result.invalid)
    assert reasons[1].startswith("created_at: not a timestamp in range ('0999-12-31 23:59:59')")
    assert reasons[2].startswith("input_tokens: must be an integer <= 10**12")
    conn = sqlite3.connect(target)
    assert [r[0] for r in conn.execute("SELECT input_tokens FROM executions")] == [102]
    conn.close()


def test_a_created_at_that_is_no_time_leaves_zone_reports_working(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    """A hand edit on SQLite (text that is no time) once failed every report
    outside UTC; such a row has no day, and sorts last."""
    witness.executemany(
        "INSERT INTO executions (created_at, repo, event_type, model, conclusion, input_tokens)"
        " VALUES (?, 'acme/api', 'push', 'm', 'success', ?)",
        [("2019-01-01 12:00:00", 1), ("yesterday", 2)])
    witness.commit()
    for use_rollups in (True, False):
        found = report(store, tz="America/New_York", group_by=["day"], use_rollups=use_rollups)
        assert [(row.keys["day"], row.metrics.input_tokens) for row in found.rows] == [
            ("2019-01-01", 1), (None, 2)]


def test_a_rerun_migration_recognises_a_row_an_earlier_version_tracked_unpadded(
        tmp_path: Path) -> None:
    """An earlier version tracked a source row of year 657 as '657-…'; the
    stamp is now '0657-…' and must still match, not stop the migration as
    "not the file copied before"."""
    source = tmp_path / "original.db"
    make_seed_database(source, rows=2)
    target = tmp_path / "t.db"
    assert migrate(source, target).copied == 2
    conn = sqlite3.connect(source)
    conn.execute("UPDATE executions SET created_at = '0657-12-24 05:44:15' WHERE id = 1")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(target)
    conn.execute("UPDATE telemetry_orm_migrated SET source_created_at = '657-12-24 05:44:15'"
                 " WHERE source_id = 1")
    conn.commit()
    conn.close()
    result = migrate(source, target)
    assert (result.copied, result.already_copied, result.invalid_count) == (0, 2, 0)
