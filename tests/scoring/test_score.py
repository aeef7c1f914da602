"""Scoring on real PostgreSQL with tiny real classifiers: idempotent batches, versions, crash recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from models.inference import load
from pipeline.cli import app
from pipeline.config import get_settings
from pipeline.scoring import registry
from pipeline.scoring.score import (
    BatchReport,
    ScoreReport,
    ScoringError,
    article_text,
    rescore,
    score_pending,
)
from tests.fixtures.scoring import (
    ArticleSpec,
    add_articles,
    assert_rollups_match,
    expected_rollups,
    stored_rollups,
    varied_articles,
)


def _scores(engine: Engine, version: str) -> dict[int, sa.Row]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT article_id, topic, topic_probs, sentiment, sentiment_probs, score FROM scores"
                " WHERE model_version = :v"
            ),
            {"v": version},
        )
        return {r.article_id: r for r in rows}


def _active(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT version FROM model_versions WHERE active")).scalar()


# --- the text the model reads -------------------------------------------------------------------


def test_text_is_title_then_summary_joined_as_sentences() -> None:
    assert (
        article_text("Acme beats estimates", "Profit rose 12%.", None)
        == "Acme beats estimates. Profit rose 12%."
    )
    assert article_text("Acme beats estimates?", "Profit rose.", None) == "Acme beats estimates? Profit rose."


def test_text_drops_a_summary_that_repeats_the_title() -> None:
    assert article_text("Acme beats estimates", "Acme beats estimates", None) == "Acme beats estimates"
    assert article_text("Acme beats", "Acme beats  estimates\nagain", None) == "Acme beats estimates again"


def test_text_adds_the_body_lead_only_when_the_summary_is_short() -> None:
    lead = "Acme said on Monday that quarterly profit rose on strong demand."
    assert article_text("Acme beats", "", lead) == f"Acme beats. {lead}"
    long_summary = "Acme reported quarterly profit well above what analysts had expected, " * 2
    assert lead not in article_text("Acme beats", long_summary, lead)
    # A body that opens with the summary does not repeat it.
    assert article_text("Acme beats", "Profit rose.", "Profit rose. Shares jumped.") == (
        "Acme beats. Profit rose. Shares jumped."
    )


# --- scoring runs ------------------------------------------------------------------------------


def test_scoring_twice_writes_each_article_once(engine: Engine, tiny_model_dir: Path) -> None:
    add_articles(engine, varied_articles(10))

    first = score_pending(engine, model_dir=tiny_model_dir, batch_size=4)
    second = score_pending(engine, model_dir=tiny_model_dir, batch_size=4)

    assert (first.scored, first.batches, first.model_version) == (10, 3, "tiny-a")
    assert (second.scored, second.batches) == (0, 0)
    assert len(_scores(engine, "tiny-a")) == 10
    data = first.as_dict()
    assert {"scored", "batches", "seconds", "articles_per_s", "model_version"} <= data.keys()
    assert data["articles_per_s"] > 0


def test_stored_scores_are_the_model_predictions(engine: Engine, tiny_model_dir: Path) -> None:
    specs = [
        ArticleSpec("Acme shares plunge after profit warning", summary="Guidance was cut.", tickers=["ACME"]),
        ArticleSpec("Globex beats earnings estimates", body="Globex said revenue rose 20% on cloud demand."),
    ]
    ids = add_articles(engine, specs)
    score_pending(engine, model_dir=tiny_model_dir)

    expected = load(tiny_model_dir).predict([article_text(s.title, s.summary, s.body) for s in specs])
    stored = _scores(engine, "tiny-a")
    for article_id, prediction in zip(ids, expected, strict=True):
        row = stored[article_id]
        assert (row.topic, row.sentiment) == (prediction.topic, prediction.sentiment)
        assert row.score == pytest.approx(prediction.score, abs=1e-5)
        assert row.sentiment_probs == pytest.approx(prediction.sentiment_probs, abs=1e-5)
        assert sum(row.topic_probs.values()) == pytest.approx(1.0, abs=1e-4)
    # Each score carries its article's publication time (the Explorer's topic search orders by it).
    with engine.connect() as conn:
        mismatched = conn.execute(
            sa.text(
                "SELECT count(*) FROM scores s JOIN articles a ON a.id = s.article_id"
                " WHERE s.published_at IS DISTINCT FROM a.published_at"
            )
        ).scalar_one()
    assert len(stored) == 2 and mismatched == 0


def test_first_run_registers_and_activates_the_model(engine: Engine, tiny_model_dir: Path) -> None:
    score_pending(engine, model_dir=tiny_model_dir)  # nothing to score yet; the model is still registered

    versions = registry.list_versions(engine)
    assert [(v["version"], v["active"], v["scored"]) for v in versions] == [("tiny-a", True, 0)]
    assert versions[0]["path"] == str(tiny_model_dir.resolve())


def test_later_runs_find_the_active_model_by_its_registered_path(
    engine: Engine, tiny_model_dir: Path
) -> None:
    score_pending(engine, model_dir=tiny_model_dir)
    add_articles(engine, varied_articles(3))

    assert score_pending(engine).scored == 3  # no --model: the active version's registered directory


def test_limit_caps_the_articles_of_one_run(engine: Engine, tiny_model_dir: Path) -> None:
    add_articles(engine, varied_articles(7))

    assert score_pending(engine, model_dir=tiny_model_dir, batch_size=3, limit=5).scored == 5
    assert score_pending(engine, model_dir=tiny_model_dir, batch_size=3).scored == 2


def test_crash_after_some_batches_then_rerun_completes_without_duplicates(
    engine: Engine, tiny_model_dir: Path
) -> None:
    add_articles(engine, varied_articles(23))

    def crash_after_two(batch: BatchReport) -> None:
        if batch.number == 2:
            raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError, match="worker killed"):
        score_pending(engine, model_dir=tiny_model_dir, batch_size=5, on_batch=crash_after_two)
    assert len(_scores(engine, "tiny-a")) == 10  # the two committed batches survive
    assert_rollups_match(stored_rollups(engine, "tiny-a"), expected_rollups(engine, "tiny-a"))

    rerun = score_pending(engine, model_dir=tiny_model_dir, batch_size=5)

    assert rerun.scored == 13
    with engine.connect() as conn:
        total, distinct = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT article_id) FROM scores")
        ).one()
    assert total == distinct == 23
    assert_rollups_match(stored_rollups(engine, "tiny-a"), expected_rollups(engine, "tiny-a"))


def test_two_scorers_at_once_neither_duplicate_nor_miscount(engine: Engine, tiny_model_dir: Path) -> None:
    score_pending(engine, model_dir=tiny_model_dir)  # registers the version before the race
    add_articles(engine, varied_articles(30))
    reports: list[ScoreReport] = []

    def scorer() -> None:
        reports.append(score_pending(engine, model_dir=tiny_model_dir, batch_size=4))

    threads = [threading.Thread(target=scorer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert len(reports) == 2
    assert sum(r.scored for r in reports) == 30  # each score row was inserted by exactly one of them
    assert len(_scores(engine, "tiny-a")) == 30
    assert_rollups_match(stored_rollups(engine, "tiny-a"), expected_rollups(engine, "tiny-a"))


# --- model versions ----------------------------------------------------------------------------


def test_rescore_keeps_the_active_scores_until_activation(
    engine: Engine, tiny_model_dir: Path, make_tiny_model: Callable[[str, int], Path]
) -> None:
    other_dir = make_tiny_model("tiny-b", 2)
    add_articles(engine, varied_articles(8))
    score_pending(engine, model_dir=tiny_model_dir)
    before = {i: (r.sentiment, r.score) for i, r in _scores(engine, "tiny-a").items()}
    rollups_before = stored_rollups(engine, "tiny-a")

    report = rescore(engine, model_dir=other_dir, batch_size=3)

    assert (report.model_version, report.scored) == ("tiny-b", 8)
    assert _active(engine) == "tiny-a"
    assert {i: (r.sentiment, r.score) for i, r in _scores(engine, "tiny-a").items()} == before
    assert stored_rollups(engine, "tiny-a") == rollups_before
    assert_rollups_match(stored_rollups(engine, "tiny-b"), expected_rollups(engine, "tiny-b"))
    add_articles(engine, varied_articles(2))
    assert score_pending(engine).model_version == "tiny-a"  # plain scoring still feeds the active version

    registry.activate_version("tiny-b", engine)

    assert _active(engine) == "tiny-b"
    assert score_pending(engine).scored == 2  # the two articles only tiny-a had seen
    assert len(_scores(engine, "tiny-a")) == len(_scores(engine, "tiny-b")) == 10


def test_scoring_with_another_model_than_the_active_one_is_refused(
    engine: Engine, tiny_model_dir: Path, make_tiny_model: Callable[[str, int], Path]
) -> None:
    score_pending(engine, model_dir=tiny_model_dir)
    add_articles(engine, varied_articles(2))

    with pytest.raises(ScoringError, match="rescore"):
        score_pending(engine, model_dir=make_tiny_model("tiny-b", 2))
    assert _scores(engine, "tiny-b") == {}


def test_activating_an_unknown_version_fails_and_keeps_the_active_one(
    engine: Engine, tiny_model_dir: Path
) -> None:
    score_pending(engine, model_dir=tiny_model_dir)

    with pytest.raises(ScoringError, match="no-such-version"):
        registry.activate_version("no-such-version", engine)
    assert _active(engine) == "tiny-a"


def test_a_missing_model_dir_is_named_in_the_error(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(ScoringError, match="does-not-exist"):
        score_pending(engine, model_dir=tmp_path / "does-not-exist")


# --- command line ------------------------------------------------------------------------------


def test_score_and_models_commands_print_json_last(
    db_url: str, tiny_model_dir: Path, make_tiny_model: Callable[[str, int], Path], engine: Engine
) -> None:
    add_articles(engine, varied_articles(5))
    runner = CliRunner()

    result = runner.invoke(app, ["score", "--model", str(tiny_model_dir), "--batch-size", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert (report["scored"], report["batches"], report["model_version"]) == (5, 3, "tiny-a")

    other = str(make_tiny_model("tiny-b", 2))
    result = runner.invoke(app, ["rescore", "--model", other, "--activate", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert (report["scored"], report["pending"], report["activated"]) == (5, 0, True)

    result = runner.invoke(app, ["models", "list", "--json"])
    listed = {
        v["version"]: (v["active"], v["scored"]) for v in json.loads(result.output.strip().splitlines()[-1])
    }
    assert listed == {"tiny-a": (False, 5), "tiny-b": (True, 5)}

    result = runner.invoke(app, ["models", "activate", "tiny-a"])
    assert result.exit_code == 0 and _active(engine) == "tiny-a"
    result = runner.invoke(app, ["models", "activate", "nope"])
    assert result.exit_code == 2 and "unknown model version" in result.output


def test_score_command_migrates_a_fresh_database_first(
    empty_db_url: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_db_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["score", "--model", str(tiny_model_dir), "--json"])
    finally:
        get_settings.cache_clear()

    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["model_version"] == "tiny-a"


REGISTRY_COMMANDS = [["models", "list"], ["models", "activate", "tiny-a"], ["rebuild-rollups"]]


def test_registry_commands_answer_without_importing_the_model(
    engine: Engine, db_url: str, tiny_model_dir: Path
) -> None:
    """Listing or activating a version and recounting rollups need the database only: torch (seconds to
    import) stays out of the process, as a fresh interpreter shows."""
    score_pending(engine, model_dir=tiny_model_dir)
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from pipeline.cli import app\n"
        "result = CliRunner().invoke(app, sys.argv[1:])\n"
        "print(result.output.strip())\n"
        "print('torch' in sys.modules)\n"
    )
    for command in REGISTRY_COMMANDS:
        done = subprocess.run(
            [sys.executable, "-c", script, *command],
            env={**os.environ, "DATABASE_URL": db_url},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        *output, torch_loaded = done.stdout.strip().splitlines()
        assert "tiny-a" in "\n".join(output), (command, done.stdout, done.stderr)
        assert torch_loaded == "False", command
