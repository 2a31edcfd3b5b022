"""Reservations against budgets: the check-and-hold is atomic across
processes on every engine, a hold turns into its row in one transaction,
and a dead process's hold expires."""

from __future__ import annotations

import datetime as dt
import math
import multiprocessing
import os
import signal
import sqlite3
import threading
from typing import Any, List

import peewee
import pytest
import workers
from support import Witness, minimal

from telemetry_orm import (
    BudgetExceededError,
    PeeweeTelemetryStore,
    TelemetryError,
    TelemetryValidationError,
    TransactionOpenError,
    clock,
    create_telemetry_store,
    reservations,
)

SPAWN = multiprocessing.get_context("spawn")
HOLDS = "SELECT COUNT(*) FROM telemetry_orm_budget_holds"

#: The race: processes, rounds each, the limit, the estimate, the real costs.
PROCESSES = 8
ROUNDS = 25
LIMIT = 10.0
ESTIMATE = 0.30


def race(location: str, costs: Any) -> List[Any]:
    start = SPAWN.Barrier(PROCESSES)
    results = SPAWN.Queue()
    children = [SPAWN.Process(target=workers.reserve_rounds,
                              args=(location, n, "race", ROUNDS, ESTIMATE, costs, start,
                                    results)) for n in range(PROCESSES)]
    for child in children:
        child.start()
    try:
        collected = [results.get(timeout=300) for _ in children]
    finally:
        for child in children:
            child.join(timeout=60)
    errors = [error for *_, error in collected if error is not None]
    assert not errors, errors[0]
    return collected


@pytest.mark.slow
@pytest.mark.parametrize("costs, over", [
    # Runs cost exactly what was held: the limit is never passed at all.
    ((ESTIMATE, ESTIMATE), 1e-9),
    # Runs cost 0.20 to 0.40: only the holds live at the last grant can
    # each pass their estimate (by at most 0.10).
    ((0.20, 0.40), PROCESSES * 0.10),
])
def test_racing_processes_never_pass_the_limit(any_location: str, any_witness: Witness,
                                               any_store: PeeweeTelemetryStore, costs: Any,
                                               over: float) -> None:
    any_store.set_budget("race", usd=LIMIT, repo="race/repo")
    collected = race(any_location, costs)
    spent = float(any_witness.scalar(
        "SELECT SUM(cost_usd) FROM executions WHERE repo = 'race/repo'"))
    recorded = [cost for _, costs_of, _, _ in collected for cost in costs_of]
    refused = sum(n for _, _, n, _ in collected)
    print(f"race on {any_witness.kind}: {PROCESSES} processes x {ROUNDS} rounds, limit "
          f"${LIMIT}, estimate ${ESTIMATE}, costs {costs}: {len(recorded)} recorded, "
          f"{refused} refused, spent ${spent:.2f}")
    assert spent == pytest.approx(math.fsum(recorded), abs=1e-6)
    assert len(recorded) + refused == PROCESSES * ROUNDS
    assert refused > 0
    assert spent <= LIMIT + over
    assert spent >= LIMIT / 2
    assert any_witness.scalar(HOLDS) == 0


def test_a_dead_processs_hold_counts_until_its_ttl(any_location: str,
                                                   any_store: PeeweeTelemetryStore,
                                                   any_witness: Witness) -> None:
    any_store.set_budget("solo", usd=1.0)
    ready = SPAWN.Event()
    holder = SPAWN.Process(target=workers.hold_and_wait,
                           args=(any_location, "solo", 0.9, 60.0, ready))
    holder.start()
    try:
        assert ready.wait(60)
    finally:
        os.kill(holder.pid or 0, signal.SIGKILL)
        holder.join(30)
    assert any_witness.scalar(HOLDS) == 1
    with pytest.raises(BudgetExceededError) as caught:
        any_store.reserve("solo", usd=0.5)
    assert (caught.value.held_usd, caught.value.spent_usd) == (0.9, 0.0)
    # Past its ttl by the clock stores read (pinned here), it no longer counts.
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=120)
    with clock.pinned(later), any_store.reserve("solo", usd=0.5) as hold:
        assert hold.budgets == ("solo",)
    assert any_witness.scalar(HOLDS) == 0


def test_an_expired_hold_stops_counting(any_store: PeeweeTelemetryStore,
                                        any_witness: Witness) -> None:
    any_store.set_budget("b", usd=1.0)
    hold = any_store.reserve("b", usd=0.8)
    with pytest.raises(BudgetExceededError):
        any_store.reserve("b", usd=0.3)
    any_witness.execute("UPDATE telemetry_orm_budget_holds SET expires_at = 0")
    with any_store.reserve("b", usd=0.3):
        pass
    hold.release()


def test_every_budget_whose_scope_holds_the_run_must_allow(any_store: PeeweeTelemetryStore,
                                                          any_witness: Witness) -> None:
    any_store.set_budget("acme/api", usd=10.0, repo="acme/api")
    any_store.set_budget("org", usd=1.0)
    any_store.set_budget("acme/web", usd=0.1, repo="acme/web")
    any_store.set_budget("sonnet", usd=0.1, model="claude-sonnet-4-5")
    with pytest.raises(BudgetExceededError) as caught:
        any_store.reserve("acme/api", usd=1.5)
    assert caught.value.budget == "org"
    assert "'org'" in str(caught.value) and "$1.000000" in str(caught.value)
    with any_store.reserve("acme/api", usd=0.6) as hold:
        # Neither acme/web nor a model's budget contains acme/api's scope.
        assert hold.budgets == ("acme/api", "org")
        assert any_witness.scalar(HOLDS) == 2
        with pytest.raises(BudgetExceededError) as caught:
            any_store.reserve("org", usd=0.5)
        assert (caught.value.budget, caught.value.held_usd) == ("org", 0.6)
        hold.record(minimal(cost_usd=0.7, model="claude-opus-4-1"))
    assert any_witness.scalar(HOLDS) == 0
    assert any_store.budget_status("org").spent_usd == 0.7


def test_hold_record_writes_the_row_and_ends_the_hold_together(
        any_store: PeeweeTelemetryStore, any_witness: Witness,
        monkeypatch: pytest.MonkeyPatch) -> None:
    any_store.set_budget("b", usd=5.0)
    with any_store.reserve("b", usd=1.0) as hold:
        row_id = hold.record(minimal(cost_usd=0.4), key="delivery-1")
        assert hold.recorded == row_id
    assert any_witness.scalar(HOLDS) == 0
    assert any_witness.scalar("SELECT cost_usd FROM executions WHERE id = ?", row_id) == 0.4

    # The hold's delete fails, after the row's INSERT.
    monkeypatch.setattr(any_store._reserver(), "delete_hold",
                        (f"DELETE FROM no_such_table WHERE 1 = {any_store.database.param}",
                         []))
    hold = any_store.reserve("b", usd=1.0)
    with pytest.raises(TelemetryError, match="no_such_table"):
        hold.record(minimal(cost_usd=0.3, repo="acme/rolled-back"))
    with pytest.raises(TelemetryError, match="no_such_table"):
        hold.record(minimal(cost_usd=0.3, repo="acme/rolled-back"), key="delivery-2")
    assert any_witness.scalar(
        "SELECT COUNT(*) FROM executions WHERE repo = 'acme/rolled-back'") == 0
    assert any_witness.scalar(HOLDS) == 1
    monkeypatch.undo()
    hold.release()
    assert any_witness.scalar(HOLDS) == 0


def test_leaving_the_block_ends_the_hold(store: PeeweeTelemetryStore) -> None:
    store.set_budget("b", usd=1.0)
    with store.reserve("b", usd=0.9):
        pass
    with pytest.raises(KeyError), store.reserve("b", usd=0.9):
        raise KeyError("the agent failed")
    with store.reserve("b", usd=0.9) as hold:
        hold.record(minimal(cost_usd=0.05))
        with pytest.raises(TelemetryValidationError, match="ended"):
            hold.record(minimal(cost_usd=0.05))
    assert store.budget_status("b").spent_usd == 0.05


def test_an_entry_outside_the_budgets_scope_is_refused(store: PeeweeTelemetryStore) -> None:
    store.set_budget("api", usd=1.0, repo="acme/api")
    with store.reserve("api", usd=0.1) as hold:
        with pytest.raises(TelemetryValidationError, match="outside the reservation's scope"):
            hold.record(minimal(repo="acme/web", cost_usd=0.05))
        hold.record(minimal(repo="acme/api", cost_usd=0.05))
    assert store.model.select().count() == 1


def test_every_budget_the_run_falls_in_must_allow(any_store: PeeweeTelemetryStore,
                                                  any_witness: Witness) -> None:
    any_store.set_budget("org", usd=100.0)
    any_store.set_budget("alice", usd=0.5, labels={"user": "alice"})
    any_store.set_budget("sonnet", usd=0.5, model="claude-sonnet-4-5")
    alice = {"user": "alice"}
    # The run's labels and model, given to reserve, bring in the budgets of its user and model.
    with any_store.reserve("org", usd=0.4, labels=alice, model="claude-sonnet-4-5") as hold:
        assert hold.budgets == ("alice", "org", "sonnet")
        hold.record(minimal(model="claude-sonnet-4-5", cost_usd=0.4, labels=alice))
    with pytest.raises(BudgetExceededError) as refused:
        any_store.reserve("org", usd=0.2, labels=alice)
    assert refused.value.budget == "alice"
    # A run reserved without them cannot be recorded into a budget left unchecked.
    with any_store.reserve("org", usd=0.2) as hold:
        assert hold.budgets == ("org",)
        with pytest.raises(TelemetryValidationError, match="falls in budget 'alice'"):
            hold.record(minimal(model="other-model", cost_usd=0.2, labels=alice))
        with pytest.raises(TelemetryValidationError, match="falls in budget 'sonnet'"):
            hold.record(minimal(model="claude-sonnet-4-5", cost_usd=0.2))
        hold.record(minimal(model="other-model", cost_usd=0.2, labels={"user": "bob"}))
    assert any_witness.scalar("SELECT COUNT(*) FROM executions") == 2
    assert any_witness.scalar("SELECT SUM(cost_usd) FROM executions") == pytest.approx(0.6)
    # The run's scope must agree with the budget named.
    any_store.set_budget("api", usd=1.0, repo="acme/api", labels={"team": "core"})
    with pytest.raises(TelemetryValidationError, match="^repo: 'acme/web' is outside"):
        any_store.reserve("api", usd=0.1, repo="acme/web")
    with pytest.raises(TelemetryValidationError, match="^labels.team: 'web' is outside"):
        any_store.reserve("api", usd=0.1, labels={"team": "web"})
    with pytest.raises(TelemetryValidationError, match="^labels: label name"):
        any_store.reserve("api", usd=0.1, labels={"Team": "web"})
    with any_store.reserve("api", usd=0.1, repo="acme/api", labels={"user": "bob"}) as hold:
        with pytest.raises(TelemetryValidationError, match="outside the reservation's scope"):
            hold.record(minimal(repo="acme/api", model="m", labels={"team": "core"}))  # no user
        hold.record(minimal(repo="acme/api", model="m", labels={"team": "core", "user": "bob"}))


@pytest.mark.parametrize("usd, ttl, field", [
    (-1, 60, "usd"), (math.inf, 60, "usd"), ("1", 60, "usd"), (1, 0, "ttl"), (1, -5, "ttl"),
])
def test_bad_estimates_are_refused(store: PeeweeTelemetryStore, usd: Any, ttl: Any,
                                   field: str) -> None:
    store.set_budget("b", usd=1.0)
    with pytest.raises(TelemetryValidationError) as caught:
        store.reserve("b", usd=usd, ttl=ttl)
    assert caught.value.field == field


def test_reserve_inside_an_app_transaction_is_refused(tmp_path: Any) -> None:
    database = peewee.SqliteDatabase(str(tmp_path / "app.db"))
    store = create_telemetry_store(database)
    store.set_budget("b", usd=1.0)
    with database.atomic(), pytest.raises(TransactionOpenError):
        store.reserve("b", usd=0.1)
    with store.reserve("b", usd=0.1) as hold:
        hold.record(minimal(cost_usd=0.1))
    store.close()
    database.close()


def test_hold_record_inside_an_app_transaction_goes_with_it(tmp_path: Any) -> None:
    database = peewee.SqliteDatabase(str(tmp_path / "app.db"))
    store = create_telemetry_store(database)
    store.set_budget("b", usd=1.0)
    witness = sqlite3.connect(tmp_path / "app.db")
    hold = store.reserve("b", usd=0.3)
    with pytest.raises(RuntimeError), database.atomic():
        hold.record(minimal(cost_usd=0.2, repo="acme/undone"))
        raise RuntimeError("the application's transaction rolls back")
    # The row went with it; the hold's rows came back and count to its ttl.
    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 0
    assert witness.execute(HOLDS).fetchone()[0] == 1
    with pytest.raises(BudgetExceededError):
        store.reserve("b", usd=0.8)
    with store.reserve("b", usd=0.3) as hold, database.atomic():
        row_id = hold.record(minimal(cost_usd=0.2, repo="acme/kept"))
    assert witness.execute("SELECT repo FROM executions WHERE id = ?",
                           (row_id,)).fetchone() == ("acme/kept",)
    assert witness.execute(HOLDS + " WHERE hold = ?", (hold.id,)).fetchone()[0] == 0
    assert store.budget_status("b").spent_usd == 0.2
    witness.close()
    store.close()
    database.close()


# --- What reservations count ------------------------------------------------------


@pytest.mark.parametrize("change", ["set", "delete"])
def test_a_run_recorded_after_its_budget_changed_counts_as_the_new_budget_says(
        any_store: PeeweeTelemetryStore, change: str) -> None:
    any_store.set_budget("b", usd=10.0)
    hold = any_store.reserve("b", usd=1.0)
    # The budget narrows to another repo (or is deleted and set again so)
    # while the run goes on; a reservation reads it again meanwhile.
    if change == "delete":
        any_store.delete_budget("b")
    any_store.set_budget("b", usd=10.0, repo="acme/x")
    with any_store.reserve("b", usd=0.5):
        pass
    hold.record(minimal(cost_usd=5.0, repo="acme/y"))
    # acme/y is outside the budget now: nothing of it counts.
    assert any_store.budget_status("b").spent_usd == 0.0
    with any_store.reserve("b", usd=9.5) as held:
        assert held.usd == 9.5


def test_a_replaced_rows_new_cost_counts_at_once(any_store: PeeweeTelemetryStore,
                                                any_witness: Witness) -> None:
    any_store.set_budget("b", usd=10.0)
    any_store.record(minimal(cost_usd=1.0), key="run-1")
    with any_store.reserve("b", usd=1.0):
        pass
    assert any_witness.scalar("SELECT COUNT(*) FROM telemetry_orm_budget_spend") == 1
    before = any_witness.scalar("SELECT replaced FROM telemetry_orm_budget_state")
    any_store.record(minimal(cost_usd=9.5), key="run-1", replace=True)
    assert any_witness.scalar("SELECT replaced FROM telemetry_orm_budget_state") == before + 1
    with pytest.raises(BudgetExceededError) as caught:
        any_store.reserve("b", usd=1.0)
    assert caught.value.spent_usd == 9.5


def test_many_reservations_count_every_row(any_store: PeeweeTelemetryStore,
                                          any_witness: Witness) -> None:
    any_store.set_budget("b", usd=1000.0)
    for n in range(reservations.ADVANCE_ROWS * 2 + 5):
        if n % 7 == 0:
            any_store.record(minimal(cost_usd=0.5))  # spent outside any hold
        with any_store.reserve("b", usd=0.5) as hold:
            hold.record(minimal(cost_usd=0.25))
    spent = float(any_witness.scalar("SELECT SUM(cost_usd) FROM executions"))
    through = any_witness.scalar("SELECT through_id FROM telemetry_orm_budget_spend")
    assert through > reservations.ADVANCE_ROWS  # the watermark moved
    with pytest.raises(BudgetExceededError) as caught:
        any_store.reserve("b", usd=1000.0 - spent + 0.01)
    assert caught.value.spent_usd == pytest.approx(spent, abs=1e-6)
    assert any_store.budget_status("b").spent_usd == pytest.approx(spent, abs=1e-6)


def test_on_sqlite_the_watermarks_follow_the_rows_recorded_in_their_holds(
        store: PeeweeTelemetryStore, witness: Any) -> None:
    store.set_budget("api", usd=1000.0, repo="acme/api")
    store.set_budget("org", usd=1000.0)
    with store.reserve("api", usd=1.0):
        pass  # the watermarks are made
    entries = [minimal(cost_usd=0.125),
               minimal(cost_usd=0, input_tokens=1000, output_tokens=200),  # list price
               minimal(model="no-such-model", cost_usd=0, input_tokens=5),  # unpriced
               minimal(cost_usd=0.3333333337)]
    for n in range(12):
        if n % 5 == 4:
            store.record(minimal(repo="acme/web", cost_usd=0.5))  # org's only
        with store.reserve("api", usd=1.0) as hold:
            row = hold.record(entries[n % len(entries)])
        if n % 4 != 2:  # an unpriced row is left to the next reservation
            marks = witness.execute(
                "SELECT budget, through_id FROM telemetry_orm_budget_spend").fetchall()
            assert dict(marks) == {"api": row, "org": row}
    for name in ("api", "org"):
        status = store.budget_status(name)
        with pytest.raises(BudgetExceededError) as caught:
            store.reserve(name, usd=1000.0 - status.spent_usd + 0.001)
        assert caught.value.spent_usd == pytest.approx(status.spent_usd, abs=1e-6)
        assert status.unknown == 3


def test_a_row_committed_late_below_the_watermark_is_counted(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    if any_witness.kind == "sqlite":
        pytest.skip("SQLite gives out ids under its write lock: none commits late")
    any_store.set_budget("b", usd=10.0)
    # Another connection inserts a row (its id given out now) and commits later.
    any_witness.execute("BEGIN")
    any_witness.execute("INSERT INTO executions (repo, event_type, model, conclusion, "
                        "cost_usd) VALUES ('acme/api', 'push', 'm', 'success', 5.0)")
    try:
        later = any_store.record(minimal(cost_usd=0.1))
        with any_store.reserve("b", usd=1.0):
            pass
    finally:
        any_witness.execute("COMMIT")
    assert any_witness.scalar("SELECT MIN(id) FROM executions") < later
    # Asked to move the watermark again, it must not pass the late row.
    any_store._reserver().past["b"] = reservations.ADVANCE_ROWS
    with pytest.raises(BudgetExceededError) as caught:
        any_store.reserve("b", usd=5.0)
    assert caught.value.spent_usd == pytest.approx(5.1)


def test_a_labelled_budget_holds_only_its_labels_runs(any_store: PeeweeTelemetryStore,
                                                     any_witness: Witness) -> None:
    platform = {"team": "platform"}
    any_store.set_budget("platform", usd=1.0, labels=platform)
    any_store.set_budget("alice", usd=5.0, labels={**platform, "user": "alice"})
    any_store.record(minimal(cost_usd=50.0, labels={"team": "data"}))  # not platform's
    any_store.record(minimal(cost_usd=0.5, labels={**platform, "user": "bob"}))
    with any_store.reserve("alice", usd=0.3) as hold:
        # The team's budget contains alice's: both hold.
        assert hold.budgets == ("alice", "platform")
        with pytest.raises(TelemetryValidationError, match="outside the reservation.s scope"):
            hold.record(minimal(cost_usd=0.1, labels=platform))
        hold.record(minimal(cost_usd=0.3, labels={**platform, "user": "alice"}))
    with pytest.raises(BudgetExceededError) as caught:
        any_store.reserve("alice", usd=0.3)
    assert (caught.value.budget, caught.value.spent_usd) == ("platform", 0.8)
    with any_store.reserve("platform", usd=0.2) as hold:
        assert hold.budgets == ("platform",)
    assert any_witness.scalar(HOLDS) == 0


def test_purged_spend_of_the_period_still_counts_after_a_watermark_is_made_again(
        any_store: PeeweeTelemetryStore) -> None:
    now = dt.datetime(2026, 3, 20, 12, tzinfo=dt.timezone.utc)
    with clock.pinned(now):
        any_store.set_budget("b", usd=10.0)
        hour_ago = now - dt.timedelta(hours=1)
        any_store.record(minimal(cost_usd=0.5), key="kept", at=hour_ago)
        any_store.record_many([minimal(cost_usd=2.0)] * 4,
                              at=[now - dt.timedelta(days=d) for d in (5, 6, 7, 8)])
        with any_store.reserve("b", usd=1.0):
            pass
        any_store.rollup()
        assert any_store.purge_older_than(3) == 4  # $8 of this month, now in the rollups only
        # A replace makes the watermark be summed again, from the rows left.
        any_store.record(minimal(cost_usd=0.75), key="kept", replace=True, at=hour_ago)
        with pytest.raises(BudgetExceededError) as caught:
            any_store.reserve("b", usd=1.5)
        assert caught.value.spent_usd == pytest.approx(8.75)
        assert any_store.budget_status("b").spent_usd == pytest.approx(8.75)
        with any_store.reserve("b", usd=1.0):
            pass


def test_rows_past_the_watermark_purged_still_count(any_store: PeeweeTelemetryStore) -> None:
    now = dt.datetime(2026, 3, 20, 12, tzinfo=dt.timezone.utc)
    with clock.pinned(now):
        any_store.set_budget("b", usd=10.0)
        any_store.record(minimal(cost_usd=0.5), at=now - dt.timedelta(hours=1))
        with any_store.reserve("b", usd=0.1):
            pass  # the watermark is made
        # Older runs of this month imported afterwards: new ids past the watermark.
        any_store.record_many([minimal(cost_usd=2.0)] * 4,
                              at=[now - dt.timedelta(days=d) for d in (5, 6, 7, 8)])
        any_store.rollup()
        assert any_store.purge_older_than(3) == 4  # $8, now in the rollups only
        assert any_store.budget_status("b").spent_usd == pytest.approx(8.5)
        with pytest.raises(BudgetExceededError) as caught:
            any_store.reserve("b", usd=5.0)
        assert caught.value.spent_usd == pytest.approx(8.5)
        with any_store.reserve("b", usd=1.5):
            pass


def test_an_unpriced_runs_estimate_counts_to_the_periods_end(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    utc = dt.timezone.utc
    with clock.pinned(dt.datetime(2026, 3, 20, 12, tzinfo=utc)):
        any_store.set_budget("day", usd=1.0, period="day")
        any_store.set_budget("month", usd=10.0)
        unpriced = minimal(model="my-finetune-v2", cost_usd=0.0, input_tokens=2_000_000)
        granted = 0
        for _ in range(5):
            try:
                with any_store.reserve("day", usd=0.4) as hold:
                    hold.record(unpriced)
                    granted += 1
            except BudgetExceededError as refused:
                assert (refused.budget, refused.held_usd) == ("day", pytest.approx(0.8))
                break
        assert granted == 2  # $0.40 each kept against $1.00: a third would pass it
        # Each budget's hold lasts to its own period's end.
        kept = {row["budget"]: row["until"] for row in any_witness.rows(
            "SELECT budget, MAX(expires_at) AS until FROM telemetry_orm_budget_holds "
            "GROUP BY budget")}
        assert kept == {"day": dt.datetime(2026, 3, 21, tzinfo=utc).timestamp(),
                        "month": dt.datetime(2026, 4, 1, tzinfo=utc).timestamp()}
        # A priced run ends its hold as before.
        with any_store.reserve("day", usd=0.1) as hold:
            hold.record(minimal(cost_usd=0.05))
        assert any_witness.scalar("SELECT COUNT(*) FROM telemetry_orm_budget_holds") == 4


@pytest.mark.slow
def test_a_budget_set_again_while_reservations_race_still_holds(
        any_location: str, any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    # set_budget changes the row in place: a reservation waiting on its
    # lock reads it again (a row deleted and inserted again went unlocked).
    any_store.set_budget("b", usd=3.0)
    stop = threading.Event()
    failures: List[BaseException] = []

    def setter() -> None:
        with create_telemetry_store(any_location) as store:
            while not stop.is_set():
                store.set_budget("b", usd=3.0)

    def worker() -> None:
        try:
            with create_telemetry_store(any_location) as store:
                for _ in range(60):
                    try:
                        with store.reserve("b", usd=0.1) as hold:
                            hold.record(minimal(cost_usd=0.1))
                    except BudgetExceededError:
                        pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    changing = threading.Thread(target=setter)
    changing.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    changing.join()
    assert not failures, failures[0]
    assert any_witness.scalar("SELECT COUNT(*) FROM executions") == 30
    assert float(any_witness.scalar("SELECT SUM(cost_usd) FROM executions")) <= 3.0 + 1e-9


def _after_statement(store: PeeweeTelemetryStore, which: str, then: Any) -> None:
    """Run ``then()`` on another thread (and wait for it) right after the
    reservation's statement ``which`` (an attribute of its Reserver), once."""
    reserving = store._reserver()
    statement, run, fired = getattr(reserving, which), reserving.run, []

    def interleaved(conn: Any, sql: Any, *values: Any) -> Any:
        out = run(conn, sql, *values)
        if sql is statement and not fired:
            fired.append(True)
            other = threading.Thread(target=then)
            other.start()
            other.join(60)
            assert not other.is_alive()
        return out

    reserving.run = interleaved  # type: ignore[method-assign]


def test_a_purge_committing_while_a_reservation_sums_is_summed_again(
        any_location: str, any_store: PeeweeTelemetryStore) -> None:
    if not any_location.startswith(("postgresql", "mysql")):
        pytest.skip("SQLite's reservation holds the write lock: no purge commits meanwhile")
    now = dt.datetime(2026, 3, 20, 12, tzinfo=dt.timezone.utc)
    with clock.pinned(now), create_telemetry_store(any_location) as purger:
        any_store.set_budget("b", usd=10.0)
        any_store.record(minimal(cost_usd=0.5), at=now - dt.timedelta(hours=1))
        with any_store.reserve("b", usd=0.1):
            pass  # the watermark
        any_store.record_many([minimal(cost_usd=2.0)] * 4,
                              at=[now - dt.timedelta(days=d) for d in (4, 5, 6, 7)])
        any_store.rollup()
        purged: List[int] = []
        # The purge commits after the replace count is read, before the rows past the watermark.
        _after_statement(any_store, "read_state",
                         lambda: purged.append(purger.purge_older_than(3)))
        with pytest.raises(BudgetExceededError) as caught:
            any_store.reserve("b", usd=5.0)
        assert purged == [4]
        assert caught.value.spent_usd == pytest.approx(8.5)


def test_a_budget_set_between_the_read_and_the_lock_is_still_checked(
        any_location: str, any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    if any_witness.kind == "sqlite":
        pytest.skip("SQLite's reservation takes the write lock before it reads")
    with create_telemetry_store(any_location) as other:
        any_store.set_budget("b", usd=10.0)
        _after_statement(any_store, "read_budgets", lambda: other.set_budget("b", usd=20.0))
        with any_store.reserve("b", usd=1.0) as hold:
            assert hold.budgets == ("b",)
            hold.record(minimal(cost_usd=1.0))  # b was checked, as its lock found it
        assert any_witness.scalar("SELECT COUNT(*) FROM executions") == 1


def test_an_unpriced_runs_hold_follows_its_budgets_new_period(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    utc = dt.timezone.utc
    with clock.pinned(dt.datetime(2026, 3, 20, 12, tzinfo=utc)):
        any_store.set_budget("b", usd=1.0, period="day")
        with any_store.reserve("b", usd=0.4) as hold:
            hold.record(minimal(model="my-finetune-v2", cost_usd=0.0, input_tokens=10))
        any_store.set_budget("b", usd=1.0, period="month")
        assert any_witness.scalar("SELECT expires_at FROM telemetry_orm_budget_holds") == \
            dt.datetime(2026, 4, 1, tzinfo=utc).timestamp()


@pytest.mark.parametrize("field", ["repo", "model"])
def test_an_empty_repo_or_model_is_refused(store: PeeweeTelemetryStore, field: str) -> None:
    with pytest.raises(TelemetryValidationError, match=f"^{field}: must be a non-empty"):
        store.set_budget("b", usd=1.0, **{field: ""})
    store.set_budget("b", usd=1.0)
    with pytest.raises(TelemetryValidationError, match=f"^{field}: must be a non-empty"):
        store.reserve("b", usd=0.1, **{field: ""})
