"""Tokenizer corpus and resumable causal-LM pre-training on packed blocks of unlabeled text."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import torch
from tokenizers import Tokenizer
from tqdm import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel

from models.data import iter_unlabeled, load_train_examples, unlabeled_files
from models.network import (
    fuse_gelu,
    new_language_model,
)
from models.tokenizer import (
    clean_text,
    load_tokenizer,
    save_tokenizer,
    special_ids,
    train_tokenizer,
)
from models.training.loop import (
    LOG_FILE,
    append_log,
    autocast_for,
    default_device,
    lr_at,
    make_optimizer,
    optimizer_step,
    seed_everything,
)
from models.training.recipe import PretrainSpec, Recipe

STATE_FILE = "trainer_state.pt"


# A weights-only checkpoint (fp16 weights + this JSON, no optimizer state) small enough to commit, so
# pre-training can continue across machines: see ``export_pretrain_seed``.
SEED_STATE_FILE = "pretrain_state.json"


SHIPPED_SEED = Path(__file__).resolve().parent.parent / "pretrain_seed"


def tokenizer_corpus(train_texts: list[str], files: list[Path], lines_per_file: int) -> Iterator[str]:
    """Yield the labeled train texts, then the first ``lines_per_file`` lines of each unlabeled file."""
    yield from train_texts
    for path in files:
        for i, line in enumerate(iter_unlabeled([path])):
            if i >= lines_per_file:
                break
            yield line


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
    return new_language_model(recipe.model, tok), tok, PretrainState(), None


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
    # PreTrainedModel.to is typed through functools.wraps, which leaves self unbound: call it as a Module.
    cast(torch.nn.Module, lm).to(device).train()
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
