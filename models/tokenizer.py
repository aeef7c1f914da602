"""Byte-level BPE tokenizer trained on the project's text, plus the clean-up shared by training and use."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|endoftext|>"
PAD = "<|pad|>"
TOKENIZER_FILE = "tokenizer.json"

_URL = re.compile(r"(https?://\S+|www\.\S+|pic\.twitter\.com/\S+)")
_SPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Return ``text`` with HTML entities unescaped, URLs removed and whitespace collapsed.

    The unlabeled corpus was cleaned this way, and tweets' t.co links carry no meaning, so
    training and inference see the same kind of text.
    """
    text = html.unescape(html.unescape(text))
    text = _URL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> Tokenizer:
    """Return a byte-level BPE tokenizer trained on ``texts`` with ``EOS`` and ``PAD`` special tokens."""
    tok = Tokenizer(models.BPE())
    # A leading space makes the first word of a headline tokenise like any other word.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((clean_text(t) for t in texts), trainer=trainer)
    return tok


def save_tokenizer(tok: Tokenizer, directory: Path) -> Path:
    """Return the path of ``tokenizer.json`` written into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TOKENIZER_FILE
    tok.save(str(path))
    return path


def load_tokenizer(directory: Path) -> Tokenizer:
    """Return the tokenizer stored as ``tokenizer.json`` in ``directory``."""
    path = directory / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {TOKENIZER_FILE} in model directory {directory}")
    return Tokenizer.from_file(str(path))


def special_ids(tok: Tokenizer) -> tuple[int, int]:
    """Return ``(eos_id, pad_id)``; a tokenizer without a pad token pads with its end-of-text token."""
    eos = tok.token_to_id(EOS)
    if eos is None:
        raise ValueError(f"tokenizer has no {EOS} token")
    pad = tok.token_to_id(PAD)
    return eos, eos if pad is None else pad


def encode_for_classification(tok: Tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Return token ids per text: cleaned, cut to ``max_length - 1`` tokens, then end-of-text appended.

    The classifier pools at the last token, so every sequence ends with the same ``EOS`` marker
    that separates documents in pre-training; it has attended to the whole text.
    """
    eos, _ = special_ids(tok)
    encoded = tok.encode_batch([clean_text(t) for t in texts], add_special_tokens=False)
    return [[*e.ids[: max_length - 1], eos] for e in encoded]
