"""Reports by label: group keys ``label:NAME`` and ``labels={...}``
filters, checked against sums made in Python from the rows read raw."""

from __future__ import annotations

import collections
import datetime as _dt
import json
import random
from typing import Any, Dict, List, Optional, Tuple

import pytest
from support import Witness, minimal, run_cli

from telemetry_orm import PeeweeTelemetryStore, TelemetryValidationError

_NOW = _dt.datetime(2026, 3, 10, 12, tzinfo=_dt.timezone.utc)


def _fill(store: PeeweeTelemetryStore, count: int = 120, seed: int = 7) -> None:
    rng = random.Random(seed)
    entries, instants = [], []
    for _ in range(count):
        labels = {}
        if rng.random() < 0.7:
            labels["user"] = rng.choice(["alice", "bob", "carol"])
        if rng.random() < 0.5:
            labels["team"] = rng.choice(["platform", "web"])
        entries.append({**minimal(model=rng.choice(["m-a", "m-b"]),
                                  cost_usd=round(rng.uniform(0, 3), 4),
                                  duration_ms=rng.randrange(10, 5000),
                                  input_tokens=rng.randrange(1000)),
                        "labels": labels})
        instants.append(_NOW - _dt.timedelta(hours=rng.uniform(0, 24 * 20)))
    store.record_many(entries, at=instants)


def _raw(witness: Witness) -> List[Dict[str, Any]]:
    """Every execution with its labels, read independently."""
    rows = {int(r["id"]): {**r, "labels": {}} for r in witness.rows(
        "SELECT id, model, cost_usd, input_tokens, duration_ms FROM executions")}
    for r in witness.rows("SELECT execution_id, name, value FROM telemetry_orm_labels"):
        rows[int(r["execution_id"])]["labels"][r["name"]] = r["value"]
    return list(rows.values())


def _expected(rows: List[Dict[str, Any]], name: str, where: Dict[str, str]
              ) -> Dict[Optional[str], Tuple[int, float, int, int]]:
    groups: Dict[Optional[str], List[Dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        if all(row["labels"].get(k) == v for k, v in where.items()):
            groups[row["labels"].get(name)].append(row)
    out = {}
    for key, members in groups.items():
        durations = sorted(int(m["duration_ms"]) for m in members)
        rank = -(-len(durations) * 95 // 100)
        out[key] = (len(members), round(sum(float(m["cost_usd"]) for m in members), 6),
                    sum(int(m["input_tokens"]) for m in members), durations[rank - 1])
    return out


@pytest.mark.parametrize("where", [{}, {"team": "platform"}, {"team": "web", "user": "bob"}])
def test_a_report_by_label_sums_each_value_and_those_without_it(
        any_store: PeeweeTelemetryStore, any_witness: Witness, where: Dict[str, str]) -> None:
    _fill(any_store)
    result = any_store.report(group_by=["label:user"], labels=where or None)
    got = {row.keys["label:user"]: (row.metrics.executions, round(row.metrics.cost_usd or 0, 6),
                                    row.metrics.input_tokens, row.metrics.p95_duration_ms)
           for row in result.rows}
    expected = _expected(_raw(any_witness), "user", where)
    assert got == expected
    assert (None in got) == ("user" not in where)  # the group of those without the label
    assert result.totals.executions == sum(n for n, *_ in expected.values())


def test_labels_group_with_other_keys_and_filters(any_store: PeeweeTelemetryStore,
                                                  any_witness: Witness) -> None:
    _fill(any_store)
    result = any_store.report(group_by=["label:team", "model", "label:user"], model="m-a")
    rows = [r for r in _raw(any_witness) if r["model"] == "m-a"]
    counted = collections.Counter((r["labels"].get("team"), r["labels"].get("user"))
                                  for r in rows)
    assert {(row.keys["label:team"], row.keys["label:user"]): row.metrics.executions
            for row in result.rows} == dict(counted)
    assert {row.keys["model"] for row in result.rows} == {"m-a"}


def test_a_store_without_labels_reports_one_group_of_none_and_filters_to_nothing(
        any_store: PeeweeTelemetryStore) -> None:
    any_store.record(minimal())
    grouped = any_store.report(group_by=["label:user"])
    assert [(row.keys, row.metrics.executions) for row in grouped.rows] == [
        ({"label:user": None}, 1)]
    assert any_store.report(labels={"user": "alice"}).totals.executions == 0


@pytest.mark.parametrize("bad, field", [
    ({"group_by": ["label:Bad"]}, "group_by"), ({"group_by": ["label:"]}, "group_by"),
    ({"labels": {"team": ""}}, "labels.team"), ({"labels": ["team"]}, "labels"),
])
def test_bad_label_arguments_name_the_argument(store: PeeweeTelemetryStore,
                                               bad: Dict[str, Any], field: str) -> None:
    with pytest.raises(TelemetryValidationError) as caught:
        store.report(**bad)
    assert caught.value.field == field


def test_the_command_line_reports_by_label_in_every_format(
        store: PeeweeTelemetryStore, capsys: pytest.CaptureFixture[str]) -> None:
    store.record_many([{**minimal(cost_usd=1.0), "labels": {"user": "alice", "team": "platform"}},
                       {**minimal(cost_usd=2.0), "labels": {"team": "platform"}},
                       {**minimal(cost_usd=4.0), "labels": {"user": "<b>bob</b>"}}])
    db = ["--db", store.path, "--since", "3000d", "--by", "label:user"]
    status, out, _ = run_cli("report", *db, "--label", "team=platform", "--format", "json",
                             capsys=capsys)
    document = json.loads(out)
    assert status == 0 and document["filters"]["labels"] == {"team": "platform"}
    assert [(r["label:user"], r["cost_usd"]) for r in document["rows"]] == [
        (None, 2.0), ("alice", 1.0)]
    status, out, _ = run_cli("report", *db, capsys=capsys)
    assert status == 0 and "(none)" in out and "<b>bob</b>" in out
    status, out, _ = run_cli("report", *db, "--format", "csv", capsys=capsys)
    assert out.splitlines()[0].startswith("label:user,") and "\n,1," in out
    status, out, _ = run_cli("report", *db, "--format", "markdown", capsys=capsys)
    assert "| (none) |" in out
    status, out, _ = run_cli("report", *db, "--format", "html", capsys=capsys)
    assert status == 0 and "(none)" in out and "&lt;b&gt;bob&lt;/b&gt;" in out
    assert "<b>bob" not in out


def test_the_command_line_refuses_a_label_no_execution_has(
        store: PeeweeTelemetryStore, capsys: pytest.CaptureFixture[str]) -> None:
    store.record({**minimal(), "labels": {"user": "alice"}})
    for args in (["--by", "label:usr"], ["--label", "usr=alice"]):
        status, _, err = run_cli("report", "--db", store.path, *args, capsys=capsys)
        assert status == 2 and "no execution has a label 'usr'" in err and "user" in err
    status, _, err = run_cli("report", "--db", store.path, "--label", "user=alcie",
                             capsys=capsys)
    assert status == 0 and "did you mean 'alice'" in err
    status, _, err = run_cli("report", "--db", store.path, "--by", "label:Bad",
                             capsys=capsys)
    assert status == 2 and "label name 'Bad'" in err


def test_a_store_rolled_up_before_labels_reports_by_label_from_rows(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    any_store.record(minimal(cost_usd=1.0))
    any_store.rollup()
    # The label hours' tables as a store rolled up by an earlier version lacks them.
    for table in ("telemetry_orm_label_rollups", "telemetry_orm_label_durations"):
        any_witness.execute(f"DROP TABLE {table}")
    any_store.record({**minimal(cost_usd=2.0), "labels": {"user": "alice"}})
    assert {row.keys["label:user"]: row.metrics.cost_usd
            for row in any_store.report(group_by=["label:user"]).rows} == {
        "alice": 2.0, None: 1.0}
    assert any_store.report(labels={"user": "alice"}).totals.cost_usd == 2.0


def test_a_value_that_reads_as_none_is_quoted_in_the_human_formats(
        store: PeeweeTelemetryStore, capsys: pytest.CaptureFixture[str]) -> None:
    store.record_many([{**minimal(), "labels": {"user": "(none)"}},
                       {**minimal(), "labels": {"user": '"q"'}}, minimal()])
    _, out, _ = run_cli("report", "--db", store.path, "--by", "label:user", capsys=capsys)
    cells = {line.split("  ")[0].strip() for line in out.splitlines()[4:7]}
    assert cells == {'"(none)"', '"""q"""', "(none)"}


def test_one_label_given_twice_on_the_command_line_is_refused(
        store: PeeweeTelemetryStore, capsys: pytest.CaptureFixture[str]) -> None:
    store.record({**minimal(), "labels": {"team": "t"}})
    status, _, err = run_cli("report", "--db", store.path, "--label", "team=t", "--label",
                             "team=u", capsys=capsys)
    assert status == 2 and "team is given twice" in err
