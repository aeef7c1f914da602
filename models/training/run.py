"""A whole recipe end to end: pre-training or a base, distillation rounds, fine-tuning, calibration,
the lexical part."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from models.data import Example, holdout_split, load_train_examples
from models.inference import Classifier
from models.network import (
    ModelBundle,
    average_weights,
    classifier_from_language_model,
    count_parameters,
    grow_depth,
    is_classifier_dir,
    load_base,
    load_bundle,
    model_version,
    save_bundle,
)
from models.training.calibrate import calibrate
from models.training.distill import SoftTargets, self_train
from models.training.finetune import finetune
from models.training.lexical import add_lexical
from models.training.loop import append_log, heldout_scores, seed_everything
from models.training.news import training_sets
from models.training.pretrain import SHIPPED_SEED, place_shipped_seed, pretrain
from models.training.recipe import Recipe


def teacher_model_dir(name: str, key: str = "distill.teacher_model") -> Path:
    """Return the directory of a saved model a recipe names (at ``key``): absolute, or relative to the
    repository."""
    path = Path(name)
    if not path.is_absolute():
        path = Path(__file__).resolve().parents[2] / path
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
    bundle: ModelBundle,
    examples: list[Example],
    recipe: Recipe,
    log: Callable[[str], None],
    heldout: list[Example] | None = None,
) -> dict:
    """Return what averaging ``bundle``'s weights with ``finetune.average_with``'s models did (in place).

    The averaged model's scores on the hold-out (``heldout``, else the seeded split of ``examples``)
    are recorded (the student's own are fine-tuning's best), unless the student was re-fit on it.
    """
    spec = recipe.finetune
    others = [load_bundle(teacher_model_dir(name, "finetune.average_with")) for name in spec.average_with]
    device = next(bundle.model.parameters()).device
    bundle.model.load_state_dict(average_weights([bundle.model.cpu()] + [o.model for o in others]))
    bundle.model.to(device)
    summary: dict = {"with": [o.version for o in others]}
    if spec.refit_epochs is None:
        held = (
            heldout if heldout is not None else holdout_split(examples, spec.holdout_fraction, recipe.seed)[1]
        )
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
    soup = _average_with(bundle, examples, recipe, log, heldout) if recipe.finetune.average_with else None
    calibration: dict[str, Any] | None = None
    if not trains_gpt:
        pass  # the saved classifier keeps its temperatures
    elif recipe.finetune.calibrate and recipe.finetune.refit_epochs is not None:
        if recipe.finetune.refit_temperatures is None:  # FinetuneSpec refuses such a recipe
            raise ValueError("finetune.refit_epochs with calibrate needs finetune.refit_temperatures")
        bundle.temperatures = recipe.finetune.refit_temperatures
        calibration = {"refit_temperatures": list(bundle.temperatures)}
        log(f"re-fit model: temperatures {bundle.temperatures} from the recipe (its held-out run)")
    elif recipe.finetune.calibrate:
        calibration = calibrate(
            bundle, examples, recipe.finetune.holdout_fraction, recipe.seed, log, heldout=heldout
        )
    lexical = None
    if recipe.lexical.enabled:
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
