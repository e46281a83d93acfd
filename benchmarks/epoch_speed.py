"""Seconds per training epoch (the train loop's own `train_one_epoch`: augmentation, steps,
EMA) of recipe variants, in one invocation: the mean of 2 epochs after a warm-up one. A faster
variant is another recipe, to be judged by `bitmoji cv --seeds` before it replaces anything.

    .venv/bin/python benchmarks/epoch_speed.py default image_size=56 batch_size=128,lr=0.004 width=0.75 default
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bitmoji_ml.data.lists import read_manifest
from bitmoji_ml.recipe import recipe_from_values
from bitmoji_ml.training.data import load_data
from bitmoji_ml.training.loop import train_one_epoch
from bitmoji_ml.training.settings import preprocess_for, resolve_config
from bitmoji_ml.training.state import new_train_state


def values_of(variant: str) -> dict[str, float | int]:
    """`key=value,key=value` (or `default`) as recipe values."""
    if variant == "default":
        return {}
    pairs = (item.split("=", 1) for item in variant.split(","))
    return {key: float(value) if "." in value else int(value) for key, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--lists", type=Path, default=Path("data/lists"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for variant in args.variants:
        config = resolve_config(recipe_from_values(values_of(variant)))
        data = load_data(args.lists, read_manifest(args.lists), preprocess_for(config))
        steps = len(data.train_labels) // config.batch_size
        state = new_train_state(config, preprocess_for(config), torch.device("cpu"), steps, 2)
        images, labels = torch.from_numpy(data.train_images), torch.from_numpy(data.train_labels)
        train_one_epoch(state, images, labels, config, 1)
        began = time.perf_counter()
        for epoch in (2, 3):
            train_one_epoch(state, images, labels, config, epoch)
        print(f"{variant:40s} {(time.perf_counter() - began) / 2:.2f} s/epoch", flush=True)


if __name__ == "__main__":
    main()
