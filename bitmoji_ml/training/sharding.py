"""What each process trains on in an epoch, and with which random numbers: the in-memory
equivalent of DistributedSampler plus per-rank generators. Pure functions of the seed, the epoch,
the rank and the world size; in one process (rank 0 of 1) they give the whole training set.

- Each epoch is a permutation seeded by (seed, epoch); rank r takes every world-size-th index
  from r (DistributedSampler's order, without its padding), so the shards are disjoint and
  cover the set. It trains on them in batches of `batch_size / world size`: step by step, its
  share of the same global batch, so every rank takes the same number of steps.
- Augmentation and dropout draw from generators seeded by (seed, epoch, rank): different on
  each rank, reproducible, and nothing to save: a resumed run draws what an uninterrupted one
  would, on any number of processes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.training.launch import per_rank_batch_size

ORDER_STREAM, AUGMENT_STREAM, DROPOUT_STREAM = 0, 1, 2  # independent seeds from one config seed


def derived_seed(*values: int) -> int:
    """A 63-bit seed mixed from `values` (numpy's SeedSequence): nearby inputs, such as epoch 1
    and epoch 2, give unrelated streams."""
    words = [value % 2**64 for value in values]  # SeedSequence takes non-negative integers
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def shard_order(count: int, *, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """The indices rank `rank` trains on in `epoch`, in order: a permutation of range(count)
    seeded by (seed, epoch), every `world_size`-th entry from `rank` (DistributedSampler's
    order, without its padding). The ranks' shards are disjoint and together cover the set."""
    generator = torch.Generator().manual_seed(derived_seed(seed, epoch, ORDER_STREAM))
    return torch.randperm(count, generator=generator)[rank::world_size]


def steps_per_epoch(count: int, *, batch_size: int, world_size: int) -> int:
    """Optimizer steps per epoch, the same on every rank. A last global batch too small to give
    every rank two images (BatchNorm cannot train on one) is left out; its images train in
    other epochs, since every epoch has its own order."""
    full, rest = divmod(count, batch_size)
    if full == 0 and rest < 2 * world_size and world_size > 1:
        raise BitmojiError(
            f"{count} training images are too few for {world_size} processes (each needs 2 per step)"
        )
    return full + int(rest >= 2 * world_size or (full == 0 and rest > 0))


@dataclasses.dataclass(frozen=True)
class ShardBatch:
    """One step's images on this rank, and the factor that scales its loss so that DDP's mean
    of the ranks' gradients is the gradient of the mean over the whole global batch (the
    ranks' shares of a last, smaller batch can differ by one image). 1.0 in a single process."""

    index: torch.Tensor
    loss_weight: float


def shard_batches(
    count: int, *, seed: int, epoch: int, batch_size: int, rank: int, world_size: int
) -> list[ShardBatch]:
    """This rank's batches for `epoch`: its shard (`shard_order`) cut into per-rank batches,
    step by step the rank's share of the same global batch."""
    order = shard_order(count, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
    per_rank = per_rank_batch_size(batch_size, world_size)
    batches = []
    for step in range(steps_per_epoch(count, batch_size=batch_size, world_size=world_size)):
        index = order[step * per_rank : (step + 1) * per_rank]
        step_images = min(batch_size, count - step * batch_size)
        batches.append(ShardBatch(index, len(index) * world_size / step_images))
    return batches


def seed_epoch(seed: int, epoch: int, rank: int) -> torch.Generator:
    """Seed rank `rank`'s dropout (torch's global generator) for `epoch` and return the
    generator of its augmentations: distinct per rank, reproducible, and independent of earlier
    epochs, so a resumed run draws what an uninterrupted one would."""
    torch.manual_seed(derived_seed(seed, epoch, DROPOUT_STREAM, rank))
    return torch.Generator().manual_seed(derived_seed(seed, epoch, AUGMENT_STREAM, rank))
