"""The README's Python blocks, and docs/reports.md's, run as written: each in
a fresh namespace in an empty folder, printing what the text says they print.
Calls that would go over the network (the Agent SDK's ``query``, the
Anthropic client) return objects of the SDKs' real classes instead."""

from __future__ import annotations

import asyncio
import configparser
import datetime as dt
import re
import sqlite3
import zoneinfo
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

import peewee
import pytest

from telemetry_orm import PeeweeTelemetryStore
from telemetry_orm.cli import main

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def python_blocks(path: Path) -> List[Tuple[str, Optional[str]]]:
    """Each ``python`` block of ``path``, with what the text right after it
    says it prints (``prints `…``` inline, or ``prints`` and a text block)."""
    text = path.read_text(encoding="utf-8")
    fences = list(FENCE.finditer(text))
    blocks: List[Tuple[str, Optional[str]]] = []
    for i, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        after = text[fence.end():fences[i + 1].start() if i + 1 < len(fences) else len(text)]
        expected: Optional[str] = None
        inline = re.match(r"\s*prints `([^`]+)`", after)
        if inline:
            expected = inline.group(1) + "\n"
        elif re.fullmatch(r"\s*prints\s*", after) and fences[i + 1].group(1) == "text":
            expected = fences[i + 1].group(2)
        blocks.append((fence.group(2), expected))
    return blocks


README = python_blocks(ROOT / "README.md")


def close_all(namespace: Dict[str, Any]) -> None:
    """Close what a block left open (stores first, then their databases)."""
    values = list(namespace.values())
    for value in values:
        if isinstance(value, PeeweeTelemetryStore):
            value.close()
    for value in values:
        if isinstance(value, (peewee.Database, peewee.DatabaseProxy)) and (
                not isinstance(value, peewee.DatabaseProxy) or value.obj is not None):
            value.close()


def run_block(code: str, capsys: pytest.CaptureFixture[str]) -> Tuple[Dict[str, Any], str]:
    namespace: Dict[str, Any] = {"__name__": "__readme__"}
    capsys.readouterr()
    exec(compile(code, "README block", "exec"), namespace)  # noqa: S102 - the docs' own code
    return namespace, capsys.readouterr().out


def rows(path: Path, sql: str) -> List[Tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_the_readme_has_its_python_blocks() -> None:
    # Quickstart, the store's own database, the app's database, an agent
    # result, an API call's usage: a block lost by the parser is a test lost.
    assert len(README) == 5
    assert [expected is not None for _, expected in README[:2]] == [True, True]


@pytest.mark.parametrize("index", [i for i, (code, _) in enumerate(README)
                                   if "claude_agent_sdk" not in code
                                   and "anthropic" not in code])
def test_a_readme_block_runs_and_prints_what_the_readme_says(
        index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, expected = README[index]
    monkeypatch.chdir(tmp_path)
    namespace, out = run_block(code, capsys)
    close_all(namespace)
    if expected is not None:
        assert out == expected


def _result_message(sdk: Any) -> Any:
    # As the Python SDK gives it when the CLI sent no per-model usage.
    return sdk.ResultMessage(
        subtype="success", duration_ms=42_000, duration_api_ms=39_000, is_error=False,
        num_turns=7, session_id="session-1", stop_reason="end_turn", total_cost_usd=0.0731,
        usage={"input_tokens": 1_200, "output_tokens": 800, "cache_read_input_tokens": 25_000,
               "cache_creation_input_tokens": 3_000},
        result="LGTM")


def test_the_readme_agent_result_block_records_one_row_per_delivery(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    sdk = pytest.importorskip("claude_agent_sdk", reason="needs claude-agent-sdk (sdks extra)")
    [code] = [c for c, _ in README if "claude_agent_sdk" in c]

    async def query(*, prompt: str, options: Any) -> AsyncIterator[Any]:
        assert options.model == "claude-sonnet-4-5"
        yield _result_message(sdk)

    monkeypatch.setattr(sdk, "query", query)
    monkeypatch.chdir(tmp_path)
    namespace, _ = run_block(code, capsys)
    try:
        asyncio.run(namespace["review"]("Review PR 42", "delivery-1"))
        asyncio.run(namespace["review"]("Review PR 42", "delivery-1"))  # redelivered
    finally:
        close_all(namespace)
    assert rows(tmp_path / "data" / "telemetry.db",
                "SELECT repo, pr_number, model, input_tokens, output_tokens, cache_read_tokens, "
                "cache_creation_tokens, cost_usd, conclusion, num_turns FROM executions") == [
        ("acme/api", 42, "claude-sonnet-4-5", 1_200, 800, 25_000, 3_000, 0.0731, "success", 7)]


def test_the_readme_usage_block_records_the_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    anthropic = pytest.importorskip("anthropic", reason="needs anthropic (sdks extra)")
    [code] = [c for c, _ in README if "import anthropic" in c]

    class Messages:
        def create(self, *, model: str, max_tokens: int, messages: Any) -> Any:
            return anthropic.types.Message(
                id="msg_1", type="message", role="assistant", model=model,
                content=[{"type": "text", "text": "A summary."}], stop_reason="end_turn",
                stop_sequence=None,
                usage=anthropic.types.Usage(input_tokens=900, output_tokens=150,
                                            cache_read_input_tokens=4_000,
                                            cache_creation_input_tokens=0))

    class Client:
        def __init__(self) -> None:
            self.messages = Messages()

    monkeypatch.setattr(anthropic, "Anthropic", Client)
    monkeypatch.chdir(tmp_path)
    namespace, _ = run_block(code, capsys)
    close_all(namespace)
    [(model, tokens, conclusion, cost)] = rows(
        tmp_path / "data" / "telemetry.db",
        "SELECT model, input_tokens + output_tokens + cache_read_tokens, conclusion, cost_usd "
        "FROM executions")
    assert (model, tokens, conclusion) == ("claude-haiku-4-5", 5_050, "success")
    assert cost > 0  # the list price of the tokens


def test_the_reports_doc_block_prints_real_figures_on_demo_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    [(code, _)] = python_blocks(ROOT / "docs" / "reports.md")[:1]
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    path = tmp_path / "data" / "telemetry.db"

    def expected() -> Tuple[int, int]:
        # Independently: the rows of the four weeks before local midnight,
        # read as a wall time in Los Angeles.
        zone = zoneinfo.ZoneInfo("America/Los_Angeles")
        today = dt.datetime.now().replace(hour=0, minute=0, second=0, microsecond=0)
        since, until = (
            (w.replace(tzinfo=zone)).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            for w in (today - dt.timedelta(days=28), today))
        [(n, tokens)] = rows(path, "SELECT COUNT(*), SUM(input_tokens + output_tokens + "
                                   "cache_read_tokens + cache_creation_tokens) FROM executions "
                                   f"WHERE repo = 'acme/api' AND created_at >= '{since}' "
                                   f"AND created_at < '{until}'")
        return int(n), int(tokens or 0)

    before = expected()
    _, out = run_block(code, capsys)
    after = expected()  # the same unless local midnight passed meanwhile
    lines = out.splitlines()
    executions, tokens = (int(x) for x in lines[-1].split())
    assert executions > 0 and (executions, tokens) in (before, after)
    assert len(lines) > 4  # a line per week and model
    assert all(re.fullmatch(r"\d{4}-W\d\d claude-\S+ \d+\.\d+ \d+", line) for line in lines[:-1])


# --- Install and set-up (the blocks .ci/run runs in a fresh virtual environment) -------


def _ci_block(name: str) -> List[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = f"<!-- .ci/run: {name} -->\n"
    assert marker in text
    block = FENCE.match(text, text.index(marker) + len(marker))
    assert block is not None and block.group(1) == "sh"
    return [line.split("#")[0].strip() for line in block.group(2).splitlines()]


def test_the_readme_set_up_blocks_install_from_the_checkout_and_ci_runs_them() -> None:
    assert _ci_block("demo") == ["pip install .", "telemetry-orm demo",
                                 "telemetry-orm report --by model"]
    assert _ci_block("tests") == ["pip install '.[testing]'", 'pytest -m "not slow"']
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'for block in demo tests; do' in ci and "<!-- .ci/run: $1 -->" in ci
    assert "pip install telemetry_orm" not in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_testing_extra_leaves_the_agent_sdks_to_the_projects_own_tests() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    extras = {name: value.split() for name, value in config["options.extras_require"].items()}
    sdks = ["claude-agent-sdk>=0.1", "anthropic>=0.40", "openai>=1.50"]
    assert extras["sdks"] == sdks
    assert not set(sdks) & set(extras["testing"])
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini", encoding="utf-8")
    assert "sdks" in tox["testenv"]["extras"].split()
