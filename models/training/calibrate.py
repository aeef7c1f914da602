"""Temperature scaling: one scalar per head, fit on the held-out part of train, so probabilities mean what
they say (the argmax, hence accuracy and F1, is unchanged).

Fine-tuning drives the training loss near zero, which leaves the softmax over-confident; the alert
engine's ``score`` and the dashboard's probabilities read those numbers directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.data import Example, holdout_split, load_train_examples
from models.evaluate import expected_calibration_error
from models.inference import batched_probabilities
from models.network import ModelBundle, load_bundle, model_version, save_bundle
from models.probs import tempered
from models.tokenizer import encode_for_classification
from models.training.recipe import recipe_from_dict

# Candidate temperatures: a log-spaced grid is enough for one scalar and cannot diverge.
GRID = np.exp(np.linspace(np.log(0.25), np.log(8.0), 161))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """Return the temperature on ``GRID`` that minimises the negative log-likelihood of ``labels``."""
    if len(labels) == 0:
        return 1.0
    nll = [
        -np.mean(np.log(np.clip(tempered(probs, t)[np.arange(len(labels)), labels], 1e-30, None)))
        for t in GRID
    ]
    return float(GRID[int(np.argmin(nll))])


def calibrate(
    bundle: ModelBundle,
    examples: list[Example],
    holdout_fraction: float,
    seed: int,
    log: Callable[[str], None] = print,
    heldout: list[Example] | None = None,
) -> dict[str, dict[str, float]]:
    """Set ``bundle.temperatures`` from the seeded hold-out of ``examples``; return T and ECE per head.

    The hold-out is the one fine-tuning used for early stopping (same fraction and seed, or ``heldout``
    when fine-tuning was given one), never valid.
    """
    held = heldout if heldout is not None else holdout_split(examples, holdout_fraction, seed)[1]
    bundle.model.eval()
    device = next(bundle.model.parameters()).device
    seqs = encode_for_classification(bundle.tokenizer, [e.text for e in held], bundle.max_length)
    topic_p, sent_p = batched_probabilities(bundle.model, seqs, bundle.pad_id, 128, device)
    report: dict[str, dict[str, float]] = {}
    for task, probs in (("topic", topic_p), ("sentiment", sent_p)):
        idx = [i for i, e in enumerate(held) if getattr(e, task) is not None]
        labels = np.array([getattr(held[i], task) for i in idx], dtype=np.int64)
        t = fit_temperature(probs[idx], labels)
        report[task] = {
            "temperature": round(t, 4),
            "heldout_ece_before": round(expected_calibration_error(probs[idx], labels), 4),
            "heldout_ece_after": round(expected_calibration_error(tempered(probs[idx], t), labels), 4),
            "n": len(idx),
        }
    bundle.temperatures = (report["topic"]["temperature"], report["sentiment"]["temperature"])
    log(f"calibrated on the hold-out: {report}")
    return report


def calibrate_model_dir(
    directory: Path, data_dir: Path, log: Callable[[str], None] = print
) -> dict[str, dict[str, float]]:
    """Re-fit the temperatures of the model saved in ``directory`` and save them into its config.

    The hold-out fraction and seed come from the recipe in its ``training_summary.json`` (the split its
    fine-tuning held out); without one, the recipe defaults. The weights are left as they are; the
    version is stamped anew, because scores are keyed by version and the probabilities change. A
    re-fit model (``finetune.refit_epochs``) is refused: its training saw the hold-out.
    """
    directory = Path(directory)
    summary_file = directory / "training_summary.json"
    summary = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.is_file() else {}
    recipe = recipe_from_dict(summary.get("recipe", {}))
    if recipe.finetune.refit_epochs is not None:
        raise ValueError(
            f"{directory} was re-fit on all of train, hold-out included: it has no unseen hold-out to "
            "calibrate on; its temperatures come from the recipe's refit_temperatures"
        )
    bundle = load_bundle(directory)
    report = calibrate(
        bundle, load_train_examples(data_dir), recipe.finetune.holdout_fraction, recipe.seed, log
    )
    bundle.version = model_version(bundle.model.trunk)
    save_bundle(bundle, directory)
    if summary:
        summary["calibration"] = report
        summary["version"] = bundle.version
        summary_file.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return report
