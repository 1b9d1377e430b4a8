"""`python -m ml {predict,train,evaluate,small-faces}`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".jfif",
    ".png",
    ".webp",
    ".heic",
    ".heif",
    ".avif",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
}


def _expand(paths: list[str]) -> Iterator[str]:
    """Files as given; folders recursed (image files only, sorted)."""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES:
                    yield str(child)
        else:
            yield given


def _predict(args: argparse.Namespace) -> int:
    from ml import ImageError, Predictor

    predictor = Predictor.load(args.model)
    status = 0
    for file in _expand(args.paths):
        try:
            faces = predictor.predict(file, whole_image_fallback=args.fallback_whole_image)
            record = {"file": file, "faces": [face.to_dict() for face in faces]}
        except ImageError as exc:
            record, status = {"file": file, "error": str(exc)}, 1
        print(json.dumps(record), flush=True)
    return status


def _train(args: argparse.Namespace) -> int:
    from ml.training.stages import run

    return run(args)


def _small_faces(args: argparse.Namespace) -> int:
    from ml.training.finishing import run_small_faces

    return run_small_faces(args)


def build_parser() -> argparse.ArgumentParser:
    # the options come from light modules (no TensorFlow); the training code loads only when it runs
    from ml.training import evaluate
    from ml.training.config import add_arguments

    parser = argparse.ArgumentParser(prog="python -m ml", description="Age & gender estimation engine")
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", help="print one JSON line per image")
    predict.add_argument("paths", nargs="+", help="image files or folders (recursed)")
    predict.add_argument(
        "--fallback-whole-image",
        action="store_true",
        help="where no face is found, treat the whole image as one face (detected: false)",
    )
    predict.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    predict.set_defaults(handler=_predict)

    trainer = commands.add_parser("train", help="train a model on folders with labels.csv")
    add_arguments(trainer)
    trainer.set_defaults(handler=_train)

    evaluator = commands.add_parser("evaluate", help="accuracy and speed on folders with labels.csv")
    evaluate.add_arguments(evaluator)
    evaluator.set_defaults(handler=evaluate.run)

    small = commands.add_parser(
        "small-faces",
        help="fit how much wider the age range must be for faces small in the photo and for blurred faces, "
        "into a model's manifest",
    )
    small.add_argument("model_dir", help="model folder (model.keras + manifest.json); the weights are kept")
    small.add_argument("--data", action="append", help="training folders (default: the shared datasets)")
    small.add_argument("--cache-dir", default="var/cache")
    small.add_argument("--version", default=None, help="the model's new version in the manifest")
    small.set_defaults(handler=_small_faces)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
