"""Classification speed on CPU: the shipped model vs a FinBERT-shaped model, same texts, same run.

    python bench/classify.py --json [--texts 2048] [--finbert-texts 256] [--threads 2] [--model DIR]

FinBERT-shaped means ``BertForSequenceClassification`` with the bert-base configuration and random
weights: speed depends on shape, not weights, and no pretrained weights are downloaded. It reads the
same texts, with sequence lengths taken from the project's tokenizer plus [CLS]/[SEP] (WordPiece gives
similar counts on headlines). Texts are the sentiment valid split when FINSENT_DATA_DIR is set, else
generated headlines. The last line printed is one JSON object: docs_per_s, finbert_shaped_docs_per_s,
ratio, peak_rss_mb (after the shipped model's run, before FinBERT is built), params (the GPT's plus the
lexical part's weights); also int8_docs_per_s, the same model with int8 dynamic quantisation, and, for a
model with a lexical part, gpt_only_docs_per_s: the GPT without it, which shows what the part costs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from transformers import BertConfig, BertForSequenceClassification

from models.data import load_split
from models.inference import Classifier, load, pad_batch, sorted_batches
from models.network import count_parameters
from models.tokenizer import encode_for_classification


def bench_texts(count: int) -> list[str]:
    """Return ``count`` headlines: real ones from the labeled valid split when available, else generated."""
    data_dir = os.environ.get("FINSENT_DATA_DIR")
    if data_dir and Path(data_dir).is_dir():
        pool = [e.text for e in load_split(Path(data_dir), "sentiment", "valid")]
    else:
        rng = random.Random(0)
        who = ["Acme", "Globex", "Initech", "The Fed", "Oil", "Treasury yields", "Hooli", "The dollar"]
        what = ["surges after earnings beat", "slides on weak guidance", "holds steady", "hits a record high"]
        pool = [f"{rng.choice(who)} {rng.choice(what)} ({rng.choice(who)})" for _ in range(500)]
    return [pool[i % len(pool)] for i in range(count)]


def docs_per_second(run: Callable[[], object], count: int, repeats: int = 3) -> float:
    """Return the best docs/s over ``repeats`` timed runs (after one warm-up run)."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return count / best


def finbert_runner(clf: Classifier, texts: list[str], batch_size: int) -> tuple[Callable[[], None], int]:
    """Return ``(run, params)``: a closure classifying ``texts`` with a random bert-base classifier."""
    torch.manual_seed(0)
    config = BertConfig()  # bert-base: 12 x 768
    config.num_labels = 3  # a property of transformers 5's configs, not a typed __init__ argument
    model = BertForSequenceClassification(config).eval()
    seqs = encode_for_classification(clf.bundle.tokenizer, texts, 510)
    seqs = [[101] + [i % 30522 for i in s] + [102] for s in seqs]

    @torch.inference_mode()
    def run() -> None:
        for idx in sorted_batches([len(s) for s in seqs], batch_size):
            ids, mask = pad_batch([seqs[i] for i in idx], 0)
            model(input_ids=ids, attention_mask=mask)

    return run, count_parameters(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model dir (default: the shipped one)")
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("--finbert-texts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    clf = load(args.model, device="cpu", threads=args.threads)
    texts = bench_texts(args.texts)
    ours = docs_per_second(lambda: clf.predict(texts, batch_size=args.batch_size), len(texts))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    clf8 = load(args.model, device="cpu", threads=args.threads, int8=True)
    ours_int8 = docs_per_second(lambda: clf8.predict(texts, batch_size=args.batch_size), len(texts))
    lexical = clf.bundle.lexical
    gpt_only = None
    if lexical is not None:
        clf.use_lexical = False
        gpt_only = docs_per_second(lambda: clf.predict(texts, batch_size=args.batch_size), len(texts))
        clf.use_lexical = True

    fb_texts = texts[: args.finbert_texts]
    fb_run, fb_params = finbert_runner(clf, fb_texts, args.batch_size)
    # Best of three, as ours: one timed run let the ratio swing by about +-3 between runs.
    theirs = docs_per_second(fb_run, len(fb_texts))

    result = {
        "model_version": clf.version,
        "threads": args.threads,
        "texts": len(texts),
        "finbert_texts": len(fb_texts),
        "docs_per_s": round(ours, 1),
        "finbert_shaped_docs_per_s": round(theirs, 1),
        "ratio": round(ours / theirs, 1),
        "int8_docs_per_s": round(ours_int8, 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "params": count_parameters(clf.model) + (lexical.n_parameters if lexical else 0),
        "finbert_shaped_params": fb_params,
    }
    if lexical is not None and gpt_only is not None:
        result |= {"gpt_only_docs_per_s": round(gpt_only, 1), "lexical_params": lexical.n_parameters}
    if not args.json:
        print(f"{clf.version}: {ours:.0f} docs/s; FinBERT-shaped {theirs:.1f} docs/s ({ours / theirs:.1f}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
