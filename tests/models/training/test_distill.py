"""Tests for models.training.distill: TF-IDF teacher, unlabeled sampling, soft-target training, self_train."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import (
    SENTIMENT_NAMES,
    Example,
    holdout_split,
    iter_unlabeled,
    load_train_examples,
    unlabeled_files,
)
from models.inference import batched_probabilities
from models.network import load_bundle, save_bundle
from models.tokenizer import encode_for_classification
from models.training.distill import (
    PseudoLabels,
    SoftTargets,
    cross_texts,
    distill,
    fit_teacher,
    mix_in_models,
    pseudo_label,
    sample_unlabeled,
    self_train,
    soft_cross_entropy,
    tfidf_targets,
)
from models.training.finetune import finetune
from models.training.recipe import Recipe, recipe_from_dict
from models.training.run import train_model
from tests.fixtures.models import NEGATIVE, NEUTRAL, POSITIVE, tiny_bundle, tiny_recipe_dict

TINY_FILES = ["financial_news_headlines_2017_2020.txt.gz", "press_release_titles_2007_2015.txt.gz"]


def _train(recipe: Recipe, data_dir: Path, gpt2_dir: Path, out: Path) -> dict:
    """Return the summary of training ``recipe`` on the tiny data from the tiny GPT-2, quietly."""
    return train_model(
        recipe, data_dir, out, unlabeled_dir=data_dir / "unlabeled", base=gpt2_dir, log=lambda _: None
    )


def test_teacher_gives_distributions_in_our_label_order(tiny_data_dir: Path) -> None:
    teacher = fit_teacher(load_train_examples(tiny_data_dir))
    topic, sentiment = teacher.probabilities(
        [NEGATIVE[0], POSITIVE[0], "Fed raises rates by a quarter point"]
    )
    assert topic.shape == (3, 20) and sentiment.shape == (3, 3)
    assert np.allclose(topic.sum(1), 1.0) and np.allclose(sentiment.sum(1), 1.0)
    assert sentiment[0].argmax() == 0 and sentiment[1].argmax() == 2  # negative, positive
    assert topic[2].argmax() == 1  # Fed | Central Banks


def test_a_balanced_teacher_gives_the_rare_sentiment_classes_more_weight(tiny_data_dir: Path) -> None:
    # Mostly neutral, as the real set (65 % neutral): the rare classes get less mass from a plain fit.
    examples = load_train_examples(tiny_data_dir) + [
        Example(f"{text} today", sentiment=1) for text in NEUTRAL for _ in range(8)
    ]
    texts = [*POSITIVE, *NEGATIVE, *NEUTRAL, "Initech shares move", "Acme stock news"]
    _, plain = fit_teacher(examples).probabilities(texts)
    _, balanced = fit_teacher(examples, class_weight="balanced").probabilities(texts)
    neutral = SENTIMENT_NAMES.index("neutral")
    assert balanced[:, neutral].mean() < plain[:, neutral].mean()
    assert np.allclose(balanced.sum(1), 1.0)


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
    bundle = tiny_bundle(tiny_gpt2_dir)
    tok = bundle.tokenizer
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
    summary = _train(recipe, tiny_data_dir, tiny_gpt2_dir, tmp_path / "model")
    assert summary["distill"]["lines"] == 60 and summary["distill"]["examples"] == 120
    assert set(summary["distill"]["heldout"]) == {"topic_accuracy", "sentiment_weighted_f1", "score"}
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_distillation_names_a_missing_unlabeled_file(
    tiny_data_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    data = tiny_recipe_dict()
    data["distill"] = {"lines": 10, "files": ["no_such_corpus.txt.gz"]}
    with pytest.raises(FileNotFoundError, match="no_such_corpus"):
        _train(recipe_from_dict(data), tiny_data_dir, tiny_gpt2_dir, tmp_path / "model")


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
    data["finetune"]["distill_mix"] = 0.5  # fine-tuning also reads each round's pseudo-labels
    recipe = recipe_from_dict(data)
    out = tmp_path / "model"
    run = lambda: _train(recipe, tiny_data_dir, tiny_gpt2_dir, out)  # noqa: E731
    first = run()
    assert [r["round"] for r in first["rounds"]] == [1, 2]
    assert [r["distill"]["student_weight"] for r in first["rounds"]] == [0.0, 0.5]
    assert [r["finetune"]["lr"] for r in first["rounds"]] == [recipe.finetune.lr, 1e-4]
    assert first["finetune"] == first["rounds"][1]["finetune"]
    round1 = out / "round1"
    assert (round1 / "model.safetensors").is_file() and (round1 / "training_summary.json").is_file()
    assert (out / "round2-distilled" / "distill_summary.json").is_file()
    # A rerun starts from the saved first-round student, and from the second round's distilled
    # student, instead of training them again; only the last fine-tuning runs again.
    done = json.loads((round1 / "training_summary.json").read_text(encoding="utf-8"))
    assert first["pretrain_tokens"] is None  # a hub base: no pre-training here
    done["pretrain_tokens"] = 12_345  # as if round 1 had been trained on a pre-trained trunk
    (round1 / "training_summary.json").write_text(json.dumps(done), encoding="utf-8")
    again = run()
    assert again["rounds"][0]["resumed_from"] == load_bundle(round1).version
    assert again["pretrain_tokens"] == 12_345  # the trunk is the resumed student's
    assert again["rounds"][0]["finetune"] == first["rounds"][0]["finetune"]
    assert again["rounds"][1]["distill"] == first["rounds"][1]["distill"]
    # Same pseudo-labels, read back; the distilled student was saved in fp16, so the loss moves a hair.
    assert again["finetune"]["best"] == pytest.approx(first["finetune"]["best"], rel=1e-3)


def test_recipe_rejects_an_unknown_teacher_class_weight() -> None:
    data = tiny_recipe_dict()
    data["distill"] = {"teacher_class_weight": "inverse"}
    with pytest.raises(ValueError, match="teacher_class_weight"):
        recipe_from_dict(data)


def test_recipe_rejects_zero_rounds() -> None:
    with pytest.raises(ValueError, match="rounds"):
        recipe_from_dict({"distill": {"lines": 10, "rounds": 0}})


def test_pseudo_labels_survive_a_save_and_load_with_any_characters(tmp_path: Path) -> None:
    texts = ["plain headline", "line\nbreak and\r return", "Ünïcode 📉 \u2028 separator", ""]
    labels = PseudoLabels(
        texts, np.random.rand(4, 20).astype(np.float32), np.random.rand(4, 3).astype(np.float32)
    )
    assert PseudoLabels.load(tmp_path) is None
    labels.save(tmp_path, "cross_labels")
    assert PseudoLabels.load(tmp_path) is None
    back = PseudoLabels.load(tmp_path, "cross_labels")
    assert back is not None and back.texts == texts
    assert np.array_equal(back.topic, labels.topic) and np.array_equal(back.sentiment, labels.sentiment)


def _pool_recipe_dict() -> dict:
    """Return a tiny recipe that pseudo-labels 30 unlabeled lines."""
    data = tiny_recipe_dict()
    data["distill"] = {"lines": 30, "files": TINY_FILES, "batch_size": 16, "max_length": 32}
    return data


def test_self_train_reads_its_cached_pseudo_labels_on_a_rerun(
    tiny_data_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    data = _pool_recipe_dict()
    recipe = recipe_from_dict(data)
    examples = load_train_examples(tiny_data_dir)
    unlabeled = tiny_data_dir / "unlabeled"
    cache = tmp_path / "round1-distilled"
    _, first_targets = self_train(
        tiny_bundle(tiny_gpt2_dir), examples, recipe, unlabeled, lambda _: None, cache_dir=cache
    )
    first = first_targets.pool
    assert len(first.texts) == 30 and (cache / "pseudo_labels.npz").is_file()
    fit_texts = {e.text for e in holdout_split(examples, 0.1, 0)[0]}
    assert first_targets.cross.texts and set(first_targets.cross.texts) <= fit_texts
    # The rerun must not need the unlabeled text at all: it reads the labels back.
    lines: list[str] = []
    _, again_targets = self_train(
        tiny_bundle(tiny_gpt2_dir), examples, recipe, tmp_path / "nowhere", lines.append, cache_dir=cache
    )
    again = again_targets.pool
    assert again.texts == first.texts and np.array_equal(again.sentiment, first.sentiment)
    assert again_targets.cross.texts == first_targets.cross.texts
    assert any("read 30 pseudo-labeled lines" in line for line in lines)


def test_zero_distillation_epochs_label_the_pool_but_leave_the_student_as_it_was(
    tiny_data_dir: Path, tiny_gpt2_dir: Path
) -> None:
    data = _pool_recipe_dict()
    data["distill"]["epochs"] = 0
    student = tiny_bundle(tiny_gpt2_dir)
    before = {k: v.clone() for k, v in student.model.state_dict().items()}
    summary, targets = self_train(
        student, load_train_examples(tiny_data_dir), recipe_from_dict(data), tiny_data_dir / "unlabeled"
    )
    assert summary["steps"] == 0 and len(targets.pool.texts) == 30
    for name, weight in student.model.state_dict().items():
        assert torch.equal(weight, before[name]), name
    data["distill"]["epochs"] = -1
    with pytest.raises(ValueError, match=r"distill\.epochs"):
        recipe_from_dict(data)


def test_a_calibrated_student_joins_the_teacher_softer_and_leaves_the_bundle_uncalibrated(
    tiny_data_dir: Path, tiny_gpt2_dir: Path
) -> None:
    data = tiny_recipe_dict()
    data["distill"] = {"lines": 30, "files": TINY_FILES, "max_length": 32}
    examples = load_train_examples(tiny_data_dir)
    unlabeled = tiny_data_dir / "unlabeled"
    bundle = tiny_bundle(tiny_gpt2_dir)
    # An over-confident student: scaled-up head weights, as after fine-tuning to a near-zero loss.
    with torch.no_grad():
        bundle.model.sentiment_head.weight.mul_(50.0)
        bundle.model.topic_head.weight.mul_(50.0)
    raw = pseudo_label(examples, recipe_from_dict(data), unlabeled, [(bundle, 1.0)], lambda _: None).pool
    data["distill"]["calibrate_student"] = True
    calibrated = pseudo_label(
        examples, recipe_from_dict(data), unlabeled, [(bundle, 1.0)], lambda _: None
    ).pool
    entropy = lambda p: float(-(p * np.log(p + 1e-12)).sum(1).mean())  # noqa: E731
    assert entropy(calibrated.sentiment) > entropy(raw.sentiment)
    assert bundle.temperatures == (1.0, 1.0)


def test_fine_tuning_with_a_distill_mix_learns_the_pool_too(tiny_data_dir: Path, tiny_gpt2_dir: Path) -> None:
    examples = load_train_examples(tiny_data_dir)
    texts = sample_unlabeled(unlabeled_files(tiny_data_dir / "unlabeled"), 60, seed=0)
    # Pool targets no labeled example has: every line is "positive" and topic 5.
    pool = PseudoLabels(texts, np.eye(20, dtype=np.float32)[[5] * 60], np.eye(3, dtype=np.float32)[[2] * 60])
    no_cross = PseudoLabels([], np.zeros((0, 20), np.float32), np.zeros((0, 3), np.float32))
    seqs = encode_for_classification(tiny_bundle(tiny_gpt2_dir).tokenizer, texts, 32)
    spec = dataclasses.replace(
        recipe_from_dict({}).finetune, epochs=4, batch_size=16, lr=3e-3, max_length=32, evals_per_epoch=1
    )

    def positive_share(mix: float) -> float:
        bundle = tiny_bundle(tiny_gpt2_dir)
        finetune(
            bundle,
            examples,
            dataclasses.replace(spec, distill_mix=mix),
            0,
            log=lambda _: None,
            targets=SoftTargets(pool, no_cross),
        )
        _, sent = batched_probabilities(bundle.model, seqs, bundle.pad_id, 64, torch.device("cpu"))
        return float((sent.argmax(1) == 2).mean())

    mixed = positive_share(1.0)
    assert mixed > 0.8 and mixed > positive_share(0.0)
    with pytest.raises(ValueError, match="teacher targets"):
        finetune(tiny_bundle(tiny_gpt2_dir), examples, dataclasses.replace(spec, distill_mix=1.0), 0)


def test_cross_texts_are_those_missing_a_label() -> None:
    examples = [
        Example("only topic", topic=3),
        Example("only sentiment", sentiment=0),
        Example("both, in two rows", topic=1),
        Example("both, in two rows", sentiment=2),
        Example("only topic", topic=3),
    ]
    assert cross_texts(examples) == ["only topic", "only sentiment"]


def test_cross_labels_teach_each_text_the_head_it_has_no_label_for(
    tiny_data_dir: Path, tiny_gpt2_dir: Path
) -> None:
    examples = load_train_examples(tiny_data_dir)
    fit = holdout_split(examples, 0.1, 0)[0]
    topic_only = [e.text for e in fit if e.topic is not None and e.sentiment is None]
    assert topic_only
    # The teacher says every topic-only text is "positive": fine-tuning must learn that for them.
    texts = cross_texts(fit)
    cross = PseudoLabels(
        texts, np.full((len(texts), 20), 0.05, np.float32), np.eye(3, dtype=np.float32)[[2] * len(texts)]
    )
    no_pool = PseudoLabels(["a line"], np.full((1, 20), 0.05, np.float32), np.full((1, 3), 1 / 3, np.float32))
    seqs = encode_for_classification(tiny_bundle(tiny_gpt2_dir).tokenizer, topic_only, 32)
    spec = dataclasses.replace(
        recipe_from_dict({}).finetune, epochs=4, batch_size=16, lr=3e-3, max_length=32, evals_per_epoch=1
    )

    def positive_share(weight: float) -> float:
        bundle = tiny_bundle(tiny_gpt2_dir)
        tuned = dataclasses.replace(spec, cross_labels=weight)
        finetune(bundle, examples, tuned, 0, log=lambda _: None, targets=SoftTargets(no_pool, cross))
        _, sent = batched_probabilities(bundle.model, seqs, bundle.pad_id, 64, torch.device("cpu"))
        return float((sent.argmax(1) == 2).mean())

    crossed = positive_share(1.0)
    assert crossed > 0.8 and crossed > positive_share(0.0)


def test_a_saved_teacher_model_joins_the_first_round_teacher(
    tiny_data_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    data = _pool_recipe_dict()
    examples = load_train_examples(tiny_data_dir)
    unlabeled = tiny_data_dir / "unlabeled"
    plain = pseudo_label(examples, recipe_from_dict(data), unlabeled, log=lambda _: None).pool
    saved = tiny_bundle(tiny_gpt2_dir)
    with torch.no_grad():  # a teacher model that is sure every text is negative
        saved.model.sentiment_head.bias.copy_(torch.tensor([20.0, 0.0, 0.0]))
    save_bundle(saved, tmp_path / "teacher")
    data["distill"] |= {
        "teacher_model": str(tmp_path / "teacher"),
        "student_weight": 0.5,
        "later_finetune_lr": 1e-4,
    }
    train = lambda out: _train(recipe_from_dict(data), tiny_data_dir, tiny_gpt2_dir, out)  # noqa: E731
    summary = train(tmp_path / "model")
    assert summary["distill"]["teacher_model"] == load_bundle(tmp_path / "teacher").version
    # The recipe as run names the teacher by its directory, not by a path of the training machine.
    assert summary["recipe"]["distill"]["teacher_model"] == "teacher"
    assert summary["distill"]["student_weight"] == 0.5
    # A student in the teacher makes round 1 a "later" round: it fine-tunes gently.
    assert summary["finetune"]["lr"] == 1e-4
    mixed = SoftTargets.load(tmp_path / "model" / "round1-distilled").pool
    assert mixed.texts == plain.texts
    # Half of each sentiment target is the saved model's certain "negative", half the TF-IDF teacher's.
    assert np.allclose(mixed.sentiment, 0.5 * plain.sentiment + 0.5 * np.array([1.0, 0.0, 0.0]), atol=1e-3)
    data["distill"]["teacher_model"] = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="teacher_model"):
        train(tmp_path / "again")


def test_several_saved_models_join_the_teacher_each_at_its_share(
    tiny_data_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    data = _pool_recipe_dict()
    plain = pseudo_label(
        load_train_examples(tiny_data_dir),
        recipe_from_dict(data),
        tiny_data_dir / "unlabeled",
        log=lambda _: None,
    ).pool
    for name, sure in (("negative", 0), ("positive", 2)):  # teacher models each sure of one class
        saved = tiny_bundle(tiny_gpt2_dir)
        with torch.no_grad():
            saved.model.sentiment_head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(sure), 3) * 20.0)
        saved.version = f"teacher-{name}"
        save_bundle(saved, tmp_path / name)
    data["distill"]["teacher_model"] = {str(tmp_path / "negative"): 0.25, str(tmp_path / "positive"): 0.5}
    summary = _train(recipe_from_dict(data), tiny_data_dir, tiny_gpt2_dir, tmp_path / "model")
    mixed = SoftTargets.load(tmp_path / "model" / "round1-distilled").pool
    assert mixed.texts == plain.texts
    want = 0.25 * plain.sentiment + 0.25 * np.array([1.0, 0.0, 0.0]) + 0.5 * np.array([0.0, 0.0, 1.0])
    assert np.allclose(mixed.sentiment, want, atol=1e-3)
    assert np.allclose(mixed.topic.sum(1), 1.0, atol=1e-4)
    assert summary["distill"]["teacher_model"] == {"teacher-negative": 0.25, "teacher-positive": 0.5}
    assert summary["distill"]["student_weight"] == 0.75
    assert summary["recipe"]["distill"]["teacher_model"] == {"negative": 0.25, "positive": 0.5}


def test_teacher_model_shares_must_leave_the_tfidf_teacher_a_share() -> None:
    data = tiny_recipe_dict()
    data["distill"] = {"lines": 30, "teacher_model": {"a": 0.6, "b": 0.5}}
    with pytest.raises(ValueError, match="sum to at most 1"):
        recipe_from_dict(data)
    data["distill"]["teacher_model"] = {"a": -0.1}
    with pytest.raises(ValueError, match=">= 0"):
        recipe_from_dict(data)


def test_a_refit_last_round_fits_its_teacher_and_student_on_the_hold_out_too(
    tiny_data_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    data = _pool_recipe_dict()
    data["distill"] |= {"rounds": 2, "later_finetune_lr": 1e-4}
    data["finetune"] |= {"refit_epochs": 1.5, "refit_temperatures": [1.25, 1.5]}
    recipe = recipe_from_dict(data)
    out = tmp_path / "model"
    summary = _train(recipe, tiny_data_dir, tiny_gpt2_dir, out)
    first, last = summary["rounds"]
    # Round 1 keeps the hold-out: it is measured on it and selected by it.
    assert first["finetune"]["refit_epochs"] is None and "score" in first["finetune"]["best"]
    assert "heldout" in first["distill"] and not first["distill"]["refit"]
    # The last round learns from all of train, so the hold-out can no longer measure it.
    assert last["finetune"]["refit_epochs"] == 1.5 and "score" not in last["finetune"]["best"]
    assert last["distill"]["refit"] and "heldout" not in last["distill"]
    assert last["finetune"]["lr"] == 1e-4
    examples = load_train_examples(tiny_data_dir)
    targets = SoftTargets.load(out / "round2-refit-distilled")
    assert targets is not None and targets.cross.texts == cross_texts(examples)
    # The re-fit model has seen the hold-out, so its temperatures come from the recipe.
    assert load_bundle(out).temperatures == (1.25, 1.5)
    assert summary["calibration"] == {"refit_temperatures": [1.25, 1.5]}


def test_a_refit_teacher_is_fit_on_the_hold_out_too(tiny_data_dir: Path, tiny_gpt2_dir: Path) -> None:
    recipe = recipe_from_dict(_pool_recipe_dict())
    examples = load_train_examples(tiny_data_dir)
    fit, held = holdout_split(examples, recipe.finetune.holdout_fraction, recipe.seed)
    label = lambda refit: pseudo_label(examples, recipe, tiny_data_dir / "unlabeled", refit=refit)  # noqa: E731
    held_out, refit = label(False), label(True)
    assert held_out.cross.texts == cross_texts(fit) and refit.cross.texts == cross_texts(examples)
    assert refit.pool.texts == held_out.pool.texts
    # The same TF-IDF teacher on more examples: other targets (the hold-out moved its class counts).
    assert held and not np.allclose(refit.pool.sentiment, held_out.pool.sentiment, atol=1e-4)


def test_pseudo_labels_are_the_tfidf_targets_with_the_student_share_mixed_in(
    tiny_data_dir: Path, tiny_gpt2_dir: Path
) -> None:
    recipe = recipe_from_dict(_pool_recipe_dict())
    examples = load_train_examples(tiny_data_dir)
    unlabeled = tiny_data_dir / "unlabeled"
    tfidf = tfidf_targets(examples, recipe, unlabeled)
    whole = pseudo_label(examples, recipe, unlabeled, [(tiny_bundle(tiny_gpt2_dir), 0.3)], lambda _: None)
    # The two parts (a GPU run computes the first in a worker process) give what pseudo_label gives.
    parts = mix_in_models(tfidf, [(tiny_bundle(tiny_gpt2_dir), 0.3)], examples, recipe, lambda _: None)
    for got, want, plain in ((parts.pool, whole.pool, tfidf.pool), (parts.cross, whole.cross, tfidf.cross)):
        assert got.texts == want.texts == plain.texts
        assert np.allclose(got.sentiment, want.sentiment, atol=1e-6)
        assert np.allclose(got.topic, want.topic, atol=1e-6)
        assert not np.allclose(got.sentiment, plain.sentiment, atol=1e-3)  # the student moved them
    assert np.allclose(tfidf.pool.sentiment.sum(1), 1.0, atol=1e-5)
