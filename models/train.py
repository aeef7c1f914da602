"""Training: tokenizer, resumable causal-LM pre-training, then joint topic + sentiment fine-tuning."""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel

from models.data import Example, holdout_split, iter_unlabeled, load_train_examples, unlabeled_files
from models.distill import SoftTargets, self_train, soft_cross_entropy, soft_targets_loss
from models.inference import Classifier, pad_batch
from models.network import (
    ModelBundle,
    average_weights,
    classifier_from_language_model,
    count_parameters,
    fuse_gelu,
    grow_depth,
    is_classifier_dir,
    load_base,
    load_bundle,
    new_language_model,
    save_bundle,
)
from models.recipe import FinetuneSpec, PretrainSpec, Recipe
from models.tokenizer import (
    clean_text,
    encode_for_classification,
    load_tokenizer,
    save_tokenizer,
    special_ids,
    train_tokenizer,
)

STATE_FILE = "trainer_state.pt"
# A weights-only checkpoint (fp16 weights + this JSON, no optimizer state) small enough to commit, so
# pre-training can continue across machines: see ``export_pretrain_seed``.
SEED_STATE_FILE = "pretrain_state.json"
SHIPPED_SEED = Path(__file__).resolve().parent / "pretrain_seed"
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


# --- tokenizer --------------------------------------------------------------------------------


def tokenizer_corpus(train_texts: list[str], files: list[Path], lines_per_file: int) -> Iterator[str]:
    """Yield the labeled train texts, then the first ``lines_per_file`` lines of each unlabeled file."""
    yield from train_texts
    for path in files:
        for i, line in enumerate(iter_unlabeled([path])):
            if i >= lines_per_file:
                break
            yield line


# --- pre-training -----------------------------------------------------------------------------


def packed_blocks(
    tok: Tokenizer,
    texts: Iterator[str],
    block_size: int,
    chunk_lines: int = 2000,
    cut: Callable[[list[int], int, int], Iterator[tuple[list[int], int]]] | None = None,
) -> Iterator[tuple[list[int], int]]:
    """Yield ``(block of block_size token ids, lines consumed so far)``; documents are joined by EOS.

    ``cut`` takes the whole blocks off the buffer (default ``_full_blocks``; a benchmark swaps it).
    """
    cut = cut or _full_blocks
    eos, _ = special_ids(tok)
    buffer: list[int] = []
    consumed = 0
    chunk: list[str] = []
    for text in texts:
        chunk.append(clean_text(text))
        if len(chunk) < chunk_lines:
            continue
        consumed += len(chunk)
        for enc in tok.encode_batch(chunk, add_special_tokens=False):
            buffer.extend(enc.ids)
            buffer.append(eos)
        chunk = []
        yield from cut(buffer, block_size, consumed)
    if chunk:
        consumed += len(chunk)
        for enc in tok.encode_batch(chunk, add_special_tokens=False):
            buffer.extend(enc.ids)
            buffer.append(eos)
    yield from cut(buffer, block_size, consumed)


def _full_blocks(buffer: list[int], block_size: int, consumed: int) -> Iterator[tuple[list[int], int]]:
    """Yield the whole blocks at the front of ``buffer`` and remove them, keeping the remainder.

    One cut at the end, not one per block: re-slicing the rest after every block copied the chunk
    once per block.
    """
    start = 0
    while len(buffer) - start >= block_size:
        yield buffer[start : start + block_size], consumed
        start += block_size
    del buffer[:start]


def _one_pass(train_texts: list[str], files: list[Path]) -> Iterator[str]:
    yield from train_texts
    yield from iter_unlabeled(files)


@dataclass
class PretrainState:
    """Where pre-training stands; saved with every checkpoint so the next run resumes there."""

    step: int = 0
    tokens: int = 0
    lines: int = 0  # lines consumed over all passes (train texts first when included, then unlabeled)
    seconds: float = 0.0
    last_loss: float = float("nan")


def save_pretrain_checkpoint(
    directory: Path, lm: PreTrainedModel, tok: Tokenizer, opt: torch.optim.Optimizer, state: PretrainState
) -> None:
    """Write an LM checkpoint (transformers layout, tokenizer, trainer state), replacing the old safely."""
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    lm.save_pretrained(str(tmp))
    save_tokenizer(tok, tmp)
    torch.save(
        {"optimizer": opt.state_dict(), "state": asdict(state), "rng": torch.get_rng_state()},
        tmp / STATE_FILE,
    )
    if (directory / LOG_FILE).exists():
        shutil.copy2(directory / LOG_FILE, tmp / LOG_FILE)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)


def export_pretrain_seed(checkpoint: Path, out: Path) -> PretrainState:
    """Return the state of ``checkpoint`` after writing it to ``out`` as a weights-only fp16 seed."""
    saved = torch.load(Path(checkpoint) / STATE_FILE, weights_only=False)
    state = PretrainState(**saved["state"])
    lm = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lm.half().save_pretrained(str(out))
    save_tokenizer(load_tokenizer(Path(checkpoint)), out)
    (out / SEED_STATE_FILE).write_text(json.dumps(asdict(state), indent=1) + "\n", encoding="utf-8")
    if (Path(checkpoint) / LOG_FILE).exists():
        shutil.copy2(Path(checkpoint) / LOG_FILE, out / LOG_FILE)
    return state


def place_shipped_seed(checkpoint_dir: Path, recipe: Recipe, seed: Path = SHIPPED_SEED) -> bool:
    """Return whether the committed seed was copied into a new ``checkpoint_dir`` (same architecture only)."""
    if Path(checkpoint_dir).exists() or not (seed / SEED_STATE_FILE).is_file():
        return False
    config = json.loads((seed / "config.json").read_text(encoding="utf-8"))
    wanted = {
        "n_layer": recipe.model.n_layer,
        "n_embd": recipe.model.n_embd,
        "n_head": recipe.model.n_head,
        "n_positions": recipe.model.n_positions,
        "vocab_size": recipe.tokenizer.vocab_size,
    }
    if any(config.get(key) != value for key, value in wanted.items()):
        return False
    shutil.copytree(seed, checkpoint_dir)
    return True


def prepare_pretraining(
    directory: Path, recipe: Recipe, data_dir: Path, unlabeled_dir: Path, log: Callable[[str], None] = print
) -> tuple[PreTrainedModel, Tokenizer, PretrainState, dict | None]:
    """Return ``(lm, tokenizer, state, optimizer state)``: resumed from ``directory`` or freshly built."""
    if (directory / STATE_FILE).is_file():
        tok = load_tokenizer(directory)
        lm = AutoModelForCausalLM.from_pretrained(str(directory))
        saved = torch.load(directory / STATE_FILE, weights_only=False)
        torch.set_rng_state(saved["rng"])
        state = PretrainState(**saved["state"])
        log(f"resuming pre-training from {directory}: step {state.step}, {state.tokens:,} tokens")
        return lm, tok, state, saved["optimizer"]
    if (directory / SEED_STATE_FILE).is_file():
        tok = load_tokenizer(directory)
        lm = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
        state = PretrainState(**json.loads((directory / SEED_STATE_FILE).read_text(encoding="utf-8")))
        # AdamW moments were not kept: a warm restart; the LR schedule goes on from the saved step.
        log(f"continuing pre-training from seed weights in {directory}: {state.tokens:,} tokens")
        return lm, tok, state, None
    if (directory / "tokenizer.json").is_file():
        tok = load_tokenizer(directory)  # a tokenizer placed there beforehand is kept
    else:
        train_texts = [e.text for e in load_train_examples(data_dir)]
        files = unlabeled_files(unlabeled_dir)
        log(f"training a {recipe.tokenizer.vocab_size}-token BPE tokenizer")
        corpus = tokenizer_corpus(train_texts, files, recipe.tokenizer.lines_per_file)
        tok = train_tokenizer(corpus, vocab_size=recipe.tokenizer.vocab_size)
    lm = new_language_model(recipe.model, tok)
    return lm, tok, PretrainState(), None


def pretrain(
    directory: Path,
    recipe: Recipe,
    data_dir: Path,
    unlabeled_dir: Path,
    max_minutes: float | None = None,
    log: Callable[[str], None] = print,
) -> PretrainState:
    """Return the state after pre-training the recipe's LM in ``directory`` up to its token budget.

    Resumes from the checkpoint in ``directory`` when there is one; stops after ``max_minutes`` (then
    a later call continues), checkpointing every ``checkpoint_every_s`` seconds and at the end.
    """
    spec: PretrainSpec = recipe.pretrain
    directory = Path(directory)
    torch.set_num_threads(recipe.threads)
    seed_everything(recipe.seed)
    lm, tok, state, opt_state = prepare_pretraining(directory, recipe, data_dir, unlabeled_dir, log)
    fuse_gelu(lm)
    device = default_device()
    lm.to(device).train()
    opt = make_optimizer(lm, spec.lr, spec.weight_decay)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    if state.tokens >= spec.tokens:
        log(f"pre-training already at {state.tokens:,} tokens (budget {spec.tokens:,})")
        return state
    directory.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok, directory)

    train_texts = [e.text for e in load_train_examples(data_dir)] if spec.include_train_text else []

    files = unlabeled_files(unlabeled_dir)

    def stream() -> Iterator[str]:
        # Endless passes over the text; a resumed run skips the lines earlier runs consumed.
        skip = state.lines
        while True:
            n = 0
            for text in _one_pass(train_texts, files):
                n += 1
                if skip > 0:
                    skip -= 1
                    continue
                yield text
            if n == 0:
                raise ValueError(f"no text to pre-train on in {unlabeled_dir}")

    tokens_per_step = spec.batch_size * spec.block_size
    total_steps = spec.schedule_tokens // tokens_per_step
    start_lines, start_time, last_ckpt = state.lines, time.monotonic(), time.monotonic()
    deadline = None if max_minutes is None else start_time + 60 * max_minutes
    blocks = packed_blocks(tok, stream(), spec.block_size)
    bar = tqdm(total=spec.tokens, initial=state.tokens, unit="tok", unit_scale=True, desc="pretrain")
    t_prev, tok_prev = time.monotonic(), state.tokens
    while state.tokens < spec.tokens:
        batch, lines = [], state.lines
        for block, consumed in blocks:
            batch.append(block)
            lines = start_lines + consumed
            if len(batch) == spec.batch_size:
                break
        ids = torch.tensor(batch, device=device)  # (B, T)
        lr = lr_at(state.step, spec.lr, spec.warmup_steps, total_steps, spec.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        with autocast_for(device):
            loss = lm(input_ids=ids, labels=ids, use_cache=False).loss
        state.last_loss = optimizer_step(opt, loss, lm.parameters(), spec.grad_clip)
        state.step += 1
        state.tokens += tokens_per_step
        state.lines = lines
        bar.update(tokens_per_step)
        now = time.monotonic()
        if state.step % 20 == 0:
            rate = (state.tokens - tok_prev) / max(1e-9, now - t_prev)
            bar.set_postfix(loss=f"{state.last_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{rate:.0f}")
        if now - last_ckpt >= spec.checkpoint_every_s or (deadline is not None and now >= deadline):
            state.seconds += now - last_ckpt
            rate = (state.tokens - tok_prev) / max(1e-9, now - t_prev)
            append_log(directory, {"stage": "pretrain", **asdict(state), "lr": lr, "tok_per_s": rate})
            save_pretrain_checkpoint(directory, lm, tok, opt, state)
            last_ckpt, t_prev, tok_prev = now, now, state.tokens
            if deadline is not None and now >= deadline:
                log(f"time budget reached at {state.tokens:,} tokens; rerun to resume")
                break
    else:
        now = time.monotonic()
        state.seconds += now - last_ckpt
        append_log(directory, {"stage": "pretrain", **asdict(state), "done": True})
        save_pretrain_checkpoint(directory, lm, tok, opt, state)
    bar.close()
    return state


# --- joint fine-tuning ------------------------------------------------------------------------

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


def label_tensors(examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(topic, sentiment)`` label tensors with ``IGNORE`` where an example lacks that label."""
    topic = torch.tensor([IGNORE if e.topic is None else e.topic for e in examples], dtype=torch.long)
    sent = torch.tensor([IGNORE if e.sentiment is None else e.sentiment for e in examples], dtype=torch.long)
    return topic, sent


def heldout_scores(bundle: ModelBundle, examples: list[Example], device: torch.device) -> dict[str, float]:
    """Return held-out topic accuracy, sentiment weighted-F1 and their mean (the selection score) of the
    GPT (a lexical part, chosen after fine-tuning, is not in it)."""
    from models.evaluate import selection_scores
    from models.inference import batched_probabilities

    bundle.model.eval()
    seqs = encode_for_classification(bundle.tokenizer, [e.text for e in examples], bundle.max_length)
    topic_p, sent_p = batched_probabilities(bundle.model, seqs, bundle.pad_id, 128, device)
    return selection_scores(examples, topic_p, sent_p)


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
    last = round(steps_per_epoch * spec.refit_epochs) if refit else total
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


# --- the whole recipe -------------------------------------------------------------------------


def model_version(lm: PreTrainedModel, when: datetime | None = None) -> str:
    """Return a version like ``finsent-gpt-4x256-20261128-1415`` (architecture, depth x width, UTC time).

    Scores are keyed by version, so two models trained on one day must not share one: the minute the
    weights were saved is part of it.
    """
    cfg = lm.config
    kind = "gpt" if cfg.model_type == "gpt2" else cfg.model_type
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%d-%H%M")
    return f"finsent-{kind}-{cfg.num_hidden_layers}x{cfg.hidden_size}-{stamp}"


def teacher_model_dir(name: str, key: str = "distill.teacher_model") -> Path:
    """Return the directory of a saved model a recipe names (at ``key``): absolute, or relative to the
    repository."""
    path = Path(name)
    if not path.is_absolute():
        path = Path(__file__).resolve().parent.parent / path
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{key} {name!r}: no saved model at {path}")
    return path


def _distilled_round(
    bundle: ModelBundle,
    examples: list[Example],
    recipe: Recipe,
    unlabeled_dir: Path,
    r: int,
    work_dir: Path,
    log: Callable[[str], None],
    max_minutes: float | None,
    refit: bool = False,
) -> tuple[dict, SoftTargets | None]:
    """Return the summary and teacher targets of round ``r``'s distillation, run now or resumed.

    The targets and then the distilled student are saved in ``round{r}-distilled/`` (a re-fit round's,
    whose teacher saw the hold-out, in ``round{r}-refit-distilled/``), so a rerun skips the
    pseudo-labeling and distillation that precede fine-tuning (most of a round's time).
    """
    saved = work_dir / (f"round{r}-refit-distilled" if refit else f"round{r}-distilled")
    if (saved / "distill_summary.json").is_file():
        bundle.model.load_state_dict(load_bundle(saved).model.state_dict())
        log(f"round {r}: resumed the distilled student from {saved.name}/")
        summary = json.loads((saved / "distill_summary.json").read_text(encoding="utf-8"))
        targets = SoftTargets.load(saved)
        if targets is None and recipe.finetune.needs_teacher_targets:
            raise ValueError(
                f"{saved.name}/ holds no teacher targets for fine-tuning; remove it to distil anew"
            )
        return summary, targets
    if r > 1:
        teachers = [(bundle, recipe.distill.student_weight)]
    else:
        teachers = [
            (load_bundle(teacher_model_dir(name)), share)
            for name, share in recipe.distill.teacher_shares().items()
        ]
        for model, share in teachers:
            log(f"round 1: the saved model {model.version} joins the teacher at {share}")
    summary, targets = self_train(
        bundle, examples, recipe, unlabeled_dir, log, max_minutes, teachers, saved, refit
    )
    if r == 1 and isinstance(recipe.distill.teacher_model, str):
        summary["teacher_model"] = teachers[0][0].version
    elif r == 1 and teachers:
        summary["teacher_model"] = {model.version: share for model, share in teachers}
    save_bundle(bundle, saved)
    (saved / "distill_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary, targets


def _average_with(
    bundle: ModelBundle, examples: list[Example], recipe: Recipe, log: Callable[[str], None]
) -> dict:
    """Return what averaging ``bundle``'s weights with ``finetune.average_with``'s models did (in place).

    The averaged model's held-out scores are recorded (the student's own are fine-tuning's best),
    unless the student was re-fit on the hold-out.
    """
    spec = recipe.finetune
    others = [load_bundle(teacher_model_dir(name, "finetune.average_with")) for name in spec.average_with]
    device = next(bundle.model.parameters()).device
    bundle.model.load_state_dict(average_weights([bundle.model.cpu()] + [o.model for o in others]))
    bundle.model.to(device)
    summary: dict = {"with": [o.version for o in others]}
    if spec.refit_epochs is None:
        _, held = holdout_split(examples, spec.holdout_fraction, recipe.seed)
        summary["heldout"] = heldout_scores(bundle, held, device)
    log(f"averaged the weights with {summary['with']}: {json.dumps(summary)}")
    return summary


def _summary_of(model_dir: Path) -> dict | None:
    """Return the training summary saved in ``model_dir``, or None when it has none."""
    path = model_dir / "training_summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _portable(recipe: dict) -> dict:
    """Return ``recipe`` with each absolute path of a saved model named by its directory, as ``base`` is."""

    def portable(path: str) -> str:
        return Path(path).name if Path(path).is_absolute() else path

    distill, finetune = recipe["distill"], recipe["finetune"]
    teacher = distill.get("teacher_model")
    if isinstance(teacher, str):
        distill["teacher_model"] = portable(teacher)
    elif isinstance(teacher, dict):
        distill["teacher_model"] = {portable(name): share for name, share in teacher.items()}
    finetune["average_with"] = tuple(portable(name) for name in finetune["average_with"])
    return recipe


def train_model(
    recipe: Recipe,
    data_dir: Path,
    out_dir: Path,
    checkpoint_dir: Path | None = None,
    unlabeled_dir: Path | None = None,
    base: str | Path | None = None,
    pretrain_minutes: float | None = None,
    log: Callable[[str], None] = print,
    finetune_minutes: float | None = None,
    distill_minutes: float | None = None,
) -> dict:
    """Return a summary after training the recipe end to end and saving the classifier into ``out_dir``.

    Without ``base``: (resume) pre-training in ``checkpoint_dir`` up to the recipe's token budget,
    then (when the recipe asks for it) distillation on teacher-labeled unlabeled text, then
    fine-tuning. With ``base`` (a hub name or a local causal-LM dir):
    fine-tuning of that model, no pre-training. Last, when the recipe enables it, the lexical part.
    ``finetune.epochs: 0`` (no distillation) keeps a saved classifier's GPT as it is: only a lexical
    part is added.
    """
    torch.set_num_threads(recipe.threads)
    trains_gpt = recipe.finetune.epochs > 0
    if not trains_gpt and (recipe.distill.lines > 0 or base is None or not is_classifier_dir(base)):
        raise ValueError(
            "finetune.epochs: 0 keeps a saved classifier as it is: give one as --base (no distill)"
        )
    pretrain_state = None
    if base is None:
        if checkpoint_dir is None or unlabeled_dir is None:
            raise ValueError("pre-training needs a checkpoint directory and an unlabeled-text directory")
        if place_shipped_seed(checkpoint_dir, recipe):
            log(f"new checkpoint dir {checkpoint_dir}: starting from the committed seed {SHIPPED_SEED.name}/")
        pretrain_state = pretrain(checkpoint_dir, recipe, data_dir, unlabeled_dir, pretrain_minutes, log)
        if pretrain_state.tokens < recipe.pretrain.tokens:
            log(
                f"pre-training stopped at {pretrain_state.tokens:,} of {recipe.pretrain.tokens:,} tokens; "
                "fine-tuning from that checkpoint"
            )
        base = checkpoint_dir
    seed_everything(recipe.seed)
    if is_classifier_dir(base):
        # A saved classifier, heads included, trains on: another round on top of a finished model.
        if recipe.finetune.lm_loss_weight > 0:
            raise ValueError(f"--base {base} is a classifier: it has no LM head for finetune.lm_loss_weight")
        start = load_bundle(Path(base))
        classifier, tok, lm = start.model, start.tokenizer, start.model.trunk
        log(f"starting from the classifier {start.version}")
        if recipe.model.grow_layers:
            grow_depth(classifier, recipe.model.grow_layers)
            log(f"grew its trunk to {lm.config.n_layer} blocks (the new ones start as identities)")
    elif recipe.model.grow_layers:
        raise ValueError("model.grow_layers applies to a saved classifier as --base, not to a language model")
    else:
        lm, tok = load_base(base)
        classifier = classifier_from_language_model(lm, recipe.model.dropout)
    bundle = ModelBundle(classifier, tok, max_length=recipe.finetune.max_length, version=model_version(lm))
    if not trains_gpt:
        bundle.max_length, bundle.temperatures = start.max_length, start.temperatures
    lm_head = lm.get_output_embeddings() if recipe.finetune.lm_loss_weight > 0 else None
    examples = load_train_examples(data_dir)
    heldout: list[Example] | None = None
    news_summary = None
    if recipe.news.enabled:
        if recipe.distill.lines > 0 or recipe.finetune.refit_epochs is not None:
            raise ValueError("a news recipe keeps its hold-outs: no distill.lines, no finetune.refit_epochs")
        from models.news_data import training_sets

        voter = Classifier(load_bundle(Path(base))) if is_classifier_dir(base) else None
        sets = training_sets(
            recipe,
            data_dir,
            unlabeled_dir,
            None if voter is None else (lambda texts: voter.probabilities(texts, 128)[1]),
            log,
        )
        examples, heldout, news_summary = sets.fit, sets.held, sets.summary
    distill_dir: Path | None = None
    if recipe.distill.lines > 0:
        if unlabeled_dir is None:
            raise ValueError("distillation needs an unlabeled-text directory")
        distill_dir = Path(unlabeled_dir)
    rounds = (recipe.distill.rounds if distill_dir is not None else 1) if trains_gpt else 0
    work_dir = Path(checkpoint_dir if checkpoint_dir is not None else out_dir)
    round_summaries: list[dict] = []
    trunk_tokens = None if pretrain_state is None else pretrain_state.tokens
    for r in range(1, rounds + 1):
        round_dir = work_dir / f"round{r}"
        if r < rounds and (round_dir / "training_summary.json").is_file():
            # A finished earlier round (its student and summary) resumes a multi-round run.
            classifier.load_state_dict(load_bundle(round_dir).model.state_dict())
            done = json.loads((round_dir / "training_summary.json").read_text(encoding="utf-8"))
            round_summaries.append({"round": r, "resumed_from": done.get("version"), **done.get("round", {})})
            if r == 1 and done.get("pretrain_tokens") is not None:
                trunk_tokens = done["pretrain_tokens"]  # the trunk is that student's, not the checkpoint's
            log(f"round {r}/{rounds}: resumed from the student saved in {round_dir.name}/")
            continue
        distilled, targets = None, None
        spec = recipe.finetune
        refit = r == rounds and spec.refit_epochs is not None
        if not refit:
            spec = replace(spec, refit_epochs=None)
        if distill_dir is not None:
            distilled, targets = _distilled_round(
                bundle, examples, recipe, distill_dir, r, work_dir, log, distill_minutes, refit
            )
        student_in_teacher = r > 1 or recipe.distill.teacher_model is not None
        if student_in_teacher and distill_dir is not None and recipe.distill.later_finetune_lr is not None:
            spec = replace(spec, lr=recipe.distill.later_finetune_lr)
        log(
            f"fine-tuning {count_parameters(classifier):,} parameters on {len(examples):,} train examples"
            + (" (re-fit: the hold-out included)" if refit else "")
        )
        result = finetune(
            bundle, examples, spec, recipe.seed, lm_head, log, finetune_minutes, targets, heldout=heldout
        )
        append_log(Path(out_dir), {"stage": "finetune", "round": r, "history": result.history})
        round_summary = {
            "round": r,
            "distill": distilled,
            "finetune": {
                "lr": spec.lr,
                "refit_epochs": spec.refit_epochs,
                "best": result.best,
                "epochs_run": result.epochs_run,
                "seconds": round(result.seconds),
                "max_minutes": finetune_minutes,
            },
        }
        round_summaries.append(round_summary)
        if r < rounds:
            bundle.version = model_version(lm)
            save_bundle(bundle, round_dir)
            (round_dir / "training_summary.json").write_text(
                json.dumps({"version": bundle.version, "round": round_summary}, indent=2) + "\n",
                encoding="utf-8",
            )
    soup = _average_with(bundle, examples, recipe, log) if recipe.finetune.average_with else None
    calibration = None
    if not trains_gpt:
        pass  # the saved classifier keeps its temperatures
    elif recipe.finetune.calibrate and recipe.finetune.refit_epochs is not None:
        bundle.temperatures = recipe.finetune.refit_temperatures
        calibration = {"refit_temperatures": list(bundle.temperatures)}
        log(f"re-fit model: temperatures {bundle.temperatures} from the recipe (its held-out run)")
    elif recipe.finetune.calibrate:
        from models.calibrate import calibrate

        calibration = calibrate(
            bundle, examples, recipe.finetune.holdout_fraction, recipe.seed, log, heldout=heldout
        )
    lexical = None
    if recipe.lexical.enabled:
        from models.lexical_train import add_lexical

        lexical = add_lexical(
            bundle, examples, recipe.lexical, recipe.finetune.holdout_fraction, recipe.seed, log, heldout
        )
    bundle.version = model_version(lm)  # stamped when the weights are final
    save_bundle(bundle, out_dir)
    last_round = round_summaries[-1] if round_summaries else {}
    summary = {
        "version": bundle.version,
        "params": count_parameters(classifier),
        # A local base is named by its directory, not by a path on the training machine.
        "base": Path(base).name if Path(base).is_dir() else str(base),
        "base_version": start.version if is_classifier_dir(base) else None,
        "pretrain_tokens": trunk_tokens,
        "distill": last_round.get("distill"),
        "finetune": last_round.get("finetune"),
        "rounds": round_summaries,
        "soup": soup,
        "calibration": calibration,
        "lexical": lexical,
        "news": news_summary,
        # A saved classifier as the base: its own summary is this model's provenance before this run.
        "base_summary": _summary_of(Path(base)) if is_classifier_dir(base) else None,
        "recipe": _portable(recipe.to_dict()),
    }
    (Path(out_dir) / "training_summary.json").write_text(
        json.dumps(summary, indent=2) + "\n", encoding="utf-8"
    )
    return summary
