"""Training: `job.train_job` (the `bitmoji train` command) runs `loop.fit` on a
`state.TrainState`; `resume` says what `--resume` may change, `schedule` the learning rate.

`train_job` and `TrainJobResult` load on first use (PEP 562), so importing a light module of
the package (`training.evaluate` for export parity, `training.launch`) does not import the
whole training job (torch's optimizers, the loop, the plots)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bitmoji_ml.training.job import TrainJobResult, train_job

__all__ = ["TrainJobResult", "train_job"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from bitmoji_ml.training import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
