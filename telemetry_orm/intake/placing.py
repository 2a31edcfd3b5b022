"""Where an execution received over OTLP belongs: its repo, pull request
and labels, read from the attributes of the record (or span) first, then
from those of its resource (``OTEL_RESOURCE_ATTRIBUTES`` lands there).

=====================  =====================================================
field or label         attributes, the first present
=====================  =====================================================
``repo``               ``vcs.repository.name``, ``repo``; else ``unknown``
``pr_number``          ``vcs.change.id`` when it is a whole number > 0
label ``user``         ``user.email``, ``user.account_uuid``, ``user.id``,
                       ``enduser.id``
label ``org``          ``organization.id``
label ``query_source`` ``query_source``
label ``agent``        ``agent.name``, ``gen_ai.agent.name``
label ``KEY``          the resource attribute ``KEY``, for each ``KEY``
                       given as a label attribute (``team``)
=====================  =====================================================
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from ..checks import MAX_INT, MAX_LABELS, parse_count
from ..errors import TelemetryValidationError
from .values import text

#: The repo of an execution whose attributes name none.
UNKNOWN_REPO = "unknown"

#: Each label read from the attributes, with the attributes that give it.
LABELS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("user", ("user.email", "user.account_uuid", "user.id", "enduser.id")),
    ("org", ("organization.id",)),
    ("query_source", ("query_source",)),
    ("agent", ("agent.name", "gen_ai.agent.name")),
)

_LABEL_NAME = re.compile(r"[a-z][a-z0-9_.]{0,63}")


def label_attributes(keys: Iterable[str]) -> Tuple[str, ...]:
    """The resource attributes to keep as labels, checked: each a label
    name (``[a-z][a-z0-9_.]{0,63}``), none of the labels read already
    (``user``, ``org`` …), at most as many as a record may carry beside
    those. Raises :class:`~telemetry_orm.TelemetryValidationError` naming
    the bad one."""
    taken = {name for name, _ in LABELS}
    checked: Dict[str, None] = {}
    for key in keys:
        if not isinstance(key, str) or _LABEL_NAME.fullmatch(key) is None:
            raise TelemetryValidationError(
                "label attribute", f"{key!r} is not a label name: lower case, a letter first, "
                "then letters, digits, '_' or '.' (at most 64)")
        if key in taken:
            raise TelemetryValidationError(
                "label attribute", f"{key!r} is a label read already (from "
                f"{', '.join(dict(LABELS)[key])})")
        checked[key] = None
    room = MAX_LABELS - len(LABELS)
    if len(checked) > room:
        raise TelemetryValidationError(
            "label attribute", f"at most {room} (a record carries at most {MAX_LABELS} "
            f"labels, {len(LABELS)} of them read always), got {len(checked)}")
    return tuple(checked)


def first(names: Sequence[str], where: Mapping[str, Any]) -> Optional[str]:
    """The text of the first of ``names`` present in ``where``."""
    for name in names:
        value = where.get(name)
        if value is not None:
            found = text(value)
            if found is not None:
                return found
    return None


class Placing:
    """Where the executions of one resource belong: the resource's
    attributes are read once (a request carries one resource for many
    records), each record's own attributes come first (see the module's
    table); ``label_keys`` as :func:`label_attributes` checked them."""

    def __init__(self, resource: Mapping[str, Any], label_keys: Sequence[str]) -> None:
        self._vcs = first(("vcs.repository.name",), resource)
        self._repo = first(("repo",), resource)
        self._change = first(("vcs.change.id",), resource)
        self._labels = tuple((name, sources, first(sources, resource))
                             for name, sources in LABELS)
        kept = ((key, text(resource.get(key))) for key in label_keys)
        self._kept = {key: value for key, value in kept if value is not None}

    def of(self, own: Mapping[str, Any]) -> Dict[str, Any]:
        """The ``repo``, ``pr_number`` and ``labels`` fields of the execution
        whose attributes are ``own``."""
        labels: Dict[str, str] = {}
        for name, sources, theirs in self._labels:
            value = first(sources, own) or theirs
            if value is not None:
                labels[name] = value
        labels.update(self._kept)
        change = first(("vcs.change.id",), own) or self._change
        return {
            "repo": first(("vcs.repository.name",), own) or self._vcs
            or first(("repo",), own) or self._repo or UNKNOWN_REPO,
            "pr_number": None if change is None else _pr_number(change),
            "labels": labels,
        }


def _pr_number(value: str) -> Optional[int]:
    # A change id that is not a number (a Gerrit change hash) names no PR.
    return parse_count(value, minimum=1, maximum=MAX_INT)
