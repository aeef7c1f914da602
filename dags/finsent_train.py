"""finsent_train: train a candidate model, evaluate it next to the active one, promote it only if no metric
regresses beyond ``promote_tolerance``. Manual by default (``train_schedule``, e.g. ``@weekly``, to schedule).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from pipeline.config import get_settings

settings = get_settings()


@dag(
    dag_id="finsent_train",
    schedule=settings.train_schedule or None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["finsent", "train", "gpu"],
    params={
        "recipe": Param(None, type=["null", "string"], description="recipe YAML (default: built-in)"),
        "base": Param(None, type=["null", "string"], description="causal-LM checkpoint to fine-tune"),
        "finetune_minutes": Param(None, type=["null", "number"], description="stop fine-tuning after"),
    },
    default_args={
        "owner": "finsent",
        "queue": "gpu",
        "pool": settings.gpu_pool,
        "retries": 1,
        "retry_delay": timedelta(minutes=10),
    },
)
def finsent_train() -> None:
    @task
    def train_candidate(params=None, run_id=None) -> str:
        """Return the directory of the newly trained candidate model."""
        import re
        from pathlib import Path

        from models.training import load_recipe, train_model

        config = get_settings()
        if config.data_dir is None:
            raise ValueError("training needs the labeled data: set FINSENT_DATA_DIR")
        out_dir = config.home / "models" / re.sub(r"[^A-Za-z0-9_.-]", "_", f"candidate-{run_id}")
        train_model(
            load_recipe(Path(params["recipe"]) if params["recipe"] else None),
            config.data_dir,
            out_dir,
            checkpoint_dir=config.home / "checkpoints" / "pretrain-builtin",
            unlabeled_dir=config.data_dir / "unlabeled",
            base=params["base"],
            finetune_minutes=params["finetune_minutes"],
        )
        return str(out_dir)

    @task
    def evaluate_candidate(candidate_dir: str) -> dict:
        """Return the candidate's and the active model's metrics on the valid splits."""
        from pathlib import Path

        from pipeline.scoring import evaluate_against_active
        from pipeline.store import db

        with db.one_line_errors():
            return evaluate_against_active(Path(candidate_dir))

    @task
    def promote(candidate_dir: str, evaluation: dict) -> dict:
        """Return whether the candidate was promoted (rescored and activated) or kept back, and why."""
        from pathlib import Path

        from pipeline.scoring import promote_if_no_regression
        from pipeline.store import db

        with db.one_line_errors():
            return promote_if_no_regression(Path(candidate_dir), evaluation)

    candidate = train_candidate()
    # Task calls take XComArgs, which Airflow resolves to the upstream return values at run time.
    promote(candidate, evaluate_candidate(candidate))  # type: ignore[arg-type]


finsent_train()
