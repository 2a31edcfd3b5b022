"""Claude Code transcript folders for the import tests and the bench.

:func:`write_folder` writes what Claude Code leaves under ``~/.claude``:
``projects/<project-dir>/<sessionId>.jsonl``, one JSON object a line, with
the traits an importer has to get right:

- one API call written on two or three consecutive lines (streaming: one
  line per content block, the same ``message.id``, ``requestId`` and usage
  on each);
- ``user`` lines without usage, ``summary`` lines without a timestamp;
- ``costUSD`` on the lines of older Claude Code versions only;
- sidechain (subagent) calls marked ``isSidechain``, and sessions that use
  a second model;
- now and then a session that ends on an API error line
  (``isApiErrorMessage``, model ``<synthetic>``, zero usage, no
  ``requestId``).

The same arguments always write the same bytes. :func:`expected_totals`
reads a folder back and sums it the way ccusage does, without using anything
the generator knew::

    projects = write_folder(tmp_path, sessions=40, calls_per_session=25)
    expected = expected_totals(projects)
    expected.by_model["claude-sonnet-4-5-20250929"].output_tokens
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import random
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

DEFAULT_MODELS = (
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-1-20250805",
    "claude-haiku-4-5-20251001",
)

#: The model Claude Code writes on its API error lines.
SYNTHETIC_MODEL = "<synthetic>"

#: Where the projects live, each in a folder named after its working
#: directory (Claude Code replaces ``/`` and ``.`` with ``-``).
PROJECT_CWDS = (
    "/home/dev/acme/api",
    "/home/dev/acme/web",
    "/home/dev/globex/billing",
    "/home/dev/initech/tps.reports",
)

#: Older versions wrote ``costUSD`` on every assistant line; newer ones never do.
OLD_VERSIONS = ("1.0.58", "1.0.72")
NEW_VERSIONS = ("2.0.14", "2.0.27", "2.0.37")

#: Average lines per API call: 1.7 assistant lines, a user line 6 times in 10.
LINES_PER_CALL = 2.3
ASSISTANT_LINES_PER_CALL = 1.7

_START = dt.datetime(2025, 10, 6, 8, 0, tzinfo=dt.timezone.utc)
#: Ids look like Anthropic's (letters and digits): base64 without ``+`` and ``/``.
_LETTERS_ONLY = str.maketrans("+/", "Qz")
_ERROR_TEXT = "API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}"


class Tokens(NamedTuple):
    """Token sums, named as the ``executions`` columns."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0

    def plus(self, other: Tokens) -> Tokens:
        """The sums of both, column by column."""
        return Tokens(*(a + b for a, b in zip(self, other, strict=True)))


@dataclasses.dataclass
class Expected:
    """What a folder holds, summed from its lines (see :func:`expected_totals`)."""

    files: int = 0
    #: Every line of every file.
    lines: int = 0
    #: Lines that carry ``message.usage`` (duplicates and API errors included).
    api_lines: int = 0
    by_model: Dict[str, Tokens] = dataclasses.field(default_factory=dict)
    by_session_model: Dict[Tuple[str, str], Tokens] = dataclasses.field(default_factory=dict)
    #: Distinct API calls per (sessionId, model).
    calls: Dict[Tuple[str, str], int] = dataclasses.field(default_factory=dict)

    @property
    def sessions(self) -> List[str]:
        """The session ids that made at least one counted call, sorted."""
        return sorted({session for session, _ in self.by_session_model})

    @property
    def by_session(self) -> Dict[str, Tokens]:
        """Token sums per session, all models together."""
        sums: Dict[str, Tokens] = {}
        for (session, _), tokens in self.by_session_model.items():
            sums[session] = sums.get(session, Tokens()).plus(tokens)
        return sums


def project_dir_name(cwd: str) -> str:
    """The folder Claude Code keeps a working directory's sessions in:
    ``/home/dev/acme/api`` → ``-home-dev-acme-api``."""
    return cwd.replace("/", "-").replace(".", "-")


def write_folder(
    root: Path,
    *,
    sessions: int,
    calls_per_session: int,
    seed: int = 0,
    models: Sequence[str] = DEFAULT_MODELS,
) -> Path:
    """Write ``sessions`` session files of ``calls_per_session`` API calls
    each (about :data:`LINES_PER_CALL` lines a call) under
    ``root/projects`` and return that ``projects`` folder.

    The same arguments give the same files, byte for byte.
    """
    if sessions < 1 or calls_per_session < 1:
        raise ValueError("sessions and calls_per_session must be at least 1")
    rng = random.Random(seed)
    projects = Path(root) / "projects"
    started = _START + dt.timedelta(days=seed % 97)
    for index in range(sessions):
        cwd = PROJECT_CWDS[index % len(PROJECT_CWDS)]
        folder = projects / project_dir_name(cwd)
        folder.mkdir(parents=True, exist_ok=True)
        session = _Session(rng, cwd, started, models, calls_per_session)
        with open(folder / f"{session.session_id}.jsonl", "w", encoding="utf-8") as out:
            out.writelines(json.dumps(line, separators=(",", ":")) + "\n"
                           for line in session.lines())
        # Sessions follow each other by minutes to hours, now and then
        # across midnight, so a daily grouping sees several days.
        started = session.now + dt.timedelta(minutes=rng.randint(5, 300))
    return projects


class _Session:
    """One session's lines, drawn from ``rng`` in order."""

    def __init__(self, rng: random.Random, cwd: str, start: dt.datetime,
                 models: Sequence[str], calls: int) -> None:
        self.rng = rng
        self.cwd = cwd
        self.now = start + dt.timedelta(seconds=rng.randint(0, 3600),
                                        milliseconds=rng.randint(0, 999))
        self.calls = calls
        self.session_id = self.uuid()
        self.version = rng.choice(OLD_VERSIONS if rng.random() < 0.25 else NEW_VERSIONS)
        self.main_model = rng.choice(models)
        others = [m for m in models if m != self.main_model]
        # About half the sessions also use a second model (subagents, small tasks).
        self.second_model: Optional[str] = (
            rng.choice(others) if others and rng.random() < 0.5 else None)
        self.parent: Optional[str] = None

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def token(self, prefix: str) -> str:
        return prefix + base64.b64encode(self.rng.randbytes(18)).decode().translate(_LETTERS_ONLY)

    def stamp(self, seconds: float) -> str:
        self.now += dt.timedelta(seconds=seconds)
        return self.now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.now.microsecond // 1000:03d}Z"

    def base(self, kind: str, seconds: float, sidechain: bool = False) -> Dict[str, object]:
        """The fields every user and assistant line starts with."""
        line_uuid = self.uuid()
        line: Dict[str, object] = {
            "parentUuid": self.parent,
            "isSidechain": sidechain,
            "userType": "external",
            "cwd": self.cwd,
            "sessionId": self.session_id,
            "version": self.version,
            "gitBranch": "main",
            "type": kind,
            "uuid": line_uuid,
            "timestamp": self.stamp(seconds),
        }
        self.parent = line_uuid
        return line

    def lines(self) -> Iterator[Dict[str, object]]:
        rng = self.rng
        if rng.random() < 0.3:
            yield {"type": "summary", "summary": "Fix the failing login test",
                   "leafUuid": self.uuid()}
        yield self.user("Run the tests and fix what fails", seconds=0)
        for call in range(self.calls):
            sidechain = rng.random() < 0.08
            if call and rng.random() < 0.6:
                yield self.user(None, seconds=rng.uniform(0.2, 20), sidechain=sidechain)
            yield from self.api_call(sidechain)
        if rng.random() < 0.15:
            yield self.api_error()

    def user(self, text: Optional[str], seconds: float, sidechain: bool = False
             ) -> Dict[str, object]:
        line = self.base("user", seconds, sidechain)
        content: object = text if text is not None else [
            {"tool_use_id": self.token("toolu_"), "type": "tool_result", "content": "ok"}]
        line["message"] = {"role": "user", "content": content}
        return line

    def api_call(self, sidechain: bool) -> Iterator[Dict[str, object]]:
        """One API call: one line per content block, all with the same ids and usage."""
        rng = self.rng
        model = self.main_model
        if self.second_model is not None and (sidechain or rng.random() < 0.2):
            model = self.second_model
        usage = {
            "input_tokens": rng.choice((rng.randint(1, 12), rng.randint(1, 12),
                                        rng.randint(100, 9000))),
            "cache_creation_input_tokens": rng.choice((0, rng.randint(50, 25000))),
            "cache_read_input_tokens": rng.randint(0, 160000),
            "output_tokens": rng.randint(1, 4000),
            "service_tier": "standard",
        }
        message_id, request_id = self.token("msg_01"), self.token("req_011C")
        cost = round(rng.uniform(0.0005, 0.4), 6) if self.version in OLD_VERSIONS else None
        blocks = rng.choices((1, 2, 3), weights=(45, 40, 15))[0]
        for block in range(blocks):
            line = self.base("assistant", rng.uniform(2, 40) if block == 0
                             else rng.uniform(0.01, 1.5), sidechain)
            line["message"] = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [self.content(last=block == blocks - 1)],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": dict(usage),
            }
            line["requestId"] = request_id
            if cost is not None:
                line["costUSD"] = cost
            yield line

    def content(self, last: bool) -> Dict[str, object]:
        if not last:
            return {"type": "text", "text": "Looking at the test output."}
        return {"type": "tool_use", "id": self.token("toolu_"), "name": "Bash",
                "input": {"command": "pytest -q"}}

    def api_error(self) -> Dict[str, object]:
        """The line Claude Code writes when the API failed after its retries."""
        line = self.base("assistant", self.rng.uniform(10, 60))
        line["message"] = {
            "id": self.uuid(),
            "model": SYNTHETIC_MODEL,
            "role": "assistant",
            "stop_reason": "stop_sequence",
            "stop_sequence": "",
            "type": "message",
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0},
            "content": [{"type": "text", "text": _ERROR_TEXT}],
        }
        line["isApiErrorMessage"] = True
        return line


def expected_totals(projects: Path) -> Expected:
    """Read every ``*.jsonl`` under ``projects`` and sum its API calls as
    ccusage counts them: a call repeated on several lines counts once (by
    ``message.id`` + ``requestId``, the first line kept; a line without
    either is its own call), model ``<synthetic>`` is left out."""
    expected = Expected()
    seen = set()
    for path in sorted(Path(projects).rglob("*.jsonl")):
        expected.files += 1
        with open(path, encoding="utf-8") as lines:
            for number, text in enumerate(lines, 1):
                expected.lines += 1
                line = json.loads(text)
                message = line.get("message")
                if not isinstance(message, dict) or "usage" not in message:
                    continue
                expected.api_lines += 1
                if message.get("id") and line.get("requestId"):
                    key: object = (message["id"], line["requestId"])
                else:
                    key = (path, number)
                if key in seen:
                    continue
                seen.add(key)
                model = message.get("model", "unknown")
                if model == SYNTHETIC_MODEL:
                    continue
                usage = message["usage"]
                tokens = Tokens(usage["input_tokens"], usage["output_tokens"],
                                usage.get("cache_read_input_tokens", 0),
                                usage.get("cache_creation_input_tokens", 0))
                where = (line["sessionId"], model)
                expected.by_model[model] = expected.by_model.get(model, Tokens()).plus(tokens)
                expected.by_session_model[where] = (
                    expected.by_session_model.get(where, Tokens()).plus(tokens))
                expected.calls[where] = expected.calls.get(where, 0) + 1
    return expected
