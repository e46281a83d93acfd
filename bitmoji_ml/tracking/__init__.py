"""Every MLflow tracking call of the project, one job per module:

- `names`: what MLflow knows the project's things by (no MLflow import)
- `store`: the `Store` a command opens once (URI, client, experiments; no global state)
- `datasets`: the train/val lists and labelled sets as MLflow datasets with content digests
- `runs`: the training run (`TrainingRun`) and run checkpoints
- `evaluations`: the evaluation runs `bitmoji evaluate` logs
- `listing`: the runs of an experiment as `RunRecord`s for `bitmoji runs`
- `registry`: best checkpoint, the ONNX logged model, the registered model and `@champion`

Import the module you need (`from bitmoji_ml.tracking.store import Store`); this package
imports nothing, so `tracking.names` stays free of MLflow.
"""
