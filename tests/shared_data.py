"""The shared real data for tests (FINSENT_DATA_DIR): skipped locally when absent, an error under CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import Settings


def shared_data_dir(subdir: str = "") -> Path:
    """Return FINSENT_DATA_DIR/``subdir``; skip the test when it is missing, but fail under CI."""
    data_dir = Settings().data_dir
    path = Path(data_dir) / subdir if data_dir is not None else None
    if path is None or not path.is_dir():
        message = f"shared data {subdir or 'directory'} not found (FINSENT_DATA_DIR={data_dir})"
        if os.environ.get("CI"):
            raise RuntimeError(f"CI needs the shared data: {message}")
        pytest.skip(message)
    return path
