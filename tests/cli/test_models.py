"""Tests for the model commands of the CLI: train, eval and classify."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from tests.fixtures.models import tiny_recipe_dict

runner = CliRunner()


def test_classify_file_gives_one_json_line_per_input_line(tiny_trained_dir: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "headlines.txt"
    inputs.write_text("Oil prices jump on supply cuts\n\nGlobex misses estimates 📉\n", encoding="utf-8")
    model = str(tiny_trained_dir)
    result = runner.invoke(app, ["classify", "--model", model, "--json", "--file", str(inputs)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3  # the empty line is an input too
    for row in rows:
        assert set(row) == {"topic", "topic_probs", "sentiment", "sentiment_probs", "score", "model_version"}
        assert row["sentiment"] in ("negative", "neutral", "positive")


def test_classify_texts_prints_one_line_each(tiny_trained_dir: Path) -> None:
    model = str(tiny_trained_dir)
    result = runner.invoke(app, ["classify", "--model", model, "Fed holds rates", "Oil slides"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].endswith("Fed holds rates")


def test_classify_without_input_is_a_usage_error(tiny_trained_dir: Path) -> None:
    result = runner.invoke(app, ["classify", "--model", str(tiny_trained_dir)])
    assert result.exit_code == 2
    assert "nothing to classify" in result.output


def test_eval_json_ends_with_model_and_baseline_metrics(tiny_trained_dir: Path, tiny_data_dir: Path) -> None:
    args = ["eval", "--model", str(tiny_trained_dir), "--data", str(tiny_data_dir), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["model_version"]
    for task in ("sentiment", "topic"):
        assert {"accuracy", "macro_f1", "weighted_f1", "ece", "n"} == set(summary[task])
        assert set(summary["baseline"][task]) == set(summary[task])


def test_train_from_scratch_with_a_recipe_then_rerun_resumes(tiny_data_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict()), encoding="utf-8")
    args = ["train", "--data", str(tiny_data_dir), "--recipe", str(recipe)]
    args += ["--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "model")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout.splitlines()[-1])
    assert summary["pretrain_tokens"] >= 4096 and summary["params"] > 0
    assert (tmp_path / "model" / "model.safetensors").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "pre-training already at" in again.stdout
    rerun = json.loads(again.stdout.splitlines()[-1])
    assert rerun["pretrain_tokens"] == summary["pretrain_tokens"]  # the same trunk budget as the first run
    # The rerun fine-tunes afresh and stamps its own version (the minute may have ticked since the first run).
    classified = runner.invoke(app, ["classify", "--model", str(tmp_path / "model"), "--json", "Fed holds"])
    assert json.loads(classified.stdout.splitlines()[-1])["model_version"] == rerun["version"]


def test_calibrate_rewrites_the_temperatures_of_a_model_dir(
    tiny_trained_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_trained_dir, model)
    result = runner.invoke(app, ["calibrate", "--model", str(model), "--data", str(tiny_data_dir)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.splitlines()[-1])
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    assert config["temperatures"] == {t: report[t]["temperature"] for t in ("topic", "sentiment")}


def test_calibrate_refuses_a_re_fit_model_with_a_one_line_error(
    tiny_trained_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_trained_dir, model)
    summary = json.loads((model / "training_summary.json").read_text(encoding="utf-8"))
    summary["recipe"]["finetune"] |= {"refit_epochs": 1.0, "refit_temperatures": [1.5, 2.0]}
    (model / "training_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    result = runner.invoke(app, ["calibrate", "--model", str(model), "--data", str(tiny_data_dir)])
    assert result.exit_code == 2
    assert "no unseen hold-out" in result.stderr and "Traceback" not in result.output
