"""Labels: the side table beside ``executions`` on every engine."""

from __future__ import annotations

import copy
import csv
import dataclasses
import datetime as _dt
import io
import json
import pickle
import sqlite3
from pathlib import Path
from typing import Dict

import pytest
from support import Witness, minimal, run_cli

from telemetry_orm import (
    PeeweeTelemetryStore,
    TelemetryError,
    TelemetryRecord,
    TelemetryValidationError,
    create_telemetry_store,
)
from telemetry_orm import labels as labels_module
from telemetry_orm.migrate import migrate
from telemetry_orm.reports import export_rows
from telemetry_orm.schema import LABELS_TABLE
from telemetry_orm.transfer import import_files


def test_the_labels_table_is_keyed_by_row_and_name_and_holds_the_longest_label(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    tables = any_store.tables
    tables.create_missing(any_store.backend, [tables.labels])
    longest = ("a" + "b" * 63, "é" * 256)
    any_witness.execute(f"INSERT INTO {LABELS_TABLE} (execution_id, name, value) "
                        "VALUES (?, ?, ?)", 1, *longest)
    any_witness.execute(f"INSERT INTO {LABELS_TABLE} (execution_id, name, value) "
                        "VALUES (?, ?, ?)", 2, *longest)
    assert any_witness.rows(f"SELECT name, value FROM {LABELS_TABLE} WHERE execution_id = ?",
                            1) == [{"name": longest[0], "value": longest[1]}]
    # One value per row and name.
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        any_witness.execute(f"INSERT INTO {LABELS_TABLE} (execution_id, name, value) "
                            "VALUES (?, ?, ?)", 1, longest[0], "other")
    # The executions table is as it was: no column, key or trigger for labels.
    assert int(any_witness.scalar("SELECT COUNT(*) FROM executions")) == 0


def _stored(witness: Witness) -> Dict[int, Dict[str, str]]:
    """Every execution's labels, read back independently."""
    found: Dict[int, Dict[str, str]] = {}
    for row in witness.rows(f"SELECT execution_id, name, value FROM {LABELS_TABLE}"):
        found.setdefault(int(row["execution_id"]), {})[row["name"]] = row["value"]
    return found


def test_every_write_path_stores_the_labels_with_their_row(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    one = any_store.record(TelemetryRecord(**minimal(), labels={"user": "alice",
                                                               "team": "platform"}))
    mapped = any_store.record({**minimal(), "labels": {"user": "bob"}})
    bare = any_store.record(minimal())
    many = any_store.record_many([{**minimal(), "labels": {"agent": "fixer"}}, minimal(),
                                  TelemetryRecord(**minimal(), labels={"user": "carol"})])
    with any_store.background() as recorder:
        recorder.record({**minimal(), "labels": {"user": "dora"}})
        recorder.record({**minimal(), "labels": {"user": "erin"}}, key="bg-1")
        recorder.record(minimal())
    stored = _stored(any_witness)
    assert stored[one] == {"user": "alice", "team": "platform"}
    assert stored[mapped] == {"user": "bob"}
    assert bare not in stored and many[1] not in stored
    assert stored[many[0]] == {"agent": "fixer"} and stored[many[2]] == {"user": "carol"}
    newest = sorted(stored)[-2:]
    assert [stored[i] for i in newest] == [{"user": "dora"}, {"user": "erin"}]
    assert int(any_witness.scalar("SELECT COUNT(*) FROM executions")) == 9


def test_a_keyed_row_keeps_its_labels_unless_replaced(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    first = any_store.record({**minimal(), "labels": {"user": "alice"}}, key="run-1")
    again = any_store.record({**minimal(), "labels": {"user": "mallory"}}, key="run-1")
    assert again == first and _stored(any_witness) == {first: {"user": "alice"}}
    any_store.record({**minimal(), "labels": {"team": "web"}}, key="run-1", replace=True)
    assert _stored(any_witness) == {first: {"team": "web"}}
    any_store.record(minimal(), key="run-1", replace=True)
    assert _stored(any_witness) == {}
    ids = any_store.record_many([{**minimal(), "labels": {"user": "a"}}, minimal()],
                                keys=["k-a", None])
    assert _stored(any_witness) == {ids[0]: {"user": "a"}}
    twice = any_store.record_many([{**minimal(), "labels": {"user": "b"}},
                                   {**minimal(), "labels": {"user": "c"}}], keys=["k-b", "k-b"])
    assert twice[0] == twice[1] and _stored(any_witness)[twice[0]] == {"user": "b"}


def test_a_bad_label_writes_nothing_and_names_the_label_and_entry(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    with pytest.raises(TelemetryValidationError, match=r"entry 1: labels\.team: .*non-empty"):
        any_store.record_many([{**minimal(), "labels": {"user": "a"}},
                               {**minimal(), "labels": {"team": ""}}])
    with pytest.raises(TelemetryValidationError, match=r"label name 'Team'"):
        any_store.record({**minimal(), "labels": {"Team": "x"}})
    assert int(any_witness.scalar("SELECT COUNT(*) FROM executions")) == 0


def test_a_label_that_cannot_be_written_leaves_no_row(store: PeeweeTelemetryStore,
                                                       db_path: Path) -> None:
    # The labels' INSERT fails after the row's, in the same transaction.
    store.record({**minimal(), "labels": {"user": "a"}})
    conn = sqlite3.connect(db_path)
    conn.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON {LABELS_TABLE} "
                 "WHEN NEW.value = 'refused' BEGIN SELECT RAISE(ABORT, 'refused'); END")
    conn.commit()
    for write in (lambda: store.record({**minimal(), "labels": {"user": "refused"}}),
                  lambda: store.record({**minimal(), "labels": {"user": "refused"}}, key="k"),
                  lambda: store.record_many([minimal(),
                                             {**minimal(), "labels": {"user": "refused"}}])):
        with pytest.raises(TelemetryError, match="refused"):
            write()
    assert conn.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM telemetry_orm_keys").fetchone()[0] == 0
    conn.close()


def test_a_purge_deletes_the_labels_of_its_rows_and_those_left_by_other_programs(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    now = _dt.datetime(2026, 6, 1, 12, tzinfo=_dt.timezone.utc)
    any_store.record_many([{**minimal(), "labels": {"user": f"u{i % 3}"}} for i in range(40)],
                          at=[now - _dt.timedelta(days=i) for i in range(40)])
    # A row deleted by another program (the original store purges without
    # knowing of labels): its labels stay behind, below every row's id.
    oldest = int(any_witness.scalar("SELECT MIN(id) FROM executions"))
    any_witness.execute("DELETE FROM executions WHERE id = ?", oldest)
    kept = any_witness.rows("SELECT id FROM executions WHERE created_at >= ?",
                            "2026-05-12 00:00:00")
    any_store.purge_older_than((_dt.datetime.now(_dt.timezone.utc)
                                - _dt.datetime(2026, 5, 12, tzinfo=_dt.timezone.utc)).days)
    left = {int(row["id"]) for row in any_witness.rows("SELECT id FROM executions")}
    assert left and left <= {int(row["id"]) for row in kept}
    assert set(_stored(any_witness)) == left


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_exports_carry_the_labels_and_imports_bring_them_back_once(
        fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        any_location: str) -> None:
    source = tmp_path / "source.db"
    with create_telemetry_store(source) as store:
        store.record_many([{**minimal(repo="a"), "labels": {"user": "alice", "team": "=1+1"}},
                           minimal(repo="b"),
                           {**minimal(repo="c"), "labels": {"user": "bob, \"the\" builder"}}])
    out = tmp_path / f"rows.{fmt}"
    assert run_cli("export", "--db", str(source), "--format", fmt, "--out", str(out),
                   capsys=capsys)[0] == 0
    text = out.read_text()
    if fmt == "jsonl":
        lines = [json.loads(line) for line in text.splitlines()]
        assert [line["labels"] for line in lines] == [
            {"team": "=1+1", "user": "alice"}, {}, {"user": "bob, \"the\" builder"}]
        assert {line["export_version"] for line in lines} == {3}
    else:
        cells = [row["labels"] for row in csv.DictReader(io.StringIO(text))]
        assert [json.loads(cell) for cell in cells] == [
            {"team": "=1+1", "user": "alice"}, {}, {"user": "bob, \"the\" builder"}]
    with create_telemetry_store(any_location) as target:
        first = import_files(fmt, [out], target)
        again = import_files(fmt, [out], target)
        assert (first.imported, again.imported, again.unchanged) == (3, 0, 3)
        witness = Witness(any_location)
        try:
            by_repo = {row["id"]: row["repo"] for row in witness.rows(
                "SELECT id, repo FROM executions")}
            assert {by_repo[i]: labels for i, labels in _stored(witness).items()} == {
                "a": {"team": "=1+1", "user": "alice"}, "c": {"user": "bob, \"the\" builder"}}
        finally:
            witness.close()


def test_an_export_row_with_bad_labels_is_skipped_naming_them(tmp_path: Path) -> None:
    with create_telemetry_store(tmp_path / "a.db") as store:
        store.record(minimal())
        columns, rows = export_rows(store.database)
        row = dict(zip(columns, next(iter(rows)), strict=True))
    lines = [{**row, "labels": value, "id": n}
             for n, value in enumerate([["x"], {"Bad": "x"}, "{not json", {"ok": "fine"}])]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with create_telemetry_store(tmp_path / "b.db") as target:
        result = import_files("jsonl", [path], target)
    assert result.imported == 1
    reasons = [reason for _, reason in result.skipped]
    assert reasons[0].startswith("labels: not a JSON object (list)")
    assert "label name 'Bad'" in reasons[1]
    assert reasons[2].startswith("labels: not JSON")


def test_a_migration_carries_the_labels(tmp_path: Path, any_location: str) -> None:
    source = tmp_path / "source.db"
    with create_telemetry_store(source) as store:
        store.record_many([{**minimal(repo=f"r{i}"), "labels": {"user": f"u{i}"}} if i % 3
                           else minimal(repo=f"r{i}") for i in range(30)])
    first = migrate(source, any_location, batch_size=7)
    again = migrate(source, any_location, batch_size=7)
    assert (first.copied, again.copied, again.already_copied) == (30, 0, 30)
    witness = Witness(any_location)
    try:
        repos = {row["id"]: row["repo"] for row in witness.rows("SELECT id, repo FROM executions")}
        assert {repos[i]: labels for i, labels in _stored(witness).items()} == {
            f"r{i}": {"user": f"u{i}"} for i in range(30) if i % 3}
    finally:
        witness.close()


def test_labels_are_a_read_only_dict_that_json_and_pickle_take(tmp_path: Path) -> None:
    record = TelemetryRecord(**minimal(), labels={"user": "alice"})
    assert json.loads(json.dumps(dataclasses.asdict(record)))["labels"] == {"user": "alice"}
    assert json.loads(json.dumps(dataclasses.asdict(TelemetryRecord(**minimal()))))[
        "labels"] == {}
    assert pickle.loads(pickle.dumps(record)) == record
    assert hash(copy.deepcopy(record)) == hash(record)
    with pytest.raises(TypeError, match="read-only"):
        record.labels["team"] = "x"  # type: ignore[index]


def test_the_sweep_never_deletes_the_labels_of_a_row_that_is_there(
        any_store: PeeweeTelemetryStore, any_witness: Witness,
        monkeypatch: pytest.MonkeyPatch) -> None:
    old = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)
    gone = any_store.record({**minimal(), "labels": {"user": "old"}}, at=old)
    live = any_store.record({**minimal(), "labels": {"user": "live"}})
    # As if the live row had committed after the sweep picked its candidates
    # (on a server, ids are given out before commit).
    picked = labels_module.orphans_below
    monkeypatch.setattr(labels_module, "orphans_below", lambda conn, model, executions, step: (
        picked(conn, model, executions, step) + [(live,)]) if picked(
            conn, model, executions, step) else [])
    any_store.purge_older_than(30)
    assert _stored(any_witness) == {live: {"user": "live"}}
    assert gone not in _stored(any_witness)


def test_an_export_reads_rows_and_labels_in_one_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with create_telemetry_store(path) as store:
        store.record_many([{**minimal(repo=f"r{i}"), "labels": {"n": str(i)}}
                           for i in range(2500)])
        columns, rows = export_rows(store.database)
        first = [next(rows) for _ in range(10)]  # the first batch of 1,000 is read
        # Another program deletes the later rows and their labels meanwhile.
        other = sqlite3.connect(path)
        other.execute(f"DELETE FROM {LABELS_TABLE} WHERE execution_id > 1000")
        other.execute("DELETE FROM executions WHERE id > 1000")
        other.commit()
        rest = list(rows)
        other.close()
    exported = [dict(zip(columns, row, strict=True)) for row in first + rest]
    assert len(exported) == 2500
    assert all(row["labels"] == {"n": row["repo"][1:]} for row in exported)


def test_an_export_imported_again_with_labels_edited_counts_nothing_twice(
        tmp_path: Path) -> None:
    with create_telemetry_store(tmp_path / "a.db") as store:
        store.record({**minimal(cost_usd=1.0), "labels": {"user": "alice"}})
        columns, rows = export_rows(store.database)
        exported = [dict(zip(columns, row, strict=True)) for row in rows]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in exported))
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps({**row, "labels": {"user": "bob"}}) + "\n"
                              for row in exported))
    with create_telemetry_store(tmp_path / "b.db") as target:
        assert import_files("jsonl", [path], target).imported == 1
        again = import_files("jsonl", [edited], target)
        assert (again.imported, again.unchanged) == (0, 1)
        assert target.report(group_by=[]).totals.cost_usd == 1.0


def test_an_export_closed_before_its_first_row_ends_its_read(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with create_telemetry_store(path) as store:
        store.record_many([minimal(), minimal()])
        columns, rows = export_rows(store.database)
        assert store.database.in_transaction()
        rows.close()  # as the CLI does when its output cannot be opened
        assert not store.database.in_transaction()
        store.record(minimal())  # a write is not stuck behind the read
    other = sqlite3.connect(path)
    assert other.execute("SELECT COUNT(*) FROM executions").fetchone() == (3,)
    other.close()


def test_an_export_dropped_unread_ends_its_read(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with create_telemetry_store(path) as store:
        store.record(minimal())
        export_rows(store.database)  # dropped at once, never read nor closed
        assert not store.database.in_transaction()
        store.record(minimal())  # committed, not held in a read left open
        other = sqlite3.connect(path)
        assert other.execute("SELECT COUNT(*) FROM executions").fetchone() == (2,)
        other.close()
