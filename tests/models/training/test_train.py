"""Tests for models.training: schedule, masked joint loss, class weights, pre-training, fine-tuning."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from itertools import pairwise
from pathlib import Path

import pytest
import safetensors.torch
import torch

from models.data import load_train_examples
from models.network import is_classifier_dir, load_base, load_bundle, save_bundle
from models.tokenizer import clean_text, load_tokenizer, special_ids
from models.training.finetune import IGNORE, class_weights, finetune, joint_loss
from models.training.loop import LOG_FILE, bucketed_batches, lr_at
from models.training.pretrain import (
    SEED_STATE_FILE,
    SHIPPED_SEED,
    export_pretrain_seed,
    packed_blocks,
    place_shipped_seed,
    pretrain,
)
from models.training.recipe import Recipe, RecipeError, load_recipe, recipe_from_dict
from models.training.run import teacher_model_dir, train_model
from tests.fixtures.models import tiny_bundle, tiny_recipe_dict


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    rates = [lr_at(s, 1.0, warmup=10, total=110, min_ratio=0.1) for s in range(0, 200)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[60] == pytest.approx(0.55)
    assert rates[110] == pytest.approx(0.1) and rates[199] == pytest.approx(0.1)
    assert all(a >= b for a, b in pairwise(rates[9:]))


def test_example_without_topic_label_does_not_train_the_topic_head() -> None:
    head_t, head_s = torch.nn.Linear(4, 20), torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    loss = joint_loss(head_t(x), head_s(x), torch.tensor([IGNORE, IGNORE]), torch.tensor([0, 2]))
    loss.backward()
    assert head_t.weight.grad is None or torch.count_nonzero(head_t.weight.grad) == 0
    assert head_s.weight.grad.abs().sum() > 0


def test_batch_with_no_labels_for_a_head_gives_a_finite_loss() -> None:
    no_sentiment = torch.tensor([IGNORE, IGNORE])
    loss = joint_loss(torch.randn(2, 20), torch.randn(2, 3), torch.tensor([5, 1]), no_sentiment)
    assert torch.isfinite(loss)


def test_balanced_weights_favour_rare_classes_and_average_one() -> None:
    labels = [0] * 90 + [1] * 10
    weights = class_weights(labels, 3, "sqrt_inverse")
    assert weights[1] == pytest.approx(3 * weights[0])
    assert (weights[0] * 90 + weights[1] * 10) / 100 == pytest.approx(1.0)
    assert weights[2] == 0
    assert class_weights(labels, 3, "none") is None


def test_bucketed_batches_cover_every_example_once() -> None:
    lengths = [random.Random(1).randint(1, 60) for _ in range(1000)]
    batches = bucketed_batches(lengths, 32, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert all(len(b) <= 32 for b in batches)


def test_recipe_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("pretrain:\n  tokenz: 5\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"\[pretrain\]: unknown keys \['tokenz'\]"):
        load_recipe(path)


RECIPES = Path(__file__).resolve().parents[3] / "models" / "recipes"


def test_cpu_recipe_loads() -> None:
    recipe = load_recipe(RECIPES / "default.yaml")
    assert recipe.model.n_layer >= 1 and recipe.pretrain.tokens > 0


TEACHERS_README = (RECIPES.parent / "teachers" / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_committed_recipe_loads_and_each_saved_model_it_reads_is_committed_or_rebuildable(
    path: Path,
) -> None:
    """A recipe's saved models are in the tree, or models/teachers/README.md says how to rebuild them."""
    recipe = load_recipe(path)
    for name in [*recipe.distill.teacher_shares(), *recipe.finetune.average_with]:
        if name.startswith("models/gpu-"):  # the GPU recipes' teacher is written by the first of them
            continue
        if (RECIPES.parents[1] / name).exists():
            assert is_classifier_dir(teacher_model_dir(name)), name
        else:
            rebuilt = Path(name).name
            assert f"| `{rebuilt}` |" in TEACHERS_README, f"{name}: neither committed nor documented"


def test_shipped_model_was_trained_by_the_committed_recipes_from_committed_models() -> None:
    from models.inference import DEFAULT_MODEL_DIR

    shipped = json.loads((DEFAULT_MODEL_DIR / "training_summary.json").read_text(encoding="utf-8"))
    # News round 1 trained on from the previous default, kept in models/teachers/ for that.
    assert recipe_from_dict(shipped["recipe"]) == load_recipe(RECIPES / "news.yaml")
    previous_dir = teacher_model_dir("models/teachers/finsent-gpt-4x256-20261130-0859")
    previous = json.loads((previous_dir / "training_summary.json").read_text(encoding="utf-8"))
    assert shipped["base_version"] == load_bundle(previous_dir).version == previous["version"]
    assert shipped["base_summary"] == previous
    # That one: the lexical part beside the ensemble round's GPT (whose teachers are rebuilt by recipe).
    assert recipe_from_dict(previous["recipe"]) == load_recipe(RECIPES / "lexical.yaml")
    assert recipe_from_dict(previous["base_summary"]["recipe"]) == load_recipe(
        RECIPES / "ensemble-round.yaml"
    )
    # The news hold-outs stayed out of training, and no evaluation file was read.
    assert shipped["news"]["heldout"]["news"] == 1892 + 167
    assert shipped["recipe"]["lexical"]["refit"] is False
    assert "sentivent" not in json.dumps(shipped["recipe"])
    assert shipped["lexical"]["share"] == load_bundle(DEFAULT_MODEL_DIR).lexical.share
    seed = json.loads((SHIPPED_SEED / "config.json").read_text(encoding="utf-8"))
    teacher = load_recipe(RECIPES / "gpu-teacher.yaml")
    assert (seed["n_layer"], seed["n_embd"], seed["vocab_size"]) == (4, 256, teacher.tokenizer.vocab_size)


def test_pretraining_lowers_lm_loss_and_resumes_where_it_stopped(tiny_data_dir: Path, tmp_path: Path) -> None:
    recipe = recipe_from_dict(tiny_recipe_dict())
    ckpt, unlabeled = tmp_path / "ckpt", tiny_data_dir / "unlabeled"

    def budget(tokens: int) -> Recipe:
        return dataclasses.replace(recipe, pretrain=dataclasses.replace(recipe.pretrain, tokens=tokens))

    first = pretrain(ckpt, budget(128), tiny_data_dir, unlabeled, log=lambda _: None)  # one step
    assert first.step == 1 and first.lines > 0
    second = pretrain(ckpt, budget(4096), tiny_data_dir, unlabeled, log=lambda _: None)
    assert second.step == 32 and second.tokens == 4096
    assert second.last_loss < first.last_loss - 0.5
    third = pretrain(ckpt, budget(8192), tiny_data_dir, unlabeled, log=lambda _: None)
    assert third.step == 64 and third.lines > second.lines  # the tiny corpus wraps around: a new pass
    records = [json.loads(line) for line in (ckpt / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in records if r.get("done")] == [1, 32, 64]
    # The checkpoint is a plain transformers causal LM: usable as --base.
    lm, tok = load_base(ckpt)
    assert lm.config.n_layer == recipe.model.n_layer and tok.get_vocab_size() <= 320


def test_finetuning_on_a_toy_set_improves_held_out_and_keeps_the_best(
    tiny_data_dir: Path, tiny_gpt2_dir: Path
) -> None:
    recipe = recipe_from_dict(tiny_recipe_dict())
    bundle = tiny_bundle(tiny_gpt2_dir)
    spec = dataclasses.replace(recipe.finetune, holdout_fraction=0.3)
    result = finetune(bundle, load_train_examples(tiny_data_dir), spec, seed=0, log=lambda _: None)
    scores = [h["score"] for h in result.history]
    assert result.best["score"] == max(scores)
    assert max(scores) > scores[0]
    assert result.history[-1]["loss"] < 2.0  # started near ln(20) + ln(3) = 4.1


def test_finetuning_time_budget_stops_at_the_first_evaluation(
    tiny_data_dir: Path, tiny_gpt2_dir: Path
) -> None:
    recipe = recipe_from_dict(tiny_recipe_dict())
    bundle = tiny_bundle(tiny_gpt2_dir)
    examples = load_train_examples(tiny_data_dir)
    result = finetune(bundle, examples, recipe.finetune, seed=0, log=lambda _: None, max_minutes=0.0)
    assert len(result.history) == 1 and result.epochs_run == pytest.approx(1.0)


def test_training_from_a_saved_classifier_carries_on_from_its_weights_and_heads(
    tiny_data_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    start = tiny_bundle(tiny_gpt2_dir)
    with torch.no_grad():  # heads no fresh classifier has: sure that everything is positive
        start.model.sentiment_head.bias.copy_(torch.tensor([0.0, 0.0, 20.0]))
    start.version = "start"
    save_bundle(start, tmp_path / "start")
    data = tiny_recipe_dict()
    data["finetune"] |= {"epochs": 1, "lr": 1e-6}
    lines: list[str] = []
    summary = train_model(
        recipe_from_dict(data), tiny_data_dir, tmp_path / "out", base=tmp_path / "start", log=lines.append
    )
    assert "starting from the classifier start" in lines
    assert summary["base"] == "start" and summary["pretrain_tokens"] is None
    before, after = load_bundle(tmp_path / "start").model, load_bundle(tmp_path / "out").model
    for name, weight in before.state_dict().items():
        assert torch.allclose(weight, after.state_dict()[name], atol=1e-3), name
    data["finetune"]["lm_loss_weight"] = 0.5
    with pytest.raises(ValueError, match="no LM head"):
        train_model(recipe_from_dict(data), tiny_data_dir, tmp_path / "again", base=tmp_path / "start")


def test_a_news_recipe_trains_on_labeled_and_weak_news_and_selects_on_both_domains(
    tiny_data_dir: Path, tiny_trained_dir: Path, tmp_path: Path
) -> None:
    data = tiny_recipe_dict()
    data["finetune"] |= {"epochs": 2, "average_with": [str(tiny_trained_dir)]}  # a soup with its base
    data["news"] = {
        "labeled": True,
        "weak_lines": 100,
        "weak_files": ["financial_news_headlines_2017_2020.txt.gz"],
        "weak_per_class": 5,
    }
    lines: list[str] = []
    summary = train_model(
        recipe_from_dict(data),
        tiny_data_dir,
        tmp_path / "out",
        unlabeled_dir=tiny_data_dir / "unlabeled",
        base=tiny_trained_dir,
        log=lines.append,
    )
    news = summary["news"]
    # 24 of sentfin's 30 rows and 9 of finentity's 12 train; the rest (6 + 3) join the tweets' hold-out.
    assert (news["sentfin"]["fit"], news["finentity"]["fit"]) == (24, 9)
    assert news["heldout"]["news"] == 9
    # Weak labels: the tiny unlabeled lines repeat the labeled headlines, so every class is found; capped.
    assert all(0 < n <= 5 for n in news["weak"]["kept"].values())
    assert set(news["weak"]["quality_on_news_heldout"]) == {"rules", "lexicon", "model", "combined"}
    # Selection read both domains: each held-out evaluation reports the tweets' and the news' F1.
    held = [json.loads(line.removeprefix("held-out: ")) for line in lines if line.startswith("held-out: ")]
    assert held and all({"sentiment_weighted_f1_tweet", "sentiment_weighted_f1_news"} <= set(h) for h in held)
    # So did the soup's record: the tweets' and news hold-outs, not a split of the rows it trained on.
    assert {"sentiment_weighted_f1_tweet", "sentiment_weighted_f1_news"} <= set(summary["soup"]["heldout"])
    assert "sentiment_weighted_f1_weak" not in summary["soup"]["heldout"]
    with pytest.raises(ValueError, match="keeps its hold-outs"):
        data["finetune"] |= {"refit_epochs": 1.0, "refit_temperatures": [1.0, 1.0]}
        train_model(recipe_from_dict(data), tiny_data_dir, tmp_path / "again", base=tiny_trained_dir)


def test_a_grown_classifier_starts_from_the_saved_predictions_and_trains_its_new_blocks(
    tiny_data_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    start = tiny_bundle(tiny_gpt2_dir)
    start.version = "start"
    save_bundle(start, tmp_path / "start")
    data = tiny_recipe_dict()
    data["model"] = {"grow_layers": 1}
    data["finetune"] |= {"epochs": 1}
    lines: list[str] = []
    summary = train_model(
        recipe_from_dict(data), tiny_data_dir, tmp_path / "out", base=tmp_path / "start", log=lines.append
    )
    n = start.model.trunk.config.n_layer
    assert any(f"grew its trunk to {n + 1} blocks" in line for line in lines)
    grown = load_bundle(tmp_path / "out")
    assert grown.model.trunk.config.n_layer == n + 1 and f"-{n + 1}x" in summary["version"]
    new_block = grown.model.trunk.h[-1]  # the one copied from the last block, output projections zeroed
    assert new_block.mlp.c_proj.weight.abs().sum() > 0  # fine-tuning moved them
    with pytest.raises(ValueError, match="grow_layers applies to a saved classifier"):
        train_model(recipe_from_dict(data), tiny_data_dir, tmp_path / "again", base=tiny_gpt2_dir)


def test_a_soup_recipe_averages_the_student_with_the_saved_models_then_calibrates(
    tiny_data_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    for name, sure in (("start", 2), ("other", 0)):  # same lineage, heads sure of opposite classes
        bundle = tiny_bundle(tiny_gpt2_dir)
        with torch.no_grad():
            bundle.model.sentiment_head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(sure), 3) * 20.0)
        bundle.version = name
        save_bundle(bundle, tmp_path / name)
    data = tiny_recipe_dict()
    data["finetune"] |= {"epochs": 1, "lr": 1e-6, "average_with": [str(tmp_path / "other")]}
    summary = train_model(
        recipe_from_dict(data), tiny_data_dir, tmp_path / "out", base=tmp_path / "start", log=lambda _: None
    )
    soup = load_bundle(tmp_path / "out")
    # The student barely moved from "start", so the average sits halfway between the two heads.
    assert torch.allclose(soup.model.sentiment_head.bias, torch.tensor([10.0, 0.0, 10.0]), atol=1e-2)
    assert summary["soup"]["with"] == ["other"]
    assert set(summary["soup"]["heldout"]) == {"topic_accuracy", "sentiment_weighted_f1", "score"}
    # The recipe as run names the saved model by its directory, not by a path of the training machine.
    assert list(summary["recipe"]["finetune"]["average_with"]) == ["other"]
    assert summary["calibration"] is not None  # the averaged model is calibrated afresh
    data["finetune"]["average_with"] = [str(tmp_path / "nowhere")]
    with pytest.raises(FileNotFoundError, match=r"finetune\.average_with"):
        train_model(recipe_from_dict(data), tiny_data_dir, tmp_path / "again", base=tmp_path / "start")


def test_committed_seed_continues_pre_training_from_its_step_and_weights(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    recipe = recipe_from_dict(tiny_recipe_dict())
    ckpt, unlabeled = tmp_path / "ckpt", tiny_data_dir / "unlabeled"

    def budget(tokens: int) -> Recipe:
        return dataclasses.replace(recipe, pretrain=dataclasses.replace(recipe.pretrain, tokens=tokens))

    trained = pretrain(ckpt, budget(4096), tiny_data_dir, unlabeled, log=lambda _: None)
    seed = tmp_path / "seed"
    assert export_pretrain_seed(ckpt, seed) == trained
    assert (seed / SEED_STATE_FILE).is_file() and not (seed / "trainer_state.pt").exists()
    stored = safetensors.torch.load_file(str(seed / "model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.float16}  # half the bytes of the checkpoint's weights

    fresh = tmp_path / "fresh"
    assert place_shipped_seed(fresh, recipe, seed)
    assert not place_shipped_seed(fresh, recipe, seed)  # an existing checkpoint is never overwritten
    resumed = pretrain(fresh, budget(4096 + 128), tiny_data_dir, unlabeled, log=lambda _: None)
    assert resumed.step == trained.step + 1 and resumed.lines > trained.lines
    assert resumed.last_loss < trained.last_loss + 1.0  # the learned weights came along, not a re-init
    assert (fresh / "trainer_state.pt").exists()  # from here on an ordinary, fully resumable checkpoint


def test_shipped_seed_is_not_placed_for_another_architecture(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / SEED_STATE_FILE).write_text("{}")
    (seed / "config.json").write_text(json.dumps({"n_layer": 99}))
    assert not place_shipped_seed(tmp_path / "ckpt", recipe_from_dict(tiny_recipe_dict()), seed)


def test_model_version_names_architecture_and_minute(tiny_gpt2_dir: Path) -> None:
    from datetime import UTC, datetime

    from models.network import model_version

    lm, _ = load_base(tiny_gpt2_dir)
    when = datetime(2026, 11, 28, 14, 15, tzinfo=UTC)
    assert model_version(lm, when) == "finsent-gpt-1x32-20261128-1415"


def test_a_refit_steps_through_all_examples_for_its_share_of_the_schedule(
    tiny_data_dir: Path, tiny_gpt2_dir: Path
) -> None:
    recipe = recipe_from_dict(tiny_recipe_dict())
    bundle = tiny_bundle(tiny_gpt2_dir)
    examples = load_train_examples(tiny_data_dir)
    spec = dataclasses.replace(recipe.finetune, refit_epochs=2.5, calibrate=False)
    lines: list[str] = []
    result = finetune(bundle, examples, spec, seed=0, log=lines.append)
    # No hold-out: the steps are counted over every example, and nothing is evaluated.
    steps_per_epoch = math.ceil(len(examples) / spec.batch_size)
    assert result.history == [] and "score" not in result.best
    assert result.best["step"] == round(steps_per_epoch * 2.5)
    assert result.epochs_run == pytest.approx(result.best["step"] / steps_per_epoch)
    assert any(f"re-fit on all {len(examples)} train examples" in line for line in lines)


def test_recipe_refit_needs_epochs_within_the_schedule_and_temperatures() -> None:
    data = tiny_recipe_dict()
    data["finetune"] |= {"refit_epochs": 9, "refit_temperatures": [1.0, 1.0]}
    with pytest.raises(ValueError, match="refit_epochs must be in"):
        recipe_from_dict(data)
    data["finetune"] = tiny_recipe_dict()["finetune"] | {"refit_epochs": 2}
    with pytest.raises(ValueError, match="needs refit_temperatures"):
        recipe_from_dict(data)
    data["finetune"]["refit_temperatures"] = [1.5, 2.0]
    assert recipe_from_dict(data).finetune.refit_temperatures == (1.5, 2.0)


def test_packed_blocks_cut_the_joined_token_stream_in_order(tiny_gpt2_dir: Path) -> None:
    tok = load_tokenizer(tiny_gpt2_dir)
    eos, _ = special_ids(tok)
    texts = [f"Acme shares rise {i} percent after results" for i in range(50)]
    stream: list[int] = []
    for text in texts:
        stream += [*tok.encode(clean_text(text), add_special_tokens=False).ids, eos]
    blocks = list(packed_blocks(tok, iter(texts), block_size=16, chunk_lines=7))
    # Every whole block of the EOS-joined stream, in order; the tail shorter than a block is dropped.
    assert [b for b, _ in blocks] == [stream[i : i + 16] for i in range(0, len(stream) - 15, 16)]
    consumed = [n for _, n in blocks]
    assert consumed == sorted(consumed) and 0 < consumed[-1] <= 50


def test_a_lexical_recipe_keeps_the_saved_gpt_and_adds_a_part_chosen_on_the_hold_out(
    tiny_data_dir: Path, tiny_trained_dir: Path, tmp_path: Path
) -> None:
    data = {
        "threads": 1,
        "finetune": {"epochs": 0, "holdout_fraction": 0.2, "max_length": 32},
        "lexical": {"enabled": True, "c": 10.0},
    }
    lines: list[str] = []
    summary = train_model(
        recipe_from_dict(data), tiny_data_dir, tmp_path / "out", base=tiny_trained_dir, log=lines.append
    )
    before, after = load_bundle(tiny_trained_dir), load_bundle(tmp_path / "out")
    for name, weight in before.model.state_dict().items():  # the GPT is the saved one (fp16 both times)
        assert torch.equal(weight, after.model.state_dict()[name]), name
    assert after.temperatures == before.temperatures and after.lexical is not None
    lexical = summary["lexical"]
    assert after.lexical.share == lexical["share"] and str(lexical["share"]) in lexical["heldout"]["by_share"]
    scores = lexical["heldout"]["by_share"]
    assert len(scores) == 11 and scores[str(lexical["share"])] == max(scores.values())
    assert lexical["heldout"]["mix"]["score"] >= max(
        lexical["heldout"][p]["score"] for p in ("gpt", "lexical")
    )
    assert after.lexical.mix_temperatures == tuple(lexical["mix_temperatures"])
    ece = lexical["heldout"]["mix_ece"]
    assert all(ece[task]["after"] <= ece[task]["before"] + 0.05 for task in ("topic", "sentiment")), ece
    assert summary["rounds"] == [] and summary["base_version"] == before.version
    assert summary["base_summary"] == json.loads((tiny_trained_dir / "training_summary.json").read_text())
    data["lexical"]["share"] = 0.7
    fixed = train_model(recipe_from_dict(data), tiny_data_dir, tmp_path / "fixed", base=tiny_trained_dir)
    assert load_bundle(tmp_path / "fixed").lexical.share == 0.7 and list(
        fixed["lexical"]["heldout"]["by_share"]
    ) == ["0.7"]


def test_a_recipe_that_trains_nothing_needs_a_saved_classifier(
    tiny_data_dir: Path, tiny_gpt2_dir: Path
) -> None:
    recipe = recipe_from_dict({"finetune": {"epochs": 0}, "lexical": {"enabled": True}})
    with pytest.raises(ValueError, match=r"finetune\.epochs: 0"):
        train_model(recipe, tiny_data_dir, tiny_data_dir / "never", base=tiny_gpt2_dir)
    with pytest.raises(ValueError, match=r"lexical\.share"):
        recipe_from_dict({"lexical": {"share": 1.5}})
