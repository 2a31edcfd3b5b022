"""A request body read within a bound, decompressed as a stream.

The bound holds after decompression: a gzip bomb (megabytes that inflate
to gigabytes) is refused as soon as its output passes the bound, having
held at most the bound and one chunk in memory, and having inflated no more
than that.
"""

from __future__ import annotations

import zlib
from typing import Any, Iterator, List, Optional

from ..errors import TelemetryValidationError

#: How much of the body is read at a time.
CHUNK = 64 * 1024

# The most one call inflates: zlib grows its output buffer as it goes, so
# one call for all the room left would hold twice that at its peak.
_STEP = 1024 * 1024

#: The content codings read, with zlib's window bits for each: gzip, and
#: HTTP's "deflate" (the zlib format; a raw deflate stream too, as browsers
#: and some senders write it).
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
             "deflate": zlib.MAX_WBITS}
#: The content codings that leave the body as it is.
IDENTITY = ("", "identity")


class BodyTooLargeError(TelemetryValidationError):
    """The body (decompressed) is larger than the bound."""

    def __init__(self, bound: int, what: str = "the body") -> None:
        super().__init__("body", f"{what} is larger than {bound:,} bytes (the most this "
                                  "server takes in one request)")


def read(stream: Any, length: int, max_body: int, encoding: str = "") -> bytes:
    """``length`` bytes of ``stream`` (a WSGI ``wsgi.input``), decoded from
    ``encoding`` (see :data:`ENCODINGS`), at most ``max_body`` bytes after
    decoding. Raises :class:`BodyTooLargeError` past the bound,
    :class:`~telemetry_orm.TelemetryValidationError` (field ``body``) for a
    body that ends early or does not decompress."""
    if encoding in IDENTITY:
        if length > max_body:
            raise BodyTooLargeError(max_body)
        return _read_exactly(stream, length)
    if length > max_body:
        raise BodyTooLargeError(max_body, "the compressed body")
    inflater = _Inflater(ENCODINGS[encoding], max_body)
    for chunk in _chunks(stream, length):
        inflater.feed(chunk)
    return inflater.finish()


def _read_exactly(stream: Any, length: int) -> bytes:
    return b"".join(_chunks(stream, length))


def _chunks(stream: Any, length: int) -> Iterator[bytes]:
    """The ``length`` bytes of ``stream``, a chunk at a time; a body that
    ends early is refused."""
    left = length
    while left > 0:
        chunk = stream.read(min(CHUNK, left))
        if not chunk:
            raise TelemetryValidationError(
                "body", f"ended after {length - left:,} of its {length:,} bytes")
        left -= len(chunk)
        yield chunk


class _Inflater:
    """Inflates chunk by chunk, never past the bound: each call asks zlib
    for at most the room left plus one byte (and at most a megabyte), so a
    byte too many is seen without inflating the rest."""

    def __init__(self, wbits: int, bound: int) -> None:
        self.wbits = wbits
        self.bound = bound
        self.raw = False
        self.inflater: Any = zlib.decompressobj(wbits)
        self.out: List[bytes] = []
        self.size = 0
        self.started = False

    def feed(self, data: bytes) -> None:
        while data:
            try:
                piece = self.inflater.decompress(
                    data, min(self.bound - self.size + 1, _STEP))
            except zlib.error as exc:
                if not self.started and self.wbits == zlib.MAX_WBITS and not self.raw:
                    # "deflate" without the zlib header: a raw stream.
                    self.raw, self.inflater = True, zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise TelemetryValidationError(
                    "body", f"does not decompress: {exc}") from None
            self.started = True
            self._keep(piece)
            data = self.inflater.unconsumed_tail
            if self.inflater.eof and self.inflater.unused_data:
                # Another gzip member follows (gzip files may hold several).
                data = self.inflater.unused_data
                self.inflater = zlib.decompressobj(self.wbits)

    def finish(self) -> bytes:
        if not self.inflater.eof:
            raise TelemetryValidationError("body", "ends inside its compressed stream")
        return b"".join(self.out)

    def _keep(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.size > self.bound:
            raise BodyTooLargeError(self.bound, "the decompressed body")
        self.out.append(piece)


def media_type(header: Optional[str]) -> str:
    """The media type of a ``Content-Type`` header, lower case, without
    parameters (``application/json; charset=utf-8`` is ``application/json``)."""
    return (header or "").split(";", 1)[0].strip().lower()
