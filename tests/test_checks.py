"""The value rules (telemetry_orm.checks): one home for counts, money, text,
keys and instants, and the callers that rely on it."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from telemetry_orm import TelemetryRecord, TelemetryValidationError, create_telemetry_store
from telemetry_orm.checks import (
    MAX_COUNT,
    check_length,
    check_whole,
    is_amount,
    is_count,
    parse_amount,
    parse_count,
    parse_iso,
)
from telemetry_orm.prices import parse_prices
from telemetry_orm.transfer import import_files

HUGE = 10**400  # an int no float holds


def test_a_maximum_text_length_is_a_parameter_and_the_error_names_the_field() -> None:
    assert check_length("repo", "a" * 255, 255, "a VARCHAR(255) column") == "a" * 255
    assert check_length("session_id", None, 255, "a VARCHAR(255) column") is None
    with pytest.raises(TelemetryValidationError) as caught:
        check_length("repo", "é" * 1_000, 255, "a VARCHAR(255) column on MySQL")
    assert caught.value.field == "repo"
    assert str(caught.value) == ("repo: must be at most 255 characters "
                                 "(a VARCHAR(255) column on MySQL), got 1,000")


def test_a_count_is_a_whole_number_within_its_bound() -> None:
    assert is_count(0) and is_count(MAX_COUNT)
    for value in (-1, MAX_COUNT + 1, True, 1.0, "1", None):
        assert not is_count(value), value
    assert is_count(5, maximum=5) and not is_count(6, maximum=5)


def test_a_whole_number_names_its_bound_or_its_size() -> None:
    with pytest.raises(TelemetryValidationError, match=r"<= 10\*\*12 \(the bound"):
        check_whole("input_tokens", MAX_COUNT + 1)
    with pytest.raises(TelemetryValidationError,
                       match=r"> 0 or None, got a negative integer of 1329 bits"):
        check_whole("pr_number", -HUGE, 1, or_none=True)
    assert check_whole("pr_number", None, 1, or_none=True) is None


def test_an_amount_is_finite_and_not_negative_even_when_no_float_holds_it() -> None:
    assert is_amount(0) and is_amount(0.5) and is_amount(10**6)
    for value in (-0.01, float("inf"), float("nan"), HUGE, True, "1", None):
        assert not is_amount(value), value


def test_command_line_numbers_follow_the_same_rules() -> None:
    assert parse_count("12", 1, 100) == 12
    assert [parse_count(t, 1, 100) for t in ("0", "101", "-1", "+5", " 5", "1.5", "", "x", "²")
            ] == [None] * 9
    assert parse_count("9" * 30, 1) == int("9" * 30)
    assert parse_amount("1.5") == 1.5 and parse_amount("0") == 0.0
    assert [parse_amount(t) for t in ("-1", "inf", "nan", "x", "1e400")] == [None] * 5


def test_an_iso_time_with_a_z_is_utc() -> None:
    assert parse_iso("2026-03-01T12:00:00Z") == dt.datetime(2026, 3, 1, 12,
                                                            tzinfo=dt.timezone.utc)
    assert parse_iso("2026-03-01 12:00:00").tzinfo is None
    with pytest.raises(ValueError):
        parse_iso("yesterday")


# -- the callers: a cost no float holds is refused by name, not a crash ---------------


def test_an_agent_result_whose_cost_no_float_holds_is_refused_by_name() -> None:
    message = {"subtype": "success", "is_error": False, "total_cost_usd": HUGE,
               "usage": {"input_tokens": 1, "output_tokens": 2}}
    with pytest.raises(TelemetryValidationError) as caught:
        TelemetryRecord.from_agent_result(message, repo="acme/api", event_type="push",
                                          model="m")
    assert caught.value.field == "total_cost_usd"


def test_a_price_file_whose_price_no_float_holds_is_refused_by_name() -> None:
    text = '{"m": {"input_cost_per_token": 1' + "0" * 400 + ', "output_cost_per_token": 0}}'
    with pytest.raises(TelemetryValidationError, match="m: input_cost_per_token: not a price"):
        parse_prices(text, "p.json")


def test_a_transcript_line_whose_cost_no_float_holds_is_skipped_and_the_rest_imported(
        tmp_path: Path) -> None:
    folder = tmp_path / "projects" / "acme"
    folder.mkdir(parents=True)

    def line(message: str, cost: str) -> str:
        usage = {"input_tokens": 1, "output_tokens": 2}
        return (json.dumps({"type": "assistant", "timestamp": "2026-03-01T12:00:00Z",
                            "sessionId": "s", "requestId": message,
                            "message": {"id": message, "model": "m", "usage": usage}})[:-1]
                + f', "costUSD": {cost}}}')

    (folder / "s.jsonl").write_text(line("a", "1" + "0" * 400) + "\n" + line("b", "0.5") + "\n")
    db = tmp_path / "t.db"
    with create_telemetry_store(db) as store:
        result = import_files("claude-code", [tmp_path / "projects"], store)
    assert [why for _, why in result.skipped] == [f"costUSD: not a number >= 0 (1{'0' * 400})"]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT input_tokens, output_tokens, cost_usd FROM executions"
                        ).fetchall() == [(1, 2, 0.5)]
    conn.close()
