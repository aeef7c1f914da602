"""Tests for models.network: shapes, last-token pooling, save/load, pretrained bases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.inference import pad_batch
from models.network import (
    ModelBundle,
    ModelDirError,
    TrunkSpec,
    average_weights,
    classifier_from_language_model,
    count_parameters,
    grow_depth,
    load_base,
    load_bundle,
    new_language_model,
    save_bundle,
)
from models.tokenizer import encode_for_classification, train_tokenizer

TEXTS = ["Oil prices jump on supply cuts", "Fed holds", "Acme shares plunge after a profit warning today"]


def tiny_bundle(seed: int = 0) -> ModelBundle:
    torch.manual_seed(seed)
    tok = train_tokenizer(TEXTS * 5, vocab_size=300, min_frequency=1)
    lm = new_language_model(TrunkSpec(n_layer=1, n_embd=32, n_head=2, n_positions=32, dropout=0.0), tok)
    return ModelBundle(classifier_from_language_model(lm, dropout=0.0), tok, max_length=32, version="tiny-v1")


def logits_of(bundle: ModelBundle, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    seqs = encode_for_classification(bundle.tokenizer, texts, bundle.max_length)
    ids, mask = pad_batch(seqs, bundle.pad_id)
    with torch.no_grad():
        return bundle.model.eval()(ids, mask)


def test_forward_gives_one_row_of_logits_per_text_for_each_head() -> None:
    topic, sentiment = logits_of(tiny_bundle(), TEXTS)
    assert topic.shape == (3, 20)
    assert sentiment.shape == (3, 3)


def test_padding_does_not_change_a_texts_logits() -> None:
    bundle = tiny_bundle()
    alone_topic, alone_sent = logits_of(bundle, [TEXTS[1]])
    batched_topic, batched_sent = logits_of(bundle, TEXTS)  # TEXTS[1] is padded to the longest here
    torch.testing.assert_close(batched_topic[1], alone_topic[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched_sent[1], alone_sent[0], atol=1e-5, rtol=1e-5)


def test_saved_fp32_model_loads_with_identical_logits(tmp_path: Path) -> None:
    bundle = tiny_bundle()
    save_bundle(bundle, tmp_path / "m", dtype=torch.float32)
    again = load_bundle(tmp_path / "m")
    assert again.version == "tiny-v1" and again.max_length == 32
    for a, b in zip(logits_of(bundle, TEXTS), logits_of(again, TEXTS), strict=True):
        assert torch.equal(a, b)


def test_fp16_weights_take_half_the_space_and_stay_close(tmp_path: Path) -> None:
    bundle = tiny_bundle()
    save_bundle(bundle, tmp_path / "fp32", dtype=torch.float32)
    save_bundle(bundle, tmp_path / "fp16")
    size32 = (tmp_path / "fp32" / "model.safetensors").stat().st_size
    size16 = (tmp_path / "fp16" / "model.safetensors").stat().st_size
    assert size16 < 0.6 * size32
    again = load_bundle(tmp_path / "fp16")
    assert next(again.model.parameters()).dtype == torch.float32
    for a, b in zip(logits_of(bundle, TEXTS), logits_of(again, TEXTS), strict=True):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)


def test_model_dir_without_weights_is_an_error_naming_the_dir(tmp_path: Path) -> None:
    save_bundle(tiny_bundle(), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(ModelDirError, match=r"has no model\.safetensors"):
        load_bundle(tmp_path / "m")


def test_foreign_config_is_rejected(tmp_path: Path) -> None:
    save_bundle(tiny_bundle(), tmp_path / "m")
    config = tmp_path / "m" / "config.json"
    config.write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    with pytest.raises(ModelDirError, match="format 'something-else'"):
        load_bundle(tmp_path / "m")


def test_local_pretrained_gpt2_dir_becomes_the_trunk(tiny_gpt2_dir: Path) -> None:
    lm, tok = load_base(tiny_gpt2_dir)
    model = classifier_from_language_model(lm)
    # The trunk is shared with the LM, not copied: fine-tuning updates the pretrained weights.
    assert model.trunk is lm.base_model
    assert count_parameters(model) == count_parameters(lm.base_model) + 32 * 20 + 20 + 32 * 3 + 3
    assert tok.get_vocab_size() == lm.config.vocab_size


def test_half_precision_base_loads_as_fp32_and_trains_with_the_heads(
    tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    lm, tok = load_base(tiny_gpt2_dir)
    lm.half().save_pretrained(str(tmp_path))  # how the committed pre-training seed is stored
    (tmp_path / "tokenizer.json").write_bytes((tiny_gpt2_dir / "tokenizer.json").read_bytes())
    loaded, _ = load_base(tmp_path)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    bundle = ModelBundle(classifier_from_language_model(loaded, dropout=0.0), tok, max_length=32)
    topic, sentiment = logits_of(bundle, TEXTS)
    assert topic.dtype == torch.float32 and torch.isfinite(topic).all() and torch.isfinite(sentiment).all()


def test_conv1d_to_linear_keeps_the_outputs() -> None:
    from transformers.pytorch_utils import Conv1D

    from models.network import conv1d_to_linear

    bundle = tiny_bundle()
    before = logits_of(bundle, TEXTS)
    conv1d_to_linear(bundle.model)
    assert not any(isinstance(m, Conv1D) for m in bundle.model.modules())
    for a, b in zip(before, logits_of(bundle, TEXTS), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_saved_config_holds_no_path_of_the_training_machine(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    lm, tok = load_base(tiny_gpt2_dir)
    save_bundle(ModelBundle(classifier_from_language_model(lm), tok), tmp_path / "m")
    assert str(tiny_gpt2_dir) not in (tmp_path / "m" / "config.json").read_text(encoding="utf-8")


def test_classifier_runs_pytorchs_fused_gelu_with_the_same_outputs(tmp_path: Path) -> None:
    from transformers.activations import NewGELUActivation

    bundle = tiny_bundle()
    acts = [m.act for m in bundle.model.modules() if hasattr(m, "act")]
    assert acts and all(isinstance(a, torch.nn.GELU) and a.approximate == "tanh" for a in acts)
    fused = logits_of(bundle, TEXTS)
    for module in bundle.model.modules():
        if hasattr(module, "act"):
            module.act = NewGELUActivation()  # what transformers builds for GPT-2's "gelu_new"
    for a, b in zip(fused, logits_of(bundle, TEXTS), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # The saved config keeps GPT-2's activation name; loading fuses it again.
    save_bundle(bundle, tmp_path / "m", dtype=torch.float32)
    config = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    assert config["trunk"]["activation_function"] == "gelu_new"
    again = load_bundle(tmp_path / "m")
    assert not any(isinstance(m, NewGELUActivation) for m in again.model.modules())
    for a, b in zip(fused, logits_of(again, TEXTS), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_averaged_weights_are_the_mean_of_each_tensor_and_need_one_architecture() -> None:
    a, b = tiny_bundle(seed=0).model, tiny_bundle(seed=1).model
    soup = average_weights([a, b])
    for name, weight in a.state_dict().items():
        want = (weight + b.state_dict()[name]) / 2 if weight.is_floating_point() else weight
        assert torch.allclose(soup[name], want), name
    other = classifier_from_language_model(
        new_language_model(TrunkSpec(n_layer=2, n_embd=32, n_head=2, n_positions=32), tiny_bundle().tokenizer)
    )
    with pytest.raises(ValueError, match="one architecture"):
        average_weights([a, other])


def test_grown_model_predicts_as_before_and_saves_its_deeper_trunk(tmp_path: Path) -> None:
    bundle = tiny_bundle()
    with torch.no_grad():  # a trunk whose blocks differ, so where the copies go is visible
        for block in bundle.model.trunk.h:
            block.mlp.c_fc.weight.normal_()
    before = logits_of(bundle, TEXTS)
    blocks = list(bundle.model.trunk.h)
    grow_depth(bundle.model, 1)
    torch.testing.assert_close(logits_of(bundle, TEXTS), before, atol=1e-5, rtol=1e-5)
    grown = bundle.model.trunk.h
    assert len(grown) == 2 and grown[0] is blocks[0] and grown[1] is not blocks[0]
    assert torch.equal(grown[1].mlp.c_fc.weight, blocks[0].mlp.c_fc.weight)  # a copy of the block before
    assert not grown[1].attn.c_proj.weight.any() and not grown[1].mlp.c_proj.weight.any()
    save_bundle(bundle, tmp_path / "m", dtype=torch.float32)
    again = load_bundle(tmp_path / "m")
    assert again.model.trunk.config.n_layer == 2
    torch.testing.assert_close(logits_of(again, TEXTS), before, atol=1e-5, rtol=1e-5)


def test_growth_spreads_new_blocks_evenly_and_refuses_what_it_cannot_do() -> None:
    tok = tiny_bundle().tokenizer
    model = classifier_from_language_model(
        new_language_model(TrunkSpec(n_layer=4, n_embd=32, n_head=2, n_positions=32), tok)
    )
    originals = list(model.trunk.h)
    grow_depth(model, 2)
    assert [any(b is o for o in originals) for b in model.trunk.h] == [True, True, False, True, True, False]
    assert [b.attn.layer_idx for b in model.trunk.h] == list(range(6))
    with pytest.raises(ValueError, match="at most 6"):
        grow_depth(model, 7)
    with pytest.raises(ValueError, match="cannot remove"):
        grow_depth(model, -1)
