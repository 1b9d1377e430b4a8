"""`ml/` is what a worker loads; training and research live in `ml/training/`, and its options come from
`TrainConfig`."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_served_engine_and_the_service_never_import_training_code():
    served = [p for p in (ROOT / "ml").glob("*.py") if p.name not in ("cli.py", "__main__.py")]
    service = [*(ROOT / "worker").rglob("*.py"), *(ROOT / "predictions").rglob("*.py")]
    offenders = {
        str(path.relative_to(ROOT)): sorted(name for name in imported_modules(path) if "training" in name)
        for path in served + service
    }
    assert {path: names for path, names in offenders.items() if names} == {}
    assert len(served) >= 10  # images, detection, alignment, model, predictor, ...


def runtime_imports(path: Path) -> set[str]:
    """`imported_modules` less those under `if TYPE_CHECKING:` (types only, never run)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    return imported_modules_of(tree)


def imported_modules_of(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_web_side_never_imports_the_engine():
    """docs/architecture.md: the web process stays light (no TensorFlow, no NumPy through `ml`); the
    typed face crosses the boundary for type checking only."""
    web = [*(ROOT / "predictions").rglob("*.py"), *(ROOT / "agegender_site").rglob("*.py")]
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            n for n in runtime_imports(path) if n == "ml" or n.startswith("ml.")
        )
        for path in web
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_command_line_loads_training_code_only_for_the_command_that_runs_it():
    code = (
        "import sys; from ml.cli import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras') "
        "or m in ('ml.training.stages', 'ml.training.finishing')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_no_engine_or_training_module_is_over_500_lines():
    lengths = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in [*(ROOT / "ml").rglob("*.py"), *(ROOT / "tests" / "ml").glob("*.py")]
    }
    assert {path: count for path, count in lengths.items() if count > 500} == {}


def parse(argv: list[str]):
    from ml.training.config import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_each_option_is_a_config_field_with_the_fields_default():
    from ml.training.config import DEFAULT_DATA, TrainConfig

    assert parse([]) == TrainConfig()
    assert parse([]).data == list(DEFAULT_DATA)
    options = [f for f in fields(TrainConfig) if f.metadata.get("help")]
    assert len(options) == 35  # the rest (weight decay, warm-up, ...) are the recipe's, not options


def test_every_option_sets_its_field():
    from ml.training.config import TrainConfig

    argv = ["--data", "a", "--data", "b", "--out", "o", "--cache-dir", "c", "--architecture", "resnet"]
    argv += ["--input-size", "32", "--widths", "8,16", "--blocks", "1,1", "--epochs", "2"]
    argv += ["--batch-size", "8", "--learning-rate", "0.5", "--head-epochs", "0", "--head-learning-rate", "2"]
    argv += [
        "--trunk-epochs",
        "3",
        "--trunk-learning-rate",
        "4",
        "--trunk-from",
        "t",
        "--gender-loss-weight",
        "2",
    ]
    argv += [
        "--seed",
        "7",
        "--version",
        "9.9",
        "--max-minutes",
        "1.5",
        "--init-from",
        "i",
        "--no-gender-expert",
    ]
    argv += ["--calibration-share", "0.1", "--polish-epochs", "5", "--polish-learning-rate", "6"]
    argv += ["--polish-pretrained-lr-scale", "0.7", "--polish-dataset-balance", "1", "--gender-doubt", "0.9"]
    argv += ["--gender-balance", "--teacher", "x", "--teacher", "y", "--distill-weight", "0.2"]
    argv += ["--resampled-share", "0.3", "--batchnorm-chips", "served", "--degrade", "--train-webp", "80"]
    argv += ["--scan", "0.5"]
    config, default = parse(argv), TrainConfig()
    changed = {f.name for f in fields(TrainConfig) if getattr(config, f.name) != getattr(default, f.name)}
    assert changed == {f.name for f in fields(TrainConfig) if f.metadata.get("help")}
    assert config.data == ["a", "b"] and config.teachers == ("x", "y")
    assert config.widths == (8, 16) and config.blocks == (1, 1) and config.max_minutes == 1.5
    assert config.gender_expert is False and config.gender_balance is True and config.degrade is True
    assert config.scan == 0.5
