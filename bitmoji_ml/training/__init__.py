"""Training: `job.train_job` (the `bitmoji train` command) runs `loop.fit` on a
`state.TrainState`; `resume` says what `--resume` may change, `schedule` the learning rate."""

from bitmoji_ml.training.job import TrainJobResult, train_job

__all__ = ["TrainJobResult", "train_job"]
