"""Where one training epoch of the default recipe goes, piece by piece (augmentation, forward,
backward, optimizer, EMA, metric reads, validation), in seconds per epoch: the mean of 2 epochs
after a warm-up one. Variants, each its own invocation, compared by running them back to back:

    .venv/bin/python benchmarks/step_profile.py                 # fp32, as `train` runs
    .venv/bin/python benchmarks/step_profile.py --bf16          # CPU autocast to bfloat16

Needs `bitmoji prepare`'s lists (--lists). The numbers are for a quiet machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bitmoji_ml.augment import augment_batch
from bitmoji_ml.data.lists import read_manifest
from bitmoji_ml.recipe import recipe_from_values
from bitmoji_ml.training.data import load_data
from bitmoji_ml.training.evaluate import evaluate
from bitmoji_ml.training.settings import preprocess_for, resolve_config
from bitmoji_ml.training.state import new_train_state

PIECES = ("augment", "forward", "backward", "optimizer", "ema", "metric reads", "validation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", type=Path, default=Path("data/lists"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = resolve_config(recipe_from_values({}))
    data = load_data(args.lists, read_manifest(args.lists), preprocess_for(config))
    images, labels = torch.from_numpy(data.train_images), torch.from_numpy(data.train_labels)
    state = new_train_state(config, preprocess_for(config), torch.device("cpu"), len(labels) // 64, 2)
    generator = torch.Generator().manual_seed(0)
    totals = dict.fromkeys(PIECES, 0.0)
    for epoch in range(3):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels) - config.batch_size + 1, config.batch_size):
            index = order[start : start + config.batch_size]
            stamps = [time.perf_counter()]
            batch = augment_batch(
                images[index], generator, config.flip, config.shift, config.scale, config.jitter
            )
            stamps.append(time.perf_counter())
            state.model.train()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits = state.model(batch)
            loss = F.cross_entropy(logits.float(), labels[index], label_smoothing=config.label_smoothing)
            stamps.append(time.perf_counter())
            state.optimizer.zero_grad()
            loss.backward()
            stamps.append(time.perf_counter())
            state.optimizer.step()
            stamps.append(time.perf_counter())
            state.ema.update_parameters(state.model)
            stamps.append(time.perf_counter())
            loss.item(), (logits.argmax(1) == labels[index]).sum().item()
            stamps.append(time.perf_counter())
            if epoch:
                for piece, begin, end in zip(PIECES, stamps, stamps[1:], strict=False):  # validation: below
                    totals[piece] += end - begin
        began = time.perf_counter()
        evaluate(state.evaluated, data.val_images, data.val_labels, torch.device("cpu"))
        if epoch:
            totals["validation"] += time.perf_counter() - began
    for piece, seconds in totals.items():
        print(f"{piece:13s} {seconds / 2:.3f} s/epoch")
    print(f"{'total':13s} {sum(totals.values()) / 2:.3f} s/epoch")


if __name__ == "__main__":
    main()
