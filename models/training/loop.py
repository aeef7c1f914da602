"""What every training stage shares: seeding, the learning-rate schedule, optimiser steps, the log."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from models.data import Example
from models.evaluate import selection_scores
from models.inference import batched_probabilities
from models.network import ModelBundle
from models.tokenizer import encode_for_classification

LOG_FILE = "train_log.jsonl"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run is repeatable on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Return the learning rate at ``step``: linear warm-up, then cosine decay to ``peak * min_ratio``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """Return AdamW with weight decay on matrices only (not on biases, norms)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-8)


def optimizer_step(
    opt: torch.optim.Optimizer, loss: torch.Tensor, params: Iterator[torch.nn.Parameter], grad_clip: float
) -> float:
    """Return the loss value after backpropagating ``loss``, clipping ``params``' gradient norm, stepping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    return loss.item()


def running_loss(average: float | None, value: float) -> float:
    """Return the progress bar's exponentially smoothed loss after ``value``."""
    return value if average is None else 0.98 * average + 0.02 * value


def autocast_for(device: torch.device) -> torch.autocast:
    """Return bf16 autocast on CUDA (where it pays) and a disabled context on CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def default_device() -> torch.device:
    """Return CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def append_log(directory: Path, record: dict) -> None:
    """Append one JSON record to the training log of ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOG_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Return shuffled index batches of similar-length items (sorted within pools of 50 batches)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def heldout_scores(bundle: ModelBundle, examples: list[Example], device: torch.device) -> dict[str, float]:
    """Return held-out topic accuracy, sentiment weighted-F1 and their mean (the selection score) of the
    GPT (a lexical part, chosen after fine-tuning, is not in it)."""
    bundle.model.eval()
    seqs = encode_for_classification(bundle.tokenizer, [e.text for e in examples], bundle.max_length)
    topic_p, sent_p = batched_probabilities(bundle.model, seqs, bundle.pad_id, 128, device)
    return selection_scores(examples, topic_p, sent_p)
