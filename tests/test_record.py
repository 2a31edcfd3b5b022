"""TelemetryRecord: fields, defaults and validation on construction."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from support import minimal

from telemetry_orm import FIELD_NAMES, TelemetryRecord, TelemetryValidationError


def make(**overrides: Any) -> TelemetryRecord:
    return TelemetryRecord(**minimal(**overrides))


def test_fields_are_the_original_sixteen_in_order() -> None:
    assert FIELD_NAMES == (
        "delivery_id", "repo", "pr_number", "event_type", "provider", "model",
        "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
        "duration_ms", "cost_usd", "conclusion", "session_id", "num_turns", "stop_reason",
    )


def test_defaults_follow_the_original_schema() -> None:
    record = make()
    assert record.provider == "anthropic"
    assert (record.input_tokens, record.output_tokens, record.cache_read_tokens,
            record.cache_creation_tokens, record.duration_ms, record.cost_usd) == (0, 0, 0, 0, 0, 0)
    assert (record.delivery_id, record.pr_number, record.session_id,
            record.num_turns, record.stop_reason) == (None,) * 5


def test_record_is_frozen() -> None:
    record = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.repo = "other/repo"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["repo", "event_type", "model", "conclusion"])
def test_missing_required_field_is_refused(name: str) -> None:
    entry = minimal()
    del entry[name]
    with pytest.raises(TelemetryValidationError) as caught:
        TelemetryRecord.from_mapping(entry)
    assert caught.value.field == name
    assert name in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("repo", "", "non-empty string"),
        ("repo", 42, "non-empty string, got int"),
        ("event_type", None, "non-empty string, got NoneType"),
        ("model", b"claude", "got bytes"),
        ("conclusion", "", "non-empty string"),
        ("provider", "", "non-empty string"),
        ("provider", None, "got NoneType"),
        ("delivery_id", 7, "string or None, got int"),
        ("session_id", ["s"], "string or None, got list"),
        ("stop_reason", 1.0, "string or None, got float"),
        ("pr_number", 0, "> 0"),
        ("pr_number", -3, "> 0"),
        ("pr_number", "12", "got str"),
        ("pr_number", True, "got bool"),
        ("input_tokens", -1, ">= 0, got -1"),
        ("output_tokens", 1.5, "got float"),
        ("cache_read_tokens", True, "got bool"),
        ("cache_creation_tokens", None, "got NoneType"),
        ("duration_ms", "100", "got str"),
        ("num_turns", -2, ">= 0"),
        ("num_turns", False, "got bool"),
        ("cost_usd", -0.01, ">= 0"),
        ("cost_usd", math.nan, "finite"),
        ("cost_usd", math.inf, "finite"),
        ("cost_usd", "0.5", "got str"),
        ("cost_usd", False, "got bool"),
    ],
)
def test_bad_value_names_the_field(name: str, value: Any, expected: str) -> None:
    with pytest.raises(TelemetryValidationError) as caught:
        make(**{name: value})
    assert caught.value.field == name
    assert str(caught.value).startswith(f"{name}: ")
    assert expected in str(caught.value)


def test_validation_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError):
        make(repo="")


def test_accepted_edge_values() -> None:
    record = make(pr_number=1, num_turns=0, cost_usd=0, input_tokens=10**12, stop_reason="")
    assert record.cost_usd == 0 and record.num_turns == 0 and record.stop_reason == ""


def test_from_mapping_accepts_camel_case_keys_of_the_original() -> None:
    record = TelemetryRecord.from_mapping({
        "deliveryId": "d-1", "repo": "acme/api", "prNumber": 7, "eventType": "push",
        "provider": "anthropic", "model": "claude-sonnet-4-5", "inputTokens": 1,
        "outputTokens": 2, "cacheReadTokens": 3, "cacheCreationTokens": 4, "durationMs": 5,
        "costUsd": 0.25, "conclusion": "success", "sessionId": "s-1", "numTurns": 6,
        "stopReason": "end_turn",
    })
    assert record.as_row() == ("d-1", "acme/api", 7, "push", "anthropic", "claude-sonnet-4-5",
                               1, 2, 3, 4, 5, 0.25, "success", "s-1", 6, "end_turn")


def test_from_mapping_accepts_snake_case_keys() -> None:
    record = TelemetryRecord.from_mapping(minimal(cache_read_tokens=9, num_turns=2))
    assert record.cache_read_tokens == 9 and record.num_turns == 2


def test_from_mapping_refuses_an_unknown_key() -> None:
    with pytest.raises(TelemetryValidationError) as caught:
        TelemetryRecord.from_mapping(minimal(tokens=5))
    assert caught.value.field == "tokens"
    assert "unknown field" in str(caught.value)


def test_from_mapping_refuses_a_field_given_in_both_spellings() -> None:
    with pytest.raises(TelemetryValidationError) as caught:
        TelemetryRecord.from_mapping(minimal(input_tokens=1, inputTokens=2))
    assert caught.value.field == "input_tokens"


def test_from_mapping_treats_none_as_the_default_like_the_original() -> None:
    record = TelemetryRecord.from_mapping(minimal(inputTokens=None, provider=None, prNumber=None))
    assert record.input_tokens == 0 and record.provider == "anthropic" and record.pr_number is None


def test_from_mapping_refuses_a_non_mapping() -> None:
    with pytest.raises(TelemetryValidationError, match="mapping"):
        TelemetryRecord.from_mapping(["repo", "acme/api"])  # type: ignore[arg-type]


def test_as_dict_round_trips() -> None:
    record = make(pr_number=3, cost_usd=1.25)
    assert TelemetryRecord.from_mapping(record.as_dict()) == record


def test_an_engine_refuses_text_longer_than_its_column_by_field_never_truncating() -> None:
    from telemetry_orm.record import TEXT_FIELDS, length_check

    assert [name for _, name in TEXT_FIELDS] == [
        "delivery_id", "repo", "event_type", "provider", "model", "conclusion", "session_id",
        "stop_reason"]
    check_row = length_check({"repo": 8, "session_id": 4}, "MySQL")
    check_row(make(repo="acme/api", session_id=None).as_row())
    with pytest.raises(TelemetryValidationError) as caught:
        check_row(make(repo="acme/api", session_id="s" * 5).as_row())
    assert caught.value.field == "session_id"
    assert str(caught.value) == ("session_id: must be at most 4 characters "
                                 "(what MySQL holds in this column), got 5")
    with pytest.raises(ValueError, match="not text fields of a record: cost_usd"):
        length_check({"cost_usd": 3}, "MySQL")


def test_labels_are_checked_kept_by_name_and_not_a_column() -> None:
    record = make(labels={"user": "alice@example.com", "team": "platform"})
    assert list(record.labels) == ["team", "user"]
    assert record.labels == {"team": "platform", "user": "alice@example.com"}
    assert "labels" not in FIELD_NAMES and len(record.as_row()) == len(FIELD_NAMES)
    assert make().labels == {} and hash(record) == hash(make(labels=dict(record.labels)))
    assert TelemetryRecord.from_mapping({**minimal(), "labels": {"team": "a"}}).labels == {
        "team": "a"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.labels = {}  # type: ignore[misc]


@pytest.mark.parametrize("labels, field, says", [
    ({"Team": "x"}, "labels", "must match"),
    ({"9lives": "x"}, "labels", "must match"),
    ({"a" * 65: "x"}, "labels", "must match"),
    ({"team": ""}, "labels.team", "non-empty"),
    ({"team": 7}, "labels.team", "got int"),
    ({"team": "x" * 257}, "labels.team", "at most 256"),
    ({"team": "a\x00b"}, "labels.team", "NUL"),
    ({"team": "\ud800"}, "labels.team", "surrogate"),
    ({f"k{n}": "v" for n in range(17)}, "labels", "at most 16"),
    ("team=platform", "labels", "mapping"),
])
def test_a_bad_label_is_refused_naming_it(labels: Any, field: str, says: str) -> None:
    with pytest.raises(TelemetryValidationError) as caught:
        make(labels=labels)
    assert caught.value.field == field and says in str(caught.value)


def test_the_most_labels_and_the_longest_name_and_value_pass() -> None:
    labels = {f"k{n}": "v" * 256 for n in range(15)}
    labels["a" + "b" * 63] = "é"
    assert len(make(labels=labels).labels) == 16
