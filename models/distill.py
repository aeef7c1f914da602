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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from models.data import SENTIMENT_NAMES, TOPIC_NAMES, Example, holdout_split, iter_unlabeled, unlabeled_files
from models.inference import pad_batch
from models.network import ModelBundle
from models.recipe import DistillSpec, Recipe
from models.tokenizer import clean_text, encode_for_classification

PSEUDO_TEXTS = "pseudo_labels.jsonl.gz"
PSEUDO_TARGETS = "pseudo_labels.npz"


@dataclass
class PseudoLabels:
    """Unlabeled lines and the teacher's soft targets for them, one row per line."""

    texts: list[str]
    topic: np.ndarray  # (N, 20)
    sentiment: np.ndarray  # (N, 3)

    def save(self, directory: Path) -> None:
        """Write the lines (JSON strings, so any character survives) and the targets into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        with gzip.open(directory / PSEUDO_TEXTS, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(t) + "\n" for t in self.texts)
        np.savez_compressed(directory / PSEUDO_TARGETS, topic=self.topic, sentiment=self.sentiment)

    @classmethod
    def load(cls, directory: Path) -> PseudoLabels | None:
        """Return the pseudo-labels saved in ``directory``, or None when there are none."""
        if not (directory / PSEUDO_TEXTS).is_file() or not (directory / PSEUDO_TARGETS).is_file():
            return None
        with gzip.open(directory / PSEUDO_TEXTS, "rt", encoding="utf-8") as f:
            texts = [json.loads(line) for line in f]
        with np.load(directory / PSEUDO_TARGETS) as targets:
            return cls(texts, targets["topic"], targets["sentiment"])


@dataclass
class Teacher:
    """Word 1-2-gram + character 2-5-gram TF-IDF features and one logistic regression per task."""

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


def fit_teacher(examples: list[Example], c: float = 10.0, seed: int = 0) -> Teacher:
    """Return a teacher fit on ``examples`` (each with a topic or a sentiment label)."""
    vectorizers = [
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    ]
    cleaned = [clean_text(e.text) for e in examples]
    for v in vectorizers:
        v.fit(cleaned)
    teacher = Teacher(vectorizers, LogisticRegression(), LogisticRegression())
    for task in ("topic", "sentiment"):
        labeled = [e for e in examples if getattr(e, task) is not None]
        clf = LogisticRegression(C=c, max_iter=3000, random_state=seed)
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
    # Shared training helpers live in models.train, which calls this module.
    from models.train import (
        autocast_for,
        bucketed_batches,
        default_device,
        lr_at,
        make_optimizer,
        optimizer_step,
        running_loss,
    )

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
                loss = soft_cross_entropy(t_logits, topic_q[idx].to(device), spec.temperature)
                loss = loss + soft_cross_entropy(s_logits, sent_q[idx].to(device), spec.temperature)
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


def pseudo_label(
    bundle: ModelBundle,
    examples: list[Example],
    recipe: Recipe,
    unlabeled_dir: Path,
    student_weight: float = 0.0,
    log: Callable[[str], None] = print,
) -> PseudoLabels:
    """Return soft targets for a sample of unlabeled lines from the TF-IDF teacher (and the student).

    The teacher sees only the part of ``examples`` that fine-tuning fits on (the same seeded hold-out
    is left out), so model selection stays honest. With ``student_weight`` > 0 the targets mix in that
    share of ``bundle``'s own predictions (a later round, after the student was fine-tuned on that split),
    temperature-scaled first when the recipe says ``calibrate_student``.
    """
    from models.inference import batched_probabilities
    from models.train import default_device

    spec = recipe.distill
    fit, _ = holdout_split(examples, recipe.finetune.holdout_fraction, recipe.seed)
    t0 = time.monotonic()
    teacher = fit_teacher(fit, spec.teacher_c, recipe.seed)
    by_name = {p.name: p for p in unlabeled_files(unlabeled_dir)}
    missing = [name for name in spec.files if name not in by_name]
    if missing:
        raise FileNotFoundError(f"distill files {missing} not in {unlabeled_dir}")
    texts = sample_unlabeled([by_name[name] for name in spec.files], spec.lines, recipe.seed)
    topic_q, sent_q = teacher.probabilities(texts)
    if student_weight > 0:
        temperatures = (1.0, 1.0)
        if spec.calibrate_student:
            from models.calibrate import calibrate  # it imports models.train, which imports this module

            calibrate(bundle, examples, recipe.finetune.holdout_fraction, recipe.seed, log)
            temperatures, bundle.temperatures = bundle.temperatures, (1.0, 1.0)
        bundle.model.eval()
        seqs = encode_for_classification(bundle.tokenizer, texts, spec.max_length)
        topic_s, sent_s = batched_probabilities(
            bundle.model, seqs, bundle.pad_id, 256, default_device(), temperatures
        )
        topic_q = (1 - student_weight) * topic_q + student_weight * topic_s
        sent_q = (1 - student_weight) * sent_q + student_weight * sent_s
    log(f"teacher fit and {len(texts):,} unlabeled lines pseudo-labeled in {time.monotonic() - t0:.0f}s")
    return PseudoLabels(texts, topic_q, sent_q)


def self_train(
    bundle: ModelBundle,
    examples: list[Example],
    recipe: Recipe,
    unlabeled_dir: Path,
    log: Callable[[str], None] = print,
    max_minutes: float | None = None,
    student_weight: float = 0.0,
    cache_dir: Path | None = None,
) -> tuple[dict, PseudoLabels]:
    """Return a summary and the pseudo-labels after distilling teacher-labeled unlabeled text into ``bundle``.

    Pseudo-labeling takes minutes (TF-IDF features of ~300k lines, and the student's own pass); with
    ``cache_dir`` the labels are saved there and a rerun reads them back instead. The held-out scores
    after distillation are logged to measure this stage.
    """
    from models.train import default_device, heldout_scores

    labels = None if cache_dir is None else PseudoLabels.load(cache_dir)
    if labels is not None:
        log(f"read {len(labels.texts):,} pseudo-labeled lines from {cache_dir.name}/")
    else:
        labels = pseudo_label(bundle, examples, recipe, unlabeled_dir, student_weight, log)
        if cache_dir is not None:
            labels.save(cache_dir)
    summary = distill(
        bundle, labels.texts, labels.topic, labels.sentiment, recipe.distill, recipe.seed, log, max_minutes
    )
    summary["lines"] = len(labels.texts)
    summary["student_weight"] = student_weight
    _, held = holdout_split(examples, recipe.finetune.holdout_fraction, recipe.seed)
    summary["heldout"] = heldout_scores(bundle, held, default_device())
    log(f"held-out after distillation: {json.dumps(summary['heldout'])}")
    return summary, labels
