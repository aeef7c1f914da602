"""Train a larger GPT teacher on a CUDA machine and distil it into the shipped-size student.

    python -m scripts.train_on_gpu --data DATA_DIR --unlabeled UNLABELED_DIR --work WORK --out OUT

Stages, timed into ``OUT/report.json`` (rewritten after each one, so a run cut short still reports
what it finished):

1. pre-train the teacher (models/recipes/gpu-teacher.yaml) for the time the budget leaves after the
   later stages' reserve: a short first leg measures tokens/s, then the token budget and the cosine
   horizon are set to end on time and a second leg resumes from the first one's checkpoint;
2. fine-tune it (early stopping and calibration on the hold-out, a seeded split of train);
3. pick the teacher's share of the TF-IDF + teacher targets by their hold-out score; the TF-IDF
   teacher is fit, and labels the unlabeled lines, in worker processes while step 1 runs;
4. train the student (models/recipes/gpu-student.yaml) on those targets: the committed 4x256 trunk,
   one round of distillation, then fine-tuning;
5. evaluate teacher and student on the valid splits, next to the TF-IDF baseline.

OUT receives ``report.json``, ``student.tar`` (the student's model directory, packed before the
evaluation) and the student's distillation targets (``targets-texts.tar``, ``targets-probs.tar``,
fp16) for re-running stage 4 elsewhere: unpacked into ``CHECKPOINT/round1-distilled/``, ``finsent
train`` reads them back instead of labeling anew.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from models.data import Example, holdout_split, load_split, load_train_examples, unlabeled_files
from models.evaluate import baseline_probabilities, evaluate, labels_of, task_metrics
from models.inference import Classifier, batched_probabilities
from models.network import ModelBundle, load_bundle
from models.tokenizer import encode_for_classification
from models.training.distill import SoftTargets, fit_teacher, mix_in_models, sample_unlabeled, tfidf_targets
from models.training.loop import default_device
from models.training.pretrain import SHIPPED_SEED, place_shipped_seed, pretrain
from models.training.recipe import Recipe, load_recipe
from models.training.run import train_model

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "models" / "recipes"
DISTILL_SAMPLE = "distill_sample.txt.gz"
# The teacher's shares of the targets tried on the hold-out (the rest is the TF-IDF teacher's).
SHARES = tuple(round(0.1 * i, 1) for i in range(11))


def log(message: str) -> None:
    """Print ``message`` with the wall-clock time: the run's log is read against the report's timings."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- worker-process jobs (CPU, while the GPU pre-trains) -----------------------------------------


def tfidf_parts(
    data_dir: Path, recipe: Recipe, unlabeled_dir: Path
) -> tuple[SoftTargets, dict[str, np.ndarray]]:
    """Return the TF-IDF part of the student's distillation targets and that teacher's hold-out
    probabilities per task, from one fit (the GPU teacher's part is mixed in later)."""
    examples = load_train_examples(data_dir)
    fit, held = holdout_split(examples, recipe.finetune.holdout_fraction, recipe.seed)
    spec = recipe.distill
    teacher = fit_teacher(fit, spec.teacher_c, recipe.seed, spec.teacher_class_weight)
    topic, sentiment = teacher.probabilities([e.text for e in held])
    targets = tfidf_targets(examples, recipe, unlabeled_dir, teacher=teacher)
    return targets, {"topic": topic, "sentiment": sentiment}


def baseline_metrics(data_dir: Path) -> dict[str, dict]:
    """Return the evaluation baseline's valid metrics per task (what ``finsent eval`` reports)."""
    out = {}
    for task in ("sentiment", "topic"):
        valid = load_split(data_dir, task, "valid")
        probs = baseline_probabilities(load_split(data_dir, task, "train"), valid, task)
        out[task] = task_metrics(labels_of(valid, task), probs)
    return out


# --- stages ------------------------------------------------------------------------------------


def ensure_distill_sample(unlabeled_dir: Path, student: Recipe, default: Recipe) -> None:
    """Write the default recipe's sample of unlabeled lines as ``DISTILL_SAMPLE`` when it is missing."""
    target = unlabeled_dir / DISTILL_SAMPLE
    if target.is_file() or DISTILL_SAMPLE not in student.distill.files:
        return
    by_name = {p.name: p for p in unlabeled_files(unlabeled_dir)}
    lines = sample_unlabeled([by_name[n] for n in default.distill.files], default.distill.lines, default.seed)
    with gzip.open(target, "wt", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in lines)
    log(f"wrote {len(lines):,} sampled lines to {target}")


def pretrain_teacher(
    recipe: Recipe, checkpoint: Path, data_dir: Path, unlabeled_dir: Path, seconds: float
) -> tuple[Recipe, dict]:
    """Return the recipe with its pre-training budget as trained, and throughput, after ~``seconds``."""
    checkpoint.mkdir(parents=True, exist_ok=True)
    seed_config = json.loads((SHIPPED_SEED / "config.json").read_text(encoding="utf-8"))
    if seed_config.get("vocab_size") == recipe.tokenizer.vocab_size:
        shutil.copy2(SHIPPED_SEED / "tokenizer.json", checkpoint / "tokenizer.json")  # the student's
    start = time.monotonic()
    probe = min(45.0, seconds / 4)
    first = pretrain(checkpoint, recipe, data_dir, unlabeled_dir, probe / 60, log)
    rate = first.tokens / max(first.seconds, 1e-9)
    left = seconds - (time.monotonic() - start)
    per_step = recipe.pretrain.batch_size * recipe.pretrain.block_size
    target = (first.tokens + int(rate * max(left, 0.0) * 0.95)) // per_step * per_step
    log(f"pre-training at {rate:,.0f} tokens/s: budget set to {target:,} tokens ({left:.0f}s left)")
    spec = replace(recipe.pretrain, tokens=target, schedule_tokens=target)
    recipe = replace(recipe, pretrain=spec)
    second = pretrain(checkpoint, recipe, data_dir, unlabeled_dir, left / 60 + 0.5, log)
    done = replace(spec, tokens=second.tokens)  # what was trained, so train_model does not go on
    stats = {
        "tokens": second.tokens,
        "steps": second.step,
        "lines": second.lines,
        "seconds": round(second.seconds, 1),
        "tokens_per_s": round(second.tokens / max(second.seconds, 1e-9)),
        "probe_tokens_per_s": round(rate),
        "last_loss": round(second.last_loss, 4),
    }
    return replace(recipe, pretrain=done), stats


def heldout_probabilities(bundle: ModelBundle, held: list[Example]) -> dict[str, np.ndarray]:
    """Return a saved model's hold-out probabilities per task, scaled by its own temperatures."""
    device = default_device()
    bundle.model.to(device).eval()
    seqs = encode_for_classification(bundle.tokenizer, [e.text for e in held], bundle.max_length)
    topic, sentiment = batched_probabilities(
        bundle.model, seqs, bundle.pad_id, 256, device, bundle.temperatures
    )
    return {"topic": topic, "sentiment": sentiment}


def share_scores(
    held: list[Example], tfidf: dict[str, np.ndarray], teacher: dict[str, np.ndarray]
) -> list[dict]:
    """Return the hold-out topic accuracy and sentiment weighted-F1 of each mix in ``SHARES``."""
    from sklearn.metrics import f1_score

    t_idx = [i for i, e in enumerate(held) if e.topic is not None]
    s_idx = [i for i, e in enumerate(held) if e.sentiment is not None]
    t_true = [held[i].topic for i in t_idx]
    s_true = [held[i].sentiment for i in s_idx]
    rows = []
    for w in SHARES:
        topic = (1 - w) * tfidf["topic"][t_idx] + w * teacher["topic"][t_idx]
        sent = (1 - w) * tfidf["sentiment"][s_idx] + w * teacher["sentiment"][s_idx]
        acc = float(np.mean(topic.argmax(1) == np.array(t_true)))
        f1 = float(f1_score(s_true, sent.argmax(1), average="weighted"))
        scores = {"topic_accuracy": acc, "sentiment_weighted_f1": f1, "score": (acc + f1) / 2}
        rows.append({"share": w, **{k: round(v, 4) for k, v in scores.items()}})
    return rows


def valid_metrics(directory: Path, data_dir: Path) -> dict:
    """Return a saved model's ``finsent eval`` summary on the valid splits (the baseline is a worker's)."""
    clf = Classifier(load_bundle(directory), device=default_device())
    return evaluate(clf, data_dir, baseline=False).summary


def pack(out: Path, student_dir: Path, targets_dir: Path) -> None:
    """Write the student's directory and its (fp16) distillation targets into ``out`` as tar files."""
    with tarfile.open(out / "student.tar", "w") as tar:
        tar.add(student_dir, arcname="student")
    with tarfile.open(out / "targets-texts.tar", "w") as tar:
        for name in ("pseudo_labels.jsonl.gz", "cross_labels.jsonl.gz"):
            tar.add(targets_dir / name, arcname=name)
    half = out / "half"
    half.mkdir(exist_ok=True)
    for stem in ("pseudo_labels", "cross_labels"):
        with np.load(targets_dir / f"{stem}.npz") as saved:
            arrays = {k: saved[k].astype(np.float16) for k in saved.files}
        np.savez_compressed(half / f"{stem}.npz", **arrays)
    with tarfile.open(out / "targets-probs.tar", "w") as tar:
        for stem in ("pseudo_labels", "cross_labels"):
            tar.add(half / f"{stem}.npz", arcname=f"{stem}.npz")
    shutil.rmtree(half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--unlabeled", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--teacher-recipe", type=Path, default=RECIPES / "gpu-teacher.yaml")
    parser.add_argument("--student-recipe", type=Path, default=RECIPES / "gpu-student.yaml")
    parser.add_argument("--budget-s", type=float, default=540.0, help="seconds for the whole run")
    parser.add_argument("--reserve-s", type=float, default=300.0, help="seconds kept after pre-training")
    parser.add_argument("--stage-minutes", type=float, default=1.5, help="cap of each training stage")
    args = parser.parse_args()
    start = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "stages": {},
    }

    def stage(name: str, since: float, **values: object) -> None:
        report["stages"][name] = {"seconds": round(time.monotonic() - since, 1), **values}
        report["elapsed_s"] = round(time.monotonic() - start, 1)
        (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        log(f"{name} done: {json.dumps(report['stages'][name])[:600]}")

    teacher_recipe = load_recipe(args.teacher_recipe)
    student_recipe = load_recipe(args.student_recipe)
    ensure_distill_sample(args.unlabeled, student_recipe, load_recipe(RECIPES / "default.yaml"))
    with ProcessPoolExecutor(3, mp_context=get_context("spawn")) as pool:
        f_tfidf = pool.submit(tfidf_parts, args.data, student_recipe, args.unlabeled)
        f_base = pool.submit(baseline_metrics, args.data)

        t = time.monotonic()
        seconds = args.budget_s - args.reserve_s - (t - start)
        ckpt = args.work / "teacher-ckpt"
        teacher_recipe, pre = pretrain_teacher(teacher_recipe, ckpt, args.data, args.unlabeled, seconds)
        stage("pretrain", t, **pre)

        t = time.monotonic()
        teacher_dir = args.work / "teacher"
        summary = train_model(
            teacher_recipe, args.data, teacher_dir, ckpt, args.unlabeled,
            finetune_minutes=args.stage_minutes, log=log,
        )  # fmt: skip
        stage("teacher_finetune", t, version=summary["version"], params=summary["params"],
              finetune=summary["finetune"], calibration=summary["calibration"])  # fmt: skip

        t = time.monotonic()
        examples = load_train_examples(args.data)
        _, held = holdout_split(examples, student_recipe.finetune.holdout_fraction, student_recipe.seed)
        tfidf, tfidf_held = f_tfidf.result()
        teacher = load_bundle(teacher_dir)
        rows = share_scores(held, tfidf_held, heldout_probabilities(teacher, held))
        best = max(rows, key=lambda r: r["score"])
        distill = replace(student_recipe.distill, teacher_model=str(teacher_dir.resolve()),
                          student_weight=best["share"])  # fmt: skip
        student_recipe = replace(student_recipe, distill=distill)
        student_ckpt = args.work / "student-ckpt"
        place_shipped_seed(student_ckpt, student_recipe)  # before round1-distilled/ creates the directory
        # After heldout_probabilities: mixing re-calibrates the teacher and leaves it uncalibrated.
        targets = mix_in_models(tfidf, [(teacher, best["share"])], examples, student_recipe, log)
        targets_dir = student_ckpt / "round1-distilled"
        targets.save(targets_dir)
        stage("teacher_share", t, shares=rows, chosen=best, lines=len(targets.pool.texts))

        t = time.monotonic()
        student_dir = args.work / "student"
        summary = train_model(
            student_recipe, args.data, student_dir, student_ckpt, args.unlabeled,
            finetune_minutes=args.stage_minutes, distill_minutes=args.stage_minutes, log=log,
        )  # fmt: skip
        stage("student", t, version=summary["version"], rounds=summary["rounds"],
              calibration=summary["calibration"])  # fmt: skip

        t = time.monotonic()
        pack(args.out, student_dir, targets_dir)  # before evaluating: the student is what the run is for
        stage("pack", t)

        t = time.monotonic()
        report["valid"] = {
            "teacher": valid_metrics(teacher_dir, args.data),
            "student": valid_metrics(student_dir, args.data),
            "baseline": f_base.result(),
        }
        stage("evaluate", t)


if __name__ == "__main__":
    main()
