"""The quick checks on the write path accept exactly what the field checks accept.

``TelemetryRecord`` tests plain values with one inline expression and hands
anything unusual to the per-field checks; ``from_mapping`` has a shortcut for
a plain ``dict`` with snake_case keys. These tests hold both shortcuts to the
full rules, value by value and field by field.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from types import MappingProxyType
from typing import Any, Dict, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry_orm import FIELD_NAMES, TelemetryRecord, TelemetryValidationError


class Level(enum.IntEnum):
    HIGH = 7


class Text(str):
    pass


ODD_VALUES = [
    None, True, False, 0, 1, -1, 2**63, -(2**63), 0.0, -0.0, 1.5, -1.5, math.inf, -math.inf,
    math.nan, "", "x", Text("x"), b"x", Level.HIGH, 1 + 0j, [], object(),
    2**63 - 1, 2**53 + 1, float(2**63), "é", "\ud800", " ",
]
VALUES = st.one_of(
    st.sampled_from(ODD_VALUES), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=3), st.none(),
)


def _outcome(make: Any) -> Tuple[str, Any]:
    try:
        return ("ok", make().as_dict())
    except TelemetryValidationError as exc:
        return ("error", str(exc))


def _full_rules(values: Dict[str, Any]) -> Tuple[str, Any]:
    """What the per-field checks alone say about ``values``."""
    # Each field declares its check in the dataclass's field metadata (the
    # columns' here: labels are not one, and have their own tests).
    for field in dataclasses.fields(TelemetryRecord):
        if not field.metadata.get("column", True):
            continue
        try:
            field.metadata["check"](field.name, values[field.name])
        except TelemetryValidationError as exc:
            return ("error", str(exc))
    return ("ok", values)


BASE = TelemetryRecord(
    delivery_id="d", repo="acme/api", pr_number=3, event_type="push", model="m",
    input_tokens=1, output_tokens=2, cache_read_tokens=3, cache_creation_tokens=4,
    duration_ms=5, cost_usd=0.25, conclusion="success", session_id="s", num_turns=6,
    stop_reason="end_turn",
).as_dict()


@pytest.mark.parametrize("field", FIELD_NAMES)
def test_any_odd_value_in_a_field_gets_the_answer_of_the_field_check(field: str) -> None:
    for value in ODD_VALUES:
        values = {**BASE, field: value}

        assert _outcome(lambda v=values: TelemetryRecord(**v)) == _full_rules(values), value


@settings(max_examples=400, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(FIELD_NAMES), VALUES, max_size=4))
def test_a_record_is_accepted_exactly_when_every_field_check_accepts_it(
    changes: Dict[str, Any],
) -> None:
    values = {**BASE, **changes}

    assert _outcome(lambda: TelemetryRecord(**values)) == _full_rules(values)


@settings(max_examples=400, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from(FIELD_NAMES + ("deliveryId", "costUsd", "colour")), VALUES, max_size=4
    ),
    drop=st.sets(st.sampled_from(FIELD_NAMES), max_size=2),
)
def test_from_mapping_gives_a_plain_dict_the_same_answer_as_any_other_mapping(
    changes: Dict[str, Any], drop: set[str]
) -> None:
    mapping = {k: v for k, v in {**BASE, **changes}.items() if k not in drop}

    assert _outcome(lambda: TelemetryRecord.from_mapping(mapping)) == _outcome(
        lambda: TelemetryRecord.from_mapping(MappingProxyType(mapping))
    )


# For each field, a value that is fine for some other field but not this one.
WRONG_HERE = {
    "delivery_id": 1,
    "repo": "",
    "pr_number": 0,
    "event_type": None,
    "provider": 5,
    "model": Text("m"),
    "input_tokens": "12",
    "output_tokens": -1,
    "cache_read_tokens": 1.0,
    "cache_creation_tokens": "4",
    "duration_ms": True,
    "cost_usd": math.nan,
    "conclusion": 0,
    "session_id": 2,
    "num_turns": -1,
    "stop_reason": 3.5,
}


def test_every_field_is_covered() -> None:
    assert set(WRONG_HERE) == set(FIELD_NAMES)


@pytest.mark.parametrize("field", FIELD_NAMES)
def test_a_wrong_value_in_any_field_is_refused_naming_that_field(field: str) -> None:
    with pytest.raises(TelemetryValidationError) as caught:
        TelemetryRecord(**{**BASE, field: WRONG_HERE[field]})
    assert caught.value.field == field

    with pytest.raises(TelemetryValidationError) as caught:
        TelemetryRecord.from_mapping({**BASE, field: WRONG_HERE[field]})
    assert caught.value.field == field


def test_unusual_but_valid_values_are_still_accepted() -> None:
    record = TelemetryRecord(**{**BASE, "cost_usd": 0, "num_turns": Level.HIGH, "pr_number": None})

    assert (record.cost_usd, record.num_turns, record.pr_number) == (0, 7, None)


def test_none_for_a_field_with_a_default_means_the_default() -> None:
    record = TelemetryRecord.from_mapping({**BASE, "provider": None, "cost_usd": None})

    assert (record.provider, record.cost_usd) == ("anthropic", 0.0)
