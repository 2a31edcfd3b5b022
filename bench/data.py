"""Realistic executions, made deterministically from a seed (no extra packages)."""

from __future__ import annotations

import random
from typing import Iterator, List

from telemetry_orm import FIELD_NAMES, TelemetryRecord
from telemetry_orm.prices import cost_of

MODELS = ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5", "claude-sonnet-4")

EVENTS = (
    "pull_request.opened",
    "pull_request.synchronize",
    "issue_comment.created",
    "pull_request_review_comment.created",
    "issues.opened",
)
CONCLUSIONS = ("success", "failure", "error", "timeout")
STOP_REASONS = ("end_turn", "max_tokens", "tool_use")

#: The raw INSERT the baselines run: what one would write by hand.
RAW_INSERT = (
    f"INSERT INTO executions ({', '.join(FIELD_NAMES)}) "
    f"VALUES ({', '.join('?' for _ in FIELD_NAMES)})"
)


def _uuid(rnd: random.Random) -> str:
    h = f"{rnd.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def iter_records(count: int, seed: int = 1) -> Iterator[TelemetryRecord]:
    """``count`` varied records, the same ones for the same seed."""
    rnd = random.Random(seed)
    repos = [f"org{n % 37}/service-{n}" for n in range(200)]
    for _ in range(count):
        model = rnd.choice(MODELS)
        tokens = (
            int(rnd.lognormvariate(7.5, 1.0)),
            int(rnd.lognormvariate(7.0, 0.9)),
            int(rnd.lognormvariate(10.5, 1.2)),
            int(rnd.lognormvariate(8.5, 1.1)),
        )
        yield TelemetryRecord(
            delivery_id=_uuid(rnd),
            repo=rnd.choice(repos),
            pr_number=rnd.randint(1, 4000) if rnd.random() < 0.8 else None,
            event_type=rnd.choice(EVENTS),
            model=model,
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            cache_read_tokens=tokens[2],
            cache_creation_tokens=tokens[3],
            duration_ms=int(rnd.lognormvariate(10.8, 0.7)),
            cost_usd=round(cost_of(model, input_tokens=tokens[0], output_tokens=tokens[1],
                                   cache_read_tokens=tokens[2],
                                   cache_creation_tokens=tokens[3]) or 0.0, 6),
            conclusion=rnd.choices(CONCLUSIONS, (86, 8, 4, 2))[0],
            session_id=_uuid(rnd),
            num_turns=rnd.randint(1, 40),
            stop_reason=rnd.choice(STOP_REASONS),
        )


def records(count: int, seed: int = 1) -> List[TelemetryRecord]:
    """:func:`iter_records` as a list."""
    return list(iter_records(count, seed))
