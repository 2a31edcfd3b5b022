"""Labels: ``record()`` of a record with three labels against ``record()``
of the same record without them, each on a store file of its own made the
same way (target: <= 1.6x)."""

from __future__ import annotations

import dataclasses
from typing import List

from bench.data import records
from bench.timing import Result, Settings, paired, per_item, us
from telemetry_orm import create_telemetry_store

#: Three labels, as a bot would attribute a run.
LABELS = {"user": "alice@example.com", "team": "platform", "agent": "reviewer"}


def labels(settings: Settings) -> List[Result]:
    """``record()`` per row, with and without three labels."""
    n = settings.rows_per_round
    plain = records(n)
    labelled = [dataclasses.replace(r, labels={**LABELS, "user": f"user{i % 50}@example.com"})
                for i, r in enumerate(plain)]
    paths = [settings.workdir / f"labels-{name}.db" for name in ("with", "without")]
    with create_telemetry_store(paths[0]) as with_labels, \
            create_telemetry_store(paths[1]) as without:

        def timed(store: object, pool: List[object]) -> float:
            record = store.record  # type: ignore[attr-defined]

            def run() -> None:
                for entry in pool:
                    record(entry)

            return per_item(run, n)

        mine, theirs, ratio = paired(lambda: timed(with_labels, labelled),
                                     lambda: timed(without, plain), settings.rounds)
    for path in paths:
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    return [Result(
        "record() with 3 labels, per row", us(mine), "us/row", us(theirs), ratio, 1.6,
        "<= 1.6x", "baseline: record() of the same record without labels", settings.rounds)]
