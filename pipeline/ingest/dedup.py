"""Duplicate detection: exact keys (canonical URL, GUID, normalised title/content hashes) and
near-duplicate story clusters (MinHash signatures over word shingles, indexed with banded LSH).

Everything here is pure and in memory; pipeline.ingest feeds it the rows already stored.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from datasketch import MinHash, MinHashLSH

NUM_PERM = 64
SHINGLE_WORDS = 3
# Jaccard similarity of shingle sets above which two articles are one story. Syndicated copies with
# a lightly edited headline score ~0.6-0.9; different stories on the same topic score < 0.2.
STORY_THRESHOLD = 0.5
# Texts this short are too generic to cluster by shingles ("Press release", "H.4.1"): they only
# join a story through an exact title match.
MIN_SHINGLE_WORDS = 6
# The same headline and summary in the same source this close in time is a re-post, not a new article;
# the same distinctive headline in this window (any source) is a copy of the same story.
TITLE_WINDOW = timedelta(hours=72)
# Syndicated copies appear within hours of the original; near-identical text days apart is a template.
NEAR_WINDOW = timedelta(hours=48)
MIN_TITLE_WORDS = 4
_SEED = 20261128

_WORD = re.compile(r"[^\W_]+(?:['’.][^\W_]+)*", re.UNICODE)
# A trailing " - Reuters" / " | Financial Times" credit added by aggregators and syndication.
_CREDIT = re.compile(r"\s+[-–—|:]\s+[^-–—|:]{2,40}$")


def normalise_words(text: str) -> list[str]:
    """Return the lower-case words of ``text`` (accents folded, punctuation dropped)."""
    text = text or ""
    if not text.isascii():
        folded = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in folded if not unicodedata.combining(ch)).replace("’", "'")
    return _WORD.findall(text.casefold())


def _title_words(title: str) -> list[str]:
    stripped = _CREDIT.sub("", (title or "").strip())
    words = normalise_words(stripped)
    # Keep the credit when stripping it would leave almost nothing ("Fed - Statement").
    return words if len(words) >= 2 else normalise_words(title)


def normalise_title(title: str) -> str:
    """Return ``title`` reduced to the words that make two copies of a headline equal."""
    return " ".join(_title_words(title))


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def title_hash(title: str) -> str:
    """Return the hash of the normalised title."""
    return _digest(normalise_title(title))


def content_hash(title: str, summary: str) -> str:
    """Return the hash of the normalised title and summary together."""
    return _digest(normalise_title(title) + "\n" + " ".join(normalise_words(summary)))


def title_is_distinctive(title: str) -> bool:
    """Return whether a headline is long enough for an exact title match to mean the same article."""
    return len(normalise_title(title).split()) >= MIN_TITLE_WORDS


def shingles(text: str, k: int = SHINGLE_WORDS) -> set[bytes]:
    """Return the word ``k``-shingles of ``text`` (the words themselves when it is shorter than k)."""
    return _shingles(normalise_words(text), k)


def _shingles(words: list[str], k: int = SHINGLE_WORDS) -> set[bytes]:
    if len(words) < k:
        return {w.encode() for w in words}
    return {" ".join(words[i : i + k]).encode() for i in range(len(words) - k + 1)}


# Affine permutations h -> a*h + b (mod 2^32) with odd a, as datasketch's "affine32" scheme uses.
_PERMUTATIONS = MinHash(num_perm=NUM_PERM, seed=_SEED).permutations
_A = _PERMUTATIONS[0].astype(np.uint32)[:, None]
_B = _PERMUTATIONS[1].astype(np.uint32)[:, None]


def _fmix32(h: np.ndarray) -> np.ndarray:
    """Return MurmurHash3's finaliser of ``h``: spreads CRC32 values before the affine permutations."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def signature_of_words(words: list[str]) -> np.ndarray | None:
    """Return the MinHash signature (uint32[NUM_PERM]) of a word sequence; None when too short to cluster."""
    if len(words) < MIN_SHINGLE_WORDS:
        return None
    grams = _shingles(words)
    hashes = _fmix32(np.fromiter((zlib.crc32(g) for g in grams), dtype=np.uint32, count=len(grams)))
    with np.errstate(over="ignore"):
        return (_A * hashes[None, :] + _B).min(axis=1)


def signature(title: str, summary: str) -> np.ndarray | None:
    """Return the MinHash signature of title + summary; None when too short to cluster."""
    return signature_of_words(normalise_words(f"{title} {summary}"))


@dataclass(frozen=True)
class Fingerprint:
    """Everything dedup compares of one article, computed in one pass over its text."""

    title_hash: str
    content_hash: str
    distinctive_title: bool
    signature: np.ndarray | None


def fingerprint(title: str, summary: str) -> Fingerprint:
    """Return the title/content hashes and MinHash signature of an article."""
    title_words = _title_words(title)
    summary_words = normalise_words(summary)
    normalised_title = " ".join(title_words)
    return Fingerprint(
        title_hash=_digest(normalised_title),
        content_hash=_digest(normalised_title + "\n" + " ".join(summary_words)),
        distinctive_title=len(title_words) >= MIN_TITLE_WORDS,
        signature=signature_of_words(normalise_words(title) + summary_words),
    )


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Return the Jaccard similarity estimated from two signatures."""
    return float(np.count_nonzero(a == b)) / len(a)


class BandIndex:
    """Banded LSH over signatures: the candidates datasketch's ``MinHashLSH`` would return, ~20x faster.

    Signatures that agree on all rows of any band collide. The band layout is the one ``MinHashLSH``
    picks for the threshold (it minimises false positives plus false negatives); its per-item Python
    overhead (byte-swapped copies, storage objects) was most of an ingest's story-index time.
    """

    def __init__(self, threshold: float, num_perm: int = NUM_PERM) -> None:
        self.ranges = MinHashLSH(threshold=threshold, num_perm=num_perm).hashranges
        # Per band: band value -> the key whose signature has it, or the set of keys once several do.
        # Most band values belong to one article, and a set for each cost ~3 KB an article in a story
        # window of hundreds of thousands.
        self._buckets: list[dict[int, int | set[int]]] = [{} for _ in self.ranges]

    def _band_keys(self, sig: np.ndarray) -> list[int]:
        # The hash of the band's bytes, not the bytes: a collision only adds a candidate, which the
        # similarity check then drops.
        return [hash(sig[start:end].tobytes()) for start, end in self.ranges]

    def insert(self, key: int, sig: np.ndarray) -> None:
        """Index ``sig`` under ``key`` (an article id not already indexed)."""
        for bucket, band in zip(self._buckets, self._band_keys(sig), strict=True):
            held = bucket.get(band)
            if held is None:
                bucket[band] = key
            elif isinstance(held, set):
                held.add(key)
            else:
                bucket[band] = {held, key}

    def remove(self, key: int, sig: np.ndarray) -> None:
        """Forget ``key``, indexed with ``sig``; a key not indexed is ignored."""
        for bucket, band in zip(self._buckets, self._band_keys(sig), strict=True):
            held = bucket.get(band)
            if isinstance(held, set):
                held.discard(key)
                if len(held) == 1:
                    bucket[band] = held.pop()
            elif held == key:
                del bucket[band]

    def query(self, sig: np.ndarray) -> set[int]:
        """Return the keys whose signatures share at least one band with ``sig``."""
        found: set[int] = set()
        for bucket, band in zip(self._buckets, self._band_keys(sig), strict=True):
            held = bucket.get(band)
            if isinstance(held, set):
                found |= held
            elif held is not None:
                found.add(held)
        return found


@dataclass(slots=True)
class _Member:
    story_id: int
    signature: np.ndarray
    published_at: datetime | None


@dataclass
class StoryIndex:
    """Stories seen so far: an LSH index over signatures plus exact title matches, keyed by article id."""

    threshold: float = STORY_THRESHOLD
    _lsh: BandIndex = field(init=False)
    _members: dict[int, _Member] = field(default_factory=dict)
    # title hash -> [(published_at, story_id, article_id)] of distinctive titles in the window.
    _titles: dict[str, list[tuple[datetime, int, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lsh = BandIndex(self.threshold)

    def __len__(self) -> int:
        return len(self._members)

    def add(
        self,
        article_id: int,
        story_id: int,
        sig: np.ndarray | None,
        *,
        title_key: str | None = None,
        published_at: datetime | None = None,
    ) -> None:
        """Remember a stored article so later copies of its story find ``story_id``."""
        if sig is not None and article_id not in self._members:
            self._members[article_id] = _Member(story_id, sig, published_at)
            self._lsh.insert(article_id, sig)
        if title_key is not None and published_at is not None:
            self._titles.setdefault(title_key, []).append((published_at, story_id, article_id))

    def discard(self, article_id: int, title_key: str | None = None) -> None:
        """Forget an article that was not stored after all (its transaction failed or it lost a race)."""
        member = self._members.pop(article_id, None)
        if member is not None:
            self._lsh.remove(article_id, member.signature)
        if title_key is not None and title_key in self._titles:
            self._titles[title_key] = [t for t in self._titles[title_key] if t[2] != article_id]

    def find_story(
        self, sig: np.ndarray | None, *, title_key: str | None = None, published_at: datetime | None = None
    ) -> int | None:
        """Return the earliest story this article belongs to (exact title in the window, or near copy)."""
        found: list[int] = []
        if title_key is not None and published_at is not None:
            found += [
                story
                for when, story, _article in self._titles.get(title_key, ())
                if abs(when - published_at) <= TITLE_WINDOW
            ]
        if sig is not None:
            for key in self._lsh.query(sig):
                member = self._members[key]
                # Recurring boilerplate ("Your first trade for Tuesday") is not a copy of last week's.
                if (
                    published_at is not None
                    and member.published_at is not None
                    and abs(member.published_at - published_at) > NEAR_WINDOW
                ):
                    continue
                # LSH returns candidates; the estimate weeds out band collisions below the threshold.
                if similarity(sig, member.signature) >= self.threshold:
                    found.append(member.story_id)
        return min(found) if found else None


@dataclass(frozen=True)
class EntryKeys:
    """The exact-duplicate keys of one entry."""

    canonical_url: str | None
    guid: str | None
    title_hash: str
    content_hash: str
    distinctive_title: bool
    published_at: datetime


@dataclass
class BatchKeys:
    """Exact keys already taken (stored, or earlier in this run), checked before an entry is stored."""

    canonical_urls: set[str] = field(default_factory=set)
    guids: set[tuple[int, str]] = field(default_factory=set)
    # (source_id, hash of title + summary) -> publication times.
    contents: dict[tuple[int, str], list[datetime]] = field(default_factory=dict)

    def duplicate_reason(self, source_id: int, keys: EntryKeys) -> str | None:
        """Return why the entry is a copy of one already taken (None when it is new)."""
        if keys.canonical_url and keys.canonical_url in self.canonical_urls:
            return "canonical url"
        if keys.guid and (source_id, keys.guid) in self.guids:
            return "guid"
        seen = self.contents.get((source_id, keys.content_hash))
        if seen:
            # Without URL or GUID the text is the only identity the entry has.
            if not keys.canonical_url and not keys.guid:
                return "content"
            # The same headline and summary re-posted under a new link. The summary must match too:
            # templated headlines ("4 - CARVANA CO. (Issuer)") repeat for different filings.
            if keys.distinctive_title and any(abs(when - keys.published_at) <= TITLE_WINDOW for when in seen):
                return "title and summary"
        return None

    def take(self, source_id: int, keys: EntryKeys) -> None:
        """Mark the entry's keys as taken."""
        if keys.canonical_url:
            self.canonical_urls.add(keys.canonical_url)
        if keys.guid:
            self.guids.add((source_id, keys.guid))
        self.contents.setdefault((source_id, keys.content_hash), []).append(keys.published_at)


def split_duplicates(
    source_id: int, entries: Iterable[tuple[int, EntryKeys]], taken: BatchKeys
) -> tuple[list[int], dict[int, str]]:
    """Return (positions of new entries, {position: duplicate reason}); new entries' keys are taken."""
    new: list[int] = []
    dups: dict[int, str] = {}
    for pos, keys in entries:
        reason = taken.duplicate_reason(source_id, keys)
        if reason:
            dups[pos] = reason
        else:
            taken.take(source_id, keys)
            new.append(pos)
    return new, dups
