"""Readers of what ``telemetry-orm import`` brings into a store: the files
``telemetry-orm export`` writes (JSON Lines, CSV) and Claude Code's local
transcripts.

A reader streams its files line by line and yields :class:`Item` values
(a record, its ``created_at`` and the key it is recorded under) and
:class:`Skipped` values (a line that could not be used, with its place and
the reason). Writing them is the copy path's job
(:func:`telemetry_orm.transfer.import_files`).

Claude Code transcripts (``<config>/projects/<project>/<session>.jsonl``)
have one JSON object a line; a line with ``message.usage`` is one API call.
The same call is written on several lines (while streaming, and again on
resume); calls are told apart by ``message.id`` and ``requestId`` together,
as ccusage does, across all files: a call written again in another session
(a resumed session repeats earlier calls) counts once, in the session that
wrote it first; of its lines in that session the one with the largest token
total is kept (in real transcripts they carry the same usage). Lines marked
``isApiErrorMessage`` are not calls; they only decide a session's
conclusion. One execution is made per session and model.
"""

from __future__ import annotations

import codecs
import configparser
import dataclasses
import datetime as _dt
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from .checks import (
    check_instant,
    check_key,
    is_amount,
    is_count,
    is_text,
    parse_iso,
)
from .errors import TelemetryValidationError
from .prices import PriceTable, default_prices
from .record import TelemetryRecord

#: What ``telemetry-orm import`` reads.
IMPORT_FORMATS = ("jsonl", "csv", "claude-code")

#: ``event_type`` of executions made from Claude Code transcripts.
CLAUDE_CODE_EVENT = "claude-code"

#: The model Claude Code writes on API-error lines (no call was made).
SYNTHETIC_MODEL = "<synthetic>"

_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
               "cache_creation_input_tokens")


@dataclasses.dataclass(frozen=True)
class Item:
    """One execution to write: ``record`` created at ``created_at`` (aware,
    UTC), under ``key``; ``where`` names its source (``file:line``)."""

    key: str
    created_at: _dt.datetime
    record: TelemetryRecord
    where: str
    #: Set when the reading is partial (lines of its source could not be
    #: read): why. Such an item never replaces a stored row.
    partial: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A line (or a whole file) left out: where, and why."""

    where: str
    reason: str


Read = Union[Item, Skipped]


class Counter:
    """What a reader has gone through so far (for a progress line)."""

    def __init__(self) -> None:
        self.files = 0
        self.lines = 0


# --- files ----------------------------------------------------------------------


def files_under(paths: Sequence[Union[str, os.PathLike[str]]], suffixes: Tuple[str, ...]
                ) -> Iterator[Union[Path, Skipped]]:
    """Every file named on the command line, and under every folder named
    there every file ending in one of ``suffixes`` (sorted, at any depth);
    a path that is neither is :class:`Skipped`."""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            yield from _walk(path, suffixes)
        elif path.is_file():
            yield path
        elif path.exists():
            yield Skipped(str(path), "not a regular file or a folder")
        else:
            yield Skipped(str(path), "no such file or folder")


def _walk(folder: Path, suffixes: Tuple[str, ...]) -> Iterator[Path]:
    """The files under ``folder`` ending in ``suffixes``, sorted, following
    symbolic links to folders (each folder once, so a link loop ends)."""
    seen: Set[Tuple[int, int]] = set()
    found: List[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        try:
            info = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        found.extend(Path(root) / name for name in files if name.endswith(suffixes))
    yield from sorted(p for p in found if p.is_file())


#: Files are UTF-8, a byte order mark at the start skipped (as spreadsheet
#: programs write it).
ENCODING = "utf-8-sig"

#: Characters that stand for bytes that were not UTF-8, when text is decoded
#: with ``errors="surrogateescape"`` (valid UTF-8 never decodes to them).
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def lines_of(path: Path, counter: Counter) -> Iterator[Tuple[int, Union[str, Skipped]]]:
    """The lines of ``path`` (numbered from 1, without their line ends),
    read one at a time; lines end at ``\n`` only (a ``\r`` before it is
    dropped). The file is read as bytes and each line decoded on its own,
    so a byte that is not UTF-8 costs its line only: that line comes as
    :class:`Skipped` (without a place)."""
    counter.files += 1
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            counter.lines += 1
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, Skipped("", f"not UTF-8 (byte 0x{raw[exc.start]:02x} at byte "
                                          f"{exc.start + 1} of the line: {exc.reason})")
                continue
            yield number, text.rstrip("\r\n")


class Unreadable(Exception):
    """A file that cannot be read on from some point on."""


def undecoded(cells: Sequence[str]) -> Optional[str]:
    """Why cells read with ``errors="surrogateescape"`` are not text (a byte
    that was not UTF-8), or ``None``."""
    if _NOT_UTF8.search("".join(cells)) is None:
        return None
    for column, cell in enumerate(cells, 1):
        found = _NOT_UTF8.search(cell)
        if found is not None:
            byte = ord(found.group()) - 0xDC00
            return (f"not UTF-8 (byte 0x{byte:02x} in value {column}, at character "
                    f"{found.start() + 1})")
    return None


def json_value(line: str) -> Any:
    """The JSON value of ``line``, or :class:`Skipped` saying why not."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return Skipped("", f"not JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:
        return Skipped("", "not JSON (nested too deeply)")



# --- Claude Code transcripts ----------------------------------------------------


def default_transcripts() -> Path:
    """Where Claude Code keeps its transcripts: ``$CLAUDE_CONFIG_DIR/projects``,
    else ``~/.claude/projects``."""
    config = os.environ.get("CLAUDE_CONFIG_DIR")
    return Path(config) / "projects" if config else Path.home() / ".claude" / "projects"


def session_key(session_id: str, model: str) -> str:
    """The key of the execution of one session and model."""
    return f"{CLAUDE_CODE_EVENT}:{session_id}:{model}"


@dataclasses.dataclass
class _Call:
    tokens: Tuple[int, int, int, int]
    cost: Optional[float]
    stop_reason: Optional[str]
    when: _dt.datetime


@dataclasses.dataclass
class _Session:
    where: str
    cwd: Optional[str] = None
    last: Tuple[_dt.datetime, int] = (_dt.datetime.min.replace(tzinfo=_dt.timezone.utc), -1)
    last_is_error: bool = False
    # model -> the calls counted in this session (filled once every file is read)
    calls: Dict[str, List[_Call]] = dataclasses.field(default_factory=dict)

    def note_last(self, when: _dt.datetime, order: int, error: bool) -> None:
        """Take note of a call or an API error line: the latest decides the
        conclusion."""
        if (when, order) > self.last:
            self.last, self.last_is_error = (when, order), error


def read_claude_code(paths: Sequence[Union[str, os.PathLike[str]]],
                     counter: Optional[Counter] = None,
                     repo_of: Optional[Any] = None,
                     prices: Optional[PriceTable] = None) -> Iterator[Read]:
    """One :class:`Item` per session and model of the transcripts under
    ``paths`` (every ``*.jsonl``); malformed lines are :class:`Skipped`.

    The lines are read one at a time; what is kept meanwhile is one small
    entry per distinct API call. The items come once every file is read
    (a session's lines may lie in several files)."""
    counter = counter or Counter()
    repo_of = repo_of or RepoNames()
    table = prices if prices is not None else default_prices()
    sessions: Dict[str, _Session] = {}
    # (message id, request id) -> (session, model, the line kept)
    calls: Dict[Any, Tuple[str, str, _Call]] = {}
    # session -> (how many of its lines could not be used, the first's place)
    damaged: Dict[str, Tuple[int, str]] = {}
    order = 0
    for path in files_under(paths, (".jsonl",)):
        if isinstance(path, Skipped):
            yield path
            continue
        in_file: Set[str] = set()  # the sessions with lines in this file
        unplaced = (0, "")  # lines skipped that name no session: how many, the first
        try:
            for number, line in lines_of(path, counter):
                order += 1
                where = f"{path}:{number}"
                skipped, session_id = _take_line(sessions, calls, where, line, order)
                if session_id is not None:
                    in_file.add(session_id)
                if skipped is None:
                    continue
                yield skipped
                if session_id is not None:
                    _count(damaged, session_id, (1, where))
                else:
                    unplaced = (unplaced[0] + 1, unplaced[1] or where)
        except OSError as exc:
            yield Skipped(str(path), f"cannot be read ({exc.strerror or exc})")
            unplaced = (unplaced[0] + 1, unplaced[1] or str(path))
        # A line that names no session may be any session's of its file.
        for session_id in in_file if unplaced[0] else ():
            _count(damaged, session_id, unplaced)
    for session_id, model, call in calls.values():
        sessions[session_id].calls.setdefault(model, []).append(call)
    calls.clear()
    for session_id in sorted(sessions):
        yield from _executions(session_id, sessions[session_id], repo_of, table,
                               damaged.get(session_id))


def _count(damaged: Dict[str, Tuple[int, str]], session_id: str,
           lines: Tuple[int, str]) -> None:
    """Add ``lines`` (how many, the first's place) to a session's unusable lines."""
    count, first = damaged.get(session_id, (0, ""))
    damaged[session_id] = (count + lines[0], first or lines[1])


def _take_line(sessions: Dict[str, _Session], calls: Dict[Any, Tuple[str, str, _Call]],
               where: str, line: Union[str, Skipped], order: int
               ) -> Tuple[Optional[Skipped], Optional[str]]:
    """Take note of one line: (why it was skipped or ``None``, the session
    it names or ``None``)."""
    if isinstance(line, Skipped):
        return Skipped(where, line.reason), None
    if not line.strip():
        return None, None
    value = json_value(line)
    if isinstance(value, Skipped):
        return Skipped(where, value.reason), None
    if not isinstance(value, dict):
        return Skipped(where, f"not a JSON object ({type(value).__name__})"), None
    session_id = value.get("sessionId")
    if not is_text(session_id):
        session_id = None
    skipped = _take_call(sessions, calls, where, value, order)
    return skipped, session_id


def _take_call(sessions: Dict[str, _Session], calls: Dict[Any, Tuple[str, str, _Call]],
               where: str, value: Dict[str, Any], order: int) -> Optional[Skipped]:
    message = value.get("message")
    usage = message.get("usage") if isinstance(message, dict) else None
    error = value.get("isApiErrorMessage") is True
    if usage is None and not error:
        return None  # a user message, a summary, a tool result …
    session_id = value.get("sessionId")
    if not is_text(session_id):
        return Skipped(where, f"sessionId: not a non-empty string ({_short(session_id)})")
    when = _timestamp(value.get("timestamp"))
    if when is None:
        return Skipped(where, f"timestamp: not an ISO 8601 time in range "
                              f"({value.get('timestamp')!r})")
    session = sessions.get(session_id)
    if session is None:
        session = sessions[session_id] = _Session(where)
    cwd = value.get("cwd")
    if session.cwd is None and is_text(cwd):
        session.cwd = cwd
    if error:
        session.note_last(when, order, True)
        return None
    assert isinstance(message, dict)
    model = message.get("model")
    if not is_text(model):
        return Skipped(where, f"message.model: not a non-empty string ({_short(model)})")
    if model == SYNTHETIC_MODEL:
        return None
    try:
        check_key("key", session_key(session_id, model))
    except TelemetryValidationError as exc:
        return Skipped(where, f"{exc} (the key claude-code:<sessionId>:<message.model>)")
    if not isinstance(usage, dict):
        return Skipped(where, f"message.usage: not an object ({type(usage).__name__})")
    tokens = []
    for name in _USAGE_KEYS:
        count = usage.get(name, 0)
        if count is None:
            count = 0
        if not is_count(count):
            return Skipped(where, f"message.usage.{name}: not a whole number from 0 to 10**12 "
                                  f"({count!r})")
        tokens.append(count)
    cost = value.get("costUSD")
    if cost is not None and not is_amount(cost):
        return Skipped(where, f"costUSD: not a number >= 0 ({cost!r})")
    stop = message.get("stop_reason")
    call = _Call((tokens[0], tokens[1], tokens[2], tokens[3]),
                 None if cost is None else float(cost),
                 stop if isinstance(stop, str) else None, when)
    message_id, request_id = message.get("id"), value.get("requestId")
    # As ccusage: one call per message id and request id; a line lacking
    # either is a call of its own.
    call_id: Any = ((message_id, request_id)
                    if isinstance(message_id, str) and isinstance(request_id, str) else order)
    session.note_last(when, order, False)
    owner = calls.get(call_id)
    if owner is None:
        calls[call_id] = (session_id, model, call)
        return None
    owner_session, _, seen = owner
    if owner_session != session_id:
        # A call written again in another session (a resumed session's file
        # repeats earlier calls under its own sessionId): it counts once, in
        # the session where it was written first, as ccusage counts it.
        if call.when < seen.when:
            calls[call_id] = (session_id, model, call)
        return None
    if sum(call.tokens) > sum(seen.tokens) or (
            sum(call.tokens) == sum(seen.tokens) and seen.cost is None
            and call.cost is not None):
        call.when = min(call.when, seen.when)
        calls[call_id] = (session_id, model, call)
    return None


def _timestamp(value: Any) -> Optional[_dt.datetime]:
    if not isinstance(value, str):
        return None
    try:
        return check_instant("timestamp", parse_iso(value))
    except (ValueError, OverflowError):
        return None


def _short(value: Any) -> str:
    """``repr(value)``, cut to 80 characters (a value may be megabytes)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}… ({len(text):,} characters)"


def _executions(session_id: str, session: _Session, repo_of: Any, prices: PriceTable,
                damaged: Optional[Tuple[int, str]]) -> Iterator[Read]:
    repo = repo_of(session.cwd) if session.cwd else None
    skipped = ""
    if damaged:
        lines = "line" if damaged[0] == 1 else "lines"
        skipped = f"{damaged[0]:,} {lines} skipped, the first {damaged[1]}"
    for model in sorted(session.calls):
        calls = session.calls[model]
        first = min(call.when for call in calls)
        last = max(calls, key=lambda call: call.when)
        sums = [sum(call.tokens[i] for call in calls) for i in range(4)]
        price = prices.find(model)
        fields = {
            "repo": repo or "unknown",
            "event_type": CLAUDE_CODE_EVENT,
            "provider": "anthropic",
            "model": model,
            "input_tokens": sums[0],
            "output_tokens": sums[1],
            "cache_read_tokens": sums[2],
            "cache_creation_tokens": sums[3],
            "duration_ms": int((last.when - first).total_seconds() * 1000),
            # A call without costUSD: the list price of its tokens (0 for
            # a model without a price).
            "cost_usd": sum(call.cost if call.cost is not None else
                            (price.cost(*call.tokens) if price is not None else 0.0)
                            for call in calls),
            "conclusion": "api_error" if session.last_is_error else "success",
            "session_id": session_id,
            "num_turns": len(calls),
            "stop_reason": last.stop_reason,
        }
        try:
            record = TelemetryRecord.from_mapping(fields)
        except TelemetryValidationError as exc:
            yield Skipped(session.where, f"session {session_id}, model {model}: {exc}")
            continue
        # A partial reading (lines of the session skipped) never replaces a
        # row: a damaged transcript must not shrink what was stored.
        partial = (f"stored row kept, its transcript partly unreadable (session {session_id}, "
                   f"model {model}: {skipped})") if skipped else None
        yield Item(session_key(session_id, model), first, record, session.where, partial)


_REMOTE = re.compile(r"[:/]([^/:]+)/([^/]+?)(?:\.git)?/*$")


class RepoNames:
    """``owner/name`` of a folder's git ``origin`` remote when the folder is
    a checkout still present (read from its git config, without running
    git), else the folder's last name; looked up once per folder."""

    def __init__(self) -> None:
        self._known: Dict[str, str] = {}

    def __call__(self, cwd: str) -> str:
        if cwd not in self._known:
            self._known[cwd] = _origin(Path(cwd)) or Path(cwd).name or cwd
        return self._known[cwd]


def _origin(folder: Path) -> Optional[str]:
    for candidate in (folder, *folder.parents):
        git = candidate / ".git"
        try:
            if git.is_file():
                text = git.read_text(encoding="utf-8").strip()
                if not text.startswith("gitdir:"):
                    return None
                gitdir = (candidate / text[len("gitdir:"):].strip()).resolve()
                common = gitdir / "commondir"
                if common.is_file():
                    gitdir = (gitdir / common.read_text(encoding="utf-8").strip()).resolve()
                return _remote_name(gitdir / "config")
            if git.is_dir():
                return _remote_name(git / "config")
        except (OSError, UnicodeDecodeError):
            return None
    return None


def _remote_name(config_path: Path) -> Optional[str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read(config_path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return None
    url = parser.get('remote "origin"', "url", fallback=None)
    match = _REMOTE.search(url.strip()) if url else None
    return f"{match.group(1)}/{match.group(2)}" if match else None
