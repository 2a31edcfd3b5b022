"""A WSGI application served by waitress, stopped gracefully.

:class:`Serving` binds at once (port 0 picks a free port: see
:attr:`Serving.port`), serves in :meth:`Serving.run` until
:meth:`Serving.stop` is called (from a signal handler or another thread),
then stops accepting, lets the requests already received finish and their
answers go out, closes the idle connections and returns.

Waitress because it is a production WSGI server in pure Python, with no
dependency of its own, kept by the Pylons project, on every platform this
package runs on; it buffers a request body before the application sees it,
within a bound of its own (set here to the application's).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

from .intake import wire

#: Seconds :meth:`Serving.run` waits for the requests in flight once stopped.
GRACE = 30.0
# How often the serving loop looks at the stop flag, in seconds.
_TICK = 0.2


def _waitress() -> Any:
    try:
        import waitress.server
    except ImportError as exc:
        raise ImportError(
            f"telemetry-orm serve needs the {wire.EXTRA!r} extra: pip install "
            f"'telemetry_orm[{wire.EXTRA}]' (missing: {exc.name or exc})") from exc
    return waitress.server


class Serving:
    """``app`` served on ``host``:``port`` by waitress with ``threads``
    worker threads; requests whose body is larger than ``max_request_body``
    bytes (as sent) are refused by waitress with 413."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 4318, *,
                 threads: int = 6, max_request_body: int = 16 * 1024 * 1024,
                 grace: float = GRACE) -> None:
        server_module = _waitress()
        self._module = server_module
        self.grace = grace
        # A plain flag: a signal handler may set it while another handler
        # is setting it (an Event's lock is not reentrant).
        self._stopping = False
        self._done = threading.Event()
        self.server = server_module.create_server(
            app, host=host, port=port, threads=threads,
            max_request_body_size=max_request_body, ident="telemetry-orm",
            clear_untrusted_proxy_headers=True)
        self._map: Dict[int, Any] = getattr(self.server, "map", None) or self.server._map

    @property
    def listeners(self) -> List[Any]:
        """The listening sockets' dispatchers (one per address)."""
        return [d for d in list(self._map.values())
                if isinstance(d, self._module.BaseWSGIServer)]

    @property
    def port(self) -> int:
        """The port bound (the one chosen when 0 was asked)."""
        return int(self.server.effective_port)

    @property
    def host(self) -> str:
        """The address bound."""
        return str(self.server.effective_host)

    def run(self) -> None:
        """Serve until :meth:`stop`, then finish the requests in flight
        (at most :attr:`grace` seconds) and return."""
        try:
            while not self._stopping:
                self._poll()
            self._drain()
        finally:
            self._close()
            self._done.set()

    def stop(self) -> None:
        """Ask :meth:`run` to stop (safe from a signal handler: it only
        sets a flag, seen within a fraction of a second)."""
        self._stopping = True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`run` has returned; whether it has."""
        return self._done.wait(timeout)

    def _poll(self) -> None:
        self._module.wasyncore.loop(timeout=_TICK, map=self._map, use_poll=True, count=1)

    def _drain(self) -> None:
        for listener in self.listeners:
            # Stop accepting: close the listening socket alone (waitress's
            # own close() would also close the trigger the workers wake the
            # loop with, and their answers would never be sent).
            self._module.wasyncore.dispatcher.close(listener)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            busy = False
            for channel in list(self._map.values()):
                if not hasattr(channel, "requests"):
                    continue  # the trigger
                if channel.requests or channel.request is not None \
                        or channel.total_outbufs_len:
                    busy = True
                else:
                    channel.will_close = True  # idle: closed at the next turn
            if not busy:
                break
            self._poll()
        self._poll()  # the idle connections close

    def _close(self) -> None:
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=self.grace)
        self._module.wasyncore.close_all(self._map)
