"""Tests for models.distill: the TF-IDF teacher, unlabeled sampling, soft-target training, self_train."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import iter_unlabeled, load_train_examples, unlabeled_files
from models.distill import distill, fit_teacher, sample_unlabeled, soft_cross_entropy
from models.inference import batched_probabilities
from models.network import ModelBundle, classifier_from_language_model, load_base, load_bundle
from models.recipe import recipe_from_dict
from models.tokenizer import encode_for_classification
from models.train import train_model
from tests.fixtures.models import NEGATIVE, POSITIVE, tiny_recipe_dict

TINY_FILES = ["financial_news_headlines_2017_2020.txt.gz", "press_release_titles_2007_2015.txt.gz"]


def test_teacher_gives_distributions_in_our_label_order(tiny_data_dir: Path) -> None:
    teacher = fit_teacher(load_train_examples(tiny_data_dir))
    topic, sentiment = teacher.probabilities(
        [NEGATIVE[0], POSITIVE[0], "Fed raises rates by a quarter point"]
    )
    assert topic.shape == (3, 20) and sentiment.shape == (3, 3)
    assert np.allclose(topic.sum(1), 1.0) and np.allclose(sentiment.sum(1), 1.0)
    assert sentiment[0].argmax() == 0 and sentiment[1].argmax() == 2  # negative, positive
    assert topic[2].argmax() == 1  # Fed | Central Banks


def test_sample_takes_an_even_seeded_share_of_each_file(tiny_data_dir: Path) -> None:
    files = unlabeled_files(tiny_data_dir / "unlabeled")
    sample = sample_unlabeled(files, 40, seed=3)
    assert sample == sample_unlabeled(files, 40, seed=3)
    assert sample != sample_unlabeled(files, 40, seed=4)
    assert len(sample) == 40 and len(set(sample)) == 40
    per_file = [set(iter_unlabeled([f])) for f in files]
    assert [sum(line in lines for line in sample) for lines in per_file] == [20, 20]


def test_soft_cross_entropy_on_one_hot_targets_is_the_usual_cross_entropy() -> None:
    logits, y = torch.randn(5, 20), torch.tensor([0, 3, 19, 7, 7])
    one_hot = torch.nn.functional.one_hot(y, 20).float()
    expected = torch.nn.functional.cross_entropy(logits, y)
    assert soft_cross_entropy(logits, one_hot, 1.0) == pytest.approx(expected.item(), rel=1e-5)


def test_distillation_moves_the_student_towards_the_teacher(tiny_data_dir: Path, tiny_gpt2_dir: Path) -> None:
    torch.manual_seed(0)
    lm, tok = load_base(tiny_gpt2_dir)
    bundle = ModelBundle(classifier_from_language_model(lm, 0.0), tok, max_length=32)
    texts = sample_unlabeled(unlabeled_files(tiny_data_dir / "unlabeled"), 200, seed=0)
    topic_q, sent_q = fit_teacher(load_train_examples(tiny_data_dir)).probabilities(texts)
    seqs = encode_for_classification(tok, texts, 32)

    def divergence() -> float:
        bundle.model.eval()
        topic_p, sent_p = batched_probabilities(bundle.model, seqs, bundle.pad_id, 64, torch.device("cpu"))
        kl = lambda q, p: float(np.mean(np.sum(q * (np.log(q + 1e-9) - np.log(p + 1e-9)), axis=1)))  # noqa: E731
        return kl(topic_q, topic_p) + kl(sent_q, sent_p)

    before = divergence()
    spec = dataclasses.replace(recipe_from_dict({}).distill, epochs=6, batch_size=16, lr=3e-3, max_length=32)
    summary = distill(bundle, texts, topic_q, sent_q, spec, seed=0, log=lambda _: None)
    assert summary["examples"] == 6 * len(texts)
    assert divergence() < 0.5 * before


def test_recipe_with_distillation_trains_through_the_teacher(
    tiny_data_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    data = tiny_recipe_dict()
    data["distill"] = {"lines": 60, "files": TINY_FILES, "epochs": 2, "batch_size": 16, "max_length": 32}
    recipe = recipe_from_dict(data)
    assert recipe.distill.files == tuple(TINY_FILES)
    summary = train_model(
        recipe,
        tiny_data_dir,
        tmp_path / "model",
        unlabeled_dir=tiny_data_dir / "unlabeled",
        base=tiny_gpt2_dir,
        log=lambda _: None,
    )
    assert summary["distill"]["lines"] == 60 and summary["distill"]["examples"] == 120
    assert set(summary["distill"]["heldout"]) == {"topic_accuracy", "sentiment_weighted_f1", "score"}
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_distillation_names_a_missing_unlabeled_file(
    tiny_data_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    data = tiny_recipe_dict()
    data["distill"] = {"lines": 10, "files": ["no_such_corpus.txt.gz"]}
    with pytest.raises(FileNotFoundError, match="no_such_corpus"):
        train_model(
            recipe_from_dict(data),
            tiny_data_dir,
            tmp_path / "model",
            unlabeled_dir=tiny_data_dir / "unlabeled",
            base=tiny_gpt2_dir,
            log=lambda _: None,
        )


def test_second_round_mixes_the_student_into_the_teacher_and_resumes(
    tiny_data_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    data = tiny_recipe_dict()
    data["distill"] = {
        "lines": 40,
        "files": TINY_FILES,
        "batch_size": 16,
        "max_length": 32,
        "rounds": 2,
        "student_weight": 0.5,
        "later_finetune_lr": 1e-4,
    }
    recipe = recipe_from_dict(data)
    out = tmp_path / "model"
    run = lambda: train_model(  # noqa: E731
        recipe,
        tiny_data_dir,
        out,
        unlabeled_dir=tiny_data_dir / "unlabeled",
        base=tiny_gpt2_dir,
        log=lambda _: None,
    )
    first = run()
    assert [r["round"] for r in first["rounds"]] == [1, 2]
    assert [r["distill"]["student_weight"] for r in first["rounds"]] == [0.0, 0.5]
    assert first["finetune"] == first["rounds"][1]["finetune"]
    round1 = out / "round1"
    assert (round1 / "model.safetensors").is_file() and (round1 / "training_summary.json").is_file()
    assert (out / "round2-distilled" / "distill_summary.json").is_file()
    # A rerun starts from the saved first-round student, and from the second round's distilled
    # student, instead of training them again; only the last fine-tuning runs again.
    again = run()
    assert again["rounds"][0]["resumed_from"] == load_bundle(round1).version
    assert again["rounds"][0]["finetune"] == first["rounds"][0]["finetune"]
    assert again["rounds"][1]["distill"] == first["rounds"][1]["distill"]


def test_recipe_rejects_zero_rounds() -> None:
    with pytest.raises(ValueError, match="rounds"):
        recipe_from_dict({"distill": {"lines": 10, "rounds": 0}})
