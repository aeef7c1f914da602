"""Tests for pipeline.ingest.decode: every content coding, stacked in any order, decoded under a cap."""

from __future__ import annotations

import gzip
import itertools
import zlib

import brotli
import pytest
import zstandard

from pipeline.ingest.decode import BadEncoding, BodyTooLarge, BoundedDecoder

PAYLOAD = b"<rss><channel>" + b"<item>headline</item>" * 2000 + b"</channel></rss>"
ENCODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}


def encode(data: bytes, codings: tuple[str, ...]) -> bytes:
    for coding in codings:
        data = ENCODERS[coding](data)
    return data


def decode(raw: bytes, header: str, cap: int = 1 << 20, piece: int = 97, truncate: bool = False) -> bytes:
    decoder = BoundedDecoder(header, cap, truncate)
    for i in range(0, len(raw), piece):
        decoder.feed(raw[i : i + piece])
        if decoder.full:
            break
    return decoder.finish()


@pytest.mark.parametrize(
    "codings", [(), *((c,) for c in ENCODERS), *itertools.permutations(ENCODERS, 2), tuple(ENCODERS)]
)
def test_every_coding_and_stack_round_trips(codings: tuple[str, ...]) -> None:
    assert decode(encode(PAYLOAD, codings), ", ".join(codings)) == PAYLOAD


def test_identity_and_case_and_spacing_are_understood() -> None:
    assert decode(gzip.compress(PAYLOAD), " GZIP , identity") == PAYLOAD


def test_multi_member_gzip_and_raw_deflate_decode_whole() -> None:
    assert decode(gzip.compress(b"first ") + gzip.compress(b"second"), "gzip") == b"first second"
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert decode(raw.compress(PAYLOAD) + raw.flush(), "deflate") == PAYLOAD


def test_trailing_bytes_after_a_complete_gzip_stream_are_ignored() -> None:
    assert decode(gzip.compress(PAYLOAD) + b"\0\0\0garbage", "gzip") == PAYLOAD


@pytest.mark.parametrize("codings", [("gzip",), ("gzip", "gzip"), ("gzip", "br", "zstd")])
def test_a_bomb_stops_at_the_cap_whatever_the_layers(codings: tuple[str, ...]) -> None:
    zeros = zlib.compressobj(9, zlib.DEFLATED, 31)
    inner = b"".join(zeros.compress(b"\0" * (1 << 22)) for _ in range(64)) + zeros.flush()  # 256 MiB
    raw = encode(inner, codings[1:])
    with pytest.raises(BodyTooLarge) as caught:
        decode(raw, ", ".join(codings), cap=1 << 20, piece=4096)
    # It stopped within one chunk of the cap instead of inflating the rest.
    assert (1 << 20) < caught.value.size <= (1 << 20) + 64 * 1024


def test_truncate_keeps_the_first_bytes_and_stops() -> None:
    body = decode(gzip.compress(PAYLOAD), "gzip", cap=100, truncate=True)
    assert body == PAYLOAD[:100]


@pytest.mark.parametrize(
    ("raw", "header", "message"),
    [
        (b"not gzip at all", "gzip", "gzip:"),
        (b"\x00\x01\x02 not brotli", "br", "br:"),
        (b"not zstd", "zstd", "zstd:"),
        (b"<rss/>", "compress", "unsupported Content-Encoding 'compress'"),
    ],
)
def test_undecodable_bytes_are_a_clear_error(raw: bytes, header: str, message: str) -> None:
    with pytest.raises(BadEncoding, match=message):
        decode(raw, header)
