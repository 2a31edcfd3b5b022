"""What ``fork()`` does to open stores: one ordered registry of fork hooks.

Pre-fork servers (gunicorn and the like) fork a process that may have a
store open. The child must not use the parent's connections, locks or
threads; the parent's store calls in progress must finish before the fork.
Everything that holds such state registers here, in a layer:

- :data:`ENGINE`: an engine's upkeep of one store (its connections, helper
  threads);
- :data:`STORE`: a store's gate (its lock and the calls running without
  it, see :mod:`telemetry_orm.store.gate`);
- :data:`RECORDER`: a background recorder (its queue and writer thread).

Before a fork the hooks run from the top layer down (recorders, stores,
engines), so locks are taken in the order the store itself takes them;
after it, in the parent, they are let go in the reverse order; in the
child, engines are reset first, then stores, then recorders, so each layer
finds the one below it usable again.
"""

from __future__ import annotations

import os
import weakref
from typing import List, Protocol

ENGINE, STORE, RECORDER = 0, 1, 2


class ForkAware(Protocol):
    """An object with state that a fork must not copy as it is."""

    def before_fork(self) -> None: ...

    def after_fork_in_parent(self) -> None: ...

    def after_fork_in_child(self) -> None: ...


_LAYERS: List[weakref.WeakSet[ForkAware]] = [weakref.WeakSet() for _ in range(3)]
# What before_fork() ran on, in order, for after_fork_in_parent() to undo.
_HELD: List[ForkAware] = []


def track(obj: ForkAware, layer: int) -> None:
    """Call ``obj``'s fork hooks at every fork from now on (until :func:`untrack`)."""
    _LAYERS[layer].add(obj)


def untrack(obj: ForkAware) -> None:
    """Forget ``obj`` (a closed store, a closed recorder)."""
    for members in _LAYERS:
        members.discard(obj)


def _before_fork() -> None:
    for members in reversed(_LAYERS):
        for obj in list(members):
            obj.before_fork()
            _HELD.append(obj)


def _after_fork_in_parent() -> None:
    while _HELD:
        _HELD.pop().after_fork_in_parent()


def _after_fork_in_child() -> None:
    _HELD.clear()
    for members in _LAYERS:
        for obj in list(members):
            obj.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
