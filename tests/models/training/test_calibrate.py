"""Tests for models.training.calibrate: fitting temperatures, saving them, applying them at inference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.inference import load
from models.network import load_bundle, save_bundle
from models.probs import tempered
from models.training.calibrate import calibrate_model_dir, fit_temperature
from tests.fixtures.models import NEGATIVE, POSITIVE


def test_fit_temperature_recovers_the_temperature_labels_were_drawn_with() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(20000, 3))
    true_probs = tempered(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 2.0)
    labels = np.array([rng.choice(3, p=p) for p in true_probs])
    over_confident = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert fit_temperature(over_confident, labels) == pytest.approx(2.0, rel=0.08)
    assert fit_temperature(true_probs, labels) == pytest.approx(1.0, rel=0.08)


def test_tempering_keeps_the_argmax_and_one_is_the_identity() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.05, 0.15, 0.8]])
    assert np.allclose(tempered(probs, 1.0), probs)
    softer = tempered(probs, 3.0)
    assert (softer.argmax(1) == probs.argmax(1)).all() and (softer.max(1) < probs.max(1)).all()
    assert np.allclose(softer.sum(1), 1.0)


def test_saved_temperatures_soften_predictions_but_keep_labels(
    tiny_trained_dir: Path, tmp_path: Path
) -> None:
    texts = [NEGATIVE[0], POSITIVE[0], "Fed holds rates steady"]
    bundle = load_bundle(tiny_trained_dir)
    bundle.temperatures = (1.0, 1.0)
    save_bundle(bundle, tmp_path / "plain")
    bundle.temperatures = (1.0, 3.0)
    save_bundle(bundle, tmp_path / "hot")
    assert load_bundle(tmp_path / "hot").temperatures == (1.0, 3.0)
    plain = load(tmp_path / "plain").predict(texts)
    hot = load(tmp_path / "hot").predict(texts)
    for a, b in zip(plain, hot, strict=True):
        assert (a.sentiment, a.topic) == (b.sentiment, b.topic)
        assert a.topic_probs == pytest.approx(b.topic_probs, abs=1e-3)
        expected = tempered(np.array([list(a.sentiment_probs.values())]), 3.0)[0]
        assert list(b.sentiment_probs.values()) == pytest.approx(list(expected), abs=1e-4)


def test_calibrate_model_dir_writes_temperatures_from_the_training_hold_out(
    tiny_trained_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_trained_dir, model)
    report = calibrate_model_dir(model, tiny_data_dir, log=lambda _: None)
    assert set(report) == {"topic", "sentiment"}
    assert all(0.25 <= r["temperature"] <= 8.0 and r["n"] > 0 for r in report.values())
    assert load_bundle(model).temperatures == (
        report["topic"]["temperature"],
        report["sentiment"]["temperature"],
    )
    assert json.loads((model / "training_summary.json").read_text())["calibration"] == report
    assert load_bundle(model).version.startswith("finsent-gpt-1x32-")  # stamped anew: scores are keyed by it
    assert json.loads((model / "training_summary.json").read_text())["version"] == load_bundle(model).version


def test_calibrate_model_dir_refuses_a_model_re_fit_on_its_hold_out(
    tiny_trained_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_trained_dir, model)
    summary = json.loads((model / "training_summary.json").read_text())
    summary["recipe"]["finetune"] |= {"refit_epochs": 1.0, "refit_temperatures": [1.5, 2.0]}
    (model / "training_summary.json").write_text(json.dumps(summary))
    before = load_bundle(model).temperatures
    with pytest.raises(ValueError, match="no unseen hold-out"):
        calibrate_model_dir(model, tiny_data_dir, log=lambda _: None)
    assert load_bundle(model).temperatures == before
