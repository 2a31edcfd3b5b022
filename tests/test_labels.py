"""Labels: the side table beside ``executions`` on every engine."""

from __future__ import annotations

import pytest
from support import Witness

from telemetry_orm import PeeweeTelemetryStore
from telemetry_orm.schema import LABELS_TABLE


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
