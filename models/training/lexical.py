"""Fitting the lexical part beside a trained GPT and choosing its share of the mix on the hold-out."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from models.data import Example, holdout_split
from models.evaluate import expected_calibration_error, labels_of, selection_scores
from models.inference import batched_probabilities
from models.lexical import LexicalModel, from_fitted, mix_probabilities
from models.network import ModelBundle
from models.probs import tempered
from models.tokenizer import encode_for_classification
from models.training.calibrate import fit_temperature
from models.training.distill import fit_teacher
from models.training.recipe import LexicalSpec

SHARE_GRID = tuple(round(0.1 * i, 1) for i in range(11))
PAIR = ("topic", "sentiment")  # the order of every (topic, sentiment) pair of arrays here


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
    heldout: list[Example] | None = None,
) -> dict:
    """Set ``bundle.lexical``: fit on train minus the hold-out, temperatures and share chosen on the
    hold-out, then (``spec.refit``) fit again on all of ``examples``. Return what was measured.

    With ``heldout`` (a news recipe's), ``examples`` is the fit set and the re-fit adds ``heldout``."""
    started = time.monotonic()
    if heldout is not None:
        fit, held = examples, heldout
        examples = examples + heldout
    else:
        fit, held = holdout_split(examples, holdout_fraction, seed)
    lexical = fit_lexical(bundle, fit, spec, seed)
    texts = [e.text for e in held]
    device = next(bundle.model.parameters()).device
    seqs = encode_for_classification(bundle.tokenizer, texts, bundle.max_length)
    gpt = batched_probabilities(bundle.model.eval(), seqs, bundle.pad_id, 128, device, bundle.temperatures)
    logits = lexical.logits(texts)
    lexical.temperatures = _temperatures(held, lexical.probabilities(texts, logits))  # at T = 1
    lex = lexical.probabilities(texts, logits)
    by_share = {}
    for share in SHARE_GRID if spec.share is None else (spec.share,):
        by_share[share] = selection_scores(held, *mix_probabilities(share, gpt, lex))
    best = max(by_share, key=lambda s: by_share[s]["score"])
    mixed = mix_probabilities(best, gpt, lex)
    mix_temperatures = _temperatures(held, mixed)
    summary = {
        "heldout": {
            "gpt": selection_scores(held, *gpt),
            "lexical": selection_scores(held, *lex),
            "mix": by_share[best],
            "by_share": {str(s): round(v["score"], 4) for s, v in by_share.items()},
            "mix_ece": {
                task: {"before": _ece(held, task, probs), "after": _ece(held, task, tempered(probs, t))}
                for task, probs, t in zip(PAIR, mixed, mix_temperatures, strict=True)
            },
        },
        "share": best,
        "temperatures": list(lexical.temperatures),
        "mix_temperatures": list(mix_temperatures),
        "features": lexical.config()["features"],
    }
    log(f"lexical part: GPT share {best} of the mix, held-out {summary['heldout']['mix']}")
    if spec.refit:
        temperatures = lexical.temperatures
        lexical = fit_lexical(bundle, examples, spec, seed)
        lexical.temperatures = temperatures
        summary["refit_features"] = lexical.config()["features"]
        log("lexical part re-fit on all of train (share and temperatures from the hold-out)")
    lexical.share, lexical.mix_temperatures = best, mix_temperatures
    bundle.lexical = lexical
    summary["parameters"] = lexical.n_parameters
    summary["seconds"] = round(time.monotonic() - started)
    return summary


def _labeled(held: list[Example], task: str) -> tuple[list[int], np.ndarray]:
    """Return the rows of ``held`` labeled for ``task`` and their labels."""
    rows = [i for i, e in enumerate(held) if getattr(e, task) is not None]
    return rows, labels_of([held[i] for i in rows], task)


def _temperatures(held: list[Example], probs: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """Return the (topic, sentiment) temperatures that fit ``probs`` to the labels of ``held`` best."""
    fitted = []
    for task, p in zip(PAIR, probs, strict=True):
        rows, y = _labeled(held, task)
        fitted.append(fit_temperature(p[rows], y))
    return fitted[0], fitted[1]


def _ece(held: list[Example], task: str, probs: np.ndarray) -> float:
    rows, y = _labeled(held, task)
    return round(expected_calibration_error(probs[rows], y), 4)
