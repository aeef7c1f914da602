"""Self-training: a TF-IDF teacher soft-labels unlabeled headlines and the GPT learns from them.

Fine-tuning alone sees ~26k labeled tweets; a small GPT with little pre-training learns slowly from
them. Soft topic + sentiment targets on a large sample of unlabeled financial headlines give it far
more supervised signal per CPU-second; gold fine-tuning follows. The teacher is fit on the train split
minus the fine-tuning hold-out, so model selection stays honest.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from models.data import SENTIMENT_NAMES, TOPIC_NAMES, Example, holdout_split, iter_unlabeled, unlabeled_files
from models.evaluate import tfidf_vectorizers
from models.inference import batched_probabilities, pad_batch
from models.network import ModelBundle
from models.tokenizer import clean_text, encode_for_classification
from models.training.loop import (
    autocast_for,
    bucketed_batches,
    default_device,
    heldout_scores,
    lr_at,
    make_optimizer,
    optimizer_step,
    running_loss,
)
from models.training.recipe import DistillSpec, Recipe


@dataclass
class PseudoLabels:
    """Texts and the teacher's soft targets for them, one row per text."""

    texts: list[str]
    topic: np.ndarray  # (N, 20)
    sentiment: np.ndarray  # (N, 3)

    def save(self, directory: Path, stem: str = "pseudo_labels") -> None:
        """Write the texts (JSON strings, so any character survives) and the targets into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        with gzip.open(directory / f"{stem}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(t) + "\n" for t in self.texts)
        np.savez_compressed(directory / f"{stem}.npz", topic=self.topic, sentiment=self.sentiment)

    @classmethod
    def load(cls, directory: Path, stem: str = "pseudo_labels") -> PseudoLabels | None:
        """Return the labels saved in ``directory`` under ``stem``, or None when there are none."""
        texts_file, targets_file = directory / f"{stem}.jsonl.gz", directory / f"{stem}.npz"
        if not texts_file.is_file() or not targets_file.is_file():
            return None
        with gzip.open(texts_file, "rt", encoding="utf-8") as f:
            texts = [json.loads(line) for line in f]
        with np.load(targets_file) as targets:
            return cls(texts, targets["topic"], targets["sentiment"])


@dataclass
class SoftTargets:
    """A round's teacher targets: ``pool`` for unlabeled lines; ``cross`` for the labeled train texts
    that lack one task's label (a topic tweet's sentiment, a sentiment tweet's topic)."""

    pool: PseudoLabels
    cross: PseudoLabels

    def save(self, directory: Path) -> None:
        self.pool.save(directory, "pseudo_labels")
        self.cross.save(directory, "cross_labels")

    @classmethod
    def load(cls, directory: Path) -> SoftTargets | None:
        pool, cross = (
            PseudoLabels.load(directory, "pseudo_labels"),
            PseudoLabels.load(directory, "cross_labels"),
        )
        return None if pool is None or cross is None else cls(pool, cross)


def cross_texts(examples: list[Example]) -> list[str]:
    """Return the distinct texts of ``examples`` that lack a topic or a sentiment label, in order."""
    labels: dict[str, set[str]] = {}
    for e in examples:
        have = labels.setdefault(e.text, set())
        have.update(task for task in ("topic", "sentiment") if getattr(e, task) is not None)
    return [text for text, have in labels.items() if len(have) < 2]


@dataclass
class Teacher:
    """The evaluation baseline's TF-IDF features and one logistic regression per task."""

    vectorizers: list[TfidfVectorizer]
    topic: LogisticRegression
    sentiment: LogisticRegression

    def features(self, texts: list[str]) -> csr_matrix:
        cleaned = [clean_text(t) for t in texts]
        return hstack([v.transform(cleaned) for v in self.vectorizers]).tocsr()

    def probabilities(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(topic probs (N, 20), sentiment probs (N, 3))`` in our label order."""
        x = self.features(texts)
        out = []
        for clf, n in ((self.topic, len(TOPIC_NAMES)), (self.sentiment, len(SENTIMENT_NAMES))):
            probs = np.zeros((len(texts), n), dtype=np.float32)
            probs[:, clf.classes_] = clf.predict_proba(x)
            out.append(probs)
        return out[0], out[1]


def fit_teacher(
    examples: list[Example], c: float = 10.0, seed: int = 0, class_weight: str | None = None
) -> Teacher:
    """Return a teacher fit on ``examples`` (each with a topic or a sentiment label).

    ``class_weight="balanced"`` weights each class inversely to its frequency, as the student's
    class-balanced loss does; the evaluation baseline stays unweighted.
    """
    vectorizers = tfidf_vectorizers()
    cleaned = [clean_text(e.text) for e in examples]
    for v in vectorizers:
        v.fit(cleaned)
    teacher = Teacher(vectorizers, LogisticRegression(), LogisticRegression())
    for task in ("topic", "sentiment"):
        labeled = [e for e in examples if getattr(e, task) is not None]
        clf = LogisticRegression(C=c, max_iter=3000, random_state=seed, class_weight=class_weight)
        clf.fit(teacher.features([e.text for e in labeled]), [getattr(e, task) for e in labeled])
        setattr(teacher, task, clf)
    return teacher


def sample_unlabeled(files: list[Path], n: int, seed: int) -> list[str]:
    """Return about ``n`` distinct lines, an even share from each file, drawn by seeded reservoir sampling."""
    if not files:
        raise FileNotFoundError("no unlabeled files to pseudo-label")
    rng = random.Random(seed)
    picked: list[str] = []
    for path in files:
        quota = n // len(files)
        reservoir: list[str] = []
        for i, line in enumerate(iter_unlabeled([path])):
            if i < quota:
                reservoir.append(line)
            else:
                j = rng.randrange(i + 1)
                if j < quota:
                    reservoir[j] = line
        picked.extend(reservoir)
    return list(dict.fromkeys(picked))


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Return the mean cross-entropy of ``softmax(logits / T)`` against target distributions, times T²."""
    log_p = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(targets * log_p).sum(-1).mean() * temperature**2


def soft_targets_loss(
    topic_logits: torch.Tensor,
    sentiment_logits: torch.Tensor,
    topic_q: torch.Tensor,
    sentiment_q: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Return the summed soft cross-entropy of both heads against the teacher's distributions."""
    return soft_cross_entropy(topic_logits, topic_q, temperature) + soft_cross_entropy(
        sentiment_logits, sentiment_q, temperature
    )


def distill(
    bundle: ModelBundle,
    texts: list[str],
    topic_targets: np.ndarray,
    sentiment_targets: np.ndarray,
    spec: DistillSpec,
    seed: int,
    log: Callable[[str], None] = print,
    max_minutes: float | None = None,
) -> dict:
    """Return a summary after training ``bundle.model`` in place on the teacher's soft targets."""
    device = default_device()
    model = bundle.model.to(device)
    seqs = encode_for_classification(bundle.tokenizer, texts, spec.max_length)
    topic_q = torch.from_numpy(np.asarray(topic_targets, dtype=np.float32))
    sent_q = torch.from_numpy(np.asarray(sentiment_targets, dtype=np.float32))
    opt = make_optimizer(model, spec.lr, spec.weight_decay)
    rng = random.Random(seed)
    total = math.ceil(len(seqs) / spec.batch_size) * spec.epochs
    warmup = max(1, int(total * spec.warmup_ratio))
    step, seen, loss_avg, start = 0, 0, None, time.monotonic()
    deadline = None if max_minutes is None else start + 60 * max_minutes
    model.train()
    for epoch in range(spec.epochs):
        bar = tqdm(
            bucketed_batches([len(s) for s in seqs], spec.batch_size, rng),
            desc=f"distill epoch {epoch + 1}/{spec.epochs}",
            unit="batch",
        )
        for idx in bar:
            ids, mask = pad_batch([seqs[i] for i in idx], bundle.pad_id)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, spec.lr, warmup, total, spec.min_lr_ratio)
            with autocast_for(device):
                t_logits, s_logits = model(ids.to(device), mask.to(device))
                loss = soft_targets_loss(
                    t_logits, s_logits, topic_q[idx].to(device), sent_q[idx].to(device), spec.temperature
                )
            loss_avg = running_loss(loss_avg, optimizer_step(opt, loss, model.parameters(), spec.grad_clip))
            step += 1
            seen += len(idx)
            bar.set_postfix(loss=f"{loss_avg:.3f}", ex_s=f"{seen / max(1e-9, time.monotonic() - start):.0f}")
            if deadline is not None and time.monotonic() >= deadline:
                break
        bar.close()
        if deadline is not None and time.monotonic() >= deadline:
            log(f"distillation time budget of {max_minutes} min reached after {seen:,} examples")
            break
    model.eval()
    summary = {"examples": seen, "steps": step, "loss": loss_avg, "seconds": round(time.monotonic() - start)}
    log(f"distilled: {json.dumps(summary)}")
    return summary


def tfidf_targets(
    examples: list[Example],
    recipe: Recipe,
    unlabeled_dir: Path,
    refit: bool = False,
    teacher: Teacher | None = None,
) -> SoftTargets:
    """Return the TF-IDF teacher's soft targets for the recipe's unlabeled lines and the cross texts.

    The teacher sees only the part of ``examples`` that fine-tuning fits on (the same seeded hold-out
    is left out), so model selection stays honest; its cross-labels are for the head each fit text was
    never trained on. With ``refit`` it is fit on all of ``examples``, the hold-out included. A
    ``teacher`` already fit that way (``fit_teacher`` on the same part) is used instead of a new fit.
    """
    spec = recipe.distill
    fit = examples if refit else holdout_split(examples, recipe.finetune.holdout_fraction, recipe.seed)[0]
    if teacher is None:
        teacher = fit_teacher(fit, spec.teacher_c, recipe.seed, spec.teacher_class_weight)
    by_name = {p.name: p for p in unlabeled_files(unlabeled_dir)}
    missing = [name for name in spec.files if name not in by_name]
    if missing:
        raise FileNotFoundError(f"distill files {missing} not in {unlabeled_dir}")
    texts = sample_unlabeled([by_name[name] for name in spec.files], spec.lines, recipe.seed)
    cross = cross_texts(fit)
    topic_q, sent_q = teacher.probabilities(texts + cross)  # one pass over both
    n = len(texts)
    return SoftTargets(
        PseudoLabels(texts, topic_q[:n], sent_q[:n]), PseudoLabels(cross, topic_q[n:], sent_q[n:])
    )


def mix_in_models(
    targets: SoftTargets,
    teachers: Sequence[tuple[ModelBundle, float]],
    examples: list[Example],
    recipe: Recipe,
    log: Callable[[str], None] = print,
) -> SoftTargets:
    """Return ``targets`` with each ``(model, share)`` of ``teachers`` mixed in; TF-IDF keeps the rest.

    Each model is temperature-scaled first (on the hold-out, which it never saw) when the recipe says
    ``calibrate_student``.
    """
    device = default_device()
    tfidf_share = 1.0 - sum(share for _, share in teachers)
    mixed = [
        PseudoLabels(part.texts, tfidf_share * part.topic, tfidf_share * part.sentiment)
        for part in (targets.pool, targets.cross)
    ]
    for bundle, share in teachers:
        bundle.model.to(device).eval()  # a saved teacher model is loaded on the CPU
        temperatures = (1.0, 1.0)
        if recipe.distill.calibrate_student:
            from models.training.calibrate import calibrate

            calibrate(bundle, examples, recipe.finetune.holdout_fraction, recipe.seed, log)
            temperatures, bundle.temperatures = bundle.temperatures, (1.0, 1.0)
        for part in mixed:
            seqs = encode_for_classification(bundle.tokenizer, part.texts, recipe.distill.max_length)
            topic, sent = batched_probabilities(bundle.model, seqs, bundle.pad_id, 256, device, temperatures)
            part.topic += share * topic
            part.sentiment += share * sent
    return SoftTargets(mixed[0], mixed[1])


def pseudo_label(
    examples: list[Example],
    recipe: Recipe,
    unlabeled_dir: Path,
    teachers: Sequence[tuple[ModelBundle, float]] = (),
    log: Callable[[str], None] = print,
    refit: bool = False,
) -> SoftTargets:
    """Return soft targets from the TF-IDF teacher (and ``teachers``) for unlabeled lines and cross-labels.

    ``teachers`` are ``(model, share)`` pairs mixed into the TF-IDF targets: the student itself in a
    later round (after it was fine-tuned on that split), or saved ``teacher_model`` directories.
    """
    t0 = time.monotonic()
    targets = tfidf_targets(examples, recipe, unlabeled_dir, refit)
    teachers = [(b, w) for b, w in teachers if w > 0]
    if teachers:
        targets = mix_in_models(targets, teachers, examples, recipe, log)
    log(
        f"teacher fit, {len(targets.pool.texts):,} unlabeled lines and {len(targets.cross.texts):,} "
        f"train texts pseudo-labeled in {time.monotonic() - t0:.0f}s"
    )
    return targets


def self_train(
    bundle: ModelBundle,
    examples: list[Example],
    recipe: Recipe,
    unlabeled_dir: Path,
    log: Callable[[str], None] = print,
    max_minutes: float | None = None,
    teachers: Sequence[tuple[ModelBundle, float]] = (),
    cache_dir: Path | None = None,
    refit: bool = False,
) -> tuple[dict, SoftTargets]:
    """Return a summary and the soft targets after distilling teacher-labeled unlabeled text into ``bundle``.

    Pseudo-labeling takes minutes (TF-IDF features of ~300k lines, and each model's pass); with
    ``cache_dir`` the targets are saved there and a rerun reads them back instead. ``teachers`` are
    the ``(model, share)`` pairs that join the TF-IDF teacher. The held-out scores after distillation
    are logged to measure this stage, unless ``refit`` (the teacher saw the hold-out).
    """
    if cache_dir is not None and (targets := SoftTargets.load(cache_dir)) is not None:
        log(f"read {len(targets.pool.texts):,} pseudo-labeled lines from {cache_dir.name}/")
    else:
        targets = pseudo_label(examples, recipe, unlabeled_dir, teachers, log, refit)
        if cache_dir is not None:
            targets.save(cache_dir)
    pool = targets.pool
    summary = distill(
        bundle, pool.texts, pool.topic, pool.sentiment, recipe.distill, recipe.seed, log, max_minutes
    )
    summary["lines"] = len(pool.texts)
    summary["student_weight"] = round(sum(w for _, w in teachers), 6)  # all models' share together
    summary["refit"] = refit
    if not refit:
        _, held = holdout_split(examples, recipe.finetune.holdout_fraction, recipe.seed)
        summary["heldout"] = heldout_scores(bundle, held, default_device())
        log(f"held-out after distillation: {json.dumps(summary['heldout'])}")
    return summary, targets
