"""Does `torch.compile` pay back within one training run? The hybrid model's training step
(forward, backward, AdamW) on random 64-image batches, eager and compiled: the first step (the
compile) and the 37 steps of an epoch after it.

    .venv/bin/python benchmarks/compile_check.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bitmoji_ml.models import create_model, model_spec

STEPS = 37  # one epoch of 2400 images at batch 64


def main() -> None:
    torch.set_num_threads(2)
    spec = model_spec("hybrid")
    model = create_model("hybrid", spec.preprocess, num_classes=2).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    size = spec.preprocess.size
    images = torch.randint(0, 255, (64, size, size, 3), dtype=torch.uint8).float()
    labels = torch.randint(0, 2, (64,))

    def step(network: torch.nn.Module) -> None:
        loss = F.cross_entropy(network(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for name, network in (("eager", model), ("compiled", torch.compile(model))):
        began = time.perf_counter()
        step(network)
        first = time.perf_counter() - began
        began = time.perf_counter()
        for _ in range(STEPS):
            step(network)
        print(
            f"{name}: first step {first:.1f} s, {STEPS} steps {time.perf_counter() - began:.2f} s", flush=True
        )


if __name__ == "__main__":
    main()
