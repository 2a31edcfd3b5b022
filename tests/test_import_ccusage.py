"""``telemetry-orm import claude-code`` against ccusage 17.x: the same
transcript folder, the same token sums by model and by session, exactly.

ccusage is found through ``TELEMETRY_TEST_CCUSAGE`` (the executable) or as
``ccusage`` on ``PATH``; without it the tests that need it skip, unless
``TELEMETRY_TEST_REQUIRE_CCUSAGE=1`` (set by ``.ci/run``), then they fail.
Install it with ``npm install --prefix /tmp/ccnpm ccusage@17.2.1``.

Both sides count an API call written on several lines once and leave out
the model ``<synthetic>``. ccusage also counts API error lines, which carry
zero usage, and the importer skips them: the sums agree either way.

ccusage 17 names a "session" after the folder above the ``.jsonl`` file,
which in Claude Code's layout is the project. To get its figures per
session, it reads a copy of the folder laid out one more level deep,
``projects/<project>/<sessionId>/<sessionId>.jsonl``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Dict, NoReturn, Tuple

import pytest
from support import program
from transcripts import Expected, Tokens, expected_totals, write_folder

CCUSAGE_ENV = "TELEMETRY_TEST_CCUSAGE"
REQUIRE_ENV = "TELEMETRY_TEST_REQUIRE_CCUSAGE"
CCUSAGE_MAJOR = "17"

SESSIONS = 40
CALLS_PER_SESSION = 30


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def ccusage() -> str:
    """The ccusage 17.x executable, or skip (fail when it is required)."""
    path = os.environ.get(CCUSAGE_ENV) or shutil.which("ccusage")
    if not path:
        _unavailable(f"needs ccusage {CCUSAGE_MAJOR}.x: set {CCUSAGE_ENV} or put ccusage on "
                     f"PATH (npm install ccusage@{CCUSAGE_MAJOR})")
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        _unavailable(f"cannot run ccusage at {path}: {exc}")
    version = done.stdout.strip()
    if done.returncode != 0 or not version.startswith(f"{CCUSAGE_MAJOR}."):
        _unavailable(f"needs ccusage {CCUSAGE_MAJOR}.x, {path} answered "
                     f"{version or done.stderr.strip()!r} to --version")
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Claude Code folder (the parent of ``projects``) of 40 sessions."""
    root = tmp_path_factory.mktemp("claude")
    write_folder(root, sessions=SESSIONS, calls_per_session=CALLS_PER_SESSION, seed=11)
    return root


@pytest.fixture(scope="module")
def expected(folder: Path) -> Expected:
    return expected_totals(folder / "projects")


@pytest.fixture(scope="module")
def imported(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The database ``telemetry-orm import claude-code`` wrote from the folder."""
    work = tmp_path_factory.mktemp("import")
    db = work / "t.db"
    done = program("import", "claude-code", str(folder / "projects"), "--db", str(db), cwd=work)
    assert done.returncode == 0, done.stderr
    return db




def run_ccusage(ccusage: str, config_dir: Path, *argv: str) -> Any:
    """ccusage's ``--json`` answer for the transcripts under ``config_dir/projects``.

    It runs in ``config_dir`` so that no ``.ccusage/ccusage.json`` of the
    caller's is picked up; ``--offline`` keeps its price table bundled."""
    env = dict(os.environ, CLAUDE_CONFIG_DIR=str(config_dir), NO_COLOR="1")
    done = subprocess.run([ccusage, *argv, "--json", "--offline", "--timezone", "UTC"],
                          cwd=config_dir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _tokens(breakdown: Dict[str, Any]) -> Tokens:
    return Tokens(breakdown["inputTokens"], breakdown["outputTokens"],
                  breakdown["cacheReadTokens"], breakdown["cacheCreationTokens"])


def ccusage_by_model(ccusage: str, folder: Path) -> Dict[str, Tokens]:
    """Token sums by model: ``daily``'s ``modelBreakdowns``, added up over the days."""
    sums: Dict[str, Tokens] = {}
    for day in run_ccusage(ccusage, folder, "daily", "--breakdown")["daily"]:
        for part in day["modelBreakdowns"]:
            model = part["modelName"]
            sums[model] = sums.get(model, Tokens()).plus(_tokens(part))
    return sums


def ccusage_by_session_model(ccusage: str, folder: Path, scratch: Path
                             ) -> Dict[Tuple[str, str], Tokens]:
    """Token sums by (session, model): ``session``'s ``modelBreakdowns``
    over a copy of the folder with one subfolder per session."""
    view = scratch / "ccusage-view"
    for path in sorted((folder / "projects").glob("*/*.jsonl")):
        target = view / "projects" / path.parent.name / path.stem / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    sums: Dict[Tuple[str, str], Tokens] = {}
    for session in run_ccusage(ccusage, view, "session")["sessions"]:
        for part in session["modelBreakdowns"]:
            sums[(session["sessionId"], part["modelName"])] = _tokens(part)
    return sums


def imported_by_session_model(db: Path) -> Dict[Tuple[str, str], Tokens]:
    """The imported rows' token sums by (session_id, model), read with plain sqlite3."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT session_id, model, SUM(input_tokens), SUM(output_tokens),"
            " SUM(cache_read_tokens), SUM(cache_creation_tokens) FROM executions"
            " WHERE event_type = 'claude-code' GROUP BY session_id, model"
        ).fetchall()
    finally:
        conn.close()
    return {(session, model): Tokens(*sums) for session, model, *sums in rows}


def by_model(sums: Dict[Tuple[str, str], Tokens]) -> Dict[str, Tokens]:
    totals: Dict[str, Tokens] = {}
    for (_, model), tokens in sums.items():
        totals[model] = totals.get(model, Tokens()).plus(tokens)
    return totals


def by_session(sums: Dict[Tuple[str, str], Tokens]) -> Dict[str, Tokens]:
    totals: Dict[str, Tokens] = {}
    for (session, _), tokens in sums.items():
        totals[session] = totals.get(session, Tokens()).plus(tokens)
    return totals


# --- The folder and ccusage agree (no importer involved) ---------------------------


def test_the_generated_folder_has_what_the_importer_must_handle(expected: Expected) -> None:
    assert expected.files == SESSIONS
    assert len(expected.sessions) == SESSIONS
    calls = sum(expected.calls.values())
    assert calls == SESSIONS * CALLS_PER_SESSION
    assert expected.api_lines > calls * 1.4  # repeated lines of one call
    assert len(expected.by_model) == 3
    assert len(expected.by_session_model) > SESSIONS  # some sessions use two models


def test_ccusage_sums_the_folder_as_the_generator_does(
    ccusage: str, folder: Path, expected: Expected, tmp_path: Path
) -> None:
    assert ccusage_by_model(ccusage, folder) == expected.by_model
    assert ccusage_by_session_model(ccusage, folder, tmp_path) == expected.by_session_model


# --- The import agrees with both ---------------------------------------------------


def test_import_sums_by_model_equal_ccusage(
    ccusage: str, folder: Path, imported: Path, expected: Expected
) -> None:
    ours = by_model(imported_by_session_model(imported))
    assert ours == ccusage_by_model(ccusage, folder)
    assert ours == expected.by_model


def test_import_sums_by_session_equal_ccusage(
    ccusage: str, folder: Path, imported: Path, expected: Expected, tmp_path: Path
) -> None:
    ours = imported_by_session_model(imported)
    theirs = ccusage_by_session_model(ccusage, folder, tmp_path)
    assert by_session(ours) == by_session(theirs) == expected.by_session
    assert ours == theirs == expected.by_session_model


def test_import_sums_equal_the_generator_without_ccusage(
    imported: Path, expected: Expected
) -> None:
    assert imported_by_session_model(imported) == expected.by_session_model


def test_import_counts_each_call_once(imported: Path, expected: Expected) -> None:
    conn = sqlite3.connect(f"file:{imported}?mode=ro", uri=True)
    try:
        turns = conn.execute(
            "SELECT session_id, model, SUM(num_turns) FROM executions"
            " WHERE event_type = 'claude-code' GROUP BY session_id, model"
        ).fetchall()
    finally:
        conn.close()
    assert {(session, model): n for session, model, n in turns} == expected.calls
