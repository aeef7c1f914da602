"""Fitting the lexical part beside a trained GPT and choosing its share of the mix on the hold-out."""

from __future__ import annotations

import time
from collections.abc import Callable

from models.calibrate import fit_temperature
from models.data import Example, holdout_split
from models.distill import fit_teacher
from models.evaluate import labels_of, selection_scores
from models.inference import batched_probabilities
from models.lexical import LexicalModel, from_fitted, mix_probabilities
from models.network import ModelBundle
from models.recipe import LexicalSpec
from models.tokenizer import encode_for_classification

SHARE_GRID = tuple(round(0.1 * i, 1) for i in range(11))


def fit_lexical(bundle: ModelBundle, examples: list[Example], spec: LexicalSpec, seed: int) -> LexicalModel:
    """Return a lexical model (share 0.5, temperatures 1) fit on ``examples``, in ``bundle``'s label order."""
    teacher = fit_teacher(examples, c=spec.c, seed=seed, class_weight=spec.class_weight)
    return from_fitted(
        teacher.vectorizers, teacher.topic, teacher.sentiment, len(bundle.topics), len(bundle.sentiments)
    )


def add_lexical(
    bundle: ModelBundle,
    examples: list[Example],
    spec: LexicalSpec,
    holdout_fraction: float,
    seed: int,
    log: Callable[[str], None] = print,
) -> dict:
    """Set ``bundle.lexical``: fit on train minus the hold-out, temperatures and share chosen on the
    hold-out, then (``spec.refit``) fit again on all of ``examples``. Return what was measured."""
    started = time.monotonic()
    fit, held = holdout_split(examples, holdout_fraction, seed)
    lexical = fit_lexical(bundle, fit, spec, seed)
    texts = [e.text for e in held]
    device = next(bundle.model.parameters()).device
    seqs = encode_for_classification(bundle.tokenizer, texts, bundle.max_length)
    gpt = batched_probabilities(bundle.model.eval(), seqs, bundle.pad_id, 128, device, bundle.temperatures)
    raw = lexical.probabilities(texts)
    temperatures = []
    for task, probs in zip(("topic", "sentiment"), raw, strict=True):
        rows = [i for i, e in enumerate(held) if getattr(e, task) is not None]
        temperatures.append(fit_temperature(probs[rows], labels_of([held[i] for i in rows], task)))
    lexical.temperatures = (temperatures[0], temperatures[1])
    lex = lexical.probabilities(texts)
    by_share = {}
    for share in SHARE_GRID if spec.share is None else (spec.share,):
        by_share[share] = selection_scores(held, *mix_probabilities(share, gpt, lex))
    best = max(by_share, key=lambda s: by_share[s]["score"])
    summary = {
        "heldout": {
            "gpt": selection_scores(held, *gpt),
            "lexical": selection_scores(held, *lex),
            "mix": by_share[best],
            "by_share": {str(s): round(v["score"], 4) for s, v in by_share.items()},
        },
        "share": best,
        "temperatures": list(lexical.temperatures),
        "features": lexical.config()["features"],
    }
    log(f"lexical part: GPT share {best} of the mix, held-out {summary['heldout']['mix']}")
    if spec.refit:
        lexical = fit_lexical(bundle, examples, spec, seed)
        lexical.temperatures = (temperatures[0], temperatures[1])
        summary["refit_features"] = lexical.config()["features"]
        log("lexical part re-fit on all of train (share and temperatures from the hold-out)")
    lexical.share = best
    bundle.lexical = lexical
    summary["parameters"] = lexical.n_parameters
    summary["seconds"] = round(time.monotonic() - started)
    return summary
