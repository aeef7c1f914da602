"""The classifier: a causal-LM trunk (GPT-2 by default) with topic and sentiment heads at the last token,
optionally mixed with a lexical TF-IDF model (``models.lexical``) saved in the same directory."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
)
from transformers.activations import NewGELUActivation
from transformers.models.gpt2.modeling_gpt2 import GPT2Block, GPT2Model

from models.labels import SENTIMENT_NAMES, TOPIC_NAMES
from models.lexical import VOCAB_FILE as LEXICAL_VOCAB_FILE
from models.lexical import WEIGHTS_FILE as LEXICAL_WEIGHTS_FILE
from models.lexical import LexicalModel, load_lexical
from models.tokenizer import TOKENIZER_FILE, load_tokenizer, save_tokenizer, special_ids

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "finsent-gpt-classifier"

M = TypeVar("M", bound=nn.Module)


class ModelDirError(ValueError):
    """A model directory is missing a file or holds a config this code cannot read."""


@dataclass(frozen=True)
class TrunkSpec:
    """Shape of a freshly initialised GPT-2 trunk; ``grow_layers`` deepens a saved classifier instead."""

    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_positions: int = 64
    dropout: float = 0.1
    grow_layers: int = 0  # with a classifier as --base: blocks added to its trunk first (grow_depth)


def gpt2_config(spec: TrunkSpec, vocab_size: int, eos_id: int) -> GPT2Config:
    """Return the GPT2Config of ``spec`` for a vocabulary of ``vocab_size`` tokens."""
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        resid_pdrop=spec.dropout,
        embd_pdrop=spec.dropout,
        attn_pdrop=spec.dropout,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )


def new_language_model(spec: TrunkSpec, tok: Tokenizer) -> GPT2LMHeadModel:
    """Return a randomly initialised GPT-2 causal LM sized by ``spec`` for tokenizer ``tok``."""
    eos, _ = special_ids(tok)
    return GPT2LMHeadModel(gpt2_config(spec, tok.get_vocab_size(), eos))


def fuse_gelu(model: M) -> M:
    """Return ``model`` with each transformers ``gelu_new`` activation replaced, in place, by PyTorch's.

    GPT-2's ``gelu_new`` is the tanh approximation of GELU written as five tensor operations;
    ``nn.GELU(approximate="tanh")`` is the same function in one kernel (equal up to float rounding);
    measured 1.07-1.43x CPU inference throughput. Configs are untouched, so saved models stay GPT-2.
    """
    for module in model.modules():
        if isinstance(getattr(module, "act", None), NewGELUActivation):
            module.act = nn.GELU(approximate="tanh")
    return model


class GPTClassifier(nn.Module):
    """Trunk + two linear heads pooled at the last non-padding token (the appended end-of-text)."""

    def __init__(self, trunk: PreTrainedModel, n_topics: int, n_sentiments: int, dropout: float = 0.1):
        super().__init__()
        self.trunk = fuse_gelu(trunk)
        hidden = trunk.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.topic_head = nn.Linear(hidden, n_topics)
        self.sentiment_head = nn.Linear(hidden, n_sentiments)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return the hidden state at each row's last non-padding position, shape (B, C)."""
        # No key/value cache: nothing is generated, and building one costs a copy per layer.
        out = self.trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = out.last_hidden_state  # (B, T, C)
        last = attention_mask.long().sum(dim=1) - 1  # right padding: last real token  (B,)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(topic_logits (B, n_topics), sentiment_logits (B, n_sentiments))``."""
        x = self.dropout(self.pooled(input_ids, attention_mask))
        return self.topic_head(x), self.sentiment_head(x)


@dataclass
class ModelBundle:
    """A classifier with everything needed to use it: tokenizer, label names, limits, version."""

    model: GPTClassifier
    tokenizer: Tokenizer
    topics: tuple[str, ...] = TOPIC_NAMES
    sentiments: tuple[str, ...] = SENTIMENT_NAMES
    max_length: int = 64
    version: str = "finsent-gpt-untrained"
    # (topic, sentiment) logit divisors, fit by models.training.calibrate
    temperatures: tuple[float, float] = (1.0, 1.0)
    lexical: LexicalModel | None = None  # averaged with the GPT at inference when present

    @property
    def pad_id(self) -> int:
        return special_ids(self.tokenizer)[1]


def classifier_from_language_model(lm: PreTrainedModel, dropout: float = 0.1) -> GPTClassifier:
    """Return a classifier whose trunk is the (shared, not copied) base model of causal LM ``lm``."""
    # transformers types base_model as nn.Module; it is the LM's PreTrainedModel trunk (or the LM itself).
    trunk = cast(PreTrainedModel, lm.base_model)
    return GPTClassifier(trunk, len(TOPIC_NAMES), len(SENTIMENT_NAMES), dropout)


def load_base(base: str | Path) -> tuple[PreTrainedModel, Tokenizer]:
    """Return ``(causal LM, tokenizer)`` of a pretrained base: a local checkpoint dir or hub name (``gpt2``).

    A directory must hold a transformers causal-LM checkpoint; its tokenizer is ``tokenizer.json``
    when present (our pre-training checkpoints), else whatever ``AutoTokenizer`` finds there.
    """
    path = Path(base)
    # fp32 master weights for training, also when the base was saved in half precision (our seed).
    lm = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    if path.is_dir() and (path / TOKENIZER_FILE).is_file():
        return lm, load_tokenizer(path)
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(base))
    return lm, hf_tok.backend_tokenizer


def save_bundle(bundle: ModelBundle, directory: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Return ``directory`` after writing config, tokenizer and weights (stored as ``dtype``) into it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = bundle.model
    config: dict[str, Any] = {
        "format": FORMAT,
        "version": bundle.version,
        "topics": list(bundle.topics),
        "sentiments": list(bundle.sentiments),
        "max_length": bundle.max_length,
        "temperatures": {"topic": bundle.temperatures[0], "sentiment": bundle.temperatures[1]},
        "dropout": model.dropout.p,
        "trunk": model.trunk.config.to_dict(),
    }
    # Where the trunk was loaded from is a path on the training machine, not part of the model.
    config["trunk"].pop("_name_or_path", None)
    if bundle.lexical is not None:
        config["lexical"] = bundle.lexical.config()
        bundle.lexical.save(directory)
    (directory / CONFIG_FILE).write_text(
        json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    save_tokenizer(bundle.tokenizer, directory)
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    # No version in the file: re-stamping unchanged weights (a new lexical part, a recalibration) then
    # rewrites the same bytes, and git stores no second copy. The version lives in config.json.
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
    return directory


def is_classifier_dir(path: str | Path) -> bool:
    """Return whether ``path`` is a directory holding one of our saved classifiers (not a causal LM)."""
    config = Path(path) / CONFIG_FILE
    return config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("format") == FORMAT


def load_bundle(directory: Path) -> ModelBundle:
    """Return the classifier saved in ``directory`` (weights up-cast to float32), in eval mode."""
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
        if not (directory / name).is_file():
            raise ModelDirError(f"model directory {directory} has no {name}")
    config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise ModelDirError(
            f"{directory / CONFIG_FILE}: format {config.get('format')!r}, expected {FORMAT!r}"
        )
    for name in (LEXICAL_WEIGHTS_FILE, LEXICAL_VOCAB_FILE) if "lexical" in config else ():
        if not (directory / name).is_file():
            raise ModelDirError(f"model directory {directory} has a lexical part but no {name}")
    trunk_cfg = dict(config["trunk"])
    model_type = trunk_cfg.pop("model_type")
    trunk = AutoModel.from_config(AutoConfig.for_model(model_type, **trunk_cfg))
    model = GPTClassifier(trunk, len(config["topics"]), len(config["sentiments"]), config.get("dropout", 0.1))
    state = {k: v.float() for k, v in load_file(str(directory / WEIGHTS_FILE)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Non-persistent buffers (attention masks) may be absent; real weights may not.
    missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise ModelDirError(f"{directory / WEIGHTS_FILE}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.eval()
    temps = config.get("temperatures", {})  # absent in models saved before calibration existed
    return ModelBundle(
        model=model,
        tokenizer=load_tokenizer(directory),
        topics=tuple(config["topics"]),
        sentiments=tuple(config["sentiments"]),
        max_length=int(config["max_length"]),
        version=str(config["version"]),
        temperatures=(float(temps.get("topic", 1.0)), float(temps.get("sentiment", 1.0))),
        lexical=load_lexical(directory, config["lexical"]) if "lexical" in config else None,
    )


def average_weights(models: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """Return the uniform average of the state dicts of ``models`` (same architecture): a model soup."""
    states = [m.state_dict() for m in models]
    shapes = [{k: tuple(v.shape) for k, v in s.items()} for s in states]
    if any(shape != shapes[0] for shape in shapes[1:]):
        raise ValueError("only models of one architecture (same weight names and shapes) can be averaged")
    return {
        k: sum(s[k].float() for s in states) / len(states) if v.is_floating_point() else v
        for k, v in states[0].items()
    }


def grow_depth(model: GPTClassifier, extra: int) -> GPTClassifier:
    """Return ``model`` with ``extra`` transformer blocks inserted, in place, computing the same function.

    Each new block copies the block before it, with its attention and MLP output projections zeroed:
    both residual branches then add nothing, so predictions are unchanged until training moves those
    projections (Net2Net-style growth). The new blocks are spread evenly through the trunk, and a saved
    model records the deeper config. A way to add capacity to a trained small model without training
    a larger one from scratch.
    """
    if extra < 0:
        raise ValueError(f"cannot remove blocks by growing: extra={extra}")
    trunk = model.trunk
    if not isinstance(trunk, GPT2Model):
        raise TypeError(f"only a GPT-2 trunk can grow (blocks in .h), not a {type(trunk).__name__}")
    # nn.ModuleList yields plain nn.Modules; a GPT2Model's .h holds its GPT2Blocks.
    blocks = cast(list[GPT2Block], list(trunk.h))
    n = len(blocks)
    if extra > n:
        raise ValueError(f"at most {n} blocks can be added to a {n}-block trunk, got {extra}")
    after = {(i + 1) * n // extra - 1 for i in range(extra)} if extra else set()  # distinct as extra <= n
    grown: list[GPT2Block] = []
    for i, block in enumerate(blocks):
        grown.append(block)
        if i in after:
            new = copy.deepcopy(block)
            with torch.no_grad():
                for proj in (new.attn.c_proj, new.mlp.c_proj):
                    proj.weight.zero_()
                    proj.bias.zero_()
            grown.append(new)
    for index, block in enumerate(grown):
        block.attn.layer_idx = index  # the key/value cache's slot; unused without a cache, kept true
    trunk.h = nn.ModuleList(grown)
    trunk.config.n_layer = len(grown)
    return model


def count_parameters(model: nn.Module) -> int:
    """Return the number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def conv1d_to_linear(module: M) -> M:
    """Return ``module`` with every transformers ``Conv1D`` replaced, in place, by an equal ``nn.Linear``.

    GPT-2 stores its projections as Conv1D (weight shaped (in, out)); int8 dynamic quantisation only
    handles nn.Linear, so the weights are transposed into one. The outputs are unchanged.
    """
    from transformers.pytorch_utils import Conv1D

    for name, child in list(module.named_children()):
        if isinstance(child, Conv1D):
            n_in, n_out = child.weight.shape
            linear = nn.Linear(n_in, n_out)
            with torch.no_grad():
                linear.weight.copy_(child.weight.t())
                linear.bias.copy_(child.bias)
            setattr(module, name, linear)
        else:
            conv1d_to_linear(child)
    return module


def quantize_int8(model: GPTClassifier) -> GPTClassifier:
    """Return a copy-free int8 dynamically quantised ``model`` for CPU inference (Linear layers only: the
    classifier itself keeps its class)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch marks its quantised tensor types deprecated; they remain the CPU int8 path in this pin.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(conv1d_to_linear(model), {nn.Linear}, dtype=torch.qint8)


def model_version(lm: PreTrainedModel, when: datetime | None = None) -> str:
    """Return a version like ``finsent-gpt-4x256-20261128-1415`` (architecture, depth x width, UTC time).

    Scores are keyed by version, so two models trained on one day must not share one: the minute the
    weights were saved is part of it.
    """
    cfg = lm.config
    kind = "gpt" if cfg.model_type == "gpt2" else cfg.model_type
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%d-%H%M")
    return f"finsent-{kind}-{cfg.num_hidden_layers}x{cfg.hidden_size}-{stamp}"
