"""Inference API: ``load(path) -> Classifier``; ``Classifier.predict(texts) -> list[Prediction]``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from models.network import GPTClassifier, ModelBundle, load_bundle, quantize_int8
from models.tokenizer import encode_for_classification

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
Sentiment = Literal["negative", "neutral", "positive"]


@dataclass(frozen=True)
class Prediction:
    """Topic and sentiment of one text, with probabilities and the model version that made them."""

    topic: str
    topic_probs: dict[str, float]
    sentiment: Sentiment
    sentiment_probs: dict[str, float]
    score: float  # p(positive) - p(negative), in [-1, 1]
    model_version: str

    def to_dict(self) -> dict:
        """Return the prediction as a JSON-ready dict."""
        return asdict(self)


def title_and_lead(text: str, max_chars: int = 400) -> str:
    """Return ``text`` itself when short, else its title (first line) plus the start of the lead.

    Headline classifiers read the headline; for an article the first line and the opening
    sentences carry the topic and tone, and the model's context is short anyway.
    """
    if len(text) <= max_chars:
        return text
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ""
    title, rest = lines[0], " ".join(lines[1:])
    joined = title if not rest else f"{title}. {rest}"
    cut = joined[:max_chars]
    return cut.rsplit(" ", 1)[0] if " " in cut else cut


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Return index batches over items sorted by length (longest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(input_ids, attention_mask)``, right-padded to the longest sequence, shape (B, T)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


@torch.inference_mode()
def batched_probabilities(
    model: GPTClassifier,
    seqs: list[list[int]],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    temperatures: tuple[float, float] = (1.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(topic probs (N, n_topics), sentiment probs (N, n_sentiments))`` in the order of ``seqs``.

    Each head's logits are divided by its temperature (``temperatures``: topic, sentiment) first.
    """
    t_topic, t_sent = temperatures
    n_topics, n_sent = model.topic_head.out_features, model.sentiment_head.out_features
    topic = np.zeros((len(seqs), n_topics), dtype=np.float32)
    sent = np.zeros((len(seqs), n_sent), dtype=np.float32)
    use_bf16 = device.type == "cuda"
    for idx in sorted_batches([len(s) for s in seqs], batch_size):
        ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            t_logits, s_logits = model(ids.to(device), mask.to(device))
        topic[idx] = torch.softmax(t_logits.float() / t_topic, dim=-1).cpu().numpy()
        sent[idx] = torch.softmax(s_logits.float() / t_sent, dim=-1).cpu().numpy()
    return topic, sent


class Classifier:
    """A loaded model ready to classify texts; deterministic (eval mode, no sampling).

    When the model directory holds a lexical part, its probabilities are averaged with the GPT's.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        device: str | torch.device | None = None,
        threads: int | None = None,
        int8: bool = False,
        use_lexical: bool = True,
    ):
        if threads is not None:
            torch.set_num_threads(threads)
        if int8:
            # Dynamic int8 quantisation is a CPU technique; it replaces the model's Linear layers.
            device = "cpu"
            bundle.model = quantize_int8(bundle.model.eval())
        self.bundle = bundle
        self.device = (
            torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.model = bundle.model.to(self.device).eval()
        # False reads the GPT alone in a model that also has a lexical part (evaluation compares them).
        self.use_lexical = use_lexical

    @property
    def version(self) -> str:
        """Return the model version stored in the model directory."""
        return self.bundle.version

    def probabilities(
        self, texts: list[str], batch_size: int = 64, use_lexical: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(topic probs (N, n_topics), sentiment probs (N, n_sentiments))`` in the model's label
        order; ``use_lexical`` (default: the classifier's setting) False reads the GPT alone."""
        b = self.bundle
        inputs = [title_and_lead(t) for t in texts]
        seqs = encode_for_classification(b.tokenizer, inputs, b.max_length)
        topic_p, sent_p = batched_probabilities(
            self.model, seqs, b.pad_id, batch_size, self.device, b.temperatures
        )
        if b.lexical is not None and (self.use_lexical if use_lexical is None else use_lexical):
            topic_p, sent_p = b.lexical.mix(inputs, topic_p, sent_p)
        return topic_p, sent_p

    def predict(self, texts: list[str], batch_size: int = 64) -> list[Prediction]:
        """Return one Prediction per text, in input order."""
        if not texts:
            return []
        b = self.bundle
        topic_p, sent_p = self.probabilities(texts, batch_size)
        i_neg, i_pos = b.sentiments.index("negative"), b.sentiments.index("positive")
        out = []
        for tp, sp in zip(topic_p, sent_p, strict=True):
            out.append(
                Prediction(
                    topic=b.topics[int(tp.argmax())],
                    topic_probs={name: float(p) for name, p in zip(b.topics, tp, strict=True)},
                    sentiment=b.sentiments[int(sp.argmax())],  # type: ignore[arg-type]
                    sentiment_probs={name: float(p) for name, p in zip(b.sentiments, sp, strict=True)},
                    score=float(sp[i_pos] - sp[i_neg]),
                    model_version=b.version,
                )
            )
        return out


def load(
    path: str | Path | None = None,
    device: str | None = None,
    threads: int | None = None,
    int8: bool = False,
    use_lexical: bool = True,
) -> Classifier:
    """Return a Classifier for the model directory ``path`` (default: the shipped ``models/default``).

    ``int8`` quantises the Linear layers dynamically for faster CPU inference (slightly different
    probabilities). ``use_lexical=False`` reads the GPT alone in a model that has a lexical part.
    """
    bundle = load_bundle(Path(path) if path else DEFAULT_MODEL_DIR)
    return Classifier(bundle, device=device, threads=threads, int8=int8, use_lexical=use_lexical)
