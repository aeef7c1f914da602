"""Content-Encoding decoding with a cap on what the decoders produce, whatever a server stacks.

A client library decodes each network chunk in one call: a few kilobytes of ``gzip, gzip`` inflate
layer by layer to gigabytes before any size check sees them. Here every layer hands on at most
``CHUNK`` bytes at a time to the next, and the last one counts, so memory stays within a few chunks
per layer plus the capped body, and decoding stops the moment the cap is passed.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import IO, cast

import brotli
import zstandard

CHUNK = 64 * 1024
Sink = Callable[[bytes], None]


class BodyTooLarge(Exception):
    """The decoded body passed its cap (``size`` is how far decoding got)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class BadEncoding(ValueError):
    """An unknown content coding, or bytes its decoder rejects."""


class _Zlib:
    """gzip (every member of a multi-member stream) or deflate (zlib-wrapped, or raw as some servers send)."""

    def __init__(self, sink: Sink, coding: str) -> None:
        self.sink, self.coding = sink, coding
        self.wbits = zlib.MAX_WBITS | 16 if coding == "gzip" else zlib.MAX_WBITS
        self.d = zlib.decompressobj(self.wbits)
        self.started = False  # any input decoded yet
        self.ended = False  # a whole stream decoded: later bytes may only be more gzip members
        self.ignoring = False  # trailing bytes that are no stream: the rest is dropped

    def feed(self, data: bytes) -> None:
        while data and not self.ignoring:
            try:
                out = self.d.decompress(data, CHUNK)
            except zlib.error as exc:
                if self.coding == "deflate" and not self.started:  # raw deflate, no zlib header
                    self.wbits, self.d = -zlib.MAX_WBITS, zlib.decompressobj(-zlib.MAX_WBITS)
                    self.started = True
                    continue
                if self.ended:  # trailing bytes after a complete stream: ignored, as browsers do
                    self.ignoring = True
                    return
                raise BadEncoding(f"{self.coding}: {exc}") from exc
            self.started = True
            if out:
                self.sink(out)
            if self.d.eof:
                self.ended = True
                data = self.d.unused_data if self.coding == "gzip" else b""
                self.d = zlib.decompressobj(self.wbits)
            else:
                data = self.d.unconsumed_tail

    def finish(self) -> None:
        while not self.ignoring:  # what the output limit held back
            out = self.d.decompress(b"", CHUNK) if not self.d.eof else b""
            if not out:
                return
            self.sink(out)


class _Brotli:
    def __init__(self, sink: Sink) -> None:
        self.sink, self.d = sink, brotli.Decompressor()

    def feed(self, data: bytes) -> None:
        try:
            out = self.d.process(data, output_buffer_limit=CHUNK)
            while True:
                if out:
                    self.sink(out)
                if self.d.can_accept_more_data():
                    return
                out = self.d.process(b"", output_buffer_limit=CHUNK)
        except brotli.error as exc:
            raise BadEncoding(f"br: {exc}") from exc

    def finish(self) -> None:
        pass


class _SinkWriter:
    """The file-like end a zstandard stream writer writes its output chunks to."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def write(self, data: bytes) -> int:
        self.sink(bytes(data))
        return len(data)


class _Zstd:
    def __init__(self, sink: Sink) -> None:
        decompressor = zstandard.ZstdDecompressor()
        # zstandard types the target as IO[bytes]; it only ever calls write().
        writer = cast(IO[bytes], _SinkWriter(sink))
        self.w = decompressor.stream_writer(writer, write_size=CHUNK, closefd=False)

    def feed(self, data: bytes) -> None:
        try:
            self.w.write(data)
        except zstandard.ZstdError as exc:
            raise BadEncoding(f"zstd: {exc}") from exc

    def finish(self) -> None:
        self.w.flush()


class BoundedDecoder:
    """Decode a body sent with ``content_encoding`` (as the header says it), collecting at most
    ``max_bytes`` of output: past that, ``feed`` raises BodyTooLarge, or with ``truncate`` keeps the
    first ``max_bytes`` and reports ``full``."""

    def __init__(self, content_encoding: str | None, max_bytes: int, truncate: bool = False) -> None:
        self.max_bytes, self.truncate = max_bytes, truncate
        self.parts: list[bytes] = []
        self.size = 0
        self.full = False
        sink: Sink = self._collect
        self.layers: list[_Zlib | _Brotli | _Zstd] = []
        codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
        # The header lists codings in the order they were applied: undo the last one first.
        for coding in codings:
            if coding in ("identity", ""):
                continue
            layer: _Zlib | _Brotli | _Zstd
            if coding in ("gzip", "x-gzip"):
                layer = _Zlib(sink, "gzip")
            elif coding == "deflate":
                layer = _Zlib(sink, "deflate")
            elif coding == "br":
                layer = _Brotli(sink)
            elif coding == "zstd":
                layer = _Zstd(sink)
            else:
                raise BadEncoding(f"unsupported Content-Encoding {coding!r}")
            self.layers.insert(0, layer)
            sink = layer.feed

    def _collect(self, data: bytes) -> None:
        if self.full:
            return
        if self.size + len(data) > self.max_bytes:
            if not self.truncate:
                raise BodyTooLarge(self.size + len(data))
            data = data[: self.max_bytes - self.size]
            self.full = True
        self.size += len(data)
        self.parts.append(data)

    def feed(self, raw: bytes) -> None:
        """Decode one chunk of the raw body through every layer."""
        if self.layers:
            self.layers[0].feed(raw)
        else:
            self._collect(raw)

    def finish(self) -> bytes:
        """Return the decoded body once the raw body has ended."""
        for layer in self.layers:
            layer.finish()
        return b"".join(self.parts)
