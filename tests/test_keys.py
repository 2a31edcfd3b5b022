"""Record keys outlive the purge: an execution recorded or imported again
after its row was purged (the rollups still count it) is not counted twice;
purged keys are forgotten past ``key_days``, and an import then refuses the
unknown keyed rows it can no longer check. Figures are checked against the
raw rows through an independent connection."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any, Dict, Tuple

from support import Witness, minimal
from test_import import call, run, write_lines
from transcripts import expected_totals, write_folder

from telemetry_orm import PeeweeTelemetryStore, create_telemetry_store
from telemetry_orm.transfer import import_files

UTC = dt.timezone.utc
#: A fixed instant long past (older than any purge of a day).
PAST = dt.datetime(2021, 5, 1, 9, 30, tzinfo=UTC)
MODEL = "claude-sonnet-4-5-20250929"


def at(witness: Witness, when: dt.datetime) -> Any:
    return when.strftime("%Y-%m-%d %H:%M:%S") if witness.kind == "sqlite" else when


def totals(store: PeeweeTelemetryStore) -> Tuple[int, int, float]:
    metrics = store.report(since=None).totals
    return metrics.executions, metrics.total_tokens, round(metrics.cost_usd or 0.0, 6)


def raw_totals(witness: Witness) -> Tuple[int, int, float]:
    row = witness.rows("SELECT COUNT(*) AS n, COALESCE(SUM(input_tokens + output_tokens + "
                       "cache_read_tokens + cache_creation_tokens), 0) AS t, "
                       "COALESCE(SUM(cost_usd), 0) AS c FROM executions")[0]
    return int(row["n"]), int(row["t"]), round(float(row["c"]), 6)


def test_three_rounds_of_import_rollup_and_purge_of_one_unchanged_session_count_it_once(
        any_store: PeeweeTelemetryStore, any_witness: Witness, tmp_path: Path) -> None:
    projects = write_folder(tmp_path / "claude", sessions=1, calls_per_session=20,
                            models=(MODEL,))
    expected = expected_totals(projects).by_model[MODEL]
    tokens = (expected.input_tokens + expected.output_tokens + expected.cache_read_tokens
              + expected.cache_creation_tokens)
    first = import_files("claude-code", [projects], any_store)
    assert first.imported == 1
    counted = raw_totals(any_witness)
    assert counted[:2] == (1, tokens)

    for _ in range(3):
        any_store.rollup()
        assert any_store.purge_older_than(1) in (0, 1)
        assert any_witness.count() == 0
        again = import_files("claude-code", [projects], any_store)
        assert (again.imported, again.updated, again.unchanged) == (0, 0, 1)
        assert any_witness.count() == 0
        assert totals(any_store) == counted


def test_a_keyed_record_sent_again_after_its_purge_returns_its_id_and_adds_nothing(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    row_id = any_store.record(minimal(input_tokens=40, cost_usd=0.5), key="delivery-1")
    any_store.record(minimal(input_tokens=2))
    any_witness.execute("UPDATE executions SET created_at = ?", at(any_witness, PAST))
    any_store.rollup()
    before = totals(any_store)
    assert before == raw_totals(any_witness)
    assert any_store.purge_older_than(1) == 2

    # A redelivered webhook, with or without replace, and in a batch.
    assert any_store.record(minimal(input_tokens=40, cost_usd=0.5), key="delivery-1") == row_id
    assert any_store.record(minimal(input_tokens=99), key="delivery-1", replace=True) == row_id
    assert any_store.record_many([minimal(), minimal()], keys=["delivery-1", "new"])[0] == row_id
    assert any_witness.count() == 1  # only "new"
    assert totals(any_store) == (before[0] + 1, before[1] + raw_totals(any_witness)[1],
                                 before[2])


def test_purged_keys_past_key_days_are_forgotten_and_older_imports_are_refused(
        any_store: PeeweeTelemetryStore, any_witness: Witness, tmp_path: Path) -> None:
    ids = {key: any_store.record(minimal(), key=key) for key in ("a", "b", "c")}
    any_witness.execute("UPDATE executions SET created_at = ?", at(any_witness, PAST))
    assert any_store.purge_older_than(1) == 3
    assert any_witness.scalar("SELECT COUNT(*) FROM telemetry_orm_keys") == 0
    stamps = any_witness.rows("SELECT key, execution_id, purged_at FROM "
                              "telemetry_orm_purged_keys ORDER BY key")
    assert [(r["key"], r["execution_id"]) for r in stamps] == sorted(ids.items())
    # Stamped with the purge's time: the database clock, to the second.
    assert abs((dt.datetime.fromisoformat(stamps[0]["purged_at"]).replace(tzinfo=UTC)
                - any_witness.now()).total_seconds()) < 120
    assert any_witness.scalar("SELECT COUNT(*) FROM telemetry_orm_key_state") == 0

    # Two of them were purged long ago: the next purge forgets them, and
    # only them; the key table stays bounded.
    any_witness.execute("UPDATE telemetry_orm_purged_keys SET purged_at = "
                        "'2000-01-02 03:04:05' WHERE key IN ('a', 'b')")
    assert any_store.purge(1, key_days=400).deleted == 0
    assert [r["key"] for r in any_witness.rows(
        "SELECT key FROM telemetry_orm_purged_keys")] == ["c"]
    forgotten = any_witness.scalar("SELECT forgotten_before FROM telemetry_orm_key_state "
                                   "WHERE id = 1")
    horizon = any_witness.now() - dt.timedelta(days=400)
    assert abs((dt.datetime.fromisoformat(forgotten).replace(tzinfo=UTC)
                - horizon).total_seconds()) < 120
    assert any_store.record(minimal(), key="c") == ids["c"]

    # An import cannot tell whether a row older than that was counted when
    # its key is not known: it is skipped and listed, the rest goes in.
    root = tmp_path / "projects"
    write_lines(root / "-old" / "s-old.jsonl",
                [call("s-old", "m1", "r1", "2001-02-03T04:05:06Z", "sonnet", [1, 2, 3, 4])])
    recent = (any_witness.now() - dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_lines(root / "-new" / "s-new.jsonl",
                [call("s-new", "m2", "r2", recent, "sonnet", [1, 2, 3, 4])])
    result = import_files("claude-code", [root], any_store)
    assert (result.imported, result.skipped_count) == (1, 1)
    (where, reason), = result.skipped
    assert "s-old.jsonl" in where
    assert "claude-code:s-old:sonnet" in reason and "2001-02-03 04:05:06" in reason
    assert "forgotten" in reason
    assert any_witness.rows("SELECT session_id FROM executions") == [{"session_id": "s-new"}]


def test_a_key_whose_row_another_program_deleted_is_kept_too(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    row_id = any_store.record(minimal(), key="k")
    # The TypeScript store's own purge, or a DELETE by hand: the sweep of
    # this package's next purge keeps the key all the same.
    any_witness.execute("DELETE FROM executions")
    assert any_store.record(minimal(), key="k") == row_id
    assert any_store.purge_older_than(1) == 0
    assert any_witness.rows("SELECT key, execution_id FROM telemetry_orm_purged_keys") == [
        {"key": "k", "execution_id": row_id}]
    assert any_store.record(minimal(), key="k") == row_id
    assert any_witness.count() == 0


def _master(path: Path) -> Dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        return {row[0]: row[1:] for row in conn.execute(
            "SELECT name, type, sql FROM sqlite_master WHERE tbl_name = 'executions'")}
    finally:
        conn.close()


def test_a_file_from_before_purged_keys_gets_them_and_executions_stays_the_originals(
        db_path: Path) -> None:
    with create_telemetry_store(db_path) as store:
        row_id = store.record(minimal(), key="old")
        master = _master(db_path)
    # A file written before the purged keys existed has the keys table only.
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TABLE telemetry_orm_purged_keys")
    conn.execute("DROP TABLE telemetry_orm_key_state")
    conn.execute("UPDATE executions SET created_at = '2021-05-01 09:30:00'")
    conn.commit()
    conn.close()

    with create_telemetry_store(db_path) as store:
        store.rollup()
        assert store.purge_older_than(1) == 1
        assert store.record(minimal(), key="old") == row_id
        assert store.model.select().count() == 0
    assert _master(db_path) == master
    assert sorted(kind for kind, _ in master.values()) == ["index", "index", "table"]


def test_the_command_line_purge_takes_key_days(db_path: Path) -> None:
    with create_telemetry_store(db_path) as store:
        store.record(minimal(), key="a")
        store.record(minimal(), key="b")
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE executions SET created_at = '2021-05-01 09:30:00'")
    assert run("purge", "--days", "1", "--db", str(db_path))[0] == 0
    with conn:
        conn.execute("UPDATE telemetry_orm_purged_keys SET purged_at = '2000-01-01 00:00:00'")
    # A million days keeps them (and reaches before any date: nothing is
    # forgotten), a bad number is refused, ten days forgets them.
    assert run("purge", "--days", "1", "--key-days", "1000000", "--db", str(db_path))[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM telemetry_orm_purged_keys").fetchone()[0] == 2
    assert run("purge", "--days", "1", "--key-days", "-3", "--db", str(db_path))[0] != 0
    assert run("purge", "--days", "1", "--key-days", "10", "--db", str(db_path))[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM telemetry_orm_purged_keys").fetchone()[0] == 0
    conn.close()
