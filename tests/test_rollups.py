"""Rollups: history that outlives the purge. Every figure a report gives
from raw rows it gives the same after ``rollup()`` and a purge (p95 within
1 %), rows are counted exactly once however often and in whatever order
rollups, purges and late rows come, on both engines. Expected figures come
from the raw rows before they go, read by an independent connection."""

from __future__ import annotations

import datetime as dt
import math
import random
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import peewee
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import FIXED_NOW, Witness, app_database, minimal, place
from test_import import call, write_lines

from telemetry_orm import PeeweeTelemetryStore, create_telemetry_store, folding, rollups
from telemetry_orm.backends import sqlite as sqlite_backend
from telemetry_orm.backends.sqlite import SqliteBackend
from telemetry_orm.backends.upkeep import PURGE_CHUNK
from telemetry_orm.report_query import nearest_rank
from telemetry_orm.rollups import GAMMA, bucket, bucket_value, estimate
from telemetry_orm.sql import render
from telemetry_orm.tables import tables_of
from telemetry_orm.transfer import import_files

UTC = dt.timezone.utc
NOW = FIXED_NOW
# Rows are placed relative to NOW and the stores take it as "now": a purge's
# cutoff and a rollup's last hour fall at the same place on any day.
pytestmark = pytest.mark.usefixtures("pinned_clock")


def history(store: PeeweeTelemetryStore, witness: Witness, days: int, per_day: int,
            seed: int = 7) -> List[dt.datetime]:
    """Varied rows spread over the last ``days`` days; their instants."""
    rnd = random.Random(seed)
    instants = sorted(NOW - dt.timedelta(seconds=rnd.randrange(days * 86400))
                      for _ in range(days * per_day))
    entries = [minimal(
        repo=rnd.choice(["acme/api", "acme/web", "acme/ops"]),
        model=rnd.choice(["claude-sonnet-4-5", "claude-haiku-4-5"]),
        event_type=rnd.choice(["push", "pull_request.opened"]),
        conclusion=rnd.choices(["success", "failure", "timeout"], (8, 1, 1))[0],
        duration_ms=int(rnd.lognormvariate(10, 1)),
        input_tokens=rnd.randrange(10_000), output_tokens=rnd.randrange(2_000),
        cache_read_tokens=rnd.randrange(50_000), cache_creation_tokens=rnd.randrange(5_000),
        cost_usd=rnd.choice([0.0, round(rnd.random(), 6)]),
    ) for _ in instants]
    ids = store.record_many(entries)
    values = [(t.strftime("%Y-%m-%d %H:%M:%S") if witness.kind == "sqlite" else t, i)
              for t, i in zip(instants, ids, strict=True)]
    witness.executemany("UPDATE executions SET created_at = ? WHERE id = ?", values)
    return instants


def figures(store: PeeweeTelemetryStore, by: Sequence[str], **options: Any
            ) -> Dict[Tuple[Any, ...], Dict[str, Any]]:
    result = store.report(group_by=list(by), **options)
    rows = {tuple(r.keys.values()): r.metrics.as_dict() for r in result.rows}
    rows[("totals",)] = result.totals.as_dict()
    return rows


def assert_same(before: Dict[Tuple[Any, ...], Dict[str, Any]],
                after: Dict[Tuple[Any, ...], Dict[str, Any]]) -> None:
    assert before.keys() == after.keys()
    for key, old in before.items():
        new = after[key]
        for name, value in old.items():
            if value is None:
                assert new[name] is None, (key, name)
            elif name == "p95_duration_ms":
                assert abs(new[name] - value) <= 0.01 * value, (key, value, new[name])
            elif name == "avg_duration_ms":
                assert new[name] == pytest.approx(value, abs=0.1), (key, name)
            else:
                assert new[name] == value, (key, name, value, new[name])


BY = [("repo",), ("model",), ("month",), ("event_type",), ("conclusion",), ("provider",),
      ("repo", "model", "month"), ("month", "repo"), ()]
# Reports without p95, all time and from an hour inside a day (inside purged
# history the hour holding `since` counts whole: a whole hour keeps it exact).
LIGHT = [(by, since) for by in [("day",), ("week", "repo"), ("repo", "model"),
                                ("month", "event_type"), ()]
         for since in (None, (NOW - dt.timedelta(days=200, hours=5)).replace(
             minute=0, second=0))]
# Filters on the grouped column (the month tier answers), on another (it cannot).
FILTERED = [(("repo",), "repo", "acme/api"), ((), "model", "claude-haiku-4-5"),
            (("model",), "repo", "acme/web"), (("month",), "conclusion", "failure")]


def _table_names(witness: Witness) -> set:
    sql = ("SELECT name FROM sqlite_master WHERE type = 'table'" if witness.kind == "sqlite"
           else "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = "
           + ("DATABASE()" if witness.kind == "mysql" else "current_schema()"))
    return {r["name"] for r in witness.rows(sql)}


def test_the_tiers_of_an_earlier_version_give_way_to_tiers_built_from_the_hours(
        any_location: str, any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    """A store rolled up by an earlier version has its day and month tiers
    under other names, filled as rows came, and no record of what they
    hold: reports read the hours meanwhile, and the next rollup builds the
    tiers from the hours and drops the old ones, with the same figures."""
    history(any_store, any_witness, days=400, per_day=6)
    any_store.rollup()
    assert any_store.purge_older_than(90) > 0
    before = {by: figures(any_store, by, since=None) for by in BY}
    light = {(by, since): figures(any_store, by, since=since, p95=False) for by, since in LIGHT}
    any_store.close()
    # As an earlier version left it: the tiers under their old names.
    for new_name, old_name in (("telemetry_orm_daily", "telemetry_orm_rollup_days"),
                               ("telemetry_orm_monthly", "telemetry_orm_rollup_months"),
                               ("telemetry_orm_monthly_durations",
                                "telemetry_orm_rollup_month_durations")):
        any_witness.execute(f"ALTER TABLE {new_name} RENAME TO {old_name}")
    any_witness.execute("DROP TABLE telemetry_orm_rollup_tiers")
    if any_witness.kind == "sqlite":
        any_witness.conn.commit()
    with create_telemetry_store(any_location) as store:
        for by in BY:
            assert_same(before[by], figures(store, by, since=None))
        store.rollup()
        names = _table_names(any_witness)
        assert not names & {"telemetry_orm_rollup_days", "telemetry_orm_rollup_months",
                            "telemetry_orm_rollup_month_durations"}
        assert {"telemetry_orm_daily", "telemetry_orm_monthly",
                "telemetry_orm_monthly_durations", "telemetry_orm_rollup_tiers"} <= names
        # Built from the hours: a month's sums are its hours'.
        built = any_witness.scalar("SELECT built_before FROM telemetry_orm_rollup_tiers")
        assert int(any_witness.scalar("SELECT SUM(executions) FROM telemetry_orm_monthly")) == \
            int(any_witness.scalar(
                "SELECT SUM(executions) FROM telemetry_orm_rollups WHERE hour < ?", built))
        for by in BY:
            assert_same(before[by], figures(store, by, since=None))
        for by, since in LIGHT:
            assert_same(light[(by, since)], figures(store, by, since=since, p95=False))


def test_400_days_report_the_same_before_and_after_a_purge_at_90_days(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    history(any_store, any_witness, days=400, per_day=12)
    before = {by: figures(any_store, by, since=None) for by in BY}
    calculated = figures(any_store, ("model",), since=None, cost="calculated")
    light = {(by, since): figures(any_store, by, since=since, p95=False) for by, since in LIGHT}
    filtered = {(by, name, value): figures(any_store, by, since=None, **{name: value})
                for by, name, value in FILTERED}
    in_los_angeles = figures(any_store, ("month",), since=None, tz="America/Los_Angeles")
    rows = any_witness.count()
    expired = int(any_witness.scalar(
        "SELECT COUNT(*) FROM executions WHERE created_at < ?",
        (NOW - dt.timedelta(days=90)).strftime("%Y-%m-%d %H:%M:%S")))
    assert 0 < expired < rows

    assert any_store.purge_older_than(90) == expired  # nothing rolled up ahead: the purge does
    assert any_witness.count() == rows - expired
    for by in BY:
        assert_same(before[by], figures(any_store, by, since=None))
    assert_same(calculated, figures(any_store, ("model",), since=None, cost="calculated"))
    for (by, name, value), old in filtered.items():
        assert_same(old, figures(any_store, by, since=None, **{name: value}))
    assert_same(in_los_angeles,
                figures(any_store, ("month",), since=None, tz="America/Los_Angeles"))
    # The same again once everything is rolled up ahead of the reports.
    any_store.rollup()
    for by in BY:
        assert_same(before[by], figures(any_store, by, since=None))
    # Without p95 (charts), by day and week too: the day and month tiers.
    for by, since in LIGHT:
        assert_same(light[(by, since)], figures(any_store, by, since=since, p95=False))


def test_a_cost_adds_up_to_the_same_micro_dollar_from_rows_and_from_rollups(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    # Added up one by one these costs give 138.45580650000002 (rounded:
    # ...807), hour by hour 138.4558065 (...806): the exact sum is a half.
    hours = [[1.422825], [33.257859, 0.937689], [86.987851, 8.539371, 7.3102115]]
    start = NOW.replace(minute=0, second=0) - dt.timedelta(days=3)
    ids = [any_store.record(minimal(cost_usd=cost)) for costs in hours for cost in costs]
    instants = [start + dt.timedelta(hours=h, minutes=m)
                for h, costs in enumerate(hours) for m, _ in enumerate(costs)]
    any_witness.executemany("UPDATE executions SET created_at = ? WHERE id = ?", [
        (t.strftime("%Y-%m-%d %H:%M:%S") if any_witness.kind == "sqlite" else t, i)
        for t, i in zip(instants, ids, strict=True)])
    exact = sum(Fraction(str(cost)) for costs in hours for cost in costs)
    assert exact == Fraction("138.4558065")  # half a micro-dollar: to even, ...806
    rows = figures(any_store, ("repo",), since=None, use_rollups=False)
    assert rows[("acme/api",)]["cost_usd"] == rows[("totals",)]["cost_usd"] == 138.455806
    any_store.rollup()
    any_store.purge_older_than(1)
    assert any_witness.count() == 0
    assert figures(any_store, ("repo",), since=None) == rows
    assert figures(any_store, ("day",), since=None)[("totals",)]["cost_usd"] == 138.455806


def test_rollup_counts_each_row_once_however_often_it_runs_and_takes_late_rows(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    history(any_store, any_witness, days=30, per_day=40)
    first = any_store.rollup()
    assert first.rows > 0 and first.counted_before is not None
    assert any_store.rollup().rows == 0
    exact = figures(any_store, ("repo", "day"), since=None, use_rollups=False)
    assert_same(exact, figures(any_store, ("repo", "day"), since=None))
    # Rows for hours already rolled up, arriving later (an import, say).
    late = place(any_store, any_witness, [NOW - dt.timedelta(days=20, minutes=m)
                                          for m in range(5)], repo="acme/late")
    exact = figures(any_store, ("repo", "day"), since=None, use_rollups=False)
    assert_same(exact, figures(any_store, ("repo", "day"), since=None))  # read raw meanwhile
    assert any_store.rollup().rows == len(late)
    assert_same(exact, figures(any_store, ("repo", "day"), since=None))
    # What the rollups hold is what the rows add up to, hour by hour.
    counted_before = any_store.rollup().counted_before
    assert rolled_hours(any_witness) == raw_hours(any_witness, counted_before)
    assert rolled_months(any_witness) == raw_months(any_witness, counted_before)
    # The scratch table of a fold is the connection's own, never in the database.
    tables = ("SELECT name FROM sqlite_master WHERE type = 'table'" if any_witness.kind == "sqlite"
              else "SELECT table_name AS name FROM information_schema.tables "
                   "WHERE table_schema = " + (
                       "DATABASE()" if any_witness.kind == "mysql" else "current_schema()"))
    assert {r["name"] for r in any_witness.rows(tables) if any(
        part in r["name"] for part in ("rollup", "fold", "daily", "monthly"))} == {
        "telemetry_orm_rollups", "telemetry_orm_rollup_durations", "telemetry_orm_rollup_state",
        "telemetry_orm_monthly", "telemetry_orm_monthly_durations",
        "telemetry_orm_daily", "telemetry_orm_rollup_tiers", "telemetry_orm_rollup_zones",
        "telemetry_orm_label_rollups"}
    # A purge after a rollup deletes rows already counted: it adds nothing.
    held = rolled_hours(any_witness)
    assert any_store.purge_older_than(10) > 0
    assert rolled_hours(any_witness) == held
    assert_same(exact, figures(any_store, ("repo", "day"), since=None))


def raw_hours(witness: Witness, before: dt.datetime) -> Dict[str, Tuple[int, int, int]]:
    hour = witness.utc_text("created_at", "%Y-%m-%d %H")
    return {r["h"]: (int(r["n"]), int(r["t"]), int(r["d"])) for r in witness.rows(
        f"SELECT {hour} AS h, COUNT(*) AS n, SUM(input_tokens) AS t, SUM(duration_ms) AS d "
        f"FROM executions WHERE created_at < ? GROUP BY 1",
        before.strftime("%Y-%m-%d %H:%M:%S"))}


def rolled_hours(witness: Witness) -> Dict[str, Tuple[int, int, int]]:
    hour = witness.utc_text("hour", "%Y-%m-%d %H")
    sketch = {r["h"]: int(r["n"]) for r in witness.rows(
        f"SELECT {hour} AS h, SUM(executions) AS n FROM telemetry_orm_rollup_durations "
        f"GROUP BY 1")}
    sums = {r["h"]: (int(r["n"]), int(r["t"]), int(r["d"])) for r in witness.rows(
        f"SELECT {hour} AS h, SUM(executions) AS n, SUM(input_tokens) AS t, "
        f"SUM(duration_ms) AS d FROM telemetry_orm_rollups GROUP BY 1")}
    assert sketch == {h: n for h, (n, _, _) in sums.items()}
    return sums


def _month(witness: Witness, column: str) -> str:
    return witness.utc_text(column, "%Y-%m")


def raw_months(witness: Witness, before: dt.datetime) -> Dict[Tuple[str, str], int]:
    """Executions per month and repo, and per month (repo ''), from the rows."""
    month = _month(witness, "created_at")
    found: Dict[Tuple[str, str], int] = {}
    for group in ("repo", "''"):
        for r in witness.rows(f"SELECT {month} AS m, {group} AS v, COUNT(*) AS n "
                              f"FROM executions WHERE created_at < ? GROUP BY 1, 2",
                              before.strftime("%Y-%m-%d %H:%M:%S")):
            found[(r["m"], r["v"])] = int(r["n"])
    return found


def rolled_months(witness: Witness) -> Dict[Tuple[str, str], int]:
    """The same from the month tier: its sums, checked against its sketches."""
    month = _month(witness, "month")
    sums = {(r["m"], r["v"]): int(r["n"]) for r in witness.rows(
        f"SELECT {month} AS m, repo AS v, SUM(executions) AS n "
        f"FROM telemetry_orm_monthly GROUP BY 1, 2")}
    for r in witness.rows(f"SELECT {month} AS m, SUM(executions) AS n "
                          f"FROM telemetry_orm_monthly GROUP BY 1"):
        sums[(r["m"], "")] = int(r["n"])
    sketch = {(r["m"], r["v"]): int(r["n"]) for r in witness.rows(
        f"SELECT {month} AS m, value AS v, SUM(executions) AS n "
        f"FROM telemetry_orm_monthly_durations WHERE dimension IN ('repo', '') "
        f"GROUP BY 1, 2")}
    assert sketch == sums
    return sums


def test_a_purge_counts_what_it_deletes_and_only_the_rest_of_its_cutoffs_hour(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    history(any_store, any_witness, days=200, per_day=10)
    cutoff = NOW - dt.timedelta(days=90)
    # The hour the cutoff falls in is complete: the purge folds it in whole,
    # as rollup() would, with the rows before.
    end = rollups.ceil_hour(cutoff.replace(tzinfo=None)).replace(tzinfo=UTC)
    last = any_witness.scalar("SELECT MAX(id) FROM executions WHERE created_at < ?",
                              _at(any_witness, cutoff))
    any_witness.execute("UPDATE executions SET created_at = ? WHERE id = ?",
                        _at(any_witness, cutoff + dt.timedelta(seconds=1)), last)
    expired = int(any_witness.scalar("SELECT COUNT(*) FROM executions WHERE created_at < ?",
                                     _at(any_witness, cutoff)))
    gone = any_witness.rows("SELECT COUNT(*) AS n, SUM(input_tokens) AS t, SUM(cost_usd) AS c "
                            "FROM executions WHERE created_at < ?", _at(any_witness, end))[0]
    assert gone["n"] > expired
    deleted = any_store.purge_older_than(90)
    assert deleted == expired
    held = any_witness.rows("SELECT SUM(executions) AS n, SUM(input_tokens) AS t, "
                            "SUM(cost_usd) AS c FROM telemetry_orm_rollups")[0]
    assert (int(held["n"]), int(held["t"])) == (int(gone["n"]), int(gone["t"]))
    assert float(held["c"]) == pytest.approx(float(gone["c"]))
    # Purging again deletes and counts nothing more.
    assert any_store.purge_older_than(90) == 0
    assert int(any_witness.scalar("SELECT SUM(executions) FROM telemetry_orm_rollups")
               ) == gone["n"]


def _at(witness: Witness, instant: dt.datetime) -> Any:
    """``instant`` as the witness writes ``created_at`` (text on SQLite)."""
    return instant.strftime("%Y-%m-%d %H:%M:%S") if witness.kind == "sqlite" else instant


def test_a_purge_folds_the_expired_hours_first_and_a_row_arriving_meanwhile_once(
        any_store: PeeweeTelemetryStore, any_witness: Witness,
        monkeypatch: pytest.MonkeyPatch) -> None:
    history(any_store, any_witness, days=120, per_day=10)
    before = figures(any_store, ("repo", "day"), since=None)
    cutoff = NOW - dt.timedelta(days=90)
    ahead, folded = folding.fold_up, []

    def fold_up(*args: Any, **kwargs: Any) -> Any:
        folded.append(ahead(*args, **kwargs))
        # Another connection commits an old row (an import) right after the
        # hours were folded in, before the chunks delete.
        any_witness.execute("INSERT INTO executions (created_at, repo, event_type, model, "
                            "conclusion) VALUES (?, 'acme/late', 'push', 'm', 'success')",
                            _at(any_witness, NOW - dt.timedelta(days=100)))
        return folded[-1]

    monkeypatch.setattr(folding, "fold_up", fold_up)
    expired = int(any_witness.scalar("SELECT COUNT(*) FROM executions WHERE created_at < ?",
                                     _at(any_witness, cutoff)))
    deleted = any_store.purge(90).deleted
    monkeypatch.undo()
    # The hours were folded in ahead (up to the end of the cutoff's hour),
    # the late row by the chunk that deleted it.
    assert len(folded) == 1 and folded[0][0] > 0
    assert deleted == expired + 1
    end = rollups.ceil_hour(cutoff.replace(tzinfo=None)).replace(tzinfo=UTC)
    kept = int(any_witness.scalar("SELECT COUNT(*) FROM executions WHERE created_at < ?",
                                  _at(any_witness, end)))
    rolled = int(any_witness.scalar("SELECT SUM(executions) FROM telemetry_orm_rollups"))
    assert rolled == deleted + kept
    # The reports count every row once, the late one too, before and after
    # the next rollup().
    for _ in range(2):
        after = figures(any_store, ("repo", "day"), since=None)
        assert after.pop(("acme/late", (NOW - dt.timedelta(days=100)).date().isoformat()),
                         None) is not None
        assert after[("totals",)]["executions"] == before[("totals",)]["executions"] + 1
        any_store.rollup()


def test_a_purge_sizes_its_first_chunk_as_a_plain_purge_does_after_folding_ahead(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    """The steps that fold ahead hold the lock next to nothing when they
    fold nothing: the pacer, told of them, would size the first chunk past
    every expired row (a purge of 100,000 rows as one chunk of 250 ms)."""
    start = (NOW - dt.timedelta(days=100)).replace(minute=0, second=0)
    expired = 12_000
    ids = any_store.record_many([minimal() for _ in range(expired)])
    # 300 rows an hour over 40 hours: several steps fold them ahead.
    any_witness.executemany("UPDATE executions SET created_at = ? WHERE id = ?", [
        (_at(any_witness, start + dt.timedelta(seconds=12 * n)), row_id)
        for n, row_id in enumerate(ids)])
    totals: List[int] = []
    result = any_store.purge(90, progress=lambda p: totals.append(p.deleted))
    assert result.deleted == expired and totals[-1] == expired
    assert totals[0] <= PURGE_CHUNK < expired
    assert int(any_witness.scalar("SELECT SUM(executions) FROM telemetry_orm_rollups")
               ) == expired


def test_a_purge_leaves_an_hour_too_dense_for_one_step_to_its_chunks(tmp_path: Path) -> None:
    """4,001 rows in one hour: folded ahead, the hour would be one step of
    them all under the write lock; the chunks fold them, a stretch of ids at
    a time, as they delete them."""
    path = tmp_path / "dense.db"
    with create_telemetry_store(path) as store:
        witness = Witness(str(path))
        try:
            history(store, witness, days=100, per_day=2)
            dense = (NOW - dt.timedelta(days=95)).replace(minute=0, second=0, tzinfo=None)
            rows = folding.AHEAD_HOUR_ROWS + 1
            witness.executemany(
                "INSERT INTO executions (created_at, repo, event_type, model, conclusion) "
                "VALUES (?, 'acme/dense', 'push', 'm', 'success')",
                [((dense + dt.timedelta(milliseconds=500 * i)).strftime("%Y-%m-%d %H:%M:%S"),)
                 for i in range(rows)])
            older = int(witness.scalar("SELECT COUNT(*) FROM executions WHERE created_at < ?",
                                       dense.strftime("%Y-%m-%d %H:%M:%S")))
            expired = int(witness.scalar(
                "SELECT COUNT(*) FROM executions WHERE created_at < ?",
                (NOW - dt.timedelta(days=90)).strftime("%Y-%m-%d %H:%M:%S")))
            steps: List[Any] = []
            ahead = folding.fold_up

            def fold_up(*args: Any, **kwargs: Any) -> Any:
                steps.append(ahead(*args, **kwargs))
                return steps[-1]

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(folding, "fold_up", fold_up)
                assert store.purge(90).deleted == expired
            # Ahead, only the hours before the dense one were folded in.
            assert steps[0][0] == older and steps[0][2].counted_before == dense
            assert int(witness.scalar("SELECT SUM(executions) FROM telemetry_orm_rollups")
                       ) == expired
            assert int(witness.scalar("SELECT SUM(executions) FROM telemetry_orm_rollups "
                                      "WHERE repo = 'acme/dense'")) == rows
        finally:
            witness.close()


def test_a_pr_report_says_when_its_range_reaches_into_purged_history(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    history(any_store, any_witness, days=120, per_day=5)
    assert any_store.report(group_by=["pr"], since=None).incomplete_before is None
    any_store.purge_older_than(90)
    result = any_store.report(group_by=["pr"], since=None)
    assert result.incomplete_before is not None
    assert result.incomplete_before == NOW - dt.timedelta(days=90)
    assert not result.from_rollups
    recent = any_store.report(group_by=["pr"], since=NOW - dt.timedelta(days=30))
    assert recent.incomplete_before is None
    # Every other grouping still counts the purged history.
    assert any_store.report(group_by=["repo"], since=None).from_rollups


def test_reports_with_edges_inside_hours_read_those_hours_from_the_rows(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    history(any_store, any_witness, days=10, per_day=200)
    any_store.rollup()
    since, until = NOW - dt.timedelta(days=7, minutes=17), NOW - dt.timedelta(days=1, minutes=43)
    for by in (("repo",), ("day",), ()):
        exact = figures(any_store, by, since=since, until=until, use_rollups=False)
        assert_same(exact, figures(any_store, by, since=since, until=until))


@pytest.mark.parametrize("zone, spring, autumn", [
    ("America/Los_Angeles", "2026-03-08", "2026-11-01"),
    ("Europe/Berlin", "2026-03-29", "2026-10-25"),
])
def test_rolled_up_days_have_23_and_25_hours_in_the_zone(
        any_store: PeeweeTelemetryStore, any_witness: Witness, zone: str, spring: str,
        autumn: str) -> None:
    instants: List[dt.datetime] = []
    for day in (spring, autumn):
        middle = dt.datetime.fromisoformat(day).replace(tzinfo=UTC)
        instants += [middle + dt.timedelta(hours=h) for h in range(-24, 48)]
    place(any_store, any_witness, instants)
    exact = figures(any_store, ("day",), since=None, tz=zone)
    any_store.purge_older_than(0)  # everything goes: only the rollups are left
    assert any_witness.count() == 0
    after = figures(any_store, ("day",), since=None, tz=zone)
    assert_same(exact, after)
    assert after[(spring,)]["executions"] == 23 and after[(autumn,)]["executions"] == 25


def test_a_zone_off_the_hour_is_exact_on_rows_and_takes_whole_hours_from_rollups(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    edge = dt.datetime(2026, 6, 1, 18, 30, tzinfo=UTC)  # midnight in Asia/Kolkata
    place(any_store, any_witness, [edge - dt.timedelta(seconds=1), edge,
                                   edge + dt.timedelta(minutes=5)])
    any_store.rollup()
    rows_there = {k: v["executions"]
                  for k, v in figures(any_store, ("day",), since=None, tz="Asia/Kolkata").items()}
    assert rows_there == {("2026-06-01",): 1, ("2026-06-02",): 2, ("totals",): 3}
    any_store.purge_older_than(0)
    # Purged: the hour 18:00 UTC is 23:30 in Kolkata, so all of it is 1 June.
    purged = {k: v["executions"]
              for k, v in figures(any_store, ("day",), since=None, tz="Asia/Kolkata").items()}
    assert purged == {("2026-06-01",): 3, ("totals",): 3}


def test_two_stores_rolling_up_at_once_count_each_row_once(any_location: str) -> None:
    with create_telemetry_store(any_location) as store:
        witness = Witness(any_location)
        try:
            history(store, witness, days=60, per_day=300)
            errors: List[BaseException] = []

            def run() -> None:
                try:
                    with create_telemetry_store(any_location) as other:
                        other.rollup()
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=run) for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not errors
            before = store.rollup().counted_before
            assert rolled_hours(witness) == raw_hours(witness, before)
        finally:
            witness.close()


# -- the duration sketch -------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 120), st.integers(0, 10**9)), min_size=1,
                max_size=300))
def test_the_sketch_estimates_a_nearest_rank_percentile_within_one_percent(
        durations: List[int]) -> None:
    counts: Dict[int, int] = {}
    for d in durations:
        counts[bucket(d)] = counts.get(bucket(d), 0) + 1
    ordered = sorted(durations)
    for rank in {1, nearest_rank(len(durations)), len(durations)}:
        exact = ordered[rank - 1]
        got = estimate(counts, rank)
        assert got is not None and abs(got - exact) <= 0.01 * exact, (rank, exact, got)


def test_below_100_ms_each_millisecond_has_its_own_bucket() -> None:
    assert [bucket_value(bucket(d)) for d in range(101)] == list(range(101))


def _edges() -> List[int]:
    # Whole milliseconds on both sides of every bucket edge up to a year,
    # and the bounds a row may hold.
    edges = {0, 1, 2, 10**12, 2**53, 2**63 - 1}
    k = 1
    while GAMMA ** k < 3.2e10:
        edge = GAMMA ** k
        edges.update({math.floor(edge) - 1, math.floor(edge), math.ceil(edge),
                      math.ceil(edge) + 1})
        k += 1
    return sorted(edges)


@pytest.mark.parametrize("native", [True, False], ids=["sqlite-ln", "python-ln"])
def test_sqlite_buckets_a_duration_as_python_does(native: bool) -> None:
    """The fold buckets durations in SQL; the report merges them with
    Python's: one duration must land in one bucket either way, with
    SQLite's own ln() and ceil() and with those a build without them gets."""
    database = peewee.SqliteDatabase(":memory:")
    conn = database.connection()
    if not native:
        # What prepare() registers where SQLite has no math functions.
        conn.create_function("ln", 1, sqlite_backend._ln, deterministic=True)
        conn.create_function("ceil", 1, sqlite_backend._ceil, deterministic=True)
    SqliteBackend.dialect.prepare(database)
    conn.execute("CREATE TABLE d (ms INTEGER)")
    durations = _edges()
    conn.executemany("INSERT INTO d VALUES (?)", [(d,) for d in durations])
    Row = type("Row", (peewee.Model,), {"ms": peewee.IntegerField(), "Meta": type(
        "Meta", (), {"database": database, "table_name": "d", "primary_key": False})})
    got = [(ms, k) for ms, k in database.execute(Row.select(
        Row.ms, SqliteBackend.dialect.bucket(Row.ms)).order_by(Row.ms)).fetchall()]
    assert got == [(d, bucket(d)) for d in durations]


# -- found in review: edges and concurrency --------------------------------------------


def test_a_since_after_the_cutoff_in_the_cutoffs_hour_reads_the_rows_still_there(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    now = any_witness.now().replace(microsecond=0)
    hour = now.replace(minute=0, second=0) - dt.timedelta(days=3)
    place(any_store, any_witness, [hour + dt.timedelta(minutes=10)], repo="acme/old")
    place(any_store, any_witness, [hour + dt.timedelta(minutes=40)], repo="acme/new")
    since = hour + dt.timedelta(minutes=35)
    before = figures(any_store, ("repo",), since=since)
    any_store.rollup()
    cutoff = hour + dt.timedelta(minutes=30)
    assert any_store.purge((any_witness.now() - cutoff).total_seconds() / 86400).deleted == 1
    assert_same(before, figures(any_store, ("repo",), since=since))


def test_a_report_reads_one_snapshot_while_another_store_rolls_up(
        any_location: str, any_store: PeeweeTelemetryStore, any_witness: Witness,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from telemetry_orm import report_query

    now = any_witness.now()
    place(any_store, any_witness, [now - dt.timedelta(days=2, hours=h) for h in range(10)])
    any_store.rollup()
    # Late rows for hours already folded: not counted until the next rollup.
    place(any_store, any_witness, [now - dt.timedelta(days=2, hours=h) for h in range(3)])
    expected = any_store.report(group_by=[]).totals.executions
    with create_telemetry_store(any_location) as other:
        original = report_query.Query.aggregate
        folded: List[int] = []

        def aggregate(self: Any) -> Any:  # another process's rollup commits meanwhile
            result = original(self)
            if not folded:
                folded.append(other.rollup().rows)
            return result

        monkeypatch.setattr(report_query.Query, "aggregate", aggregate)
        assert any_store.report(group_by=[]).totals.executions == expected
    assert folded == [3]


def test_a_postgresql_purge_counts_every_row_it_deletes_while_others_insert(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with create_telemetry_store(pg_url) as store:
        witness = Witness(pg_url)
        try:
            now = witness.now()
            place(store, witness, [now - dt.timedelta(days=10, hours=h) for h in range(5)])
            original = folding.purge_fold

            def purge_fold(tables: Any, when: Any) -> Any:
                fold = original(tables, when)

                def fold_then_insert(conn: Any, rows: Any, state: Any = None) -> None:
                    fold(conn, rows, state)
                    # Another session commits an old row (an import) right now.
                    witness.execute("INSERT INTO executions (created_at, repo, event_type, "
                                    "model, conclusion) VALUES (?, "
                                    "'acme/late', 'push', 'm', 'success')",
                                    now - dt.timedelta(days=20))
                return fold_then_insert

            monkeypatch.setattr(folding, "purge_fold", purge_fold)
            deleted = store.purge(7).deleted
            rolled = int(witness.scalar("SELECT SUM(executions) FROM telemetry_orm_rollups"))
            left = witness.count()
            # Every row deleted was counted; the late one is still there.
            assert rolled == deleted == 5 and left == 1
        finally:
            witness.close()


def test_a_postgresql_rollup_does_not_wait_for_an_open_insert(pg_url: str) -> None:
    import psycopg

    with create_telemetry_store(pg_url) as store:
        witness = Witness(pg_url)
        try:
            history(store, witness, days=5, per_day=50)
            holder = psycopg.connect(pg_url)
            holder.execute("INSERT INTO executions (repo, event_type, model, conclusion) "
                           "VALUES ('acme/open', 'push', 'm', 'success')")  # left open
            try:
                # Returns (no StoreBusyError after the busy timeout, writers not
                # queued behind it), folding nothing it cannot vouch for.
                result = store.rollup()
                assert result.rows == 0
            finally:
                holder.rollback()
                holder.close()
            assert store.rollup().rows > 0
            assert rolled_hours(witness) == raw_hours(witness, store.rollup().counted_before)
        finally:
            witness.close()


# --- replacing rows the rollups count -------------------------------------------

#: A fixed hour long past (whatever the clock says, a complete hour).
PAST = dt.datetime(2021, 5, 1, 0, 10, tzinfo=UTC)
SUMMED = ("executions", "input_tokens", "output_tokens", "cache_read_tokens",
          "cache_creation_tokens", "cost_usd", "failed")


def raw(witness: Witness, by: str) -> Dict[Any, Tuple[Any, ...]]:
    """The sums per ``by`` (a column, or an expression named ``k``) read
    from ``executions`` itself."""
    rows = witness.rows(
        f"SELECT {by} AS k, COUNT(*) AS executions, SUM(input_tokens) AS input_tokens, "
        "SUM(output_tokens) AS output_tokens, SUM(cache_read_tokens) AS cache_read_tokens, "
        "SUM(cache_creation_tokens) AS cache_creation_tokens, SUM(cost_usd) AS cost_usd, "
        "SUM(CASE WHEN conclusion = 'success' THEN 0 ELSE 1 END) AS failed "
        f"FROM executions GROUP BY {by}")
    return {r["k"]: tuple(int(r[n]) if n != "cost_usd" else round(float(r[n]), 6)
                          for n in SUMMED) for r in rows}


def reported(store: PeeweeTelemetryStore, by: str, **options: Any
             ) -> Dict[Any, Tuple[Any, ...]]:
    result = store.report(group_by=[by], since=None, **options)
    return {next(iter(r.keys.values())): tuple(
        round(value, 6) if name == "cost_usd" else value
        for name, value in ((n, getattr(r.metrics, n)) for n in SUMMED))
        for r in result.rows}


def day_of(witness: Witness) -> str:
    return ("substr(created_at, 1, 10)" if witness.kind == "sqlite"
            else witness.utc_text("created_at", "%Y-%m-%d"))


def test_a_replace_after_its_hour_was_rolled_up_moves_its_figures_in_the_rollups(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    runs = [dict(repo="acme/api", input_tokens=100, output_tokens=10, cost_usd=0.5,
                 duration_ms=1200),
            dict(repo="acme/solo", input_tokens=7, output_tokens=3, cost_usd=0.0,
                 duration_ms=90_000, model="claude-haiku-4-5"),
            dict(repo="acme/api", input_tokens=30, output_tokens=1, cost_usd=0.25,
                 duration_ms=400, conclusion="failure")]
    ids = [any_store.record(minimal(**run), key=f"run-{i}") for i, run in enumerate(runs)]
    any_store.record(minimal(repo="acme/web", input_tokens=5))
    any_witness.executemany("UPDATE executions SET created_at = ? WHERE id = ?", [
        ((PAST + dt.timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S")
         if any_witness.kind == "sqlite" else PAST + dt.timedelta(minutes=i), row_id)
        for i, row_id in enumerate([*ids, ids[-1] + 1])])
    assert any_store.rollup().rows == 4

    # The run grew (a transcript read again, a webhook's final figures), and
    # one moves to another repo, model and cost: its old group must go.
    assert any_store.record(minimal(repo="acme/api", input_tokens=5_000, output_tokens=700,
                                    cost_usd=2.0, duration_ms=61_000), key="run-0",
                            replace=True) == ids[0]
    assert any_store.record(minimal(repo="acme/web", input_tokens=8, output_tokens=3,
                                    cost_usd=0.125, duration_ms=95_000,
                                    conclusion="failure"),
                            key="run-1", replace=True) == ids[1]
    expected = {by: raw(any_witness, by) for by in ("repo", "model", "conclusion")}
    assert "acme/solo" not in expected["repo"]
    exact = {(by, p95): figures(any_store, (by,), since=None, use_rollups=False, p95=p95)
             for by in ("repo", "model", "month") for p95 in (True, False)}
    for by, sums in expected.items():
        assert reported(any_store, by) == sums, by
    for (by, p95), figure in exact.items():
        assert_same(figure, figures(any_store, (by,), since=None, p95=p95))

    # Once the rows are purged, the rollups alone give the same.
    assert any_store.purge_older_than(1) == 4
    assert any_witness.count() == 0
    for by, sums in expected.items():
        assert reported(any_store, by) == sums, by
    for (by, p95), figure in exact.items():
        assert_same(figure, figures(any_store, (by,), since=None, p95=p95))


def test_an_import_that_moves_a_row_into_or_out_of_rolled_up_hours_moves_its_figures(
        any_store: PeeweeTelemetryStore, any_witness: Witness, tmp_path: Path) -> None:
    root = tmp_path / "projects"
    # First seen with a clock far ahead (an hour no rollup has reached),
    # then in a second project folder with older lines: its created_at moves
    # into rolled-up history; then earlier still, across a month's end.
    write_lines(root / "-a" / "s1.jsonl",
                [call("s1", "m1", "r1", "2030-01-01T00:00:00Z", "sonnet", [10, 20, 30, 40])])
    write_lines(root / "-a" / "s2.jsonl",
                [call("s2", "m9", "r9", "2021-05-01T00:30:00Z", "sonnet", [1, 2, 3, 4])])
    assert import_files("claude-code", [root], any_store).imported == 2
    assert any_store.rollup().rows == 1  # s2; s1's hour is not complete
    counted = raw(any_witness, "model")

    write_lines(root / "-b" / "s1.jsonl",
                [call("s1", "m0", "r0", "2021-05-01T03:00:00Z", "sonnet", [1, 1, 1, 1])])
    write_lines(root / "-b" / "s2.jsonl",
                [call("s2", "m8", "r8", "2021-04-30T23:50:00Z", "sonnet", [5, 5, 5, 5])])
    result = import_files("claude-code", [root], any_store)
    assert (result.imported, result.updated) == (0, 2), result.summary()
    assert raw(any_witness, "model") != counted
    expected = {by: raw(any_witness, by) for by in ("model", day_of(any_witness))}
    exact = {(by, p95): figures(any_store, (by,), since=None, use_rollups=False, p95=p95)
             for by in ("day", "month", "model") for p95 in (True, False)}
    for (by, p95), figure in exact.items():
        assert_same(figure, figures(any_store, (by,), since=None, p95=p95))
    assert reported(any_store, "model") == expected["model"]
    assert reported(any_store, "day") == expected[day_of(any_witness)]
    # Nothing is left behind in the hours and months the rows left.
    assert any_witness.scalar("SELECT COUNT(*) FROM telemetry_orm_rollups WHERE executions <= 0"
                              ) == 0
    assert any_witness.scalar("SELECT COUNT(*) FROM telemetry_orm_monthly "
                              "WHERE executions <= 0") == 0

    # A purge deletes both rows; every one of them was counted once.
    assert any_store.purge_older_than(1) == 2
    assert reported(any_store, "model") == expected["model"]
    assert reported(any_store, "day") == expected[day_of(any_witness)]
    for (by, p95), figure in exact.items():
        assert_same(figure, figures(any_store, (by,), since=None, p95=p95))


def test_replaces_racing_rollups_and_a_purge_in_another_store_count_each_row_once(
        any_location: str) -> None:
    keys = [f"run-{i}" for i in range(24)]
    with create_telemetry_store(any_location) as store:
        ids = [store.record(minimal(repo=f"acme/r{i % 4}"), key=key)
               for i, key in enumerate(keys)]
    witness = Witness(any_location)
    stores = [create_telemetry_store(any_location), create_telemetry_store(any_location)]
    try:
        witness.executemany("UPDATE executions SET created_at = ? WHERE id = ?", [
            ((PAST + dt.timedelta(minutes=7 * i)).strftime("%Y-%m-%d %H:%M:%S")
             if witness.kind == "sqlite" else PAST + dt.timedelta(minutes=7 * i), row_id)
            for i, row_id in enumerate(ids)])
        failures: List[BaseException] = []

        def replace() -> None:
            rnd = random.Random(3)
            try:
                for _ in range(3):
                    for key in keys:
                        stores[0].record(minimal(
                            repo=f"acme/r{rnd.randrange(6)}", input_tokens=rnd.randrange(1000),
                            cost_usd=round(rnd.random(), 6), duration_ms=rnd.randrange(9000),
                            conclusion=rnd.choice(["success", "failure"])), key=key,
                            replace=True)
            except BaseException as exc:  # noqa: BLE001 - the assertion shows it
                failures.append(exc)

        def roll_up() -> None:
            try:
                for _ in range(15):
                    stores[1].rollup()
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)

        threads = [threading.Thread(target=replace), threading.Thread(target=roll_up)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures
        stores[1].rollup()
        expected = raw(witness, "repo")
        assert reported(stores[0], "repo") == expected
        assert stores[1].purge_older_than(1) == len(keys)
        assert reported(stores[0], "repo") == expected
    finally:
        for s in stores:
            s.close()
        witness.close()


def test_a_replace_inside_an_application_transaction_moves_the_rollups_with_it(
        any_location: str) -> None:
    witness = Witness(any_location)  # first: it makes a file's folder
    database = app_database(any_location)
    store = create_telemetry_store(database)
    try:
        row_id = store.record(minimal(repo="acme/api", input_tokens=10), key="run")
        witness.execute("UPDATE executions SET created_at = ?",
                        PAST.strftime("%Y-%m-%d %H:%M:%S") if witness.kind == "sqlite"
                        else PAST)
        store.rollup()
        before = raw(witness, "repo")
        with database.atomic() as transaction:
            store.record(minimal(repo="acme/web", input_tokens=99), key="run", replace=True)
            transaction.rollback()
        assert raw(witness, "repo") == before
        assert reported(store, "repo") == before
        with database.atomic():
            assert store.record(minimal(repo="acme/web", input_tokens=99), key="run",
                                replace=True) == row_id
        after = raw(witness, "repo")
        assert after != before and reported(store, "repo") == after
        assert store.purge_older_than(1) == 1
        assert reported(store, "repo") == after
    finally:
        store.close()
        database.close()
        witness.close()


def test_fold_statements_from_templates_are_the_statements_built_whole(
        any_store: PeeweeTelemetryStore) -> None:
    """The fold and unfold statements are rendered once with their
    conditions left open and filled per step: for every shape of condition
    the store uses (id ranges, the rows a purge picks, one replaced row,
    lists of ids), filled they are exactly what building them whole gives."""
    tables = tables_of(any_store.database)
    m, models, dialect = tables.executions, tables.rollups, tables.dialect
    picked = m.select(m.id).where(m.created_at < "2026-01-01 00:00:00").order_by(m.id).limit(7)
    shapes = [
        lambda n: (m.id > n) & (m.id <= n + 2500),
        lambda n: m.id.in_(picked) & ((m.id > n) | (m.created_at >= "2026-03-01 00:00:00")),
        lambda n: (m.id == n) & (m.id <= n + 1) & (m.created_at < "2026-02-01 00:00:00"),
        lambda n: m.id.in_(list(range(n, n + 5))),
    ]
    below = m.created_at < "2025-12-01 00:00:00"
    for tiers in (None, below):
        for shape in shapes:
            for n in (3, 11, 11, 40):  # the same shape again: from the template
                where = shape(n)
                assert rollups.fold(models, m, dialect, where, tiers=tiers) == [
                    render(any_store.database, q)
                    for q in rollups._fold_queries(models, m, dialect, where, tiers, 1)]
                assert rollups.unfold(models, m, dialect, where, tiers=tiers) == [
                    render(any_store.database, q)
                    for q in rollups._unfold_queries(models, m, dialect, where, tiers)]


def test_a_rollups_tier_statements_are_built_once_and_filled_with_each_steps_hours(
        store: PeeweeTelemetryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.rollup()  # the rollup tables made
    tables = store.opened.tables
    built: List[Tuple[dt.datetime, dt.datetime]] = []
    original = folding.build_tiers

    def build_tiers(models: Any, dialect: Any, start: dt.datetime, end: dt.datetime) -> Any:
        built.append((start, end))
        return original(models, dialect, start, end)

    monkeypatch.setattr(folding, "build_tiers", build_tiers)
    statements = folding._TierStatements(tables.rollups, tables.dialect)
    steps = [(dt.datetime(2026, 1, 31, 22), dt.datetime(2026, 2, 2, 5)),
             (dt.datetime(2026, 2, 2, 5), dt.datetime(2026, 3, 1)),
             (dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 1, 1))]
    for start, stop in steps:
        assert statements(start, stop) == original(tables.rollups, tables.dialect, start, stop)
    # Once with stand-ins, once whole for the first step to check the
    # filling against; the later steps only fill.
    assert len(built) == 2 and built[1] == steps[0]
