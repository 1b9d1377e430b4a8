"""How much better a trained model does on the exact augmented batches it was trained on than on fresh ones.

    python bench/replayed_batches.py [--model ml/models/default] [--seed 1337] [--fresh-seed 7] [--epochs 1]

Runs the model's fine-tuning set-up (`ml.training.feeding.make_trainer` and
`ml.training.fitting.fit_stage`, the second schedule's weights) over the training split with the
learning rate at 0, so that nothing changes, once drawing batches with `--seed` and once with
`--fresh-seed`, and prints the training-mode figures of each epoch. If the figures of the draw a model
was fine-tuned on are much better than the fresh draw's, the network has learnt those exact images, and
a stage that replays them learns less from them (why each stage draws its own since
`ml.training.fitting.stage_seed`; ml/MODEL_CARD.md). About 5 minutes an epoch and seed on a 2-core
machine. Not a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ml/models/default", help="a fused model folder")
    parser.add_argument("--seed", type=int, default=1337, help="the seed the model was trained with")
    parser.add_argument("--fresh-seed", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--cache-dir", default="var/cache")
    args = parser.parse_args()

    import keras
    import numpy as np

    from ml.training.config import TrainConfig
    from ml.training.feeding import make_trainer
    from ml.training.fitting import EpochLine, compile_trainer, fit_stage
    from ml.training.stages import fused_model, init_from_folder, local_site

    config = TrainConfig(cache_dir=args.cache_dir, init_from=args.model)
    site = local_site()
    train_set, _, val_set = site.load_sets(config, True)
    steps = int(np.ceil(len(train_set.ages) / config.batch_size))
    few = val_set.take(np.arange(min(256, len(val_set.ages))))  # Keras's per-epoch validation, kept short
    balance = config.polish_dataset_balance
    for label, seed in (("replayed", args.seed), ("fresh", args.fresh_seed)):
        keras.utils.set_random_seed(seed)  # before the model is built: its dropout's generators
        model = fused_model(config, site)
        init_from_folder(model, args.model)
        trainer, augmenter = make_trainer(model, config, seed)
        compile_trainer(trainer, config, 0.0, args.epochs, steps, 0.0)  # learning rate 0: the weights stay
        callbacks = [EpochLine(args.epochs, f"{label} (seed {seed})")]
        fit_stage(trainer, train_set, few, config, args.epochs, callbacks, balance, augmenter, seed=seed)


if __name__ == "__main__":
    main()
