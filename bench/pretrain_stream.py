"""Pre-training data stream: how many tokens/s the loop's text → token-block stream can feed a model.

    python bench/pretrain_stream.py --json [--unlabeled DIR] [--batches 150] [--batch-size 512]
        [--model-recipe models/recipes/gpu-teacher.yaml --steps 100]

Times ``models.training.pretrain.packed_blocks`` (clean, tokenise, pack into 64-token blocks, batch them)
with no model at all, next to the same stream cut the way it was before (the rest of the buffer re-sliced
after every block), on the same text in the same run. The stream runs in the training loop between
steps, so its rate caps pre-training on a GPU. Text: the unlabeled ``.txt.gz`` files of ``--unlabeled``
(default ``$FINSENT_DATA_DIR/unlabeled``); tokenizer: the committed ``models/pretrain_seed``. The last
line printed is one JSON object: tokens, tokens_per_s, reslice_tokens_per_s, ratio; with
``--model-recipe``, also the tokens/s of that recipe's pre-training step alone (forward, backward,
AdamW, on batches already in memory) on the default device, and the stream's share of a step's time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NotRequired, TypedDict, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from tokenizers import Tokenizer

from models.data import iter_unlabeled, unlabeled_files
from models.network import fuse_gelu, new_language_model
from models.tokenizer import load_tokenizer
from models.training.loop import autocast_for, default_device, make_optimizer, optimizer_step
from models.training.pretrain import SHIPPED_SEED, packed_blocks
from models.training.recipe import load_recipe


class Summary(TypedDict):
    """The JSON object printed last; the step fields only with ``--model-recipe``."""

    tokens: int
    tokens_per_s: int
    reslice_tokens_per_s: int
    ratio: float
    device: NotRequired[str]
    step_tokens_per_s: NotRequired[int]
    stream_share: NotRequired[float]


def reslice(buffer: list[int], block_size: int, consumed: int) -> Iterator[tuple[list[int], int]]:
    """The baseline cut: ``packed_blocks`` as it was, re-slicing the rest of the buffer after each block."""
    rest = buffer
    while len(rest) >= block_size:
        yield rest[:block_size], consumed
        rest = rest[block_size:]  # a copy of the rest per block, as before
    buffer[:] = rest  # the stream keeps its buffer object


def rate(blocks: Iterator[tuple[list[int], int]], batches: int, batch_size: int) -> tuple[int, float]:
    """Return ``(tokens, tokens/s)`` of drawing ``batches`` batches from ``blocks`` as the loop does."""
    tokens, start = 0, time.perf_counter()
    for _ in range(batches):
        batch = []
        for block, _ in blocks:
            batch.append(block)
            if len(batch) == batch_size:
                break
        tokens += torch.tensor(batch).numel()
    return tokens, tokens / (time.perf_counter() - start)


def step_rate(recipe_path: Path, tok: Tokenizer, steps: int, warmup: int = 10) -> tuple[str, float]:
    """Return ``(device, tokens/s)`` of the recipe's pre-training step on random in-memory batches."""
    recipe = load_recipe(recipe_path)
    spec = recipe.pretrain
    device = default_device()
    lm = fuse_gelu(new_language_model(recipe.model, tok))
    # PreTrainedModel.to is typed through functools.wraps, which leaves self unbound: call it as a Module.
    cast(torch.nn.Module, lm).to(device).train()
    opt = make_optimizer(lm, spec.lr, spec.weight_decay)
    ids = torch.randint(0, tok.get_vocab_size(), (spec.batch_size, spec.block_size), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()  # optimizer_step's .item() waits for the device each step
        with autocast_for(device):
            loss = lm(input_ids=ids, labels=ids, use_cache=False).loss
        optimizer_step(opt, loss, lm.parameters(), spec.grad_clip)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    return name, steps * ids.numel() / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = Path(os.environ.get("FINSENT_DATA_DIR", ".")) / "unlabeled"
    parser.add_argument("--unlabeled", type=Path, default=default_dir)
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--model-recipe", type=Path, help="also time this recipe's pre-training step")
    parser.add_argument("--steps", type=int, default=100, help="timed steps of --model-recipe")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    tok = load_tokenizer(SHIPPED_SEED)
    files = unlabeled_files(args.unlabeled)
    results = {}
    for name, cut in (("reslice", reslice), ("packed", None)):
        blocks = packed_blocks(tok, iter_unlabeled(files), args.block_size, cut=cut)
        tokens, per_s = rate(blocks, args.batches, args.batch_size)
        results[name] = per_s
        print(f"{name:8} {per_s:>12,.0f} tokens/s over {tokens:,} tokens", flush=True)
    if args.json:
        summary: Summary = {
            "tokens": tokens,
            "tokens_per_s": round(results["packed"]),
            "reslice_tokens_per_s": round(results["reslice"]),
            "ratio": round(results["packed"] / results["reslice"], 2),
        }
        if args.model_recipe is not None:
            device, per_s = step_rate(args.model_recipe, tok, args.steps)
            print(f"step     {per_s:>12,.0f} tokens/s ({device}, batches in memory)", flush=True)
            # A step of the real loop draws its batch from the stream, then trains on it.
            share = (1 / results["packed"]) / (1 / results["packed"] + 1 / per_s)
            summary |= {"device": device, "step_tokens_per_s": round(per_s), "stream_share": round(share, 2)}
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
