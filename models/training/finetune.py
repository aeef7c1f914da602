"""Joint topic + sentiment fine-tuning: the masked loss, class weights, teacher targets, early stopping."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from models.data import Example, holdout_split
from models.inference import pad_batch
from models.network import ModelBundle
from models.tokenizer import encode_for_classification
from models.training.distill import SoftTargets, soft_cross_entropy, soft_targets_loss
from models.training.loop import (
    autocast_for,
    bucketed_batches,
    default_device,
    heldout_scores,
    lr_at,
    make_optimizer,
    optimizer_step,
    running_loss,
    seed_everything,
)
from models.training.recipe import FinetuneSpec

IGNORE = -100


def class_weights(labels: list[int], n_classes: int, scheme: str) -> torch.Tensor | None:
    """Return per-class loss weights: None for ``"none"``, ``(n / n_c) ** 0.5`` (mean 1 over examples) for
    ``"sqrt_inverse"``."""
    if scheme == "none":
        return None
    if scheme != "sqrt_inverse":
        raise ValueError(f"unknown class_weighting {scheme!r}")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** 0.5, 0.0)
    weights /= (weights * counts).sum() / counts.sum()
    return torch.tensor(weights, dtype=torch.float32)


def joint_loss(
    topic_logits: torch.Tensor,
    sentiment_logits: torch.Tensor,
    topic_y: torch.Tensor,
    sentiment_y: torch.Tensor,
    topic_w: torch.Tensor | None = None,
    sentiment_w: torch.Tensor | None = None,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """Return the sum of the per-head cross-entropies; an ``IGNORE`` label leaves that head untrained."""
    total = topic_logits.new_zeros(())
    for logits, y, w in ((topic_logits, topic_y, topic_w), (sentiment_logits, sentiment_y, sentiment_w)):
        if (y != IGNORE).any():  # an all-ignored batch would give NaN
            total = total + torch.nn.functional.cross_entropy(
                logits.float(), y, weight=w, ignore_index=IGNORE, label_smoothing=smoothing
            )
    return total


def label_tensors(examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(topic, sentiment)`` label tensors with ``IGNORE`` where an example lacks that label."""
    topic = torch.tensor([IGNORE if e.topic is None else e.topic for e in examples], dtype=torch.long)
    sent = torch.tensor([IGNORE if e.sentiment is None else e.sentiment for e in examples], dtype=torch.long)
    return topic, sent


@dataclass
class FinetuneResult:
    """What fine-tuning did: the held-out history and where it stopped."""

    history: list[dict]
    best: dict
    epochs_run: float
    seconds: float


def finetune(
    bundle: ModelBundle,
    examples: list[Example],
    spec: FinetuneSpec,
    seed: int,
    lm_head: torch.nn.Module | None = None,
    log: Callable[[str], None] = print,
    max_minutes: float | None = None,
    targets: SoftTargets | None = None,
    heldout: list[Example] | None = None,
) -> FinetuneResult:
    """Return the history of jointly fine-tuning ``bundle.model`` in place, left at its best held-out state.

    A seeded part of ``examples`` (train data only) is held out for early stopping and model selection;
    with ``spec.refit_epochs`` nothing is: all of ``examples`` trains for that many epochs of the
    schedule, and the last state is kept. ``max_minutes`` stops early (at the next evaluation past it),
    keeping the best state so far. With ``spec.distill_mix`` > 0, each step also learns a random batch of
    the teacher-labeled unlabeled lines in ``targets``; with ``spec.cross_labels`` > 0, each text also
    learns the teacher's targets for the head it has no label for. ``heldout`` (a news recipe's tweet
    and news hold-outs) replaces the seeded split: all of ``examples`` then trains.
    """
    if spec.needs_teacher_targets and targets is None:
        raise ValueError(
            "finetune.distill_mix and finetune.cross_labels need teacher targets: enable distillation"
        )
    seed_everything(seed)
    device = default_device()
    model = bundle.model.to(device)
    refit = spec.refit_epochs is not None
    if refit:
        fit, held = examples, []
    elif heldout is not None:
        fit, held = examples, heldout
    else:
        fit, held = holdout_split(examples, spec.holdout_fraction, seed)
    seqs = encode_for_classification(bundle.tokenizer, [e.text for e in fit], spec.max_length)
    topic_y, sent_y = label_tensors(fit)
    topic_w = class_weights(
        [e.topic for e in fit if e.topic is not None], len(bundle.topics), spec.class_weighting
    )
    sent_w = class_weights(
        [e.sentiment for e in fit if e.sentiment is not None], len(bundle.sentiments), spec.class_weighting
    )
    topic_w = None if topic_w is None else topic_w.to(device)
    sent_w = None if sent_w is None else sent_w.to(device)
    trained = torch.nn.ModuleList([model] if lm_head is None else [model, lm_head])
    opt = make_optimizer(trained, spec.lr, spec.weight_decay)
    rng = random.Random(seed)
    mix = None
    if spec.distill_mix > 0 and targets is not None:
        mix = (
            encode_for_classification(bundle.tokenizer, targets.pool.texts, spec.max_length),
            torch.from_numpy(np.asarray(targets.pool.topic, dtype=np.float32)),
            torch.from_numpy(np.asarray(targets.pool.sentiment, dtype=np.float32)),
        )
    cross = cross_targets(fit, targets) if spec.cross_labels > 0 and targets is not None else None
    steps_per_epoch = math.ceil(len(fit) / spec.batch_size)
    total = steps_per_epoch * spec.epochs
    last = total if spec.refit_epochs is None else round(steps_per_epoch * spec.refit_epochs)
    warmup = max(1, int(total * spec.warmup_ratio))
    eval_every = max(1, steps_per_epoch // max(1, spec.evals_per_epoch))
    history: list[dict] = []
    best: dict = {"score": -1.0}
    best_state: dict | None = None
    bad_evals, step, start = 0, 0, time.monotonic()
    patience_evals = spec.patience * max(1, spec.evals_per_epoch)
    stop = False
    for epoch in range(spec.epochs):
        batches = bucketed_batches([len(s) for s in seqs], spec.batch_size, rng)
        bar = tqdm(batches, desc=f"finetune epoch {epoch + 1}/{spec.epochs}", unit="batch")
        seen, t0, loss_avg = 0, time.monotonic(), None
        for idx in bar:
            model.train()
            ids, mask = pad_batch([seqs[i] for i in idx], bundle.pad_id)
            ids, mask = ids.to(device), mask.to(device)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, spec.lr, warmup, total, spec.min_lr_ratio)
            with autocast_for(device):
                t_logits, s_logits = model(ids, mask)
                loss = joint_loss(
                    t_logits,
                    s_logits,
                    topic_y[idx].to(device),
                    sent_y[idx].to(device),
                    topic_w,
                    sent_w,
                    spec.label_smoothing,
                )
                if lm_head is not None and spec.lm_loss_weight > 0:
                    out = model.trunk(input_ids=ids, attention_mask=mask, use_cache=False)
                    hidden = out.last_hidden_state
                    labels = ids.masked_fill(mask == 0, IGNORE)
                    lm_logits = lm_head(hidden[:, :-1]).float()
                    lm_loss = torch.nn.functional.cross_entropy(
                        lm_logits.reshape(-1, lm_logits.size(-1)),
                        labels[:, 1:].reshape(-1),
                        ignore_index=IGNORE,
                    )
                    loss = loss + spec.lm_loss_weight * lm_loss
                if cross is not None:
                    loss = loss + spec.cross_labels * _cross_loss(t_logits, s_logits, cross, idx, device)
                if mix is not None:
                    loss = loss + spec.distill_mix * _pool_loss(
                        model, mix, spec.batch_size, rng, bundle.pad_id, device
                    )
            loss_avg = running_loss(loss_avg, optimizer_step(opt, loss, model.parameters(), spec.grad_clip))
            step += 1
            seen += len(idx)
            bar.set_postfix(loss=f"{loss_avg:.3f}", ex_s=f"{seen / max(1e-9, time.monotonic() - t0):.0f}")
            if refit:
                if step >= last:
                    best = {"step": step, "epoch": round(step / steps_per_epoch, 2), "loss": loss_avg}
                    log(f"re-fit on all {len(fit):,} train examples: {json.dumps(best)}")
                    stop = True
                    break
                continue
            if step % eval_every == 0 or step == total:
                scores = heldout_scores(bundle, held, device)
                record = {"step": step, "epoch": round(step / steps_per_epoch, 2), "loss": loss_avg, **scores}
                history.append(record)
                log(f"held-out: {json.dumps(record)}")
                if scores["score"] > best["score"]:
                    best, bad_evals = record, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad_evals += 1
                    if bad_evals >= patience_evals:
                        log(f"early stop: no held-out gain in {patience_evals} evaluations")
                        stop = True
                        break
                if max_minutes is not None and time.monotonic() - start > 60 * max_minutes:
                    log(f"time budget of {max_minutes} min reached at epoch {record['epoch']}")
                    stop = True
                    break
        bar.close()
        if stop:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FinetuneResult(history, best, step / steps_per_epoch, time.monotonic() - start)


def cross_targets(
    fit: list[Example], targets: SoftTargets
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return per fit example the teacher's topic and sentiment targets and where they apply (no label)."""
    row = {text: i for i, text in enumerate(targets.cross.texts)}
    n_topics, n_sent = targets.cross.topic.shape[1], targets.cross.sentiment.shape[1]
    topic_q, sent_q = torch.zeros(len(fit), n_topics), torch.zeros(len(fit), n_sent)
    topic_on, sent_on = torch.zeros(len(fit), dtype=torch.bool), torch.zeros(len(fit), dtype=torch.bool)
    for i, e in enumerate(fit):
        j = row.get(e.text)
        if j is None:
            continue
        if e.topic is None:
            topic_q[i], topic_on[i] = torch.from_numpy(targets.cross.topic[j]), True
        if e.sentiment is None:
            sent_q[i], sent_on[i] = torch.from_numpy(targets.cross.sentiment[j]), True
    return topic_q, topic_on, sent_q, sent_on


def _cross_loss(
    topic_logits: torch.Tensor,
    sentiment_logits: torch.Tensor,
    cross: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    idx: list[int],
    device: torch.device,
) -> torch.Tensor:
    """Return the soft cross-entropy of each head on the batch's texts that lack that head's label."""
    topic_q, topic_on, sent_q, sent_on = (t[idx].to(device) for t in cross)
    total = topic_logits.new_zeros(())
    for logits, q, on in ((topic_logits, topic_q, topic_on), (sentiment_logits, sent_q, sent_on)):
        if on.any():
            total = total + soft_cross_entropy(logits[on], q[on], 1.0)
    return total


def _pool_loss(
    model: torch.nn.Module,
    pool: tuple[list[list[int]], torch.Tensor, torch.Tensor],
    batch_size: int,
    rng: random.Random,
    pad_id: int,
    device: torch.device,
) -> torch.Tensor:
    """Return the soft cross-entropy of both heads on a random batch of pseudo-labeled lines."""
    seqs, topic_q, sent_q = pool
    idx = rng.sample(range(len(seqs)), min(batch_size, len(seqs)))
    ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
    t_logits, s_logits = model(ids.to(device), mask.to(device))
    return soft_targets_loss(t_logits, s_logits, topic_q[idx].to(device), sent_q[idx].to(device), 1.0)
