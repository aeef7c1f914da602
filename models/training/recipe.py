"""Training recipes: plain dataclasses read from a YAML file, one section per stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from models.network import TrunkSpec


class RecipeError(ValueError):
    """A recipe file has an unknown section or key, or a value of the wrong kind."""


@dataclass(frozen=True)
class TokenizerSpec:
    """How the BPE tokenizer is trained: vocabulary size and unlabeled lines sampled per file."""

    vocab_size: int = 8000
    lines_per_file: int = 50_000


@dataclass(frozen=True)
class PretrainSpec:
    """Causal-LM pre-training on packed blocks of unlabeled (and labeled-train) text."""

    tokens: int = 10_000_000  # stop once this many tokens were trained on, counted across resumed runs
    schedule_tokens: int = 70_000_000  # cosine horizon; fixed so that resumed runs follow one schedule
    block_size: int = 64
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    include_train_text: bool = True  # labeled train texts (no labels) lead the stream
    checkpoint_every_s: float = 300.0


@dataclass(frozen=True)
class FinetuneSpec:
    """Joint topic + sentiment fine-tuning with early stopping on a held-out part of train."""

    epochs: int = 6
    batch_size: int = 32
    lr: float = 5e-4
    min_lr_ratio: float = 0.05
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    holdout_fraction: float = 0.1
    patience: int = 2  # epochs without held-out improvement before stopping
    class_weighting: str = "none"  # "none" or "sqrt_inverse" (class-balanced loss)
    label_smoothing: float = 0.0
    max_length: int = 64
    lm_loss_weight: float = 0.0  # >0 keeps a causal-LM loss on the labeled text while fine-tuning
    evals_per_epoch: int = 1
    calibrate: bool = True  # fit a softmax temperature per head on the hold-out afterwards
    # >0 (with distillation): each step also learns a batch of the round's teacher-labeled lines, its
    # loss scaled by this, so a few thousand tweets do not pull the trunk away from what it distilled.
    distill_mix: float = 0.0
    # >0 (with distillation): a text labeled for one task also learns the teacher's soft target for the
    # other (a topic tweet's sentiment), its loss scaled by this: in-domain signal for both heads.
    cross_labels: float = 0.0
    # Re-fit: the last round learns from all of train, the hold-out included. Its teacher is fit on all
    # of it, and fine-tuning runs this many epochs of the ``epochs`` schedule without early stopping:
    # the point where a held-out run of the same recipe peaked. Earlier rounds keep the hold-out, so it
    # still calibrates their students; the final temperatures are ``refit_temperatures`` (from that
    # held-out run), because the re-fit model has seen the hold-out.
    refit_epochs: float | None = None
    refit_temperatures: tuple[float, float] | None = None
    # A model soup: after the last round, the weights become the uniform average of the student's and
    # those of these saved classifiers (relative: to the repository). They must share the student's
    # lineage (fine-tuned from one starting point, e.g. the model given as --base), or the average of
    # their weights is no model at all; calibration follows.
    average_with: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "average_with", tuple(self.average_with))  # YAML gives a list
        if self.refit_temperatures is not None:
            object.__setattr__(self, "refit_temperatures", tuple(self.refit_temperatures))  # YAML: a list
        if self.refit_epochs is not None:
            if not 0 < self.refit_epochs <= self.epochs:
                raise ValueError(
                    f"finetune.refit_epochs must be in (0, epochs={self.epochs}], got {self.refit_epochs}"
                )
            if self.calibrate and (self.refit_temperatures is None or len(self.refit_temperatures) != 2):
                raise ValueError(
                    "finetune.refit_epochs with calibrate needs refit_temperatures: [topic, sentiment] "
                    "from a held-out run (the re-fit model has seen the hold-out)"
                )

    @property
    def needs_teacher_targets(self) -> bool:
        """Whether fine-tuning reads the round's teacher targets (``distill_mix`` or ``cross_labels``)."""
        return self.distill_mix > 0 or self.cross_labels > 0


@dataclass(frozen=True)
class DistillSpec:
    """Self-training before fine-tuning: a TF-IDF teacher fit on the labeled train split soft-labels
    unlabeled headlines for both heads, and the GPT learns those targets; ``lines: 0`` skips it.

    With ``rounds`` > 1 the fine-tuned student joins the teacher (noisy-student style): each later
    round averages the TF-IDF probabilities with the student's own (``student_weight``), distils
    those into the student and fine-tunes it again."""

    lines: int = 0  # unlabeled lines to pseudo-label, spread evenly over ``files``
    files: tuple[str, ...] = (
        "financial_news_headlines_2017_2020.txt.gz",
        "stocknet_tweets_2014_2016.txt.gz",
        "reuters_news_titles_2007_2016.txt.gz",
    )
    teacher_c: float = 10.0  # inverse regularisation of the teacher's logistic regressions
    # "balanced": the teacher's regressions weight classes inversely to their frequency (None: unweighted)
    teacher_class_weight: str | None = None
    temperature: float = 1.0
    epochs: int = 1  # 0: the teacher only labels, for fine-tuning's distill_mix and cross_labels
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_length: int = 64
    rounds: int = 1
    student_weight: float = 0.4  # the student's share of the teacher from round 2 on
    # fine-tuning lr of rounds whose teacher includes a student: round 2 on, or every round with a
    # ``teacher_model`` (None: finetune.lr)
    later_finetune_lr: float | None = None
    # Temperature-scale the student (on the hold-out) before it joins the teacher: a fine-tuned student
    # is over-confident and would otherwise outvote the TF-IDF share.
    calibrate_student: bool = False
    # A saved classifier directory (relative: to the repository) that joins the teacher from round 1 on
    # at ``student_weight``, e.g. the previous default model: a newly pre-trained trunk then learns from
    # the best teacher so far without re-running the earlier rounds. Used only to label, never trained.
    # A mapping ``{directory: share, ...}`` lets several saved models join, each at its own share;
    # the TF-IDF teacher keeps the rest.
    teacher_model: str | dict[str, float] | None = None

    def teacher_shares(self) -> dict[str, float]:
        """Return the saved models of round 1's teacher and their shares (empty without ``teacher_model``)."""
        if self.teacher_model is None:
            return {}
        if isinstance(self.teacher_model, str):
            return {self.teacher_model: self.student_weight}
        return dict(self.teacher_model)

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(self.files))  # YAML gives a list
        if self.teacher_class_weight not in (None, "balanced"):
            raise ValueError(
                f"distill.teacher_class_weight must be null or 'balanced', got {self.teacher_class_weight!r}"
            )
        shares = self.teacher_shares().values()
        if any(w < 0.0 for w in shares) or sum(shares) > 1.0 + 1e-9:
            raise ValueError(
                f"distill.teacher_model shares must be >= 0 and sum to at most 1, got {list(shares)}"
            )
        if self.epochs < 0:
            raise ValueError(f"distill.epochs must be >= 0, got {self.epochs}")
        if self.rounds < 1 or not 0.0 <= self.student_weight <= 1.0:
            raise ValueError(
                "distill.rounds must be >= 1 and student_weight in [0, 1], "
                f"got {self.rounds} and {self.student_weight}"
            )


@dataclass(frozen=True)
class LexicalSpec:
    """A TF-IDF model trained beside the GPT and averaged with it at inference (``models.lexical``).

    Its regressions are fit on train minus the hold-out; the GPT's share of the mix (``share``, or the
    best on the hold-out from a 0.1 grid when null, by the mean of topic accuracy and sentiment
    weighted-F1), its temperatures and those of the mixed probabilities are chosen on the hold-out.
    ``refit`` then fits it again on all of train, keeping that share and those temperatures.
    """

    enabled: bool = False
    c: float = 10.0  # inverse L2 strength of the logistic regressions (the baseline's)
    class_weight: str | None = None  # None or "balanced"
    share: float | None = None
    refit: bool = True

    def __post_init__(self) -> None:
        if self.share is not None and not 0.0 <= self.share <= 1.0:
            raise ValueError(f"lexical.share must be in [0, 1], got {self.share}")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"lexical.class_weight must be null or 'balanced', got {self.class_weight!r}")


@dataclass(frozen=True)
class NewsSpec:
    """Labeled and weakly labeled news beside the tweets (``models.training.news``, ``models.training.weak``).

    ``labeled`` trains on the fit part of each training-allowed news file; the stratified
    ``holdout_fraction`` of each joins the tweets' hold-out, so early stopping, calibration and the
    lexical share are chosen on both domains. ``weak_lines`` unlabeled lines (spread over
    ``weak_files``, leads split from their headlines) are labeled by rules, a lexicon and the base
    classifier's confident calls where they agree, at most ``weak_per_class`` per class.
    """

    labeled: bool = False
    holdout_fraction: float = 0.2
    weak_lines: int = 0
    weak_files: tuple[str, ...] = (
        "financial_news_headlines_2017_2020.txt.gz",
        "reuters_headline_lead_2006_2013.txt.gz",
        "reuters_news_titles_2007_2016.txt.gz",
    )
    lexicon_threshold: float = 0.4
    model_confidence: float = 0.85
    weak_per_class: int = 8000

    def __post_init__(self) -> None:
        object.__setattr__(self, "weak_files", tuple(self.weak_files))  # YAML gives a list
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"news.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.weak_lines < 0 or self.weak_per_class < 0:
            raise ValueError("news.weak_lines and news.weak_per_class must be >= 0")

    @property
    def enabled(self) -> bool:
        """Whether the recipe trains on news at all."""
        return self.labeled or self.weak_lines > 0


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a trained model, given the data."""

    name: str = "finsent-gpt"
    seed: int = 0
    threads: int = 2
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    model: TrunkSpec = field(default_factory=TrunkSpec)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)
    distill: DistillSpec = field(default_factory=DistillSpec)
    lexical: LexicalSpec = field(default_factory=LexicalSpec)
    news: NewsSpec = field(default_factory=NewsSpec)

    def to_dict(self) -> dict[str, Any]:
        """Return the recipe as plain nested dicts (for logs and model cards)."""
        return asdict(self)


_SECTIONS = {
    "tokenizer": TokenizerSpec,
    "model": TrunkSpec,
    "pretrain": PretrainSpec,
    "finetune": FinetuneSpec,
    "distill": DistillSpec,
    "lexical": LexicalSpec,
    "news": NewsSpec,
}


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise RecipeError(f"{where}: unknown keys {sorted(unknown)}")
    return cls(**values)


def recipe_from_dict(data: dict[str, Any], where: str = "recipe") -> Recipe:
    """Return a Recipe from nested dicts; missing keys keep their defaults."""
    top: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise RecipeError(f"{where}: section {key!r} must be a mapping")
            top[key] = _build(_SECTIONS[key], value, f"{where} [{key}]")
        else:
            top[key] = value
    return _build(Recipe, top, where)


def load_recipe(path: Path | None) -> Recipe:
    """Return the recipe in YAML file ``path``, or the defaults when ``path`` is None."""
    if path is None:
        return Recipe()
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping")
    return recipe_from_dict(data, str(path))
