"""Tests for scripts/train_on_gpu.py: the teacher → student run, end to end on tiny recipes (on the CPU)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from models.network import load_bundle
from models.training.distill import sample_unlabeled
from models.training.recipe import recipe_from_dict
from scripts.train_on_gpu import DISTILL_SAMPLE, SHARES, ensure_distill_sample
from tests.fixtures.models import tiny_recipe_dict

REPO = Path(__file__).resolve().parent.parent
TINY_FILES = ["financial_news_headlines_2017_2020.txt.gz", "press_release_titles_2007_2015.txt.gz"]


def test_the_distill_sample_holds_the_lines_the_default_recipe_would_sample(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    unlabeled = shutil.copytree(tiny_data_dir / "unlabeled", tmp_path / "unlabeled")
    default = recipe_from_dict({"distill": {"lines": 60, "files": TINY_FILES}})
    student = recipe_from_dict({"distill": {"lines": 60, "files": [DISTILL_SAMPLE]}})
    ensure_distill_sample(unlabeled, student, default)
    wanted = sample_unlabeled([unlabeled / name for name in TINY_FILES], 60, 0)
    with gzip.open(unlabeled / DISTILL_SAMPLE, "rt", encoding="utf-8") as fh:
        assert [line.rstrip("\n") for line in fh] == wanted
    # Sampled again as the student recipe names it, it gives the same lines in the same order.
    assert sample_unlabeled([unlabeled / DISTILL_SAMPLE], len(wanted), 0) == wanted


def test_a_run_trains_the_teacher_then_the_student_and_reports_both(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    unlabeled = shutil.copytree(tiny_data_dir / "unlabeled", tmp_path / "unlabeled")
    teacher = tiny_recipe_dict()
    student = tiny_recipe_dict() | {
        "distill": {"lines": 40, "files": [DISTILL_SAMPLE], "batch_size": 16, "max_length": 32}
    }
    lines = sample_unlabeled([unlabeled / name for name in TINY_FILES], 40, 0)
    with gzip.open(unlabeled / DISTILL_SAMPLE, "wt", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in lines)
    for name, recipe in (("teacher", teacher), ("student", student)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out, work = tmp_path / "out", tmp_path / "work"
    run = subprocess.run(
        [sys.executable, "-m", "scripts.train_on_gpu", "--data", str(tiny_data_dir),
         "--unlabeled", str(unlabeled), "--work", str(work), "--out", str(out),
         "--teacher-recipe", str(tmp_path / "teacher.yaml"),
         "--student-recipe", str(tmp_path / "student.yaml"),
         "--budget-s", "4", "--reserve-s", "0", "--stage-minutes", "0.5"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert list(report["stages"]) == [
        "pretrain",
        "teacher_finetune",
        "teacher_share",
        "student",
        "pack",
        "evaluate",
    ]
    pre = report["stages"]["pretrain"]
    assert pre["tokens"] > 0 and pre["tokens_per_s"] > 0
    share = report["stages"]["teacher_share"]
    assert [row["share"] for row in share["shares"]] == list(SHARES)
    assert share["chosen"] == max(share["shares"], key=lambda row: row["score"])
    for who in ("teacher", "student", "baseline"):
        assert {"accuracy", "weighted_f1", "macro_f1", "ece", "n"} <= set(report["valid"][who]["sentiment"])
    # The student comes back as a model directory; its summary names the teacher it learned from.
    with tarfile.open(out / "student.tar") as tar:
        tar.extractall(tmp_path / "back", filter="data")
    summary = json.loads(
        (tmp_path / "back" / "student" / "training_summary.json").read_text(encoding="utf-8")
    )
    assert summary["distill"]["teacher_model"] == report["stages"]["teacher_finetune"]["version"]
    assert summary["distill"]["student_weight"] == share["chosen"]["share"]
    assert summary["recipe"]["distill"]["teacher_model"] == "teacher"
    assert load_bundle(tmp_path / "back" / "student").version == report["stages"]["student"]["version"]
    with tarfile.open(out / "targets-texts.tar") as tar:
        assert sorted(tar.getnames()) == ["cross_labels.jsonl.gz", "pseudo_labels.jsonl.gz"]
    with tarfile.open(out / "targets-probs.tar") as tar:
        assert sorted(tar.getnames()) == ["cross_labels.npz", "pseudo_labels.npz"]
