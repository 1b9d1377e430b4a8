"""The datasets are found from the repository, wherever a command is run from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_datasets_folder_is_beside_the_repository_from_any_working_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AGEGENDER_DATASETS"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", "from ml.training.data import DATASETS_DIR; print(DATASETS_DIR)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == ROOT.parent / "shared" / "datasets"
