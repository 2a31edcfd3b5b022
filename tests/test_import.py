"""``telemetry-orm import``: our own exports back in (a round trip), and
Claude Code transcripts, one execution per session and model. Results are
read back with plain ``sqlite3``."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from pathlib import Path
from typing import Any, Dict, List

import pytest
from support import Witness

from telemetry_orm import cli, create_telemetry_store
from telemetry_orm.testing.demo import fill
from telemetry_orm.transfer import import_files

COLUMNS = ("created_at, delivery_id, repo, pr_number, event_type, provider, model, "
           "input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, "
           "duration_ms, cost_usd, conclusion, session_id, num_turns, stop_reason")


def rows_of(path: Path) -> List[tuple]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute(f"SELECT {COLUMNS} FROM executions").fetchall(),
                      key=repr)
    finally:
        conn.close()


def run(*argv: str) -> tuple:
    out = io.StringIO()
    status = cli.main(list(argv), out=out)
    return status, out.getvalue()


def report(db: Any, *by: str) -> Dict[str, Any]:
    status, text = run("report", "--db", str(db), "--since", "1990-01-01", "--format", "json",
                       *[a for key in by for a in ("--by", key)])
    assert status == 0
    value = json.loads(text)
    value.pop("generated_at")
    return value


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A store of demo rows (created_at spread over months), and a few
    rows with every nullable column empty or set."""
    path = tmp_path / "a.db"
    with create_telemetry_store(path) as store:
        fill(store, 2000)
        store.record({"repo": "acme/api", "event_type": "push", "model": "m",
                      "conclusion": "success", "delivery_id": "d-1", "pr_number": 7,
                      "session_id": "s \"quoted\", with comma\nand newline", "num_turns": 3,
                      "stop_reason": "end_turn", "cost_usd": 0.1 + 0.2})
    return path


# --- round trip of exports --------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_imported_into_an_empty_store_gives_the_same_rows_and_reports(
        source: Path, tmp_path: Path, fmt: str) -> None:
    exported = tmp_path / f"a.{fmt}"
    assert run("export", "--db", str(source), "--format", fmt, "--out", str(exported))[0] == 0
    before = digest(exported)
    target = tmp_path / "b.db"
    status, text = run("import", fmt, str(exported), "--db", str(target))
    assert status == 0, text
    assert "2,001 imported" in text
    assert rows_of(target) == rows_of(source) and len(rows_of(source)) == 2001
    for by in (["repo"], ["model"], ["week", "model"], ["day", "conclusion"], ["event_type"]):
        assert report(target, *by) == report(source, *by)
    # Again: nothing added, the file read and never changed.
    status, text = run("import", fmt, str(exported), "--db", str(target))
    assert status == 0 and "0 imported" in text and "2,001 unchanged" in text
    assert len(rows_of(target)) == 2001
    assert digest(exported) == before


def test_an_export_imported_into_postgresql_reports_the_same(
        source: Path, tmp_path: Path, pg_url: str) -> None:
    exported = tmp_path / "a.jsonl"
    run("export", "--db", str(source), "--format", "jsonl", "--out", str(exported))
    assert run("import", "jsonl", str(exported), "--db", pg_url)[0] == 0
    status, text = run("import", "jsonl", str(exported), "--db", pg_url)
    assert status == 0 and "0 imported" in text
    for by in (["repo"], ["week", "model"], ["day", "conclusion"]):
        assert report(pg_url, *by) == report(str(source), *by)


def test_bad_export_lines_are_skipped_and_listed_and_the_rest_goes_in(
        source: Path, tmp_path: Path) -> None:
    exported = tmp_path / "a.jsonl"
    run("export", "--db", str(source), "--format", "jsonl", "--out", str(exported))
    lines = exported.read_text().splitlines()
    bad = dict(json.loads(lines[1]), input_tokens=-5)
    lines[1] = json.dumps(bad)
    lines[3] = "{not json"
    lines[5] = json.dumps(dict(json.loads(lines[5]), created_at="yesterday"))
    exported.write_text("\n".join(lines) + "\n")
    target = tmp_path / "b.db"
    status, text = run("import", "jsonl", str(exported), "--db", str(target))
    assert status == 1  # imported, with lines skipped
    assert f"{exported}:2: input_tokens:" in text
    assert f"{exported}:4: not JSON" in text
    assert f"{exported}:6: created_at: not a timestamp in range ('yesterday')" in text
    assert "1,998 imported" in text and "3 skipped" in text
    assert len(rows_of(target)) == 1998


def small_export(tmp_path: Path, fmt: str, rows: int) -> Path:
    """An export of ``rows`` executions told apart by ``delivery_id`` (``d-0``, …)."""
    db = tmp_path / "small.db"
    with create_telemetry_store(db) as store:
        store.record_many([{"repo": "acme/api", "event_type": "push", "model": "m",
                            "conclusion": "success", "delivery_id": f"d-{i}",
                            "input_tokens": i} for i in range(rows)])
    exported = tmp_path / f"small.{fmt}"
    assert run("export", "--db", str(db), "--format", fmt, "--out", str(exported))[0] == 0
    return exported


def delivery_ids(db: Path) -> List[str]:
    conn = sqlite3.connect(db)
    try:
        return sorted(r[0] for r in conn.execute("SELECT delivery_id FROM executions"))
    finally:
        conn.close()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_byte_that_is_not_utf8_costs_its_line_only_and_is_named_by_it(
        tmp_path: Path, fmt: str) -> None:
    exported = small_export(tmp_path, fmt, 100)
    lines = exported.read_bytes().split(b"\n")
    # Line 60 (the header is line 1 of the CSV): one byte that is not UTF-8.
    damaged = lines[59].decode("utf-8")
    lines[59] = lines[59].replace(b"acme", b"ac\xffme")
    exported.write_bytes(b"\n".join(lines))
    lost = "d-59" if fmt == "jsonl" else "d-58"
    assert lost in damaged
    target = tmp_path / "b.db"
    status, text = run("import", fmt, str(exported), "--db", str(target))
    assert status == 1, text
    assert f"{exported}:60: not UTF-8 (byte 0xff" in text
    assert "99 imported, 0 updated, 0 unchanged, 1 skipped" in text
    assert delivery_ids(target) == sorted(f"d-{i}" for i in range(100) if f"d-{i}" != lost)


def rewritten(exported: Path, fmt: str, change: Any) -> None:
    """Rewrite every row of an export (as dicts, in column order) by ``change``."""
    if fmt == "jsonl":
        rows = [json.loads(line) for line in exported.read_text().splitlines()]
        exported.write_text("".join(json.dumps(change(row)) + "\n" for row in rows))
        return
    with open(exported, newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows = [change(row) for row in rows]
    with open(exported, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_with_a_column_this_version_does_not_know_is_refused_by_name(
        tmp_path: Path, fmt: str) -> None:
    exported = small_export(tmp_path, fmt, 3)
    rewritten(exported, fmt, lambda row: {**row, "pr_author": "octocat"})
    target = tmp_path / "b.db"
    status, text = run("import", fmt, str(exported), "--db", str(target))
    assert status == 1, text
    # JSON Lines: each line says what it holds; CSV: its header, for the whole file.
    where = f"{exported}:2" if fmt == "jsonl" else f"{exported}:1"
    assert f"{where}: columns this version of telemetry_orm does not know ('pr_author')" in text
    assert delivery_ids(target) == []


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_of_a_newer_version_is_refused(tmp_path: Path, fmt: str) -> None:
    exported = small_export(tmp_path, fmt, 3)
    rewritten(exported, fmt, lambda row: {**row, "export_version": 4})
    target = tmp_path / "b.db"
    status, text = run("import", fmt, str(exported), "--db", str(target))
    assert status == 1, text
    assert (f"{exported}:2: export_version 4: written by a newer telemetry_orm (this one "
            "reads versions up to 3)") in text
    assert "3 skipped" in text and delivery_ids(target) == []


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_without_a_version_as_earlier_releases_wrote_it_still_imports(
        tmp_path: Path, fmt: str) -> None:
    exported = small_export(tmp_path, fmt, 3)
    rewritten(exported, fmt, lambda row: {k: v for k, v in row.items() if k != "export_version"})
    assert b"export_version" not in exported.read_bytes()
    target = tmp_path / "b.db"
    status, text = run("import", fmt, str(exported), "--db", str(target))
    assert status == 0 and "3 imported" in text, text
    assert rows_of(target) == rows_of(tmp_path / "small.db")


def test_a_csv_export_of_an_earlier_release_is_read_verbatim(tmp_path: Path) -> None:
    # Earlier releases wrote no export_version and put no ' before formulas,
    # so a leading ' there is part of the text.
    exported = small_export(tmp_path, "csv", 2)
    rewritten(exported, "csv", lambda row: {
        **{k: v for k, v in row.items() if k != "export_version"}, "repo": "'quoted/repo"})
    target = tmp_path / "b.db"
    status, text = run("import", "csv", str(exported), "--db", str(target))
    assert status == 0, text
    conn = sqlite3.connect(target)
    try:
        assert conn.execute("SELECT DISTINCT repo FROM executions").fetchall() == [
            ("'quoted/repo",)]
    finally:
        conn.close()


# --- Claude Code transcripts -------------------------------------------------------


def call(session: str, message: str, request: str, when: str, model: str, usage: List[int],
         **extra: Any) -> Dict[str, Any]:
    return {"type": "assistant", "timestamp": when, "sessionId": session, "version": "2.0.1",
            "cwd": extra.pop("cwd", "/nowhere/acme/web"), "requestId": request,
            "message": {"id": message, "model": model, "role": "assistant",
                        "usage": dict(zip(("input_tokens", "output_tokens",
                                           "cache_read_input_tokens",
                                           "cache_creation_input_tokens"), usage,
                                          strict=True))},
            **extra}


def api_error(session: str, when: str) -> Dict[str, Any]:
    return {"type": "assistant", "timestamp": when, "sessionId": session,
            "isApiErrorMessage": True,
            "message": {"id": "e", "model": "<synthetic>",
                        "usage": {"input_tokens": 0, "output_tokens": 0}}}


def write_lines(path: Path, lines: List[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines))


def executions(db: Path) -> Dict[tuple, tuple]:
    conn = sqlite3.connect(db)
    try:
        return {(r[0], r[1]): r[2:] for r in conn.execute(
            "SELECT session_id, model, created_at, repo, event_type, provider, input_tokens, "
            "output_tokens, cache_read_tokens, cache_creation_tokens, duration_ms, cost_usd, "
            "conclusion, num_turns FROM executions")}
    finally:
        conn.close()


@pytest.fixture
def transcripts(tmp_path: Path) -> Path:
    root = tmp_path / "claude" / "projects"
    write_lines(root / "-nowhere-acme-web" / "s1.jsonl", [
        {"type": "user", "timestamp": "2026-11-30T10:00:00.000Z", "sessionId": "s1",
         "message": {"role": "user", "content": "hello"}},
        # One call written three times while streaming: the largest total is kept.
        call("s1", "m1", "r1", "2026-11-30T10:00:01.250Z", "sonnet", [10, 1, 0, 0]),
        call("s1", "m1", "r1", "2026-11-30T10:00:02.000Z", "sonnet", [10, 40, 0, 0]),
        call("s1", "m1", "r1", "2026-11-30T10:00:02.100Z", "sonnet", [10, 40, 0, 0],
             costUSD=0.25),
        call("s1", "m2", "r2", "2026-11-30T10:00:31.750Z", "sonnet", [3, 4, 500, 60],
             costUSD=0.5),
        call("s1", "m3", "r3", "2026-11-30T10:01:00.000Z", "haiku", [2, 2, 0, 0]),
        {"type": "summary", "summary": "a session"},
    ])
    write_lines(root / "-nowhere-acme-web" / "s2.jsonl", [
        call("s2", "m9", "r9", "2026-11-29T08:00:00Z", "sonnet", [1, 1, 1, 1]),
        api_error("s2", "2026-11-29T08:00:05Z"),
    ])
    return root


def test_one_execution_per_session_and_model(transcripts: Path, tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    status, text = run("import", "claude-code", str(transcripts), "--db", str(db))
    assert status == 0, text
    assert "3 imported" in text and "0 skipped" in text
    assert executions(db) == {
        ("s1", "sonnet"): ("2026-11-30 10:00:01", "web", "claude-code", "anthropic",
                           13, 44, 500, 60, 30500, 0.75, "success", 2),
        ("s1", "haiku"): ("2026-11-30 10:01:00", "web", "claude-code", "anthropic",
                          2, 2, 0, 0, 0, 0.0, "success", 1),
        ("s2", "sonnet"): ("2026-11-29 08:00:00", "web", "claude-code", "anthropic",
                           1, 1, 1, 1, 0, 0.0, "api_error", 1),
    }


def test_a_transcript_that_grew_updates_its_row_and_an_unchanged_one_writes_nothing(
        transcripts: Path, tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    assert run("import", "claude-code", str(transcripts), "--db", str(db))[0] == 0
    witness = sqlite3.connect(db)
    version = witness.execute("PRAGMA data_version").fetchone()[0]
    status, text = run("import", "claude-code", str(transcripts), "--db", str(db))
    assert status == 0 and "0 imported, 0 updated, 3 unchanged" in text
    assert witness.execute("PRAGMA data_version").fetchone()[0] == version
    first = executions(db)

    with open(transcripts / "-nowhere-acme-web" / "s1.jsonl", "a") as handle:
        handle.write(json.dumps(call("s1", "m4", "r4", "2026-11-30T10:05:00Z", "haiku",
                                     [5, 5, 0, 0])) + "\n")
    status, text = run("import", "claude-code", str(transcripts), "--db", str(db))
    assert status == 0 and "0 imported, 1 updated, 2 unchanged" in text
    now = executions(db)
    assert len(now) == 3 and now[("s1", "sonnet")] == first[("s1", "sonnet")]
    assert now[("s1", "haiku")][4:6] == (7, 7) and now[("s1", "haiku")][-1] == 2
    assert now[("s1", "haiku")][8] == 240_000  # 10:01:00 to 10:05:00


def test_malformed_lines_are_skipped_with_file_and_line(transcripts: Path,
                                                       tmp_path: Path) -> None:
    path = transcripts / "-nowhere-acme-web" / "s3.jsonl"
    write_lines(path, [
        "{oops",
        call("s3", "a", "r", "2026-11-30T10:00:00Z", "sonnet", [1, "2", 0, 0]),
        call("s3", "b", "r", "not a time", "sonnet", [1, 2, 0, 0]),
        [1, 2],
        call("s3", "c", "r", "2026-11-30T10:00:00Z", "sonnet", [1, 2, 0, 0]),
    ])
    db = tmp_path / "t.db"
    status, text = run("import", "claude-code", str(transcripts), "--db", str(db))
    assert status == 1
    assert f"{path}:1: not JSON" in text
    assert (f"{path}:2: message.usage.output_tokens: not a whole number from 0 to 10**12 "
            "('2')") in text
    assert f"{path}:3: timestamp: not an ISO 8601 time in range ('not a time')" in text
    assert f"{path}:4: not a JSON object (list)" in text
    assert "4 skipped" in text
    assert executions(db)[("s3", "sonnet")][4:6] == (1, 2)


def test_a_damaged_transcript_never_shrinks_the_session_stored(tmp_path: Path) -> None:
    root = tmp_path / "projects"
    path, other = root / "p" / "s.jsonl", root / "p" / "t.jsonl"
    write_lines(path, [call("s", f"m{i}", f"r{i}", f"2026-11-30T10:{i // 60:02d}:{i % 60:02d}Z",
                            "sonnet", [10, 1, 0, 0]) for i in range(100)])
    write_lines(other, [call("t", "n1", "q1", "2026-11-30T11:00:00Z", "haiku", [1, 1, 0, 0])])
    db = tmp_path / "t.db"
    assert run("import", "claude-code", str(root), "--db", str(db))[0] == 0
    stored = executions(db)
    assert stored[("s", "sonnet")][4] == 1000 and stored[("s", "sonnet")][-1] == 100

    # Line 60 gets a byte that is not UTF-8; the other session grows.
    lines = path.read_bytes().split(b"\n")
    lines[59] = lines[59].replace(b'"sonnet"', b'"son\xffnet"')
    path.write_bytes(b"\n".join(lines))
    with open(other, "a") as handle:
        handle.write(json.dumps(call("t", "n2", "q2", "2026-11-30T11:01:00Z", "haiku",
                                     [1, 1, 0, 0])) + "\n")
    status, text = run("import", "claude-code", str(root), "--db", str(db))
    assert status == 1, text
    assert f"{path}:60: not UTF-8 (byte 0xff" in text
    assert (f"stored row kept, its transcript partly unreadable (session s, model sonnet: "
            f"1 line skipped, the first {path}:60)") in text
    assert "0 imported, 1 updated, 0 unchanged, 2 skipped" in text
    now = executions(db)
    assert now[("s", "sonnet")] == stored[("s", "sonnet")]
    assert now[("t", "haiku")][-1] == 2

    # Into an empty store, every good line goes in: 99 of the 100 calls.
    fresh = tmp_path / "fresh.db"
    status, text = run("import", "claude-code", str(root), "--db", str(fresh))
    assert status == 1 and "2 imported" in text and "1 skipped" in text, text
    assert executions(fresh)[("s", "sonnet")][4] == 990
    assert executions(fresh)[("s", "sonnet")][-1] == 99


def test_a_line_that_names_its_session_holds_back_that_session_only(tmp_path: Path) -> None:
    root = tmp_path / "projects"
    path = root / "p" / "s.jsonl"
    write_lines(path, [call("a", "m1", "r1", "2026-11-30T10:00:00Z", "sonnet", [1, 1, 0, 0]),
                       call("b", "m2", "r2", "2026-11-30T10:00:00Z", "sonnet", [1, 1, 0, 0])])
    db = tmp_path / "t.db"
    assert run("import", "claude-code", str(root), "--db", str(db))[0] == 0
    with open(path, "a") as handle:
        for line in (call("a", "m3", "r3", "2026-11-30T10:01:00Z", "sonnet", [1, -1, 0, 0]),
                     call("a", "m4", "r4", "2026-11-30T10:02:00Z", "sonnet", [1, 1, 0, 0]),
                     call("b", "m5", "r5", "2026-11-30T10:02:00Z", "sonnet", [1, 1, 0, 0])):
            handle.write(json.dumps(line) + "\n")
    status, text = run("import", "claude-code", str(root), "--db", str(db))
    assert status == 1, text
    assert f"{path}:3: message.usage.output_tokens" in text
    assert "0 imported, 1 updated, 0 unchanged, 2 skipped" in text
    found = executions(db)
    assert found[("a", "sonnet")][-1] == 1 and found[("b", "sonnet")][-1] == 2


def test_repo_is_the_origin_of_the_checkout_when_it_is_there(tmp_path: Path) -> None:
    checkout = tmp_path / "work" / "api"
    (checkout / ".git").mkdir(parents=True)
    (checkout / ".git" / "config").write_text(
        '[core]\n\tbare = false\n[remote "origin"]\n\turl = git@github.com:acme/api.git\n')
    (checkout / "src").mkdir()
    root = tmp_path / "projects"
    write_lines(root / "p" / "s.jsonl", [
        call("s", "m", "r", "2026-11-30T10:00:00Z", "sonnet", [1, 1, 0, 0],
             cwd=str(checkout / "src")),
        call("t", "n", "q", "2026-11-30T10:00:00Z", "sonnet", [1, 1, 0, 0],
             cwd=str(tmp_path / "gone" / "web-app")),
    ])
    db = tmp_path / "t.db"
    assert run("import", "claude-code", str(root), "--db", str(db))[0] == 0
    found = executions(db)
    assert found[("s", "sonnet")][1] == "acme/api"
    assert found[("t", "sonnet")][1] == "web-app"


def test_the_default_folder_is_claude_config_dir_projects(
        transcripts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(transcripts.parent))
    db = tmp_path / "t.db"
    status, text = run("import", "claude-code", "--db", str(db))
    assert status == 0 and "3 imported" in text


def test_exit_statuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    assert run("import", "claude-code", str(tmp_path / "missing"), "--db", str(db))[0] == 1
    assert "nothing could be read" in capsys.readouterr().err
    assert run("import", "yaml", str(tmp_path), "--db", str(db))[0] == 2
    assert run("import", "jsonl", "--db", str(db))[0] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("import", "claude-code", str(empty), "--db", str(db))[0] == 1
    # Not a terminal: no progress line.
    assert "\r" not in capsys.readouterr().err


def test_the_library_call_reports_what_it_did(transcripts: Path, tmp_path: Path) -> None:
    with create_telemetry_store(tmp_path / "t.db") as store:
        result = import_files("claude-code", [transcripts], store)
        assert (result.files, result.imported, result.updated, result.unchanged) == (2, 3, 0, 0)
        assert store.model.select().count() == 3



def test_a_call_repeated_in_a_resumed_session_counts_once(tmp_path: Path) -> None:
    # As ccusage: the call counts in the session that wrote it first.
    root = tmp_path / "projects"
    write_lines(root / "p" / "a.jsonl", [
        call("a", "m1", "r1", "2026-11-30T10:00:00Z", "sonnet", [100, 10, 0, 0]),
        call("a", "m2", "r2", "2026-11-30T10:01:00Z", "sonnet", [200, 20, 0, 0]),
    ])
    write_lines(root / "p" / "b.jsonl", [
        call("b", "m1", "r1", "2026-11-30T10:00:00Z", "sonnet", [100, 10, 0, 0]),
        call("b", "m2", "r2", "2026-11-30T10:01:00Z", "sonnet", [200, 20, 0, 0]),
        call("b", "m9", "r9", "2026-11-30T11:00:00Z", "sonnet", [1, 1, 0, 0]),
    ])
    db = tmp_path / "t.db"
    assert run("import", "claude-code", str(root), "--db", str(db))[0] == 0
    found = executions(db)
    assert found[("a", "sonnet")][4:6] == (300, 30) and found[("a", "sonnet")][-1] == 2
    assert found[("b", "sonnet")][4:6] == (1, 1) and found[("b", "sonnet")][-1] == 1


def test_hostile_transcript_lines_are_skipped_by_line(tmp_path: Path) -> None:
    root = tmp_path / "projects"
    path = root / "p" / "s.jsonl"
    write_lines(path, [
        call("s", "m1", "r1", "2026-11-30T10:00:00Z", "sonnet", [1, 1, 0, 0]),
        call("s", "m2", "r2", "9999-12-31T23:00:00-05:00", "sonnet", [1, 1, 0, 0]),
        call("s", "m3", "r3", "2026-11-30T10:00:05Z", "sonnet", [10**30, 1, 0, 0]),
        "[" * 100_000,
        call("s", "m4", "r4", "2026-11-30T10:00:09Z", "sonnet", [1, 1, 0, 0]),
    ])
    db = tmp_path / "t.db"
    status, text = run("import", "claude-code", str(root), "--db", str(db))
    assert status == 1, text
    assert f"{path}:2: timestamp: not an ISO 8601 time in range" in text
    assert f"{path}:3: message.usage.input_tokens: not a whole number from 0" in text
    assert f"{path}:4: not JSON" in text
    assert executions(db)[("s", "sonnet")][4:6] == (2, 2)


def test_a_symlinked_project_folder_is_read_and_a_link_loop_ends(tmp_path: Path) -> None:
    real = tmp_path / "real" / "p"
    write_lines(real / "s.jsonl", [
        call("s", "m1", "r1", "2026-11-30T10:00:00Z", "sonnet", [1, 1, 0, 0])])
    root = tmp_path / "projects"
    root.mkdir()
    (root / "p").symlink_to(real)
    (real / "loop").symlink_to(real)
    db = tmp_path / "t.db"
    status, text = run("import", "claude-code", str(root), "--db", str(db))
    assert status == 0 and "in 1 files" in text, text


def test_awkward_text_survives_csv_and_both_exports_give_the_same_keys(
        tmp_path: Path) -> None:
    source = tmp_path / "a.db"
    with create_telemetry_store(source) as store:
        base = {"repo": "acme/api", "event_type": "push", "model": "m", "conclusion": "success"}
        store.record({**base, "stop_reason": "a\rb", "session_id": "x\r\ny"})
        store.record({**base, "delivery_id": "", "session_id": "\ufeffbom, \"quoted\""})
        store.record({**base, "cost_usd": 0.1 + 0.2, "pr_number": 7})
    for fmt in ("csv", "jsonl"):
        assert run("export", "--db", str(source), "--format", fmt,
                   "--out", str(tmp_path / f"a.{fmt}"))[0] == 0
    # A byte order mark at the start, as spreadsheet programs write it.
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "a.csv").read_bytes())
    target = tmp_path / "b.db"
    status, text = run("import", "csv", str(bom), "--db", str(target))
    assert status == 0 and "3 imported" in text, text
    wanted = sorted((tuple("" if v is None and i == 1 else v for i, v in enumerate(row))
                     for row in rows_of(source)), key=repr)
    got = sorted((tuple("" if v is None and i == 1 else v for i, v in enumerate(row))
                  for row in rows_of(target)), key=repr)
    assert got == wanted  # \r kept, the quoted text kept, the float exact
    # The JSON Lines export of the same store adds nothing.
    status, text = run("import", "jsonl", str(tmp_path / "a.jsonl"), "--db", str(target))
    assert status == 0 and "0 imported" in text and "3 unchanged" in text, text


def test_reimporting_transcripts_into_postgresql(transcripts: Path, pg_url: str) -> None:
    assert run("import", "claude-code", str(transcripts), "--db", pg_url)[0] == 0
    with open(transcripts / "-nowhere-acme-web" / "s1.jsonl", "a") as handle:
        handle.write(json.dumps(call("s1", "m4", "r4", "2026-11-30T10:05:00Z", "haiku",
                                     [5, 5, 0, 0])) + "\n")
    status, text = run("import", "claude-code", str(transcripts), "--db", pg_url)
    assert status == 0 and "0 imported, 1 updated, 2 unchanged" in text, text
    status, text = run("import", "claude-code", str(transcripts), "--db", pg_url)
    assert status == 0 and "0 imported, 0 updated, 3 unchanged" in text, text


def noise(length: int) -> str:
    """``length`` hexadecimal digits that do not repeat (nothing to compress)."""
    return "".join(hashlib.sha256(str(i).encode()).hexdigest()
                   for i in range(length // 64 + 1))[:length]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_session_id_or_model_too_long_for_a_key_is_a_skipped_line(
        tmp_path: Path, engine: str, request: pytest.FixtureRequest) -> None:
    db = str(tmp_path / "t.db") if engine == "sqlite" else request.getfixturevalue("pg_url")
    root = tmp_path / "projects"
    path = root / "p" / "s.jsonl"
    write_lines(path, [
        call("s", "m1", "r1", "2026-11-30T10:00:00Z", "sonnet", [1, 1, 0, 0]),
        # 3,000 bytes that do not compress: past PostgreSQL's b-tree limit (about 2,700).
        call(noise(3000), "m2", "r2", "2026-11-30T10:00:00Z", "sonnet", [1, 1, 0, 0]),
        call("t", "m3", "r3", "2026-11-30T10:00:00Z", "m" * 600, [1, 1, 0, 0]),
        call("\ud800", "m4", "r4", "2026-11-30T10:00:00Z", "sonnet", [1, 1, 0, 0]),
        call("u", "m5", "r5", "2026-11-30T10:00:00Z", "sonnet", [2, 2, 0, 0]),
    ])
    for _ in range(2):  # and again: the bad lines fail no run
        status, text = run("import", "claude-code", str(root), "--db", db)
        assert status == 1, text
        assert f"{path}:2: key: must be at most 512 characters" in text
        assert f"{path}:3: key: must be at most 512 characters" in text
        assert f"{path}:4: key: must be valid Unicode text" in text
        assert "3 skipped" in text
    witness = Witness(db)
    try:
        assert witness.rows("SELECT session_id, input_tokens FROM executions "
                            "ORDER BY session_id") == [
            {"session_id": "s", "input_tokens": 1}, {"session_id": "u", "input_tokens": 2}]
        assert witness.rows("SELECT COUNT(*) AS n FROM telemetry_orm_keys") == [{"n": 2}]
    finally:
        witness.close()
