"""Model commands: `train`, `calibrate`, `eval`, `classify`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pipeline.cli.render import fail

app = typer.Typer()

DataDirOption = Annotated[Path | None, typer.Option("--data", help="Labeled data dir (FINSENT_DATA_DIR).")]
ShippedModelOption = Annotated[Path | None, typer.Option("--model", help="Model dir (default: shipped).")]


def _data_dir_or_fail(data: Path | None) -> Path:
    from pipeline.config import get_settings

    found = data or get_settings().data_dir
    if found is None:
        raise fail("no data directory: pass --data DIR or set FINSENT_DATA_DIR")
    return Path(found)


@app.command("train")
def train_command(
    data: DataDirOption = None,
    unlabeled: Annotated[
        Path | None, typer.Option("--unlabeled", help="Unlabeled .txt.gz dir (default DATA/unlabeled).")
    ] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", help="Recipe YAML (default: built-in).")] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="Pretrained causal LM to fine-tune instead: hub name or dir.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where the trained model dir goes.")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Pre-training checkpoint dir (resumed if present).")
    ] = None,
    pretrain_minutes: Annotated[
        float | None, typer.Option("--pretrain-minutes", help="Stop pre-training after this long; resumable.")
    ] = None,
    finetune_minutes: Annotated[
        float | None, typer.Option("--finetune-minutes", help="Stop fine-tuning after this long.")
    ] = None,
    distill_minutes: Annotated[
        float | None,
        typer.Option("--distill-minutes", help="Stop distillation (if in the recipe) after this long."),
    ] = None,
) -> None:
    """Train a model: (resumable) pre-training, optional distillation, then joint fine-tuning."""
    from models.training import load_recipe, train_model
    from pipeline.config import get_settings

    data_dir = _data_dir_or_fail(data)
    spec = load_recipe(recipe)
    stem = recipe.stem if recipe else "builtin"
    home = get_settings().home
    out_dir = out or home / "models" / f"{spec.name}-{stem}"
    ckpt = checkpoint or home / "checkpoints" / f"pretrain-{stem}"
    summary = train_model(
        spec,
        data_dir,
        out_dir,
        checkpoint_dir=ckpt,
        unlabeled_dir=unlabeled or data_dir / "unlabeled",
        base=base,
        pretrain_minutes=pretrain_minutes,
        log=typer.echo,
        finetune_minutes=finetune_minutes,
        distill_minutes=distill_minutes,
    )
    lexical = summary.get("lexical")
    extra = f" + {lexical['parameters']:,} in the lexical part" if lexical else ""
    typer.echo(f"saved {summary['version']} ({summary['params']:,} GPT parameters{extra}) to {out_dir}")
    keys = ("version", "params", "pretrain_tokens")
    typer.echo(json.dumps({"out": str(out_dir), **{k: summary[k] for k in keys}}, sort_keys=True))


@app.command("calibrate")
def calibrate_command(model: ShippedModelOption = None, data: DataDirOption = None) -> None:
    """Re-fit a model's softmax temperatures on the held-out part of train (weights unchanged)."""
    from models.inference import DEFAULT_MODEL_DIR
    from models.training import calibrate_model_dir

    try:
        report = calibrate_model_dir(model or DEFAULT_MODEL_DIR, _data_dir_or_fail(data), log=typer.echo)
    except ValueError as exc:  # a re-fit model has no unseen hold-out
        raise fail(str(exc)) from exc
    typer.echo(json.dumps(report, sort_keys=True))


@app.command("eval")
def eval_command(
    model: ShippedModelOption = None,
    data: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line.")] = False,
    baseline: Annotated[bool, typer.Option(help="Also fit and score the TF-IDF + LR baseline.")] = True,
    write_metrics: Annotated[
        bool, typer.Option("--write-metrics", help="Save the report as the model dir's metrics.json.")
    ] = False,
) -> None:
    """Evaluate a model on the tweets' valid splits and on labeled news, next to a TF-IDF + LR baseline."""
    from models.evaluate import evaluate, format_report
    from models.inference import DEFAULT_MODEL_DIR, load

    data_dir = _data_dir_or_fail(data)
    clf = load(model)
    report = evaluate(clf, data_dir, baseline=baseline)
    typer.echo(format_report(report, clf.bundle.topics, clf.bundle.sentiments))
    if write_metrics:
        path = Path(model or DEFAULT_MODEL_DIR) / "metrics.json"
        recorded = {
            **report.summary,
            "confusion": report.confusion,
            "gaps": report.gaps,
            "reliability": report.reliability,
        }
        path.write_text(json.dumps(recorded, sort_keys=True) + "\n", encoding="utf-8")
        typer.echo(f"wrote {path}")
    if as_json:
        typer.echo(json.dumps(report.summary, sort_keys=True))


@app.command("classify")
def classify_command(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    model: ShippedModelOption = None,
    file: Annotated[Path | None, typer.Option("--file", help="Classify each line of this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per input.")] = False,
) -> None:
    """Classify texts (arguments, or one per line of --file) by topic and sentiment."""
    from models.inference import load

    if file is not None:
        try:
            items = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise fail(f"cannot read {file}: {exc}") from exc
    else:
        items = list(texts or [])
    if not items:
        raise fail("nothing to classify: give TEXT arguments or --file PATH")
    clf = load(model)
    for text, pred in zip(items, clf.predict(items), strict=True):
        if as_json:
            typer.echo(json.dumps(pred.to_dict(), sort_keys=True))
        else:
            typer.echo(f"{pred.sentiment:>8} {pred.score:+.2f}  {pred.topic:<28} {escape(text)[:90]}")
