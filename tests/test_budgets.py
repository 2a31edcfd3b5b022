"""Budgets: their rules, their tables, their periods (DST-correct) and their
status, through the store and the command line."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pytest
from support import Witness, minimal, place, run_cli

from telemetry_orm import (
    BudgetExceededError,
    PeeweeTelemetryStore,
    TelemetryValidationError,
    UnknownBudgetError,
    clock,
    create_telemetry_store,
)
from telemetry_orm.budgets import period_bounds
from telemetry_orm.zones import check_zone

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)


# --- Rules --------------------------------------------------------------------------


@pytest.mark.parametrize("options, field", [
    ({"usd": -1}, "usd"),
    ({"usd": math.inf}, "usd"),
    ({"usd": math.nan}, "usd"),
    ({"usd": "5"}, "usd"),
    ({"usd": True}, "usd"),
    ({"usd": 5, "period": "year"}, "period"),
    ({"usd": 5, "tz": "Mars/Olympus_Mons"}, "tz"),
    ({"usd": 5, "warn_at": 0}, "warn_at"),
    ({"usd": 5, "warn_at": 1.01}, "warn_at"),
    ({"usd": 5, "warn_at": math.nan}, "warn_at"),
    ({"usd": 5, "labels": {"Team": "x"}}, "labels"),
    ({"usd": 5, "labels": {"team": ""}}, "labels.team"),
])
def test_a_bad_argument_is_refused_naming_it(store: PeeweeTelemetryStore,
                                             options: Any, field: str) -> None:
    with pytest.raises(TelemetryValidationError) as caught:
        store.set_budget("b", **options)
    assert caught.value.field == field
    assert store.budgets() == []


@pytest.mark.parametrize("name", ["", " x", "a b", "x" * 65, "-x", 5, None])
def test_a_bad_name_is_refused(store: PeeweeTelemetryStore, name: Any) -> None:
    with pytest.raises(TelemetryValidationError) as caught:
        store.set_budget(name, usd=1)
    assert caught.value.field == "name"


def test_names_may_be_repositories_or_teams(store: PeeweeTelemetryStore) -> None:
    for name in ("acme/api", "team:platform", "x" * 64, "bot@example.com", "m.1_2-3"):
        assert store.set_budget(name, usd=1).name == name


def test_an_unknown_budget_is_an_error_naming_it(store: PeeweeTelemetryStore) -> None:
    for call in (store.budget_status, store.delete_budget, store.budget):
        with pytest.raises(UnknownBudgetError, match="'nope'"):
            call("nope")
    with pytest.raises(UnknownBudgetError):
        store.reserve("nope", usd=1)


def test_budgets_are_stored_replaced_and_deleted(db_path: Path,
                                                 store: PeeweeTelemetryStore) -> None:
    store.set_budget("acme/api", usd=200, repo="acme/api", tz="Europe/London",
                     period="week", warn_at=0.5, labels={"team": "platform"})
    store.set_budget("org", usd=1000)
    store.set_budget("org", usd=900, model="claude-sonnet-4-5")
    witness = Witness(str(db_path))
    try:
        rows = witness.rows("SELECT * FROM telemetry_orm_budgets ORDER BY budget")
        assert [(r["budget"], r["usd"], r["period"], r["tz"], r["repo"], r["model"],
                 json.loads(r["labels"]), r["warn_at"]) for r in rows] == [
            ("acme/api", 200.0, "week", "Europe/London", "acme/api", None,
             {"team": "platform"}, 0.5),
            ("org", 900.0, "month", "UTC", None, "claude-sonnet-4-5", {}, 0.8)]
        assert [b.name for b in store.budgets()] == ["acme/api", "org"]
        store.delete_budget("acme/api")
        assert witness.scalar("SELECT COUNT(*) FROM telemetry_orm_budgets") == 1
    finally:
        witness.close()


# --- Periods ------------------------------------------------------------------------


@pytest.mark.parametrize("period, zone, now, start, end", [
    # New York springs forward on 8 March 2026: a day of 23 hours...
    ("day", "America/New_York", utc(2026, 3, 8, 12), utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)),
    # ...and falls back on 1 November: 25 hours.
    ("day", "America/New_York", utc(2026, 11, 1, 12), utc(2026, 11, 1, 4),
     utc(2026, 11, 2, 5)),
    # 03:30 UTC on 8 March is still the 7th in New York.
    ("day", "America/New_York", utc(2026, 3, 8, 3, 30), utc(2026, 3, 7, 5),
     utc(2026, 3, 8, 5)),
    # The ISO week of Sunday 8 March began on Monday 2 March.
    ("week", "America/New_York", utc(2026, 3, 8, 12), utc(2026, 3, 2, 5), utc(2026, 3, 9, 4)),
    # London's March has 743 hours (BST from 29 March), its October 745.
    ("month", "Europe/London", utc(2026, 3, 15), utc(2026, 3, 1), utc(2026, 3, 31, 23)),
    ("month", "Europe/London", utc(2026, 10, 15), utc(2026, 9, 30, 23), utc(2026, 11, 1)),
    # 23:30 UTC on 31 October is still October in London (GMT again).
    ("month", "Europe/London", utc(2026, 10, 31, 23, 30), utc(2026, 9, 30, 23),
     utc(2026, 11, 1)),
    ("week", "Europe/London", utc(2026, 3, 30, 0, 30), utc(2026, 3, 29, 23),
     utc(2026, 4, 5, 23)),
    ("month", "UTC", utc(2026, 12, 31, 23, 59), utc(2026, 12, 1), utc(2027, 1, 1)),
])
def test_periods_start_at_local_midnight(period: str, zone: str, now: dt.datetime,
                                         start: dt.datetime, end: dt.datetime) -> None:
    assert period_bounds(period, check_zone("tz", zone), now) == (start, end)


def test_a_months_hours_follow_the_clock_changes() -> None:
    london = check_zone("tz", "Europe/London")
    march = period_bounds("month", london, utc(2026, 3, 2))
    october = period_bounds("month", london, utc(2026, 10, 2))
    assert (march[1] - march[0]) == dt.timedelta(hours=743)
    assert (october[1] - october[0]) == dt.timedelta(hours=745)


# --- Status -------------------------------------------------------------------------


def _place(store: PeeweeTelemetryStore, witness: Witness, when: dt.datetime,
           **fields: Any) -> None:
    place(store, witness, [when], **fields)


def test_spent_at_the_limit_is_exceeded_and_at_warn_at_a_warning(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    any_store.set_budget("a", usd=1.0, repo="acme/a")
    any_store.set_budget("b", usd=10.0, repo="acme/b", warn_at=0.8)
    any_store.set_budget("c", usd=10.0, repo="acme/c", warn_at=0.8)
    for repo, cost in (("acme/a", 0.5), ("acme/a", 0.5), ("acme/b", 4.0), ("acme/b", 4.0),
                       ("acme/c", 4.0), ("acme/c", 3.5)):
        _place(any_store, any_witness, utc(2026, 3, 2), repo=repo, cost_usd=cost)
    # Last month's and another repo's spend count nowhere.
    _place(any_store, any_witness, utc(2026, 2, 28, 23, 59), repo="acme/a", cost_usd=5.0)
    _place(any_store, any_witness, utc(2026, 3, 3), repo="acme/z", cost_usd=5.0)
    with clock.pinned(NOW):
        a, b, c = (any_store.budget_status(n) for n in "abc")
    assert (a.spent_usd, a.status, a.remaining_usd) == (1.0, "exceeded", 0.0)
    assert (b.spent_usd, b.share, b.status) == (8.0, 0.8, "warning")
    assert (c.spent_usd, c.status) == (7.5, "ok")
    assert (a.period_start, a.period_end, a.now) == (utc(2026, 3, 1), utc(2026, 4, 1), NOW)
    # 14.5 days of 31 gone: the rate so far carried to the end.
    assert c.projected_usd == pytest.approx(7.5 * 31 / 14.5, abs=1e-6)


def test_unpriced_executions_are_listed_never_counted_as_zero(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    any_store.set_budget("org", usd=1.0)
    # A $0 row of a priced model costs its tokens at the list price (auto):
    # claude-sonnet-4-5 is $3 per million input tokens, $15 per million output.
    _place(any_store, any_witness, utc(2026, 3, 2), cost_usd=0, input_tokens=1000,
           output_tokens=100)
    _place(any_store, any_witness, utc(2026, 3, 2), cost_usd=0.25)
    for _ in range(2):
        _place(any_store, any_witness, utc(2026, 3, 2), model="in-house-llm", cost_usd=0,
               input_tokens=5000)
    _place(any_store, any_witness, utc(2026, 3, 2), model="in-house-llm", cost_usd=0.1)
    with clock.pinned(NOW):
        found = any_store.budget_status("org")
    assert found.spent_usd == pytest.approx(1000 * 3e-6 + 100 * 15e-6 + 0.25 + 0.1, abs=1e-9)
    assert (found.unknown, dict(found.unpriced)) == (2, {"in-house-llm": 2})
    assert found.as_dict()["unknown"] == 2


def test_a_zero_budget_is_exceeded_from_the_start(store: PeeweeTelemetryStore) -> None:
    store.set_budget("frozen", usd=0)
    assert store.budget_status("frozen").status == "exceeded"
    with pytest.raises(BudgetExceededError):
        store.reserve("frozen", usd=0.01)


def test_status_counts_purged_history_through_the_rollups(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    witness = Witness(str(db_path))
    try:
        store.set_budget("org", usd=100)
        _place(store, witness, utc(2026, 3, 2), cost_usd=2.0)
        _place(store, witness, utc(2026, 3, 14), cost_usd=1.0)
        with clock.pinned(NOW):
            before = store.budget_status("org").spent_usd
            store.rollup()
            assert store.purge_older_than(7) == 1
            after = store.budget_status("org").spent_usd
        assert before == after == 3.0
    finally:
        witness.close()


# --- Command line -------------------------------------------------------------------


def test_budget_check_exits_by_the_worst_status(db_path: Path, store: PeeweeTelemetryStore,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = str(db_path)
    assert run_cli("budget", "set", "api", "--usd", "1", "--repo", "acme/api", "--db", db,
                   capsys=capsys)[0] == 0
    assert run_cli("budget", "set", "web", "--usd", "10", "--repo", "acme/web",
                   "--warn-at", "0.5", "--db", db, capsys=capsys)[0] == 0
    assert run_cli("budget", "check", "--db", db, capsys=capsys)[0] == 0
    store.record(minimal(repo="acme/web", cost_usd=6.0))
    status, out, _ = run_cli("budget", "check", "--db", db, capsys=capsys)
    assert status == 3 and "web: WARNING $6.00 of $10.00 (60%)" in out
    store.record(minimal(repo="acme/api", cost_usd=1.0))
    status, out, _ = run_cli("budget", "check", "--format", "json", "--db", db, capsys=capsys)
    assert status == 4
    assert [(s["budget"], s["status"], s["spent_usd"]) for s in json.loads(out)] == [
        ("api", "exceeded", 1.0), ("web", "warning", 6.0)]
    assert run_cli("budget", "check", "web", "--db", db, capsys=capsys)[0] == 3


@pytest.mark.parametrize("argv", [
    ("budget", "set", "x", "--usd", "-5"),
    ("budget", "set", "x", "--usd", "inf"),
    ("budget", "set", "x", "--usd", "5", "--period", "year"),
    ("budget", "set", "x", "--usd", "5", "--tz", "Nowhere/Land"),
    ("budget", "set", "x", "--usd", "5", "--warn-at", "0"),
    ("budget", "set", "x", "--usd", "5", "--label", "team"),
    ("budget", "check", "nope"),
    ("budget", "delete", "nope"),
])
def test_bad_input_exits_2(db_path: Path, store: PeeweeTelemetryStore,
                           capsys: pytest.CaptureFixture[str], argv: Any) -> None:
    status, _, err = run_cli(*argv, "--db", str(db_path), capsys=capsys)
    assert status == 2, err
    assert store.budgets() == []


def test_budget_set_list_delete(db_path: Path, store: PeeweeTelemetryStore,
                                capsys: pytest.CaptureFixture[str]) -> None:
    db = str(db_path)
    assert run_cli("budget", "set", "team", "--usd", "50", "--period", "week", "--label",
                   "team=platform", "--tz", "Europe/London", "--db", db, capsys=capsys)[0] == 0
    status, out, _ = run_cli("budget", "list", "--format", "json", "--db", db, capsys=capsys)
    assert status == 0
    assert json.loads(out) == [{"name": "team", "usd": 50.0, "period": "week",
                                "tz": "Europe/London", "repo": None, "model": None,
                                "labels": {"team": "platform"}, "warn_at": 0.8}]
    assert run_cli("budget", "delete", "team", "--db", db, capsys=capsys)[0] == 0
    with create_telemetry_store(db) as again:
        assert again.budgets() == []


def test_a_labelled_budget_counts_only_its_labels_executions(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    any_store.set_budget("platform", usd=10.0, labels={"team": "platform"})
    any_store.set_budget("alice", usd=10.0, labels={"team": "platform", "user": "alice"})
    for cost, labels in ((1.0, {"team": "platform", "user": "alice"}),
                         (2.0, {"team": "platform", "user": "bob"}),
                         (4.0, {"team": "data"}), (8.0, {})):
        _place(any_store, any_witness, utc(2026, 3, 2), cost_usd=cost, labels=labels)
    with clock.pinned(NOW):
        assert any_store.budget_status("platform").spent_usd == 3.0
        assert any_store.budget_status("alice").spent_usd == 1.0
