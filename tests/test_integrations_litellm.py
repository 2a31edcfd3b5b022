"""LiteLLM's callback, with LiteLLM itself offline (``mock_response``, its
local price map): sync, async and streaming calls and failures each stored
once, under the call's id, with tokens that do not overlap, LiteLLM's cost
(else the list price), the metadata's fields and LiteLLM's ids as labels.
Read back through an independent connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline, before LiteLLM loads
litellm = pytest.importorskip("litellm", reason="LiteLLM is a test-only dependency "
                              "(tox's litellm environment installs it)")

from telemetry_orm import PeeweeTelemetryStore, create_telemetry_store  # noqa: E402
from telemetry_orm.integrations.litellm import TelemetryLogger, execution  # noqa: E402

MODEL = "anthropic/claude-sonnet-4-5"
MESSAGES = [{"role": "user", "content": "Summarise PR 42"}]
METADATA = {"repo": "acme/api", "pr_number": 42, "event_type": "pull_request.opened",
            "session_id": "s-1", "labels": {"team": "ml"}}
DEADLINE = 60.0


class Seen(TelemetryLogger):  # type: ignore[misc]
    """The logger, keeping each call's arguments (to send one again)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: List[Tuple[str, Tuple[Any, ...]]] = []

    def _record(self, kwargs: Any, response: Any, start_time: Any, end_time: Any,
                failed: bool) -> None:
        self.calls.append(("failure" if failed else "success",
                           (kwargs, response, start_time, end_time)))
        super()._record(kwargs, response, start_time, end_time, failed)


@contextlib.contextmanager
def installed(handler: Seen) -> Iterator[Seen]:
    """``handler`` as LiteLLM's callback, for the block."""
    before = litellm.callbacks
    litellm.callbacks = [handler]
    try:
        yield handler
    finally:
        # LiteLLM copies `callbacks` into lists of its own at the first call:
        # the handler leaves each of them.
        litellm.callbacks = before
        for name in ("success_callback", "failure_callback", "_async_success_callback",
                     "_async_failure_callback", "input_callback"):
            kept = getattr(litellm, name, None)
            if isinstance(kept, list):
                kept[:] = [c for c in kept if c is not handler]
        handler.close()


@pytest.fixture
def logger(store: PeeweeTelemetryStore) -> Iterator[Seen]:
    with installed(Seen(store, repo="acme/default")) as handler:
        yield handler


def rows(db_path: Path, logger: Seen, count: int) -> List[Dict[str, Any]]:
    """The rows once ``count`` are stored (LiteLLM calls back from a thread
    of its own, a moment after the call returns)."""
    deadline = time.monotonic() + DEADLINE
    with sqlite3.connect(db_path) as conn:
        conn.row_factory = sqlite3.Row
        while True:
            logger.flush()
            found = [dict(r) for r in conn.execute("SELECT * FROM executions ORDER BY id")]
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) == count, found
                return found
            time.sleep(0.05)


def labels(db_path: Path, row_id: int) -> Dict[str, str]:
    with sqlite3.connect(db_path) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'telemetry_orm_labels'"
                            ).fetchall():
            return {}  # made at the first label written
        return dict(conn.execute("SELECT name, value FROM telemetry_orm_labels "
                                 "WHERE execution_id = ?", (row_id,)).fetchall())


def test_a_sync_call(logger: Seen, db_path: Path) -> None:
    response = litellm.completion(model=MODEL, messages=MESSAGES, mock_response="Looks good.",
                                  metadata=METADATA, user="alice")
    [row] = rows(db_path, logger, 1)
    assert {k: row[k] for k in ("repo", "pr_number", "event_type", "model", "provider",
                                "conclusion", "session_id", "stop_reason")} == {
        "repo": "acme/api", "pr_number": 42, "event_type": "pull_request.opened",
        "model": "claude-sonnet-4-5", "provider": "anthropic", "conclusion": "success",
        "session_id": "s-1", "stop_reason": "stop"}
    usage = response.usage
    assert (row["input_tokens"], row["output_tokens"]) == (usage.prompt_tokens,
                                                         usage.completion_tokens)
    assert row["cost_usd"] > 0
    assert row["cost_usd"] == pytest.approx(response._hidden_params["response_cost"])
    assert row["duration_ms"] > 0
    assert labels(db_path, row["id"]) == {"team": "ml", "end_user": "alice"}
    # The same call logged again (LiteLLM retrying its callback) is stored once.
    kind, arguments = logger.calls[0]
    logger.log_success_event(*arguments)
    assert len(rows(db_path, logger, 1)) == 1


def test_cache_tokens_are_taken_out_of_the_prompt(logger: Seen, db_path: Path) -> None:
    mocked = litellm.ModelResponse(
        choices=[{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        usage={"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
               "prompt_tokens_details": {"cached_tokens": 600},
               "cache_read_input_tokens": 600, "cache_creation_input_tokens": 300})
    response = litellm.completion(model=MODEL, messages=MESSAGES, mock_response=mocked)
    [row] = rows(db_path, logger, 1)
    assert (row["input_tokens"], row["cache_read_tokens"], row["cache_creation_tokens"],
            row["output_tokens"]) == (100, 600, 300, 50)
    assert row["repo"] == "acme/default" and row["event_type"] == "litellm.completion"
    # LiteLLM's own cost of those tokens: 100 in, 600 read, 300 written, 50 out.
    assert row["cost_usd"] == pytest.approx(response._hidden_params["response_cost"])
    assert row["cost_usd"] == pytest.approx(100 * 3e-6 + 600 * 3e-7 + 300 * 3.75e-6 + 50 * 15e-6)


def test_async_calls_and_streams(logger: Seen, db_path: Path) -> None:
    async def calls() -> None:
        await litellm.acompletion(model=MODEL, messages=MESSAGES, mock_response="async",
                                  metadata={"repo": "acme/async"})
        stream = await litellm.acompletion(model=MODEL, messages=MESSAGES, stream=True,
                                           mock_response="an async stream of words",
                                           metadata={"repo": "acme/astream"})
        async for _ in stream:
            pass
        # The callbacks run as tasks of this loop: give them their turn.
        deadline = time.monotonic() + DEADLINE
        while len(logger.calls) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    asyncio.run(calls())
    for _ in litellm.completion(model=MODEL, messages=MESSAGES, stream=True,
                                mock_response="a stream of words",
                                metadata={"repo": "acme/stream"}):
        pass
    found = {row["repo"]: row for row in rows(db_path, logger, 3)}
    assert set(found) == {"acme/async", "acme/astream", "acme/stream"}
    for row in found.values():
        assert row["conclusion"] == "success" and row["output_tokens"] > 0
        assert row["input_tokens"] > 0 and row["cost_usd"] > 0
    assert sorted(kind for kind, _ in logger.calls) == ["success"] * 3


def test_failures(logger: Seen, db_path: Path) -> None:
    with pytest.raises(Exception, match="boom"):
        litellm.completion(model=MODEL, messages=MESSAGES, mock_response=Exception("boom"),
                           metadata={"repo": "acme/sync-fail"})

    async def failing() -> None:
        with pytest.raises(Exception, match="bang"):
            await litellm.acompletion(model=MODEL, messages=MESSAGES,
                                      mock_response=Exception("bang"),
                                      metadata={"repo": "acme/async-fail"})
        deadline = time.monotonic() + DEADLINE
        while not any(r for r in logger.calls if r[1][0]["litellm_params"]["metadata"].get(
                "repo") == "acme/async-fail") and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    asyncio.run(failing())
    found = {row["repo"]: row for row in rows(db_path, logger, 2)}
    assert set(found) == {"acme/sync-fail", "acme/async-fail"}
    for row in found.values():
        assert row["conclusion"] == "error" and row["cost_usd"] == 0
        assert row["provider"] == "anthropic" and row["model"] == "claude-sonnet-4-5"


def test_without_litellms_price_the_list_price(logger: Seen, db_path: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"format": "telemetry_orm.prices/1", "models": {
        "house-model-1": {"provider": "openai", "input": 1e-06, "output": 2e-06}}}))
    monkeypatch.setenv("TELEMETRY_PRICES", str(prices))
    response = litellm.completion(model="openai/house-model-1", messages=MESSAGES,
                                  mock_response="hi")
    assert response._hidden_params.get("response_cost") is None  # LiteLLM has no price
    [row] = rows(db_path, logger, 1)
    assert row["provider"] == "openai"
    assert row["cost_usd"] > 0
    assert row["cost_usd"] == pytest.approx(
        row["input_tokens"] * 1e-06 + row["output_tokens"] * 2e-06)


def test_a_bad_metadata_value_is_left_out_not_the_call(logger: Seen, db_path: Path) -> None:
    litellm.completion(model=MODEL, messages=MESSAGES, mock_response="x",
                       metadata={"pr_number": "forty-two", "labels": {"Bad Name": "x"}})
    [row] = rows(db_path, logger, 1)
    assert row["pr_number"] is None and labels(db_path, row["id"]) == {}


def test_the_proxys_ids_become_labels() -> None:
    logged = {"id": "call-9", "model": "gpt-4o", "custom_llm_provider": "openai",
              "status": "success", "response_cost": 0.5, "prompt_tokens": 10,
              "completion_tokens": 5, "startTime": 100.0, "endTime": 101.25,
              "end_user": "customer-7",
              "metadata": {"user_api_key_user_id": "u-1", "user_api_key_team_id": "t-2",
                           "spend_logs_metadata": {"repo": "acme/proxy"}}}
    fields, key = execution({"standard_logging_object": logged}, None, None, None,
                            failed=False)
    assert key == "call-9" and fields["repo"] == "acme/proxy"
    assert fields["labels"] == {"user": "u-1", "team": "t-2", "end_user": "customer-7"}
    assert fields["duration_ms"] == 1250 and fields["cost_usd"] == 0.5


EXIT_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    import litellm
    from telemetry_orm import create_telemetry_store
    from telemetry_orm.integrations.litellm import TelemetryLogger

    litellm.callbacks = [TelemetryLogger(create_telemetry_store(sys.argv[1]), repo="acme/batch")]
    for i in range(int(sys.argv[2])):
        asyncio.run(litellm.acompletion(model="gpt-4o-mini", mock_response=f"answer {i}",
                                        messages=[{"role": "user", "content": "hi"}]))
    try:
        asyncio.run(litellm.acompletion(model="gpt-4o-mini", mock_response=Exception("boom"),
                                        messages=[{"role": "user", "content": "hi"}]))
    except Exception:
        pass
    # No flush, no close: the script ends at once.
""")


def test_async_calls_called_back_at_exit_are_stored(db_path: Path, tmp_path: Path) -> None:
    # LiteLLM calls back for async calls still queued from its own exit
    # handler, after the recorder's has run (or before any recorder exists).
    script = tmp_path / "batch.py"
    script.write_text(EXIT_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    db_path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(script), str(db_path), "3"], env=env, check=True,
                   capture_output=True, timeout=DEADLINE * 2)
    with sqlite3.connect(db_path) as conn:
        found = conn.execute("SELECT repo, conclusion FROM executions").fetchall()
    assert sorted(found) == [("acme/batch", "error")] + [("acme/batch", "success")] * 3


def test_a_refused_label_leaves_the_others(logger: Seen, db_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    litellm.completion(model=MODEL, messages=MESSAGES, mock_response="x", user="alice",
                       metadata={"labels": {"team": "platform", "Cost-Center": "42"}})
    [row] = rows(db_path, logger, 1)
    assert labels(db_path, row["id"]) == {"team": "platform", "end_user": "alice"}
    assert "'Cost-Center' was left out" in caplog.text


def test_a_refused_repo_becomes_the_loggers(logger: Seen, db_path: Path) -> None:
    litellm.completion(model=MODEL, messages=MESSAGES, mock_response="x",
                       metadata={"repo": 42, "event_type": ["push"]})
    [row] = rows(db_path, logger, 1)
    assert (row["repo"], row["event_type"]) == ("acme/default", "litellm.completion")


def test_a_non_finite_cost_counts_as_none(logger: Seen, db_path: Path) -> None:
    # LiteLLM itself reports a non-finite cost as 0; a proxy or an older
    # version may not.
    usage = {"usage": {"prompt_tokens": 100, "completion_tokens": 20}}
    for call, cost in (("none", None), ("nan", math.nan), ("inf", math.inf)):
        logger.log_success_event({"model": "gpt-4o", "litellm_call_id": call,
                                  "response_cost": cost}, usage, 0.0, 1.0)
    found = rows(db_path, logger, 3)
    assert found[0]["cost_usd"] > 0  # the list price
    assert [r["cost_usd"] for r in found] == [found[0]["cost_usd"]] * 3


def test_a_failure_records_what_litellm_reports_for_it(logger: Seen, db_path: Path) -> None:
    # The tokens and cost a failed call reports (usually none), never a list price.
    for call, cost in (("f1", None), ("f2", 0.002)):
        logged = {"id": call, "status": "failure", "model": "gpt-4o", "prompt_tokens": 100,
                  "completion_tokens": 0, "response_cost": cost}
        logger.log_failure_event({"standard_logging_object": logged}, None, 0.0, 1.0)
    found = rows(db_path, logger, 2)
    assert [(r["conclusion"], r["input_tokens"], r["output_tokens"], r["cost_usd"])
            for r in found] == [("error", 100, 0, 0.0), ("error", 100, 0, 0.002)]


def test_a_full_recorder_drops_calls_rather_than_block(db_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    store = create_telemetry_store(db_path, busy_timeout=4000)
    lock = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    try:
        with installed(Seen(store, repo="acme/full", max_queue=3)) as handler:
            lock.execute("BEGIN EXCLUSIVE")  # the writer cannot commit

            async def calls() -> float:
                started = time.monotonic()
                for i in range(10):
                    await litellm.acompletion(model=MODEL, messages=MESSAGES,
                                              mock_response=f"r{i}")
                # The callbacks run as tasks of this loop: give them their turn.
                deadline = time.monotonic() + DEADLINE
                while len(handler.calls) < 10 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                return time.monotonic() - started

            with caplog.at_level(logging.WARNING, "telemetry_orm.integrations.litellm"):
                took = asyncio.run(calls())
            lock.execute("COMMIT")
            # A callback waiting for room would have held the loop for the
            # busy timeout (4 s), at least.
            assert took < 2.0, took
            assert handler.dropped == 7
            assert "full" in caplog.text
            assert len(rows(db_path, handler, 3)) == 3
    finally:
        lock.close()
        store.close()
