"""A torchrun worker for tests/test_distributed.py: runs the `bitmoji` command line (`cli`) as a
user's own `torchrun ... -m cli train` would, and records what this rank trained on (its
batches' image indices, per epoch) and its final weights in OUT/rank<N>.pt.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/torchrun_probe.py OUT train ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import cli
from bitmoji_ml.training import distributed, job, sharding


def main() -> None:
    out, arguments = Path(sys.argv[1]), sys.argv[2:]
    shards: dict[int, list[int]] = {}
    real_shard_batches, real_fit = sharding.shard_batches, job.fit

    def recording_shard_batches(count: int, **options) -> list:
        batches = real_shard_batches(count, **options)
        shards[options["epoch"]] = [int(index) for batch in batches for index in batch.index]
        return batches

    def recording_fit(**options):
        result = real_fit(**options)
        state = options["state"]
        out.mkdir(parents=True, exist_ok=True)
        record = {
            "rank": distributed.rank(),
            "world_size": distributed.world_size(),
            "shards": shards,
            "model": state.model.state_dict(),
            "ema": state.ema.state_dict(),
        }
        torch.save(record, out / f"rank{distributed.rank()}.pt")
        return result

    sharding.shard_batches, job.fit = recording_shard_batches, recording_fit
    sys.argv = ["bitmoji", *arguments]
    cli.main()


if __name__ == "__main__":
    main()
